"""Tests of the corpus preparers, each on a tiny fixture written here in the corpus's real format."""
import gzip
import json

import numpy as np
import pytest
import soundfile as sf

from most_speech.data.manifest import ManifestError, read_manifest
from most_speech.data.preparers import (prepare_commonvoice, prepare_libriheavy, prepare_librispeech,
                                        prepare_smoltalk, read_kaldi_dir, write_kaldi_dir)
from most_speech.data.preparers.libriheavy import cut_to_entries

SR = 16000


def _flac(path, seconds):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(int(seconds * SR), dtype="float32"), SR, format="FLAC")
    return path


# ------------------------------------------------------------------ LibriHeavy
def _cut(cid, start, dur, speaker="100"):
    source = "download/librilight/small/100/sea_fairies_0812_librivox_64kb_mp3/01_baum_sea_fairies_64kb.flac"
    return {"id": cid, "start": start, "duration": dur, "channel": 0, "supervisions": [
        {"id": cid, "recording_id": "small/100/sea_fairies_0812_librivox_64kb_mp3/01_baum_sea_fairies_64kb",
         "start": 0.0, "duration": dur, "channel": 0, "language": "English", "speaker": speaker,
         "custom": {"texts": ["Cased, punctuated text.", "CASED PUNCTUATED TEXT"], "pre_texts": ["..."],
                    "begin_byte": 1, "end_byte": 2}}],
        "recording": {"id": "small/100/sea_fairies_0812_librivox_64kb_mp3/01_baum_sea_fairies_64kb",
                      "sources": [{"type": "file", "channels": [0], "source": source}], "sampling_rate": 16000,
                      "num_samples": 9567080, "duration": 597.9, "channel_ids": [0]}, "type": "MonoCut"}


def _write_cuts(cuts_dir, split, cuts):
    cuts_dir.mkdir(parents=True, exist_ok=True)
    with gzip.open(cuts_dir / f"libriheavy_cuts_{split}.jsonl.gz", "wt") as f:
        for c in cuts:
            f.write(json.dumps(c) + "\n")


def test_libriheavy(tmp_path):
    base = "small/100/sea_fairies_0812_librivox_64kb_mp3/01_baum_sea_fairies_64kb"
    _write_cuts(tmp_path / "cuts", "small", [_cut(f"{base}_1", 612.52, 14.4), _cut(f"{base}_2", 627.0, 3.25)])
    _write_cuts(tmp_path / "cuts", "dev", [_cut("dev/1/x/y_1", 1.0, 2.0, speaker="7")])
    out = prepare_libriheavy(tmp_path / "cuts", tmp_path / "data", splits=["small", "dev"])
    small = read_manifest(out["small"])
    e = small[f"lh-{base}_1"]
    assert e["audio"] == ("{data_root}/download/librilight/small/100/sea_fairies_0812_librivox_64kb_mp3/"
                          "01_baum_sea_fairies_64kb.flac")
    assert (e["start"], e["duration"], e["text"], e["spk_id"], e["lang"]) == (
        612.52, 14.4, "Cased, punctuated text.", "100", "en")
    assert read_manifest(out["dev"])["lh-dev/1/x/y_1"]["spk_id"] == "7"
    norm = prepare_libriheavy(tmp_path / "cuts", tmp_path / "n", splits=["dev"], text_form="normalized")
    assert read_manifest(norm["dev"])["lh-dev/1/x/y_1"]["text"] == "CASED PUNCTUATED TEXT"


def test_libriheavy_adds_supervision_offset_and_rejects_bad_cuts(tmp_path):
    cut = _cut("c", 10.0, 5.0)
    cut["supervisions"][0]["start"] = 1.5
    assert cut_to_entries(cut, "w")[0]["start"] == 11.5
    cut["recording"]["sources"][0]["type"] = "url"
    with pytest.raises(ManifestError, match="w: cut 'c'.*file sources"):
        cut_to_entries(cut, "w")
    with pytest.raises(FileNotFoundError, match="test_other"):
        prepare_libriheavy(tmp_path, tmp_path / "d", splits=["test_other"])
    (tmp_path / "libriheavy_cuts_dev.jsonl").write_text("{not json\n")
    with pytest.raises(ManifestError, match="libriheavy_cuts_dev.jsonl, line 1"):
        prepare_libriheavy(tmp_path, tmp_path / "d", splits=["dev"])


# ------------------------------------------------------------------ LibriSpeech
def _librispeech(root):
    chapter = root / "LibriSpeech" / "test-clean" / "1089" / "134686"
    _flac(chapter / "1089-134686-0000.flac", 0.5)
    _flac(chapter / "1089-134686-0001.flac", 0.25)
    (chapter / "1089-134686.trans.txt").write_text("1089-134686-0000 HE HOPED THERE WOULD BE STEW\n"
                                                   "1089-134686-0001 STUFF IT INTO YOU\n")
    return root / "LibriSpeech"


def test_librispeech(tmp_path):
    corpus = _librispeech(tmp_path)
    out = prepare_librispeech(corpus, tmp_path / "data")
    m = read_manifest(out["test-clean"])
    assert list(m) == ["ls-1089-134686-0000", "ls-1089-134686-0001"]
    e = m["ls-1089-134686-0000"]
    assert e["audio"] == "{data_root}/test-clean/1089/134686/1089-134686-0000.flac"
    assert (e["duration"], e["text"], e["spk_id"]) == (0.5, "HE HOPED THERE WOULD BE STEW", "1089")
    relocated = m.relocate(corpus)["ls-1089-134686-0001"]["audio"]
    assert sf.info(relocated).frames == SR // 4
    (corpus / "test-clean/1089/134686/1089-134686-0001.flac").unlink()
    with pytest.raises(ManifestError, match=r"trans.txt, line 2, id '1089-134686-0001'.*missing"):
        prepare_librispeech(corpus, tmp_path / "data")


# ------------------------------------------------------------------ Common Voice
CV_HEADER = ("client_id\tpath\tsentence_id\tsentence\tsentence_domain\tup_votes\tdown_votes\tage\tgender\t"
             "accents\tvariant\tlocale\tsegment")


def _commonvoice(root):
    en = root / "en"
    (en / "clips").mkdir(parents=True)
    rows = [("abc123", "common_voice_en_1.mp3", "s1", 'He said "hi.', "", "2", "0", "twenties", "male_masculine",
             "", "", "en", ""),
            ("def456", "common_voice_en_2.mp3", "s2", "Second sentence.", "", "3", "1", "", "", "", "", "en", "")]
    (en / "train.tsv").write_text(CV_HEADER + "\n" + "\n".join("\t".join(r) for r in rows) + "\n")
    (en / "dev.tsv").write_text("client_id\tpath\tsentence\nzz\tcommon_voice_en_3.mp3\tThird one.\n")
    (en / "clip_durations.tsv").write_text("clip\tduration[ms]\ncommon_voice_en_1.mp3\t2500\n"
                                           "common_voice_en_2.mp3\t1200\n")
    return root


def test_commonvoice(tmp_path):
    cv = _commonvoice(tmp_path / "cv")
    out = prepare_commonvoice(cv, "en", tmp_path / "data", splits=["train", "dev"])
    train = read_manifest(out["train"])
    e = train["cv-en-common_voice_en_1"]
    assert e["audio"] == "{data_root}/en/clips/common_voice_en_1.mp3"
    assert (e["text"], e["spk_id"], e["lang"], e["duration"]) == ('He said "hi.', "abc123", "en", 2.5)
    assert e["gender"] == "male_masculine" and e["up_votes"] == "2" and "accents" not in e
    dev = read_manifest(out["dev"])
    assert "duration" not in dev["cv-en-common_voice_en_3"]
    assert out["train"].name == "commonvoice_en_train.jsonl"


def test_commonvoice_errors(tmp_path):
    cv = _commonvoice(tmp_path / "cv")
    (cv / "en" / "test.tsv").write_text("client_id\tsentence\nx\ty\n")
    with pytest.raises(ManifestError, match=r"test.tsv: missing columns \['path'\]"):
        prepare_commonvoice(cv, "en", tmp_path / "data", splits=["test"])
    with pytest.raises(FileNotFoundError, match="fr"):
        prepare_commonvoice(cv, "fr", tmp_path / "data")


# ------------------------------------------------------------------ SmolTalk
DIALOGUE = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"},
            {"role": "assistant", "content": "Paris."}]


def test_smoltalk_jsonl_and_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    src = tmp_path / "smoltalk"
    src.mkdir()
    (src / "train-00000-of-00001.jsonl").write_text(
        json.dumps({"messages": DIALOGUE, "source": "smol-magpie-ultra"}) + "\n")
    table = pa.table({"messages": [DIALOGUE[1:], DIALOGUE[1:]], "source": ["everyday-conversations", None]})
    pq.write_table(table, src / "test-00000-of-00001.parquet")
    out = prepare_smoltalk(src, tmp_path / "data")
    train, test = read_manifest(out["train"]), read_manifest(out["test"])
    assert train["smoltalk-train-00000000"]["messages"] == DIALOGUE
    assert train["smoltalk-train-00000000"]["source"] == "smol-magpie-ultra"
    assert list(test) == ["smoltalk-test-00000000", "smoltalk-test-00000001"]
    assert test["smoltalk-test-00000001"]["source"] == "smoltalk"


def test_smoltalk_bad_row(tmp_path):
    bad = tmp_path / "rows.jsonl"
    bad.write_text(json.dumps({"messages": DIALOGUE}) + "\n"
                   + json.dumps({"messages": [{"role": "robot", "content": "x"}]}) + "\n")
    with pytest.raises(ManifestError, match=r"rows.jsonl, line 2.*role 'robot'"):
        prepare_smoltalk(bad, tmp_path / "data")
    out = prepare_smoltalk(bad, tmp_path / "data", split="train", skip_invalid=True)
    assert len(read_manifest(out["train"])) == 1


# ------------------------------------------------------------------ Kaldi
def test_kaldi_roundtrip_with_segments(tmp_path):
    root = tmp_path / "corpus"
    _flac(root / "rec1.flac", 3.0)
    _flac(root / "sub" / "rec2.flac", 2.0)
    kd = tmp_path / "kaldi"
    kd.mkdir()
    (kd / "wav.scp").write_text(f"rec1 {root / 'rec1.flac'}\nrec2 corpus/sub/rec2.flac\n")
    (kd / "segments").write_text("spkA-rec1-000 rec1 0.00 1.50\nspkA-rec1-001 rec1 1.50 3.00\n"
                                 "spkB-rec2-000 rec2 0.50 -1\n")
    (kd / "text").write_text("spkA-rec1-000 hello there\nspkA-rec1-001 general kenobi\nspkB-rec2-000\n")
    (kd / "utt2spk").write_text("spkA-rec1-000 spkA\nspkA-rec1-001 spkA\nspkB-rec2-000 spkB\n")
    entries = read_kaldi_dir(kd, data_root=root, base_dir=tmp_path, lang="en")
    by_id = {e["id"]: e for e in entries}
    assert by_id["spkA-rec1-001"] == {"id": "spkA-rec1-001", "audio": "{data_root}/rec1.flac",
                                      "text": "general kenobi", "recording_id": "rec1", "start": 1.5,
                                      "duration": 1.5, "spk_id": "spkA", "lang": "en"}
    assert by_id["spkB-rec2-000"]["duration"] == 1.5 and by_id["spkB-rec2-000"]["text"] == ""
    out = write_kaldi_dir(entries, tmp_path / "export", data_root=root)
    assert (out / "wav.scp").read_text() == f"rec1 {root}/rec1.flac\nrec2 {root}/sub/rec2.flac\n"
    assert (out / "segments").read_text().splitlines()[1] == "spkA-rec1-001 rec1 1.500 3.000"
    assert (out / "spk2utt").read_text() == "spkA spkA-rec1-000 spkA-rec1-001\nspkB spkB-rec2-000\n"
    again = read_kaldi_dir(out, data_root=root)
    assert [(e["id"], e["start"], e["duration"], e["text"]) for e in again] == \
        [(e["id"], e["start"], e["duration"], e["text"]) for e in entries]


def test_kaldi_without_segments_and_export_of_manifest(tmp_path):
    root = tmp_path / "c"
    _flac(root / "u1.flac", 0.5)
    kd = tmp_path / "k"
    kd.mkdir()
    (kd / "wav.scp").write_text(f"u1 {root / 'u1.flac'}\n")
    (kd / "text").write_text("u1 some words\n")
    [e] = read_kaldi_dir(kd, data_root=root, prefix="kd")
    assert e == {"id": "kd-u1", "audio": "{data_root}/u1.flac", "text": "some words", "duration": 0.5}
    out = write_kaldi_dir([e], tmp_path / "exp", data_root="/elsewhere")
    assert (out / "wav.scp").read_text() == "kd-u1 /elsewhere/u1.flac\n"
    assert (out / "utt2spk").read_text() == "kd-u1 kd-u1\n" and not (out / "segments").exists()
    with pytest.raises(ManifestError, match="whitespace"):
        write_kaldi_dir([{**e, "spk_id": "a b"}], tmp_path / "bad", data_root="/x")


def test_kaldi_refuses_pipes_and_outside_paths(tmp_path):
    root = tmp_path / "c"
    _flac(root / "u2.flac", 0.5)
    kd = tmp_path / "k"
    kd.mkdir()
    (kd / "wav.scp").write_text(f"u1 sox in.sph -t wav - |\nu2 {root / 'u2.flac'}\n")
    (kd / "text").write_text("u1 a\nu2 b\n")
    with pytest.raises(ManifestError, match=r"wav.scp, line 1, id 'u1': piped command"):
        read_kaldi_dir(kd, data_root=root)
    assert [e["id"] for e in read_kaldi_dir(kd, data_root=root, on_pipe="skip")] == ["u2"]
    with pytest.raises(ManifestError, match="not inside data root"):
        read_kaldi_dir(kd, data_root=tmp_path / "other", on_pipe="skip")
    (kd / "text").write_text("u2 b\nu2 c\n")
    with pytest.raises(ManifestError, match="text, line 2, id 'u2': duplicate"):
        read_kaldi_dir(kd, data_root=root, on_pipe="skip")
