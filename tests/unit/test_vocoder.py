"""Unit vocoders: shapes, duration predictor, save/load, km_tag checks, batching, mean-mel fit."""
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from most_speech.audio.kmeans import dedup
from most_speech.vocoder import (
    ConvMelConfig,
    ConvMelVocoder,
    KmTagMismatchError,
    MeanMelConfig,
    MeanMelVocoder,
    UnitHifiganConfig,
    UnitHifiganVocoder,
    load_vocoder,
)
from most_speech.vocoder.fit import fit_conv_mel_vocoder, fit_mean_mel_vocoder
from most_speech.vocoder.mean_mel import log_mel

TAG = "test_km16"


def tiny_hifigan(unit_rate=50.0, factors=(5, 4, 4, 2, 2), kernels=(11, 8, 8, 4, 4), seed=0):
    torch.manual_seed(seed)
    cfg = UnitHifiganConfig(
        km_tag=TAG, num_units=16, unit_rate=unit_rate, embedding_dim=8,
        upsample_factors=list(factors), upsample_kernel_sizes=list(kernels),
        upsample_initial_channel=32, resblock_kernel_sizes=[3],
        resblock_dilation_sizes=[[1, 3, 5]], var_pred_hidden_dim=8,
    )
    return UnitHifiganVocoder(cfg).eval()


def tiny_mean_mel():
    return MeanMelVocoder(MeanMelConfig(km_tag=TAG, num_units=16, griffin_lim_iters=4))


def tiny_conv_mel(seed=0):
    torch.manual_seed(seed)
    return ConvMelVocoder(ConvMelConfig(km_tag=TAG, num_units=16, griffin_lim_iters=4, channels=16,
                                        duration_channels=8)).eval()


@pytest.mark.parametrize(
    "rate,factors,kernels", [(50.0, (5, 4, 4, 2, 2), (11, 8, 8, 4, 4)), (25.0, (8, 5, 4, 2, 2), (16, 11, 8, 4, 4))]
)
def test_generator_output_is_units_times_upsampling(rate, factors, kernels):
    voc = tiny_hifigan(rate, factors, kernels)
    hop = int(np.prod(factors))
    assert hop == 16000 / rate
    with torch.no_grad():
        wav, _ = voc(torch.randint(0, 16, (2, 13)))
    assert wav.shape == (2, 1, 13 * hop)
    out = voc.synthesize([[1, 2, 3, 4, 5], [7]], km_tag=TAG, deduplicated=False)
    assert [w.shape[0] for w in out] == [5 * hop, hop]


def test_config_rejects_wrong_upsampling():
    with pytest.raises(ValueError, match="multiply to 320"):
        UnitHifiganConfig(km_tag=TAG, num_units=4, unit_rate=25.0)


def test_duration_predictor_learns_toy_durations():
    torch.manual_seed(0)
    voc = tiny_hifigan()
    voc.train()
    # unit k always lasts (k % 4) + 1 frames
    seqs = []
    for _ in range(8):
        ids = torch.randint(0, 16, (30,))
        seqs.append(ids.repeat_interleave(ids % 4 + 1)[:60])
    batch = torch.stack(seqs)
    params = list(voc.generator.unit_embedding.parameters()) + list(voc.generator.var_predictor.parameters())
    opt = torch.optim.Adam(params, lr=1e-2)
    losses = []
    for _ in range(60):
        loss = voc.duration_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]
    voc.eval()
    runs = dedup(seqs[0])[0]
    predicted = voc.predict_durations([runs])[0]
    assert predicted.shape == runs.shape and bool((predicted >= 1).all())


@pytest.mark.parametrize("make", [tiny_hifigan, tiny_mean_mel, tiny_conv_mel])
def test_save_load_round_trip(make, tmp_path):
    voc = make()
    if isinstance(voc, MeanMelVocoder):
        voc.accumulate(torch.arange(16).repeat_interleave(2), torch.randn(32 * 320) * 0.1)
        voc.finalize()
    voc.save(tmp_path / "voc")
    config = json.loads((tmp_path / "voc" / "config.json").read_text())
    assert {config["km_tag"], config["num_units"], config["unit_rate"], config["sample_rate"]} == {
        TAG, 16, 50.0, 16000
    }
    loaded = load_vocoder(tmp_path / "voc")
    assert type(loaded) is type(voc)
    units = [[3, 4, 5, 9, 1]]
    for deduplicated in (False, True):
        a = voc.synthesize(units, km_tag=TAG, deduplicated=deduplicated)[0]
        b = loaded.synthesize(units, km_tag=TAG, deduplicated=deduplicated)[0]
        assert torch.equal(a, b)


def test_load_refuses_wrong_type_and_missing_weights(tmp_path):
    tiny_mean_mel().save(tmp_path / "voc")
    with pytest.raises(ValueError, match="not 'unit_hifigan'"):
        UnitHifiganVocoder.load(tmp_path / "voc")
    (tmp_path / "voc" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_vocoder(tmp_path / "voc")


@pytest.mark.parametrize("make", [tiny_hifigan, tiny_mean_mel, tiny_conv_mel])
def test_km_tag_mismatch_is_refused(make):
    voc = make()
    with pytest.raises(KmTagMismatchError, match="units were made with km_tag 'other_km' but this vocoder was trained on 'test_km16'"):
        voc.synthesize([[1, 2, 3]], km_tag="other_km")
    with pytest.raises(KmTagMismatchError, match="utterance 'utt7'.*'other_km'.*'test_km16'"):
        voc.synthesize([{"id": "utt7", "units": [1, 2], "km_tag": "other_km"}])
    with pytest.raises(KmTagMismatchError, match="no km_tag given"):
        voc.synthesize([[1, 2, 3]])
    out = voc.synthesize({"id": "u", "units": [1, 2], "km_tag": TAG}, deduplicated=False)
    assert len(out) == 1 and out[0].shape[0] == 640


def test_bad_units_are_named():
    voc = tiny_mean_mel()
    with pytest.raises(ValueError, match=r"utterance 'x': unit 16 out of range \[0, 16\)"):
        voc.synthesize([{"id": "x", "units": [1, 16], "km_tag": TAG}])
    with pytest.raises(ValueError, match="#1: empty unit sequence"):
        voc.synthesize([[1], []], km_tag=TAG)


@pytest.mark.parametrize("deduplicated", [True, False])
def test_hifigan_batched_equals_one_by_one(deduplicated):
    voc = tiny_hifigan(seed=3)
    torch.manual_seed(1)
    seqs = [torch.randint(0, 16, (n,)) for n in (2, 9, 31)]
    batched = voc.synthesize(seqs, km_tag=TAG, deduplicated=deduplicated)
    for seq, wav in zip(seqs, batched):
        single = voc.synthesize([seq], km_tag=TAG, deduplicated=deduplicated)[0]
        assert wav.shape == single.shape
        torch.testing.assert_close(wav, single, rtol=0, atol=1e-5)


@pytest.mark.parametrize("make", [tiny_mean_mel, tiny_conv_mel])
def test_mel_vocoders_batched_equal_one_by_one(make):
    voc = make()
    seqs = [[1, 2, 3], [4] * 7, [5, 6]]
    batched = voc.synthesize(seqs, km_tag=TAG, deduplicated=False)
    for seq, wav in zip(seqs, batched):
        assert torch.equal(wav, voc.synthesize([seq], km_tag=TAG, deduplicated=False)[0])


def _tone_corpus(tmp_path, n_utts=6, seed=0, unit_durations=False):
    """Audio where unit k is a tone of 200 * (k + 1) Hz; runs of 2-4 frames (k % 3 + 2 with ``unit_durations``)."""
    rng = np.random.default_rng(seed)
    hop, sr = 320, 16000
    manifest, units_file = tmp_path / "m.jsonl", tmp_path / "u.jsonl"
    rows_m, rows_u, refs = [], [], []
    for i in range(n_utts):
        if unit_durations:  # neighbours differ, so every run has its unit's length
            ids = np.cumsum(rng.integers(1, 8, 20)) % 8
            runs = np.repeat(ids, ids % 3 + 2)
        else:
            ids = rng.integers(0, 8, 20)
            runs = np.repeat(ids, rng.integers(2, 5, 20))
        t = np.arange(len(runs) * hop) / sr
        freq = 200.0 * (np.repeat(runs, hop) + 1)
        wav = (0.3 * np.sin(2 * np.pi * np.cumsum(freq) / sr) + 0.01 * rng.standard_normal(t.size))
        path = tmp_path / f"u{i}.wav"
        sf.write(path, wav.astype("float32"), sr)
        rows_m.append({"id": f"u{i}", "audio": str(path)})
        rows_u.append({"id": f"u{i}", "units": runs.tolist(), "km_tag": TAG})
        refs.append((runs, wav))
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows_m))
    # units are joined by id, not line order
    units_file.write_text("".join(json.dumps(r) + "\n" for r in reversed(rows_u)))
    return manifest, units_file, refs


def test_mean_mel_fit_synthesizes_closer_mels_than_random_units(tmp_path):
    manifest, units_file, refs = _tone_corpus(tmp_path)
    cfg = MeanMelConfig(km_tag=TAG, num_units=8, griffin_lim_iters=16)
    voc = fit_mean_mel_vocoder(manifest, units_file, tmp_path / "voc", config=cfg)
    assert (tmp_path / "voc" / "config.json").is_file()
    runs, target = refs[0]
    random_units = (runs + 4) % 8  # same timing, every unit replaced by another
    good, bad = voc.synthesize([runs.tolist(), random_units.tolist()], km_tag=TAG, deduplicated=False)
    assert good.shape[0] == len(runs) * 320 == bad.shape[0]
    ref_mel = log_mel(torch.from_numpy(target).float(), cfg)
    dist = [(log_mel(w, cfg) - ref_mel).abs().mean().item() for w in (good, bad)]
    assert dist[0] < 0.75 * dist[1], dist
    # deduplicated input: durations come from the fitted mean run lengths (2-4 frames)
    values = dedup(torch.from_numpy(runs))[0]
    wav = voc.synthesize([values], km_tag=TAG, deduplicated=True)[0]
    assert 2 * 320 * len(values) <= wav.shape[0] <= 4 * 320 * len(values)


def test_fit_refuses_units_of_another_tag(tmp_path):
    manifest, units_file, _ = _tone_corpus(tmp_path, n_utts=1)
    with pytest.raises(ValueError, match="km_tag 'test_km16' but the vocoder config says 'zzz'"):
        fit_mean_mel_vocoder(manifest, units_file, config=MeanMelConfig(km_tag="zzz", num_units=8))


def test_conv_mel_padding_does_not_reach_valid_frames():
    voc = tiny_conv_mel(seed=2)
    short, long = torch.tensor([3, 5, 7]), torch.tensor([1, 2, 3, 4, 5, 6, 7, 8])
    units = torch.nn.utils.rnn.pad_sequence([short, long], batch_first=True, padding_value=9)
    mask = torch.tensor([[1.0] * 3 + [0.0] * 5, [1.0] * 8])
    with torch.no_grad():
        padded = voc.normalized_log_mel(units, mask)
        alone = voc.normalized_log_mel(short[None])
        dur_padded = voc.log_durations(units, mask)[0, :3]
        dur_alone = voc.log_durations(short[None])[0]
    torch.testing.assert_close(padded[0, :6], alone[0])
    torch.testing.assert_close(dur_padded, dur_alone)


def test_conv_mel_fit_learns_mels_and_durations(tmp_path):
    manifest, units_file, refs = _tone_corpus(tmp_path, unit_durations=True)
    cfg = ConvMelConfig(km_tag=TAG, num_units=8, griffin_lim_iters=16, channels=32, duration_channels=16)
    voc = fit_conv_mel_vocoder(manifest, units_file, tmp_path / "voc", config=cfg, steps=150,
                               batch_size=4, segment_frames=40, learning_rate=5e-3)
    assert type(load_vocoder(tmp_path / "voc")) is ConvMelVocoder
    runs, target = refs[0]
    shifted = (runs + 4) % 8  # same timing, every unit replaced by another
    good, bad = voc.synthesize([runs.tolist(), shifted.tolist()], km_tag=TAG, deduplicated=False)
    ref_mel = log_mel(torch.from_numpy(target).float(), cfg)
    dist = [(log_mel(w, cfg) - ref_mel).abs().mean().item() for w in (good, bad)]
    assert dist[0] < 0.75 * dist[1], dist
    # unit k always lasts k % 3 + 2 frames: the duration predictor recovers the timing
    values, lengths = dedup(torch.from_numpy(runs))
    predicted = torch.exp(voc.log_durations(values[None]))[0].round()
    assert (predicted == lengths).float().mean() >= 0.9, (predicted, lengths)


def test_conv_mel_fit_is_deterministic(tmp_path):
    manifest, units_file, _ = _tone_corpus(tmp_path, n_utts=2)
    cfg = ConvMelConfig(km_tag=TAG, num_units=8, channels=8, duration_channels=8)
    a, b = (fit_conv_mel_vocoder(manifest, units_file, config=cfg, steps=5, batch_size=2, segment_frames=20)
            for _ in range(2))
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name
