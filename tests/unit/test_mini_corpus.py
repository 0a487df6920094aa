"""Tests of the espeak-ng/flite mini corpus generator and the local TTS engines."""
import csv
import gzip
import hashlib
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from most_speech.audio import tts_engines
from most_speech.audio.tts_engines import LocalTTS, TTSEngineError, list_voices, parse_voice
from most_speech.data import mini_corpus as mc

pytestmark = pytest.mark.skipif(
    not (shutil.which("espeak-ng") and shutil.which("flite")), reason="espeak-ng/flite missing")

TINY = dict(num_train=6, num_dev=2, num_test=2, chapter_size=(2, 3), jobs=1)
CUT_KEYS = {"id", "start", "duration", "channel", "supervisions", "recording", "type"}
SUP_KEYS = {"id", "recording_id", "start", "duration", "channel", "language", "speaker", "custom"}
REC_KEYS = {"id", "sources", "sampling_rate", "num_samples", "duration", "channel_ids"}


def read_cuts(root, name):
    with gzip.open(Path(root) / f"libriheavy_cuts_{name}.jsonl.gz", "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def all_cuts(root):
    return {split: read_cuts(root, mc.CUTS_NAME[split]) for split in mc.SPLITS}


def file_digests(root):
    root = Path(root)
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and ".mini_corpus" not in p.parts}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("mini")
    stats = mc.make_mini_corpus(root, seed=3, **TINY)
    return root, stats


# ---------------------------------------------------------------- LibriHeavy format
def test_cuts_have_libriheavy_monocut_fields(corpus):
    root, stats = corpus
    cuts = all_cuts(root)
    assert {s: len(c) for s, c in cuts.items()} == {"train": 6, "dev": 2, "test": 2}
    for split, split_cuts in cuts.items():
        for cut in split_cuts:
            assert set(cut) == CUT_KEYS and cut["type"] == "MonoCut" and cut["channel"] == 0
            (sup,) = cut["supervisions"]
            rec = cut["recording"]
            assert set(sup) == SUP_KEYS and set(rec) == REC_KEYS
            subset, spk, book, file_n = cut["id"].split("/")
            assert subset == mc.SUBSET[split] and sup["speaker"] == spk
            assert cut["id"] == sup["id"] == f"{rec['id']}_{file_n.rsplit('_', 1)[1]}"
            assert sup["recording_id"] == rec["id"] and sup["start"] == 0.0
            assert sup["duration"] == cut["duration"] and sup["language"] == "English"
            text, norm = sup["custom"]["texts"]
            assert norm == mc.normalize_text(text) and norm.isupper() and text != norm
            assert len(sup["custom"]["pre_texts"]) == 2
            assert sup["custom"]["begin_byte"] == 0 == sup["custom"]["end_byte"]
            (src,) = rec["sources"]
            assert src == {"type": "file", "channels": [0],
                           "source": f"download/librilight/{rec['id']}.flac"}
            info = sf.info(root / src["source"])
            assert (info.samplerate, info.channels, info.format) == (16000, 1, "FLAC")
            assert info.frames == rec["num_samples"] and rec["sampling_rate"] == 16000
            assert rec["duration"] == pytest.approx(info.frames / 16000, abs=1e-3)
            assert 0 <= cut["start"] and cut["start"] + cut["duration"] <= rec["duration"]


def test_segments_hold_speech_and_gaps_are_silent(corpus):
    root, _ = corpus
    for cut in read_cuts(root, "small"):
        path = root / cut["recording"]["sources"][0]["source"]
        wav, sr = sf.read(path, dtype="float32")
        seg = wav[round(cut["start"] * sr): round((cut["start"] + cut["duration"]) * sr)]
        lead = wav[: int(0.3 * sr)]  # every recording opens with 0.5 s of near-silence
        assert 0.8 < cut["duration"] < 10
        assert np.sqrt(np.mean(seg ** 2)) > 30 * np.sqrt(np.mean(lead ** 2))
        mid = seg[len(seg) // 4: 3 * len(seg) // 4]
        assert np.abs(mid).max() > 0.1  # speech in the middle, not only at an edge


def test_stats_and_readme(corpus):
    root, stats = corpus
    saved = json.loads((root / "stats.json").read_text())
    assert saved["splits"] == stats["splits"]
    assert saved["splits"]["train"]["utterances"] == 6
    assert 0 < saved["splits"]["dev"]["hours"] < 0.01
    for split in mc.SPLITS:
        spk = {c["supervisions"][0]["speaker"] for c in read_cuts(root, mc.CUTS_NAME[split])}
        assert saved["splits"][split]["speakers"] == sorted(spk)
    assert "| train | 6 |" in (root / "README.md").read_text()


# ---------------------------------------------------------------- Common Voice format
def test_commonvoice_tsvs_and_clips(corpus):
    root, _ = corpus
    cv = root / "commonvoice" / "en"
    rows = {}
    for name in ("train", "dev", "test", "validated"):
        with open(cv / f"{name}.tsv", encoding="utf-8") as fh:
            reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
            assert tuple(next(reader)) == mc.CV_HEADER
            rows[name] = [dict(zip(mc.CV_HEADER, r)) for r in reader]
    assert [len(rows[s]) for s in ("train", "dev", "test")] == [6, 2, 2]
    assert rows["validated"] == rows["train"] + rows["dev"] + rows["test"]
    cut_texts = [c["supervisions"][0]["custom"]["texts"][0] for c in read_cuts(root, "small")]
    assert [r["sentence"] for r in rows["train"]] == cut_texts
    for row in rows["validated"]:
        assert row["locale"] == "en" and row["gender"] in {"male_masculine", "female_feminine"}
        assert row["sentence_id"] == hashlib.sha256(row["sentence"].encode()).hexdigest()
        wav, sr = sf.read(cv / "clips" / row["path"], dtype="float32")
        assert sr == 16000 and 0.8 < len(wav) / sr < 10 and np.abs(wav).max() > 0.1
    clients = {s: {r["client_id"] for r in rows[s]} for s in ("train", "test")}
    assert not clients["train"] & clients["test"]


# ---------------------------------------------------------------- splits and speakers
def test_splits_have_disjoint_sentences():
    plan = mc.make_plan(num_train=400, num_dev=60, num_test=60, seed=1)
    norm = {s: [mc.normalize_text(u.text) for c in plan if c.split == s for u in c.utts]
            for s in mc.SPLITS}
    assert {s: len(v) for s, v in norm.items()} == {"train": 400, "dev": 60, "test": 60}
    assert all(len(set(v)) == len(v) for v in norm.values())
    assert not set(norm["train"]) & set(norm["dev"])
    assert not set(norm["train"]) & set(norm["test"])
    assert not set(norm["dev"]) & set(norm["test"])


def test_chapters_respect_size_and_speakers_rotate():
    plan = mc.make_plan(num_train=300, num_dev=0, num_test=0, seed=2)
    sizes = [len(c.utts) for c in plan]
    assert all(10 <= n <= 20 for n in sizes[:-1]) and 1 <= sizes[-1] <= 20
    assert len({c.speaker.spk_id for c in plan}) == min(len(plan), 36)
    assert len({c.rec_id for c in plan}) == len(plan)


def test_test_and_dev_voices_are_never_heard_in_training(corpus):
    table = mc.build_speakers()
    assert len(table["train"]) >= 30 and len(table["dev"]) >= 5 and len(table["test"]) >= 5
    voice = {s: {(p.engine, p.voice, p.variant) for p in table[s]} for s in mc.SPLITS}
    timbre = {s: {p.variant or p.voice for p in table[s]} for s in mc.SPLITS}
    assert not timbre["train"] & timbre["test"] and not timbre["train"] & timbre["dev"]
    assert not timbre["dev"] & timbre["test"]
    assert not voice["train"] & voice["test"]
    root, _ = corpus
    spk = {s: {c["supervisions"][0]["speaker"] for c in read_cuts(root, mc.CUTS_NAME[s])}
           for s in mc.SPLITS}
    assert not spk["train"] & spk["test"] and not spk["train"] & spk["dev"]


# ---------------------------------------------------------------- determinism and resume
def test_dev_and_test_do_not_depend_on_the_training_size():
    small, large = mc.make_plan(20, 6, 6, seed=3), mc.make_plan(200, 6, 6, seed=3)
    for split in ("dev", "test"):
        assert [c.plan_hash() for c in small if c.split == split] == \
            [c.plan_hash() for c in large if c.split == split]
    assert sum(len(c.utts) for c in large if c.split == "train") == 200


def test_plan_is_deterministic_by_seed():
    a, b = mc.make_plan(30, 5, 5, seed=7), mc.make_plan(30, 5, 5, seed=7)
    assert a == b
    assert [c.plan_hash() for c in a] != [c.plan_hash() for c in mc.make_plan(30, 5, 5, seed=8)]


def test_same_seed_gives_identical_files(corpus, tmp_path):
    root, _ = corpus
    mc.make_mini_corpus(tmp_path / "again", seed=3, **TINY)
    assert file_digests(tmp_path / "again") == file_digests(root)
    other = mc.make_plan(seed=4, **{k: v for k, v in TINY.items() if k != "jobs"})
    texts = [u.text for c in other for u in c.utts]
    assert texts != [c["supervisions"][0]["custom"]["texts"][0]
                     for s in mc.SPLITS for c in read_cuts(root, mc.CUTS_NAME[s])]


def test_resume_skips_finished_chapters(corpus, tmp_path, monkeypatch):
    root, _ = corpus
    work = tmp_path / "copy"
    shutil.copytree(root, work)
    before = file_digests(work)
    calls = []
    real = mc.build_chapter
    monkeypatch.setattr(mc, "build_chapter", lambda ch, *a: calls.append(ch.rec_id) or real(ch, *a))
    assert mc.make_mini_corpus(work, seed=3, **TINY)["synthesised_chapters"] == 0
    assert calls == []
    victim = next((work / "download").rglob("*.flac"))
    victim.unlink()
    assert mc.make_mini_corpus(work, seed=3, **TINY)["synthesised_chapters"] == 1
    assert len(calls) == 1 and victim.exists()
    assert file_digests(work) == before
    assert not list(work.rglob("*.tmp"))


def test_formats_flag_and_cli(tmp_path):
    out = tmp_path / "lh"
    rc = mc.main([str(out), "--num-train", "2", "--num-dev", "1", "--num-test", "1",
                  "--chapter-size", "2,2", "--jobs", "1", "--formats", "libriheavy"])
    assert rc == 0
    assert (out / "libriheavy_cuts_test_clean.jsonl.gz").exists()
    assert not (out / "commonvoice").exists()
    with pytest.raises(SystemExit):
        mc.main([str(out), "--formats", "kaldi"])
    with pytest.raises(SystemExit):
        mc.main([str(out), "--chapter-size", "10"])


def test_missing_engine_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(tts_engines.shutil, "which", lambda name: None)
    with pytest.raises(TTSEngineError, match=r"espeak-ng was not found.*apt-get install espeak-ng"):
        mc.make_mini_corpus(tmp_path / "x", num_train=2, num_dev=0, num_test=0, jobs=1)
    assert mc.main([str(tmp_path / "y"), "--num-train", "2", "--jobs", "1"]) == 2


# ---------------------------------------------------------------- text
def test_grammar_gives_many_sentences_from_a_modest_vocabulary():
    grammar = mc.Grammar.load()
    assert 200 <= len(grammar.vocabulary()) <= 600
    rng = random.Random(0)
    sents = [grammar.sentence(rng) for _ in range(3000)]
    assert len(set(sents)) > 2900
    words = {w for s in sents for w in mc.normalize_text(s).split()}
    assert words <= grammar.vocabulary()
    assert all(5 <= len(s.split()) <= 16 for s in sents)
    assert not any(" a apple" in s or " a old" in s for s in sents)


def test_grammar_errors_name_the_problem(tmp_path):
    bad = tmp_path / "g.txt"
    bad.write_text("orphan\n[templates]\nhello\n")
    with pytest.raises(ValueError, match=r"g.txt:1"):
        mc.Grammar.load(bad)
    bad.write_text("[templates]\nThe {thing} fell.\n")
    with pytest.raises(ValueError, match=r"unknown slot \{thing\}"):
        mc.Grammar.load(bad)


def test_normalize_text():
    assert mc.normalize_text('"Oh dear," said Anna. Don\'t!') == "OH DEAR SAID ANNA DON'T"
    assert mc.split_of("Ben found the key.") == mc.split_of("ben FOUND the key")


# ---------------------------------------------------------------- TTS engines
def test_local_tts_espeak_and_flite_give_16k_speech(tmp_path):
    for engine, voice, variant in (("espeak-ng", "en-gb", "f3"), ("flite", "slt", None)):
        wav, sr = LocalTTS(engine, voice, variant).synthesize("The cat sat on the mat.")
        assert sr == 16000 and wav.dtype == np.float32 and wav.ndim == 1
        assert 0.5 < len(wav) / sr < 5 and np.abs(wav).max() > 0.05
    slow, _ = LocalTTS("espeak-ng", "en-us", rate=110).synthesize("One two three four five.")
    fast, _ = LocalTTS("espeak-ng", "en-us", rate=260).synthesize("One two three four five.")
    assert len(slow) > 1.5 * len(fast)
    wav, _ = tts_engines.synthesize("Hello there.", "flite:kal16", tmp_path / "a.wav")
    back, sr = sf.read(tmp_path / "a.wav", dtype="float32")
    assert sr == 16000 and len(back) == len(wav)


def test_voice_listing_and_specs():
    espeak = list_voices("espeak-ng")
    assert {"en-us", "en-gb", "en-gb-scotland"} <= set(espeak) and "variant" not in espeak
    assert {"slt", "awb", "rms"} <= set(list_voices("flite"))
    assert tts_engines.list_variants()["f3"] == "F"
    assert parse_voice("espeak-ng:en-gb-x-rp+m3") == ("espeak-ng", "en-gb-x-rp", "m3")
    with pytest.raises(TTSEngineError, match="unknown TTS engine"):
        LocalTTS("festival", "kal").synthesize("hi")
    with pytest.raises(TTSEngineError, match="empty text"):
        LocalTTS("flite", "slt").synthesize("  ")


def test_project_preparers_read_the_corpus(corpus, tmp_path):
    lh = pytest.importorskip("most_speech.data.preparers.libriheavy")
    cv = pytest.importorskip("most_speech.data.preparers.commonvoice")
    root, _ = corpus
    out = lh.prepare_libriheavy(root, tmp_path, splits=["small", "dev", "test_clean"])
    rows = [json.loads(line) for line in out["small"].read_text().splitlines()]
    cuts = read_cuts(root, "small")
    assert [r["text"] for r in rows] == [c["supervisions"][0]["custom"]["texts"][0] for c in cuts]
    assert [(r["start"], r["duration"]) for r in rows] == [(c["start"], c["duration"]) for c in cuts]
    out = cv.prepare_commonvoice(root / "commonvoice", "en", tmp_path)
    rows = [json.loads(line) for line in out["test"].read_text().splitlines()]
    assert len(rows) == 2 and all(r["duration"] > 0.8 for r in rows)


@pytest.mark.slow
def test_process_pool_gives_the_same_corpus(corpus, tmp_path):
    root, _ = corpus
    mc.make_mini_corpus(tmp_path / "pool", seed=3, **{**TINY, "jobs": 2})
    assert file_digests(tmp_path / "pool") == file_digests(root)
