"""Tests of the task mixture: proportions, determinism, per-stream cycling, resume, SpeechBrain hooks."""
import collections

import pytest
import torch

from most_speech.data.mixing import TaskMixture

WEIGHTS = {"asr": 0.4, "tts": 0.4, "text_lm": 0.2}


def _mixture(seed=0, **kw):
    data = {"asr": [f"a{i}" for i in range(7)], "tts": [f"t{i}" for i in range(5)],
            "text_lm": [f"l{i}" for i in range(3)]}
    return TaskMixture(data, WEIGHTS, seed=seed, **kw)


def test_proportions_within_one_percent_over_10000_draws():
    for seed in (0, 1, 2):
        mix = _mixture(seed=seed, num_draws=10_000)
        counts = collections.Counter(task for task, _ in mix.keys())
        for task, w in WEIGHTS.items():
            assert abs(counts[task] / 10_000 - w) < 0.01, (seed, counts)
        assert mix.counts() == dict(counts)


def test_running_counts_track_weights_closely():
    mix = _mixture(block_size=50)
    for i in (1, 17, 333, 1234):
        for s, name in enumerate(mix.names):
            assert abs(mix.count_before(s, i) - i * WEIGHTS[name]) <= 50


def test_deterministic_by_seed_and_order_differs_across_seeds():
    a = [k for k in _mixture(seed=3, num_draws=300).keys()]
    b = [k for k in _mixture(seed=3, num_draws=300).keys()]
    c = [k for k in _mixture(seed=4, num_draws=300).keys()]
    assert a == b and a != c


def test_each_stream_cycles_a_reshuffled_permutation():
    mix = _mixture(seed=5, num_draws=3000)
    per_stream = collections.defaultdict(list)
    for task, index in mix.keys():
        per_stream[task].append(index)
    n = len(mix.datasets["asr"])
    passes = [per_stream["asr"][k:k + n] for k in range(0, 4 * n, n)]
    assert all(sorted(p) == list(range(n)) for p in passes)
    assert len({tuple(p) for p in passes}) > 1, "passes are not reshuffled"


def test_iteration_yields_transformed_items():
    mix = _mixture(num_draws=20, transforms={"asr": str.upper})
    for task, item in mix:
        assert item[0] == {"asr": "A", "tts": "t", "text_lm": "l"}[task]


def test_resume_from_state_dict_continues_identically():
    full = list(_mixture(seed=7, num_draws=500).keys())
    first = _mixture(seed=7, num_draws=180)
    head = list(first.keys())
    resumed = _mixture(seed=7, num_draws=320)
    resumed.load_state_dict(first.state_dict())
    assert head + list(resumed.keys()) == full


def test_state_mismatch_is_refused():
    state = _mixture(seed=1).state_dict()
    with pytest.raises(ValueError, match="seed"):
        _mixture(seed=2).load_state_dict(state)
    other = TaskMixture({"asr": [1, 2], "tts": [3]}, {"asr": 1, "tts": 1})
    with pytest.raises(ValueError, match="sizes"):
        other.load_state_dict({**other.state_dict(), "sizes": {"asr": 3, "tts": 1}})
    with pytest.raises(ValueError, match="weights"):
        other.load_state_dict({**other.state_dict(), "weights": {"asr": 0.9, "tts": 0.1}})


@pytest.mark.parametrize("datasets, weights, match", [
    ({"asr": [1]}, {"asr": 1, "tts": 1}, "disagree"),
    ({"asr": [1], "tts": [2]}, {"asr": 1, "tts": 0}, "positive"),
    ({"asr": []}, {"asr": 1}, "empty"),
])
def test_bad_configuration(datasets, weights, match):
    with pytest.raises(ValueError, match=match):
        TaskMixture(datasets, weights)


def test_speechbrain_checkpointer_saves_and_restores_position(tmp_path):
    from speechbrain.utils.checkpoints import Checkpointer

    mix = _mixture(seed=9, num_draws=40)
    list(mix.keys())
    ckpt = Checkpointer(tmp_path, recoverables={"mixture": mix})
    ckpt.save_checkpoint()
    expected = list(mix.keys())
    fresh = _mixture(seed=9, num_draws=40)
    Checkpointer(tmp_path, recoverables={"mixture": fresh}).recover_if_possible()
    assert fresh.position == 40 and list(fresh.keys()) == expected


def test_dataloader_with_workers_keeps_the_sequence():
    expected = list(_mixture(seed=11, num_draws=60))
    loader = torch.utils.data.DataLoader(_mixture(seed=11, num_draws=60), batch_size=None, num_workers=2,
                                         collate_fn=lambda item: item)
    assert list(loader) == expected
