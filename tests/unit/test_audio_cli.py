"""End to end through the CLIs: sharded feature dump (resumable), k-means, units from audio and from features."""
import json

import numpy as np
import pytest
import torch
from transformers import HubertModel

from most_speech.audio.cli import (dump_features_main, dump_units_main, learn_kmeans_main, read_manifest,
                                   select_subset, ManifestError)
from most_speech.audio.io import save_audio
from most_speech.audio.kmeans import KMeansQuantizer
from most_speech.audio.store import FeatureReader, UnitReader


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    gen = torch.Generator().manual_seed(0)
    lines = []
    for i in range(5):
        n = 6000 + 1700 * i
        save_audio(root / "audio" / f"u{i}.flac", torch.randn(n, generator=gen) * 0.1, 16000)
        lines.append({"id": f"u{i}", "audio": f"{{data_root}}/audio/u{i}.flac", "text": "x"})
    lines.append({"id": "seg", "audio": "{data_root}/audio/u4.flac", "start": 0.1, "duration": 0.5})
    (root / "m.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    torch.manual_seed(0)
    HubertModel(tiny_hubert_config_small()).save_pretrained(root / "tiny_hubert")
    return root


def tiny_hubert_config_small():
    from most_speech.audio.hubert import tiny_hubert_config
    return tiny_hubert_config(50, num_hidden_layers=2)


def _common(corpus):
    return ["--manifest", str(corpus / "m.jsonl"), "--data-root", str(corpus), "--encoder", "hubert",
            "--model-dir", str(corpus / "tiny_hubert"), "--layer", "2", "--device", "cpu", "--batch-size", "2"]


def test_pipeline(corpus, tmp_path):
    feats_dir = tmp_path / "feats"
    for rank in range(2):
        assert dump_features_main(_common(corpus) + ["--out", str(feats_dir), "--nj", "2", "--rank", str(rank)]) == 0
    scp = feats_dir / "feats.0-of-2.scp"
    stamp = scp.stat().st_mtime_ns
    assert dump_features_main(_common(corpus) + ["--out", str(feats_dir), "--nj", "2", "--rank", "0"]) == 0
    assert scp.stat().st_mtime_ns == stamp  # complete shard skipped
    reader = FeatureReader(feats_dir)
    assert sorted(reader) == ["seg", "u0", "u1", "u2", "u3", "u4"]
    assert reader["seg"].shape == (24, 32)  # 0.5 s at 50 Hz
    assert reader["u2"].shape[0] == (6000 + 3400 - 400) // 320 + 1

    km_path = tmp_path / "km.safetensors"
    assert learn_kmeans_main(["--feats", str(feats_dir), "--k", "4", "--out", str(km_path), "--n-init", "1",
                              "--max-iter", "5", "--batch-size", "64"]) == 0
    km = KMeansQuantizer.load(km_path, device="cpu")
    assert km.km_tag.startswith("tiny_hubert-L2-km4-")

    units_audio, units_feats = tmp_path / "ua" / "units.jsonl", tmp_path / "uf" / "units.jsonl"
    assert dump_units_main(_common(corpus) + ["--km", str(km_path), "--out", str(units_audio)]) == 0
    assert dump_units_main(["--feats", str(feats_dir), "--km", str(km_path), "--out", str(units_feats),
                            "--nj", "2", "--rank", "1", "--device", "cpu"]) == 0
    from_audio = UnitReader(units_audio, expected_km_tag=km.km_tag)
    from_feats = UnitReader(units_feats, expected_km_tag=km.km_tag)
    assert len(from_audio) == 6 and len(from_feats) == 3
    for utt in from_feats:
        assert np.array_equal(from_audio[utt], from_feats[utt])
        assert np.array_equal(from_audio[utt], km(torch.from_numpy(reader[utt])).numpy())

    # normalised + stacked units: one unit per 2 frames, the transform travels with the model file
    km2_path = tmp_path / "km2.safetensors"
    assert learn_kmeans_main(["--feats", str(feats_dir), "--k", "4", "--out", str(km2_path), "--n-init", "1",
                              "--max-iter", "5", "--batch-size", "64", "--feature-norm", "utterance",
                              "--frame-stack", "2"]) == 0
    km2 = KMeansQuantizer.load(km2_path, device="cpu")
    assert (km2.feature_norm, km2.frame_stack, km2.dim, km2.centroids.shape[1]) == ("utterance", 2, 32, 64)
    units2 = tmp_path / "u2" / "units.jsonl"
    assert dump_units_main(_common(corpus) + ["--km", str(km2_path), "--out", str(units2)]) == 0
    stacked = UnitReader(units2, expected_km_tag=km2.km_tag)
    assert len(stacked["u2"]) == -(-reader["u2"].shape[0] // 2)


def test_bad_audio_names_utterance_and_file(corpus, tmp_path, capsys):
    (corpus / "audio" / "bad.wav").write_bytes(b"not audio" * 20)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "broken", "audio": str(corpus / "audio" / "bad.wav")}) + "\n")
    args = _common(corpus)
    args[1] = str(manifest)
    with pytest.raises(SystemExit) as ex:
        dump_features_main(args + ["--out", str(tmp_path / "f")])
    assert ex.value.code == 1
    err = capsys.readouterr().err
    assert "'broken'" in err and "bad.wav" in err
    assert not list((tmp_path / "f").glob("*.scp"))


def test_manifest_helpers(tmp_path):
    m = tmp_path / "m.jsonl"
    m.write_text('{"id": "a", "audio": "{data_root}/a.wav"}\n{"id": "a", "audio": "b.wav"}\n')
    with pytest.raises(ManifestError, match=r"m.jsonl, line 2, id 'a': duplicate id"):
        read_manifest(m, "/r")
    m.write_text('{"id": "a", "audio": "{data_root}/a.wav"}\n')
    with pytest.raises(ManifestError, match="needs --data-root"):
        read_manifest(m)
    ids = [f"u{i}" for i in range(10)]
    sub = select_subset(ids, frac=0.3, seed=4)
    assert len(sub) == 3 and sub == select_subset(list(reversed(ids)), frac=0.3, seed=4)
