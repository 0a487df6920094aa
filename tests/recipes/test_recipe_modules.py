"""most_speech.recipes: task manifests, mini-grammar text, TTS-eval manifest, SmolTalk data, RESULTS.md."""
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from most_speech.audio.store import FeatureWriter, UnitWriter
from most_speech.data.mini_corpus import split_of
from most_speech.recipes import mini, report, smoltalk, tasks, tts_eval
from most_speech.text.normalize import number_to_words


def _jsonl(path: Path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _read(path: Path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture()
def prepared(tmp_path):
    """Train/dev manifests, a unit store and a feature store keyed by id (one train id lacks features)."""
    rng = np.random.default_rng(0)
    words = "the red cat sees a big dog near blue house".split()
    rows = {s: [{"id": f"{s}-{i}", "audio": f"{{data_root}}/{s}{i}.flac", "duration": 1.0,
                 "text": " ".join(rng.choice(words, 4))} for i in range(n)] for s, n in (("train", 12), ("dev", 3))}
    _jsonl(tmp_path / "train.jsonl", rows["train"])
    _jsonl(tmp_path / "dev.jsonl", rows["dev"])
    with UnitWriter(tmp_path / "units.jsonl", "fbank-km16-test") as w:
        for r in rows["train"] + rows["dev"]:
            w.write(r["id"], rng.integers(0, 16, 20))
    (tmp_path / "feats").mkdir()
    with FeatureWriter(tmp_path / "feats" / "feats.0-of-1") as w:
        for r in rows["train"][1:] + rows["dev"]:
            w.write(r["id"], rng.standard_normal((37, 8)).astype(np.float32))
    return tmp_path


def test_task_manifests_join_units_and_frames_by_id(prepared, tmp_path):
    lm = tmp_path / "lm.txt"
    lm.write_text("a cat near the house\nthe dog sees a cat\n")
    paths = tasks.write_task_manifests(tmp_path / "tasks", prepared / "train.jsonl", prepared / "units.jsonl",
                                       tmp_path / "tok", prepared / "dev.jsonl", prepared / "feats",
                                       frame_stack=4, lm_text=lm, vocab_size=30, num_units=16)
    assert sorted(paths) == sorted(f"{t}_{s}" for t in ("asr", "tts", "text_lm", "speech_lm")
                                for s in ("train", "dev"))
    asr = _read(paths["asr_train"])
    units = {r["id"]: r["units"] for r in _read(prepared / "units.jsonl")}
    assert [r["id"] for r in asr] == [f"train-{i}" for i in range(1, 12)]  # train-0 has no features
    assert all(r["num_frames"] == 10 and r["units"] == units[r["id"]] and r["km_tag"] == "fbank-km16-test"
               for r in asr)  # ceil(37 / 4)
    tts = _read(paths["tts_train"])
    assert set(tts[0]) == {"id", "text", "units", "km_tag"}
    assert _read(paths["speech_lm_train"]) == [{k: r[k] for k in ("id", "units", "km_tag")} for r in tts]
    assert [r["text"] for r in _read(paths["text_lm_train"])][-2:] == ["a cat near the house", "the dog sees a cat"]
    assert len(_read(paths["asr_dev"])) == 3
    stats = json.loads((tmp_path / "tasks" / "stats.json").read_text())
    assert stats["num_units"] == 16 and stats["asr_train"] == 11
    # the trained tokenizer is reused, and one with too few unit tokens is refused
    tok = tasks.ensure_tokenizer(tmp_path / "tok", [], vocab_size=30, num_units=16)
    assert tok.layout.num_units == 16
    with pytest.raises(ValueError, match="unit tokens"):
        tasks.ensure_tokenizer(tmp_path / "tok", [], vocab_size=30, num_units=32)


def test_task_manifests_fail_when_no_ids_match(prepared, tmp_path):
    _jsonl(tmp_path / "other.jsonl", [{"id": "zzz", "text": "x y", "audio": "a.wav"}])
    with pytest.raises(ValueError, match="asr_train"):
        tasks.write_task_manifests(tmp_path / "t", tmp_path / "other.jsonl", prepared / "units.jsonl",
                                   tmp_path / "tok", vocab_size=30, num_units=16)


def test_mini_text_never_leaks_dev_or_test_sentences():
    sentences = mini.lm_sentences(300, seed=3)
    assert len(set(sentences)) == 300 and {split_of(s) for s in sentences} == {"train"}
    words = mini.vocabulary_words(min_len=5)
    assert words == sorted(words) and all(len(w) >= 5 for w in words)


def test_mini_dialogues_are_smoltalk_rows_with_checkable_answers(tmp_path):
    from most_speech.data.preparers.smoltalk import prepare_smoltalk

    mini.main(["dialogues", "--num", "20", "--out", str(tmp_path / "st.jsonl")])
    rows = _read(tmp_path / "st.jsonl")
    assert len(rows) == 20
    for row in rows:
        question, answer = (m["content"] for m in row["messages"])
        sentence = question.split(" IN ", 1)[1] if question.startswith("HOW MANY") else question.split("SENTENCE ")[1]
        assert split_of(sentence) == "train"
        if question.startswith("HOW MANY"):
            assert answer == f"THERE ARE {number_to_words(len(sentence.split())).upper()} WORDS"
        else:
            assert answer == sentence.split()[-1]
    prepare_smoltalk(tmp_path / "st.jsonl", tmp_path / "prepared", split="train")
    assert len(_read(next((tmp_path / "prepared").glob("*.jsonl")))) == 20


def test_tts_eval_cuts_real_segments(tmp_path):
    sr = 16000
    long = np.concatenate([np.zeros(sr, np.float32), 0.5 * np.ones(sr, np.float32)])
    sf.write(tmp_path / "rec.wav", long, sr)
    _jsonl(tmp_path / "test.jsonl", [{"id": "u1", "audio": "{data_root}/rec.wav", "start": 1.0, "duration": 0.5,
                                      "text": "hi"}])
    _jsonl(tmp_path / "synth.jsonl", [{"id": "u1", "audio": "/x/u1.wav", "text": "hi"}])
    out = tts_eval.intelligibility_manifest(tmp_path / "synth.jsonl", tmp_path / "test.jsonl", tmp_path / "clips",
                                            tmp_path / "intel.jsonl", data_root=str(tmp_path))
    row = _read(out)[0]
    clip, clip_sr = sf.read(row["real_audio"])
    assert clip_sr == sr and len(clip) == sr // 2 and np.allclose(clip, 0.5, atol=1e-3)
    _jsonl(tmp_path / "synth.jsonl", [{"id": "nope", "audio": "/x/n.wav", "text": "hi"}])
    with pytest.raises(KeyError, match="nope"):
        tts_eval.intelligibility_manifest(tmp_path / "synth.jsonl", tmp_path / "test.jsonl", tmp_path / "c",
                                          tmp_path / "i.jsonl", data_root=str(tmp_path))


def test_smoltalk_speech_instructions(tmp_path, monkeypatch):
    def fake_synth(texts, paths, voice, tts_export):
        for t, p in zip(texts, paths):
            sf.write(p, np.zeros(160 * len(t), np.float32), 16000)
    monkeypatch.setattr(smoltalk, "_synthesize", fake_synth)
    dialogues = [
        {"id": "d1", "messages": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi there?"},
                                  {"role": "assistant", "content": "Hello!"}]},
        {"id": "d2", "messages": [{"role": "user", "content": " ".join(["word"] * 50)},
                                  {"role": "assistant", "content": "Too long to speak."}]},
    ]
    _jsonl(tmp_path / "st.jsonl", dialogues)
    paths = smoltalk.build(tmp_path / "st.jsonl", tmp_path / "tasks", "train", tmp_path / "wav", "espeak-ng:en-us",
                           max_words=40)
    speech = _read(paths["speech_instruction"])
    assert [(e["id"], e["answer"], e["output"]) for e in speech] == [("d1", "Hello!", "text")]
    assert speech[0]["duration"] == pytest.approx(160 * len("Hi there?") / 16000)
    assert [e["id"] for e in _read(paths["text_instruction"])] == ["d1", "d2"]


def _tb(folder: Path, series):
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(folder)) as w:
        for tag, values in series.items():
            for step, v in values:
                w.add_scalar(tag, v, step)


def test_results_section_tables_curves_and_sections(tmp_path):
    exp = tmp_path / "exp"
    _tb(exp / "train" / "tb", {"train/loss/asr": [(10, 3.0), (20, 1.5)], "valid/loss/asr": [(20, 1.7)],
                               "train/lr": [(10, 1e-3), (20, 5e-4)]})
    (exp / "score" / "asr_test").mkdir(parents=True)
    (exp / "score" / "asr_test" / "summary.json").write_text(json.dumps(
        {"error_rate": 12.5, "n_utts": 4, "sub": 1, "del": 0, "ins": 0, "sentence_error_rate": 25.0}))
    (exp / "decode" / "asr_test").mkdir(parents=True)  # written by most-decode asr
    (exp / "decode" / "asr_test" / "decoding.json").write_text(json.dumps({"beam_size": 4, "ctc_weight": 0.3}))
    (exp / "score" / "slm_swuggy").mkdir(parents=True)
    (exp / "score" / "slm_swuggy" / "summary.json").write_text(json.dumps(
        {"n_pairs": 10, "accuracy": 70.0, "ci95": [39.7, 89.2], "length_baseline": 55.0,
         "vs_length_baseline": {"model_only": 4, "baseline_only": 2, "p": 0.6875},
         "equal_length": {"n_pairs": 3, "accuracy": 66.67, "ci95": [20.77, 93.85]},
         "per_voice": {"flite:awb": {"n": 5, "accuracy": 80.0}, "espeak-ng:en-us+m6": {"n": 5, "accuracy": 60.0}}}))
    (exp / "timings.tsv").write_text("8\t100\ttrain\n9\t20\tdecode\n8\t90\ttrain\n")
    for name, rows in {"tts_test": [("synthesized", 80.0), ("real (ceiling)", 30.0)],
                       "tts_test_resynth": [("synthesized", 60.0)]}.items():
        (exp / "score" / name).mkdir(parents=True)
        (exp / "score" / name / "summary.json").write_text(json.dumps(
            [{"judge": "whisper", "audio": a, "n_utts": 4, "wer": w, "cer": w / 2} for a, w in rows]))
    md = tmp_path / "RESULTS.md"
    md.write_text("# Results\n\nhand-written notes stay\n")
    report.main(["results", "--exp", str(exp), "--results", str(md), "--section", "mini"])
    text = md.read_text()
    assert "hand-written notes stay" in text and "| test | beam 4 + CTC 0.3 | 4 | **12.50** |" in text
    assert "| swuggy | 10 | **70.00** | 39.70 - 89.20 | awb 80.0 · en-us+m6 60.0 | 55.00 | 4 / 2 (p = 0.69) " \
           "| 66.67 [20.8-93.8] of 3 | 50.00 |" in text
    assert "| test | whisper | synthesized | 4 | **80.00** |" in text
    assert "| test | whisper | real (ceiling) | 4 | **30.00** |" in text
    assert "| test | whisper | resynthesized from real units (vocoder ceiling) | 4 | **60.00** |" in text
    assert "| train/loss/asr | 1.500 | 20 |" in text and "| | total | 120 |" in text
    assert (tmp_path / "mini_curves.png").stat().st_size > 1000
    report.update_section(md, "mini", "replaced")
    report.update_section(md, "other", "second")
    text = md.read_text()
    assert text.count("<!-- begin mini -->") == 1 and "replaced" in text and "12.50" not in text
    assert text.index("replaced") < text.index("second")


def test_read_scalars_keeps_tensorboard_info_out_of_the_log(tmp_path, caplog):
    _tb(tmp_path / "tb", {"train/loss/asr": [(10, 3.0), (20, 1.5)]})
    with caplog.at_level(logging.INFO):
        assert report.read_scalars(tmp_path / "tb") == {"train/loss/asr": [(10, 3.0), (20, 1.5)]}
    assert not [r for r in caplog.records if r.name.startswith("tensorboard") and r.levelno < logging.WARNING]
    assert logging.getLogger("tensorboard").level == logging.NOTSET  # restored


def _ablation_run(run, wer, acc, asr_loss=2.0, seed=None):
    _tb(run / "train" / "tb", {"train/loss/asr": [(10, asr_loss)], "valid/loss/tts": [(10, 3.25)]})
    if seed is not None:  # as SpeechBrain saves the hparams, overrides applied and tags kept
        (run / "train" / "hyperparams.yaml").write_text(
            f"# seeded run\nseed: {seed}   # the default\n__set_seed: !apply:torch.manual_seed [!ref <seed>]\n"
            "sub:\n  seed: 7\n")
    (run / "score" / "asr_test").mkdir(parents=True)
    (run / "score" / "asr_test" / "summary.json").write_text(json.dumps({"error_rate": wer}))
    if acc is not None:
        (run / "score" / "slm_swuggy").mkdir(parents=True)
        (run / "score" / "slm_swuggy" / "summary.json").write_text(json.dumps(
            {"n_pairs": 100, "accuracy": acc, "ci95": [51.2, 70.1]}))
    return run


def test_ablation_section_one_row_per_run(tmp_path):
    runs = [("dense", _ablation_run(tmp_path / "dense", 40.0, 61.0)),
            ("mamoe", _ablation_run(tmp_path / "mamoe", 35.5, None))]
    rows = [r for r in report.ablation_section(runs).splitlines() if r.startswith("| dense") or
            r.startswith("| mamoe")]
    assert len(rows) == 2
    assert rows[0].split(" | ")[1:2] + rows[0].split(" | ")[4:] == [
        "1", "2.000 / - / -", "- / 3.250 / -", "40.00", "-", "61.00 [51.2-70.1] |"]
    assert rows[1].endswith("| 35.50 | - | - |")


def test_ablation_section_averages_the_seeds_of_a_run(tmp_path):
    runs = [("moe", _ablation_run(tmp_path / f"moe{k}", wer, acc, loss))
            for k, (wer, acc, loss) in enumerate([(30.0, 55.0, 2.0), (34.0, 59.0, 2.5), (38.0, 57.0, 3.0)])]
    runs.append(("dense", _ablation_run(tmp_path / "dense", 28.0, 56.0)))
    table = report.ablation_section(runs).splitlines()
    moe = next(r for r in table if r.startswith("| moe"))
    # means and sample standard deviations over the 3 seeds; no CI for a mean
    assert moe.split(" | ")[1] == "3" and "2.500 ± 0.500 / - / -" in moe
    assert moe.endswith("| 34.00 ± 4.00 | - | 57.00 ± 2.00 |")
    # no seed recorded in these runs: no per-seed table
    assert [r.split(" | ")[0] for r in table if r.startswith("| ") and "---" not in r][1:] == ["| moe", "| dense"]


def test_ablation_section_lists_each_seed_in_its_column(tmp_path):
    runs = [("moe", _ablation_run(tmp_path / f"moe{seed}", wer, acc, seed=seed))
            for seed, wer, acc in [(1987, 34.0, 59.0), (1986, 30.0, 55.0)]]
    runs.append(("dense", _ablation_run(tmp_path / "dense", 28.0, None, seed=1986)))
    table = report.ablation_section(runs).splitlines()
    assert "| run | seed 1986 | seed 1987 |" in table
    assert "| moe | 30.00 / 55.00 | 34.00 / 59.00 |" in table
    assert "| dense | 28.00 / - | - |" in table
    # one folder per name: no per-seed table
    assert not any("seed 1986" in r for r in report.ablation_section(runs[2:]).splitlines())
