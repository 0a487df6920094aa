"""Trainer data: up-front validation of bad items, skip_bad logging, the mixed batch stream and its resume."""
import json

import numpy as np
import pytest
import soundfile as sf

from most_speech.data.templates import Example, TaskTemplates, TemplateConfig
from most_speech.text.tokenizer import MoSTTokenizer, train_sentencepiece
from most_speech.training.data import (DataError, MixedBatchStream, TaskSpec, load_task_examples,
                                       load_training_examples, make_batches, task_specs)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    sp = train_sentencepiece(["the cat sat on the mat", "a dog ran in the park"] * 20, d / "sp", vocab_size=30)
    return MoSTTokenizer.from_sentencepiece(sp, num_units=10)


def _write(path, entries):
    path.write_text("".join((e if isinstance(e, str) else json.dumps(e)) + "\n" for e in entries))
    return str(path)


def _bad_asr_manifest(tmp_path):
    good = tmp_path / "good.wav"
    sf.write(good, np.zeros(1600, dtype=np.float32), 16000)
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"this is not audio at all" * 10)
    return _write(tmp_path / "asr.jsonl", [
        {"id": "ok", "audio": str(good), "text": "the cat"},
        {"id": "missing_audio", "audio": str(tmp_path / "nope.wav"), "text": "the cat"},
        {"id": "unreadable", "audio": str(garbage), "text": "the cat"},
        {"id": "empty_text", "audio": str(good), "text": "  "},
        {"id": "ok", "audio": str(good), "text": "a dog"},
        "{not json",
    ])


def test_bad_items_are_named(tokenizer, tmp_path):
    spec = TaskSpec("asr", "asr", _bad_asr_manifest(tmp_path))
    examples, bad = load_task_examples(spec, TaskTemplates(tokenizer, TemplateConfig(speech_input="continuous")))
    assert [e.id for e in examples] == ["ok"]
    reasons = {b.id: b.reason for b in bad}
    assert "does not exist" in reasons["missing_audio"] and "nope.wav" in reasons["missing_audio"]
    assert "unreadable" in reasons["unreadable"]
    assert "'text'" in reasons["empty_text"] and "empty" in reasons["empty_text"]
    assert "duplicate id" in reasons["ok"] and "line 1" in reasons["ok"]
    assert any(b.id is None and b.line == 6 and "invalid entry" in b.reason for b in bad)
    assert all(b.file == spec.manifest for b in bad)


def test_unit_out_of_range_is_named(tokenizer, tmp_path):
    path = _write(tmp_path / "tts.jsonl", [{"id": "u1", "text": "the cat", "units": [1, 2]},
                                           {"id": "u2", "text": "the cat", "units": [1, 10]}])
    _, bad = load_task_examples(TaskSpec("tts", "tts", path), TaskTemplates(tokenizer))
    assert [b.id for b in bad] == ["u2"]
    assert "10" in bad[0].reason and "units" in bad[0].reason


def test_without_skip_bad_training_data_fails_up_front(tokenizer, tmp_path):
    spec = TaskSpec("asr", "asr", _bad_asr_manifest(tmp_path))
    log = tmp_path / "bad.jsonl"
    with pytest.raises(DataError) as err:
        load_training_examples([spec], TaskTemplates(tokenizer), skip_bad=False, bad_items_log=log)
    msg = str(err.value)
    for name in ("missing_audio", "unreadable", "empty_text", "duplicate id", "skip_bad"):
        assert name in msg
    assert log.exists()


def test_skip_bad_logs_and_skips(tokenizer, tmp_path):
    spec = TaskSpec("asr", "asr", _bad_asr_manifest(tmp_path))
    log = tmp_path / "bad.jsonl"
    out = load_training_examples([spec], TaskTemplates(tokenizer), skip_bad=True, bad_items_log=log)
    assert [e.id for e in out["asr"]] == ["ok"]
    logged = [json.loads(line) for line in log.read_text().splitlines()]
    assert {item["id"] for item in logged} == {"missing_audio", "unreadable", "empty_text", "ok", None}
    assert all(item["file"] == spec.manifest and item["reason"] for item in logged)


def test_units_input_does_not_need_audio(tokenizer, tmp_path):
    path = _write(tmp_path / "asr.jsonl", [{"id": "u1", "audio": "/nowhere.wav", "text": "the cat", "units": [1]}])
    ok, bad = load_task_examples(TaskSpec("asr", "asr", path),
                                 TaskTemplates(tokenizer, TemplateConfig(speech_input="units")))
    assert [e.id for e in ok] == ["u1"] and not bad


def test_task_specs_weight_zero_switches_a_stream_off():
    specs = task_specs({"asr": {"manifest": "a", "weight": 0.4}, "speech_lm": {"manifest": "missing", "weight": 0.0}})
    assert [s.name for s in specs] == ["asr"]
    with pytest.raises(ValueError, match="'tts'.*>= 0"):
        task_specs({"tts": {"manifest": "t", "weight": -1}})


def test_task_specs_rejects_unknown_keys():
    with pytest.raises(ValueError, match="tasks\\['asr'\\]"):
        task_specs({"asr": {"manifest": "a", "wieght": 1}})


def _stream(weights, steps_per_epoch=100, rank=0, world_size=1, seed=3):
    batches = {t: [[Example(f"{t}{i}", t, [1, 2], [-100, 2])] for i in range(7 + k)]
               for k, t in enumerate(weights)}
    return MixedBatchStream(batches, weights, collate=lambda b: b, seed=seed, steps_per_epoch=steps_per_epoch,
                            rank=rank, world_size=world_size)


def test_stream_step_counts_follow_the_mix_over_10000_steps():
    weights = {"asr": 0.4, "tts": 0.4, "text_lm": 0.2}
    stream = _stream(weights, steps_per_epoch=10_000)
    stream.set_epoch(1)
    tasks = [batch[0].task for batch in stream]
    assert len(tasks) == 10_000
    for t, w in weights.items():
        assert abs(tasks.count(t) / 10_000 - w) < 0.01
    stream.commit(10_000)
    assert stream.counts() == {t: tasks.count(t) for t in weights}


def test_stream_resume_continues_the_same_sequence():
    weights = {"asr": 0.5, "tts": 0.3, "text_lm": 0.2}
    full = _stream(weights, steps_per_epoch=30)
    full.set_epoch(1)
    reference = [b[0].id for b in full]
    first = _stream(weights, steps_per_epoch=30)
    first.set_epoch(1)
    for _ in zip(range(11), first):
        first.commit()
    resumed = _stream(weights, steps_per_epoch=30)
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    resumed.set_epoch(1)
    assert [b[0].id for b in resumed] == reference[11:]
    with pytest.raises(ValueError, match="seed"):
        _stream(weights, steps_per_epoch=30, seed=4).load_state_dict(first.state_dict())


def test_stream_ranks_take_disjoint_interleaved_draws():
    weights = {"asr": 0.5, "tts": 0.5}
    single = _stream(weights, steps_per_epoch=20)
    single.set_epoch(1)
    ids = [b[0].id for b in single]
    ranks = []
    for r in range(2):
        s = _stream(weights, steps_per_epoch=10, rank=r, world_size=2)
        s.set_epoch(1)
        ranks.append([b[0].id for b in s])
    assert ranks[0] == ids[0::2] and ranks[1] == ids[1::2]


def test_make_batches_respects_budget():
    exs = [Example(f"e{i}", "text_lm", [1] * n, [-100] + [1] * (n - 1)) for i, n in enumerate(range(2, 30))]
    batches = make_batches(exs, max_tokens=40, seed=1)
    assert sorted(e.id for b in batches for e in b) == sorted(e.id for e in exs)
    assert all(len(b) * max(len(e) for e in b) <= 40 for b in batches)


def test_unit_data_must_share_one_km_tag_equal_to_the_models(tmp_path):
    import pytest as _pytest

    from most_speech.audio.kmeans import KmTagMismatch
    from most_speech.training.data import DataError, TaskSpec, data_km_tag

    def manifest(name, rows):
        path = tmp_path / name
        path.write_text("".join(__import__("json").dumps(r) + "\n" for r in rows))
        return TaskSpec(name, "tts", str(path))

    good = manifest("a.jsonl", [{"id": "a", "text": "x", "units": [1], "km_tag": "mfcc-L0-km8-aaaa"},
                                {"id": "t", "text": "no units here"}])
    assert data_km_tag([good]) == "mfcc-L0-km8-aaaa"
    with _pytest.raises(KmTagMismatch, match="units were made with km_tag mfcc-L0-km8-aaaa but the model expects"):
        data_km_tag([good], expected="hubert_base-L11-km500-bbbb")
    other = manifest("b.jsonl", [{"id": "b", "text": "x", "units": [2], "km_tag": "mfcc-L0-km8-cccc"}])
    with _pytest.raises(DataError, match=r"b.jsonl, line 1, id 'b': km_tag 'mfcc-L0-km8-cccc' differs"):
        data_km_tag([good, other])
    untagged = manifest("c.jsonl", [{"id": "c", "text": "x", "units": [2]}])
    with _pytest.raises(DataError, match="id 'c': entry has units but no km_tag"):
        data_km_tag([untagged])
