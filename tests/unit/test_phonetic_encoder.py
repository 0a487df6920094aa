"""The CTC-trained phonetic encoder (HuBERT's stand-in on the mini corpus) and VTLP frequency scaling."""
import json

import numpy as np
import pytest
import torch

from most_speech.audio.cli import dump_features_main
from most_speech.audio.frontends import build_encoder
from most_speech.audio.io import save_audio
from most_speech.audio.kmeans import prepare_frames
from most_speech.audio.phonetic import PhoneticEncoder, PhoneticEncoderConfig, stack_normalized
from most_speech.audio.phonetic_fit import fit_phonetic_encoder, length_batches, normalize_transcript
from most_speech.audio.store import FeatureReader, FeatureWriter
from most_speech.training.augment import FrequencyScale

TINY = dict(hidden_size=32, num_heads=2, ffn_size=64, num_layers=2, layer=1, dropout=0.0)
DROPOUT = dict(TINY, dropout=0.3)


def test_stack_normalized_matches_the_kmeans_transform():
    torch.manual_seed(0)
    a, b = torch.randn(13, 5) * 3 + 2, torch.randn(9, 5)
    padded = torch.nn.utils.rnn.pad_sequence([a, b], batch_first=True)
    x, n = stack_normalized(padded, torch.tensor([13, 9]), 4)
    assert n.tolist() == [4, 3]
    # full groups agree; a partial last group is zero-padded here, filled with the last frame there
    assert torch.allclose(x[0, :3], prepare_frames(a, "utterance", 4)[:3], atol=1e-4)
    assert torch.allclose(x[1, :2], prepare_frames(b, "utterance", 4)[:2], atol=1e-4)
    assert torch.all(x[1, 3:] == 0)


def test_encoder_interface_lengths_and_padding():
    torch.manual_seed(0)
    enc = PhoneticEncoder(PhoneticEncoderConfig(vocab=list("ab "), **DROPOUT)).eval()
    wavs = torch.randn(2, 12000) * 0.1
    feats, lens = enc(wavs, torch.tensor([12000, 7000]))
    assert lens.tolist() == [enc.frames_for(12000), enc.frames_for(7000)]
    assert feats.shape == (2, lens[0], 32)
    assert torch.all(feats[1, lens[1]:] == 0)
    alone, _ = enc(wavs[1:, :7000])  # padding does not change an utterance's frames
    assert torch.allclose(alone[0], feats[1, :lens[1]], atol=1e-4)
    enc.train()  # forward is the frozen interface: no dropout even in training mode, and the mode is kept
    assert torch.equal(enc(wavs, torch.tensor([12000, 7000]))[0], feats) and enc.training


def test_save_load_roundtrip_and_errors(tmp_path):
    torch.manual_seed(0)
    enc = PhoneticEncoder(PhoneticEncoderConfig(vocab=list("ab "), **TINY)).eval()
    enc.save_pretrained(tmp_path / "pe")
    again = build_encoder("phonetic", model_dir=tmp_path / "pe")
    wav = torch.randn(1, 9000) * 0.1
    assert torch.equal(enc(wav)[0], again(wav)[0])
    assert build_encoder("phonetic", model_dir=tmp_path / "pe", layer=2).config.layer == 2
    with pytest.raises(FileNotFoundError, match="not a phonetic encoder"):
        PhoneticEncoder.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="needs model_dir"):
        build_encoder("phonetic")
    with pytest.raises(ValueError, match="layer must be in"):
        PhoneticEncoder.from_pretrained(tmp_path / "pe", layer=5)


def test_transcripts_and_batches():
    assert normalize_transcript("Where's TOM,  now?") == "where's tom now"
    import random
    lengths = {f"u{i}": 10 * (i + 1) for i in range(10)}
    batches = length_batches(lengths, 100, random.Random(0))
    assert sorted(k for b in batches for k in b) == sorted(lengths)
    assert all(len(b) * max(lengths[k] for k in b) <= 100 or len(b) == 1 for b in batches)


def _toy_store(tmp_path, n=12):
    """Filterbank-like frames where each letter is a fixed spectral shape held for a few frames."""
    rng = np.random.default_rng(0)
    shapes = {c: rng.normal(size=16).astype(np.float32) * 3 for c in "abc "}
    words = ["ab", "ba", "cab", "abc", "cc", "bac"]
    rows = []
    with FeatureWriter(tmp_path / "feats" / "feats.0-of-1") as w:
        for i in range(n):
            text = " ".join(words[(i + j) % len(words)] for j in range(2))
            frames = np.concatenate([np.repeat(shapes[c][None], 12, 0) for c in text])
            w.write(f"u{i}", frames + rng.normal(scale=0.3, size=frames.shape).astype(np.float32))
            rows.append({"id": f"u{i}", "audio": "x.wav", "text": text.upper()})
    for name, part in (("train", rows), ("dev", rows[:4])):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    return tmp_path / "feats"


def test_fit_learns_a_toy_alphabet_and_writes_atomically(tmp_path):
    feats = _toy_store(tmp_path)
    summary = fit_phonetic_encoder(feats, tmp_path / "train.jsonl", tmp_path / "pe", tmp_path / "dev.jsonl",
                                   steps=150, batch_frames=4000, learning_rate=3e-3, warmup_steps=10,
                                   augment=False, frame_stack=2, **TINY)
    assert summary["valid"]["cer"] < 20  # from 100 % at initialisation
    saved = json.loads((tmp_path / "pe" / "valid.json").read_text())
    assert saved["valid"]["utterances"] == 4
    enc = PhoneticEncoder.from_pretrained(tmp_path / "pe")
    assert enc.config.vocab == [" ", "a", "b", "c"] and enc.config.num_mel_bins == 16
    assert not (tmp_path / "pe.tmp").exists()
    with pytest.raises(FileExistsError, match="already holds"):
        fit_phonetic_encoder(feats, tmp_path / "train.jsonl", tmp_path / "pe", steps=1, **TINY)


def test_fit_names_a_manifest_without_usable_utterances(tmp_path):
    feats = _toy_store(tmp_path, n=2)
    (tmp_path / "other.jsonl").write_text(json.dumps({"id": "zz", "audio": "x", "text": "a"}) + "\n")
    with pytest.raises(ValueError, match="other.jsonl: no utterance"):
        fit_phonetic_encoder(feats, tmp_path / "other.jsonl", tmp_path / "pe", steps=1, **TINY)
    assert not (tmp_path / "pe").exists() and not (tmp_path / "pe.tmp").exists()


def test_dump_features_with_a_phonetic_encoder(tmp_path):
    torch.manual_seed(0)
    PhoneticEncoder(PhoneticEncoderConfig(vocab=list("ab"), **TINY)).save_pretrained(tmp_path / "pe")
    save_audio(tmp_path / "a.flac", torch.randn(16000) * 0.1, 16000)
    (tmp_path / "m.jsonl").write_text(json.dumps({"id": "a", "audio": str(tmp_path / "a.flac")}) + "\n")
    assert dump_features_main(["--manifest", str(tmp_path / "m.jsonl"), "--encoder", "phonetic", "--model-dir",
                               str(tmp_path / "pe"), "--device", "cpu", "--out", str(tmp_path / "feats")]) == 0
    reader = FeatureReader(tmp_path / "feats")
    assert reader["a"].shape == (25, 32)  # 1 s at 25 Hz
    meta = json.loads((tmp_path / "feats" / "meta.json").read_text())
    assert meta["encoder"] == "phonetic" and meta["layer"] == 1 and meta["frame_rate"] == 25.0


def test_frequency_scale_moves_a_spectral_peak():
    torch.manual_seed(0)
    feats = torch.zeros(64, 3, 40)
    feats[:, :, 20] = 1.0
    out = FrequencyScale(0.8, 1.25)(feats)
    peaks = out[:, 0].argmax(-1).float()
    assert out.shape == feats.shape
    assert peaks.min() < 19 and peaks.max() > 21  # factors above 1 move the peak down, below 1 up
    assert torch.equal(FrequencyScale(1.0, 1.0)(feats), feats)
    with pytest.raises(ValueError, match="0 < low <= high"):
        FrequencyScale(1.2, 1.1)
    with pytest.raises(ValueError, match="batch, time, channels"):
        FrequencyScale()(torch.zeros(3, 4))


def test_fit_with_phoneme_targets(tmp_path, monkeypatch):
    """Multi-character symbols with word boundaries: the path ``--targets phonemes`` takes (G2P stubbed)."""
    import most_speech.text.g2p as g2p

    names = {"a": "eI", "b": "b", "c": "s"}
    monkeypatch.setattr(g2p, "espeak_phonemes", lambda texts, voice: [
        [p for i, w in enumerate(t.split()) for p in (["|"] if i else []) + [names[c] for c in w]] for t in texts])
    feats = _toy_store(tmp_path)
    summary = fit_phonetic_encoder(feats, tmp_path / "train.jsonl", tmp_path / "pe", tmp_path / "dev.jsonl",
                                   steps=150, batch_frames=4000, learning_rate=3e-3, warmup_steps=10,
                                   augment=False, frame_stack=2, targets="phonemes", **TINY)
    assert summary["targets"] == "phonemes" and summary["valid"]["per"] < 20 and "cer" not in summary["valid"]
    enc = PhoneticEncoder.from_pretrained(tmp_path / "pe")
    assert enc.config.vocab == ["b", "eI", "s", "|"] and enc.config.targets == "phonemes"
    frames = torch.as_tensor(FeatureReader(feats)["u0"])[None]   # "ab ba"
    assert enc.greedy_decode(frames, torch.tensor([frames.shape[1]])) == ["eI b | b eI"]
    with pytest.raises(ValueError, match="targets must be"):
        fit_phonetic_encoder(feats, tmp_path / "train.jsonl", tmp_path / "pe2", targets="words", steps=1, **TINY)
