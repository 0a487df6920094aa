"""Vocoder training: manifest/units join, segment crops, Brain step, checkpoint resume, CLI."""
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from most_speech.audio.store import UnitWriter
from most_speech.vocoder import HPARAMS_DIR, UnitHifiganVocoder, load_vocoder
from most_speech.vocoder.brain import VocoderBrain
from most_speech.vocoder.data import SegmentDataset, join_manifest_units
from most_speech.vocoder.train import main

TINY = HPARAMS_DIR / "tiny.yaml"
TAG = "km_test"


def make_corpus(tmp_path, n=3, frames=(20, 12, 9), extra_units=0):
    rng = np.random.default_rng(0)
    m, u = [], []
    for i in range(n):
        f = frames[i % len(frames)]
        path = tmp_path / f"a{i}.wav"
        sf.write(path, (0.1 * rng.standard_normal(f * 320 + 100)).astype("float32"), 16000)
        m.append({"id": f"utt{i}", "audio": str(path)})
        u.append({"id": f"utt{i}", "units": rng.integers(0, 16, f + extra_units).tolist(), "km_tag": TAG})
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in m))
    (tmp_path / "u.jsonl").write_text("".join(json.dumps(r) + "\n" for r in reversed(u)))
    return tmp_path / "m.jsonl", tmp_path / "u.jsonl"


def test_join_by_id_and_segments(tmp_path):
    manifest, units = make_corpus(tmp_path)
    utts, tag = join_manifest_units(manifest, units)
    assert tag == TAG and [x.id for x in utts] == ["utt0", "utt1", "utt2"]
    assert [len(x.units) for x in utts] == [20, 12, 9]
    ds = SegmentDataset(utts, 16000, 320, 16, seed=0)
    for i in range(3):
        seg_units, seg_wav = ds[i]
        assert seg_units.shape == (16,) and seg_wav.shape == (16 * 320,)
    with pytest.raises(ValueError, match="expected 'other'"):
        join_manifest_units(manifest, units, km_tag="other")


def test_units_longer_than_audio_name_the_utterance(tmp_path):
    manifest, units = make_corpus(tmp_path, n=1, extra_units=10)
    utts, _ = join_manifest_units(manifest, units)
    with pytest.raises(ValueError, match="utterance 'utt0': 30 units but only 20 frames"):
        SegmentDataset(utts, 16000, 320, 8)[0]


def dump_units_store(units_file, out):
    """Rewrite a unit file the way most-dump-units stores it: {"id", "units"} lines + a km_tag header."""
    with UnitWriter(out, TAG) as writer:
        for line in units_file.read_text().splitlines():
            rec = json.loads(line)
            writer.write(rec["id"], rec["units"])
    return out


def test_dump_units_store_reads_km_tag_from_header(tmp_path):
    manifest, units = make_corpus(tmp_path)
    store = dump_units_store(units, tmp_path / "dump" / "all.jsonl")
    assert "km_tag" not in store.read_text() and (tmp_path / "dump" / "all.km_tag").read_text().strip() == TAG
    utts, tag = join_manifest_units(manifest, store, km_tag=TAG)
    assert tag == TAG and [len(x.units) for x in utts] == [20, 12, 9]
    with pytest.raises(ValueError, match=r"all\.jsonl:1: utterance 'utt2' has km_tag 'km_test', expected 'other'"):
        join_manifest_units(manifest, store, km_tag="other")


def test_unit_lines_must_agree_with_the_header(tmp_path):
    manifest, units = make_corpus(tmp_path)
    store = dump_units_store(units, tmp_path / "u2.jsonl")
    lines = store.read_text().splitlines()
    lines[1] = json.dumps({**json.loads(lines[1]), "km_tag": TAG})  # agrees with the header: fine
    store.write_text("\n".join(lines) + "\n")
    assert join_manifest_units(manifest, store)[1] == TAG
    lines[2] = json.dumps({**json.loads(lines[2]), "km_tag": "other"})
    store.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"u2\.jsonl:3: utterance 'utt0' has km_tag 'other' but the header "
                                         r".*u2\.km_tag says 'km_test'"):
        join_manifest_units(manifest, store)


def test_units_without_any_km_tag_are_refused(tmp_path):
    manifest, units = make_corpus(tmp_path)
    store = dump_units_store(units, tmp_path / "u2.jsonl")
    (tmp_path / "u2.km_tag").unlink()
    with pytest.raises(ValueError, match=r"u2\.jsonl:1: utterance 'utt2' has no 'km_tag' field and .*u2\.jsonl "
                                         r"has no km_tag header \(.*u2\.km_tag\)"):
        join_manifest_units(manifest, store)


def _argv(tmp_path, manifest, units, **extra):
    opts = {"output_folder": tmp_path / "exp", "train_manifest": manifest, "train_units": units,
            "km_tag": TAG, "num_units": 16, "batch_size": 2}
    opts.update(extra)
    return [str(TINY), "--noprogressbar"] + [f"--{k}={v}" for k, v in opts.items()]


def test_brain_trains_and_resumes_from_checkpoint(tmp_path, monkeypatch):
    manifest, units = make_corpus(tmp_path)
    calls = []
    original = VocoderBrain.fit_batch

    def counting(self, batch):
        calls.append(self.optimizer_step)
        return original(self, batch)

    monkeypatch.setattr(VocoderBrain, "fit_batch", counting)
    main(_argv(tmp_path, manifest, units, optimizer_step_limit=1))
    exported = tmp_path / "exp" / "vocoder"
    first = load_vocoder(exported)
    assert isinstance(first, UnitHifiganVocoder) and first.km_tag == TAG
    assert calls == [0]
    assert list((tmp_path / "exp" / "save").glob("CKPT*"))

    # a rerun with a higher limit continues from step 1 instead of starting over
    main(_argv(tmp_path, manifest, units, optimizer_step_limit=2))
    assert calls == [0, 1]
    second = load_vocoder(exported)
    changed = any(
        not torch.equal(a, b)
        for a, b in zip(first.state_dict().values(), second.state_dict().values())
    )
    assert changed
    wav = second.synthesize([[1, 2, 3]], km_tag=TAG)[0]
    assert wav.ndim == 1 and wav.shape[0] >= 3 * 320


def test_cli_fits_mean_mel_vocoder(tmp_path):
    manifest, units = make_corpus(tmp_path)
    yaml_file = HPARAMS_DIR / "mean_mel_50hz.yaml"
    main([str(yaml_file), f"--output_folder={tmp_path / 'mm'}", f"--train_manifest={manifest}",
          f"--train_units={units}", f"--km_tag={TAG}", "--num_units=16"])
    voc = load_vocoder(tmp_path / "mm" / "vocoder")
    assert voc.vocoder_type == "mean_mel" and voc.km_tag == TAG
    assert voc.synthesize([[1, 2]], km_tag=TAG, deduplicated=False)[0].shape == (640,)


def test_cli_trains_on_most_dump_units_output(tmp_path):
    manifest, units = make_corpus(tmp_path)
    store = dump_units_store(units, tmp_path / "dump" / "all.jsonl")
    main([str(HPARAMS_DIR / "mean_mel_50hz.yaml"), f"--output_folder={tmp_path / 'mm'}",
          f"--train_manifest={manifest}", f"--train_units={store}", f"--km_tag={TAG}", "--num_units=16"])
    assert load_vocoder(tmp_path / "mm" / "vocoder").km_tag == TAG
