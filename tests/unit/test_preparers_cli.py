"""Tests of the most-prepare-data command line (filter, Kaldi round trip, a preparer, errors)."""
import json

import numpy as np
import soundfile as sf

from most_speech.data.cli import main
from most_speech.data.manifest import read_manifest, write_manifest


def test_filter_prints_stats_and_writes(tmp_path, capsys):
    src = write_manifest([{"id": "a", "audio": "{data_root}/a.flac", "duration": 0.5, "text": "x"},
                          {"id": "b", "audio": "{data_root}/b.flac", "duration": 5.0, "text": "y"},
                          {"id": "c", "audio": "{data_root}/c.flac", "duration": 50.0, "text": "z"},
                          {"id": "d", "audio": "{data_root}/d.flac", "duration": 3.0, "text": ""}],
                         tmp_path / "in.jsonl")
    rc = main(["filter", "--in", str(src), "--out", str(tmp_path / "out.jsonl"), "--min-dur", "1",
               "--max-dur", "30", "--stats-json", str(tmp_path / "stats.json")])
    assert rc == 0
    assert list(read_manifest(tmp_path / "out.jsonl")) == ["b"]
    printed = capsys.readouterr().out
    assert "too_short" in printed and "too_long" in printed and "empty_text" in printed
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["kept"]["count"] == 1 and stats["too_long"]["hours"] == 50 / 3600
    assert stats["total"]["count"] == 4


def test_librispeech_then_kaldi_export_and_import(tmp_path):
    chapter = tmp_path / "LibriSpeech" / "dev-clean" / "84" / "121123"
    chapter.mkdir(parents=True)
    sf.write(chapter / "84-121123-0000.flac", np.zeros(8000, dtype="float32"), 16000, format="FLAC")
    (chapter / "84-121123.trans.txt").write_text("84-121123-0000 GO DO YOU HEAR\n")
    corpus = tmp_path / "LibriSpeech"
    assert main(["librispeech", "--corpus-dir", str(corpus), "--out", str(tmp_path / "data")]) == 0
    manifest = tmp_path / "data" / "librispeech_dev-clean.jsonl"
    assert main(["kaldi-export", "--manifest", str(manifest), "--data-root", str(corpus),
                 "--out", str(tmp_path / "kaldi")]) == 0
    assert (tmp_path / "kaldi" / "text").read_text() == "ls-84-121123-0000 GO DO YOU HEAR\n"
    assert main(["kaldi-import", "--kaldi-dir", str(tmp_path / "kaldi"), "--data-root", str(corpus),
                 "--out", str(tmp_path / "back.jsonl")]) == 0
    back = read_manifest(tmp_path / "back.jsonl")["ls-84-121123-0000"]
    orig = read_manifest(manifest)["ls-84-121123-0000"]
    assert {k: back[k] for k in ("audio", "duration", "text", "spk_id")} == \
        {k: orig[k] for k in ("audio", "duration", "text", "spk_id")}


def test_errors_exit_nonzero_with_message(tmp_path, capsys):
    (tmp_path / "bad.jsonl").write_text('{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n')
    rc = main(["filter", "--in", str(tmp_path / "bad.jsonl"), "--out", str(tmp_path / "o.jsonl")])
    assert rc == 1
    err = capsys.readouterr().err
    assert "bad.jsonl, line 2, id 'a': duplicate id" in err
    assert not (tmp_path / "o.jsonl").exists(), "a failed run must not leave a partial output"
    assert main(["commonvoice", "--cv-dir", str(tmp_path), "--lang", "xx", "--out", str(tmp_path)]) == 1
