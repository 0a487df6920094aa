"""The mini pipeline end to end (run.sh --mini true, stages 0-11) on a tiny slice of the mini corpus, then
stage 2 (recipes/SmolTalk/run.sh, stages 0-6) from the stage-1 model it trained.

About 30 utterances, a few training steps: the point is that every stage runs, hands the next one what it
needs, skips finished work on a rerun, and that RESULTS.md gets real numbers (not that they are good).
"""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from most_speech.scoring.slm_data import read_audio_pairs

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "recipes" / "LibriHeavy" / "run.sh"
SMOLTALK = ROOT / "recipes" / "SmolTalk" / "run.sh"

pytestmark = pytest.mark.skipif(not (shutil.which("espeak-ng") and shutil.which("flite")),
                                reason="the mini corpus needs espeak-ng and flite")


def _run(tmp: Path, *extra: str, stage: int = 0):
    args = ["bash", str(RUN), "--mini", "true", "--stage", str(stage), "--datadir", str(tmp / "data"),
            "--dumpdir", str(tmp / "dump"), "--expdir", str(tmp / "exp"), "--results", str(tmp / "RESULTS.md"),
            "--mini_num_train", "24", "--mini_num_dev", "4", "--mini_num_test", "4", "--nj", "1",
            "--nclusters", "16", "--vocab_size", "80", "--mini_lm_sentences", "40", "--tts_limit", "2",
            "--slm_num_words", "4", "--judge", "whisper", "--vocoder_args", "--number_of_steps=5",
            "--phonetic_args", "--steps 3 --batch-frames 3000 --targets phonemes --layer 3",
            "--train_args", "--number_of_epochs=1 --steps_per_epoch=3 --warmup_steps=1 --log_interval=1 "
                            "--ckpt_interval_steps=0 --noprogressbar", *extra]
    return subprocess.run(args, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def mini_run(tmp_path_factory):
    """The tiny stage-1 run's folder (data/, dump/, exp/) and its completed process."""
    tmp = tmp_path_factory.mktemp("mini")
    return tmp, _run(tmp)


@pytest.mark.timeout(600)
def test_mini_pipeline_end_to_end(mini_run):
    tmp_path, res = mini_run
    assert res.returncode == 0, res.stderr[-3000:]
    for n in range(12):
        assert f"Stage {n}:" in res.stderr
    exp = tmp_path / "exp" / "mini"
    asr = json.loads((exp / "score" / "asr_test_clean" / "summary.json").read_text())
    assert asr["n_utts"] == 4 and asr["error_rate"] >= 0
    tts = json.loads((exp / "score" / "tts_test_clean" / "summary.json").read_text())
    assert {r["audio"] for r in tts} == {"synthesized", "real (ceiling)"} and all(r["n_utts"] == 2 for r in tts)
    # the mini run's TTS is best of 8, ranked on 8-iteration Griffin-Lim drafts by the model's own joint
    # CTC/attention ASR score plus the phonetic encoder's CTC score
    settings = json.loads((exp / "decode" / "tts_test_clean" / "decoding.json").read_text())
    assert settings["candidates"] == 8 and settings["reranker"] == "self+encoder_ctc"
    assert settings["rerank_ctc_weight"] == 0.7 and settings["draft_griffin_lim_iters"] == 8
    assert not (exp / "decode" / "tts_test_clean_resynth").exists()   # the vocoder's ceiling is opt-in
    # spoken-LM pairs inside the test and dev sentences (one pair per sentence and voice), each spoken by the
    # four held-out voices (run.sh's slm_voices)
    in_context = json.loads((exp / "score" / "slm_swuggy_sentences" / "summary.json").read_text())
    spoken = read_audio_pairs(tmp_path / "data" / "slm_swuggy_sentences" / "pairs.csv")
    split_texts = {s: {json.loads(ln)["text"].lower() for ln in (tmp_path / "data" / f"{s}.jsonl").open()}
                   for s in ("test_clean", "dev")}
    assert all({r["good_text"] for r in spoken} & texts for texts in split_texts.values())   # both splits
    assert in_context["n_pairs"] == len(spoken) >= 16 and 0 <= in_context["accuracy"] <= 100
    assert len(in_context["per_voice"]) == 4
    results = (tmp_path / "RESULTS.md").read_text()
    assert "<!-- begin mini -->" in results and "swuggy_sentences" in results and "test_clean" in results
    assert (tmp_path / "mini_curves.png").is_file()
    assert (exp / "export" / "most.json").is_file()
    info = json.loads((exp / "export" / "most.json").read_text())
    assert info["encoder"]["kind"] == "phonetic" and (exp / "export" / "encoder" / "model.safetensors").is_file()
    assert json.loads((tmp_path / "exp" / "phonetic_encoder" / "valid.json").read_text())["steps"] == 3
    # opt-in: the words alone; only those with a phoneme-matched pseudoword (2 of the 4) make pairs; and the
    # test units voiced by the vocoder
    scored = {d.name: (d / "summary.json").stat().st_mtime_ns for d in (exp / "score").iterdir()}
    isolated = _run(tmp_path, "--evals", "slm resynth", "--stop_stage", "10", stage=9)
    assert isolated.returncode == 0, isolated.stderr[-3000:]
    resynth = json.loads((exp / "score" / "tts_test_clean_resynth" / "summary.json").read_text())
    assert [(r["audio"], r["n_utts"]) for r in resynth] == [("synthesized", 2)]
    # stages 9-10 decode and score only what --evals names: the earlier scores are left as they were
    assert {d: (exp / "score" / d / "summary.json").stat().st_mtime_ns for d in scored} == scored
    slm = json.loads((exp / "score" / "slm_swuggy" / "summary.json").read_text())
    words = (tmp_path / "data" / "slm_swuggy" / "words.txt").read_text().split()
    pairs = read_audio_pairs(tmp_path / "data" / "slm_swuggy" / "pairs.csv")
    assert len(words) == 4 and {r["good_text"] for r in pairs} == {"driver", "loudly"}
    assert slm["n_pairs"] == len(pairs) == 8 and set(slm["per_voice"]) == set(in_context["per_voice"])
    assert all(v["n"] == 2 for v in slm["per_voice"].values())
    # a rerun of the data stages finds them done and redoes nothing
    again = _run(tmp_path, "--stop_stage", "7")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "generating the mini corpus" not in again.stderr and "dumping" not in again.stderr


@pytest.mark.timeout(600)
def test_smoltalk_stage2_from_the_mini_model(mini_run):
    stage1, res = mini_run
    assert res.returncode == 0, res.stderr[-3000:]
    tmp = stage1 / "stage2"
    dialogues = tmp / "dialogues.jsonl"
    subprocess.run([sys.executable, "-m", "most_speech.recipes.mini", "dialogues", "--num", "12",
                    "--out", str(dialogues)], check=True, capture_output=True)
    questions = tmp / "webq.json"
    questions.write_text(json.dumps([{"qId": "q1", "qText": "what is the capital of france?", "answers": ["Paris"]},
                                     {"qId": "q2", "qText": "who wrote hamlet?", "answers": ["Shakespeare"]}]))
    args = ["bash", str(SMOLTALK), "--smoltalk_dir", str(dialogues), "--stage1_recipe", str(stage1),
            "--stage1_tag", "mini", "--stage1_data_root", str(stage1 / "data" / "mini_corpus"),
            "--encoder", "phonetic", "--dev_dialogues", "4", "--datadir", str(tmp / "data"),
            "--dumpdir", str(tmp / "dump"), "--expdir", str(tmp / "exp"), "--questions", str(questions),
            "--qa_limit", "2", "--dev_qa_limit", "3",
            "--train_args", "--engine=torch --number_of_epochs=1 --steps_per_epoch=2 --warmup_steps=1 "
                            "--max_tokens=1024 --grad_accumulation_factor=1 --gradient_checkpointing=False "
                            "--pad_to_multiple_of=8 --noprogressbar"]
    stage2 = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert stage2.returncode == 0, stage2.stderr[-3000:]
    for n in range(7):
        assert f"Stage {n}:" in stage2.stderr
    exp = tmp / "exp" / "stage2"
    dev = [json.loads(line) for line in (tmp / "data" / "tasks" / "speech_instruction_dev.jsonl").open()]
    assert len(dev) == 4 and all(Path(r["audio"]).is_file() and r["answer"] for r in dev)
    webq = json.loads((exp / "score" / "qa_webq" / "summary.json").read_text())
    assert webq["n_questions"] == 2 and webq["missing_outputs"] == []
    # --dev_qa_limit 3: the first 3 held-out spoken instructions answered and scored against their answers
    dev_qa = json.loads((exp / "score" / "qa_dev" / "summary.json").read_text())
    assert dev_qa["n_questions"] == 3 and dev_qa["missing_outputs"] == []
    answers = [json.loads(line) for line in (exp / "score" / "qa_dev" / "answers.jsonl").open()]
    assert [a["id"] for a in answers] == [r["id"] for r in dev[:3]]
    assert (exp / "export" / "most.json").is_file() and (exp / "train" / "model" / "config.json").is_file()
