"""The mini pipeline end to end (run.sh --mini true, stages 0-11) on a tiny slice of the mini corpus.

About 30 utterances, a few training steps: the point is that every stage runs, hands the next one what it
needs, skips finished work on a rerun, and that RESULTS.md gets real numbers (not that they are good).
"""
import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "recipes" / "LibriHeavy" / "run.sh"

pytestmark = pytest.mark.skipif(not (shutil.which("espeak-ng") and shutil.which("flite")),
                                reason="the mini corpus needs espeak-ng and flite")


def _run(tmp: Path, *extra: str, stage: int = 0):
    args = ["bash", str(RUN), "--mini", "true", "--stage", str(stage), "--datadir", str(tmp / "data"),
            "--dumpdir", str(tmp / "dump"), "--expdir", str(tmp / "exp"), "--results", str(tmp / "RESULTS.md"),
            "--mini_num_train", "24", "--mini_num_dev", "4", "--mini_num_test", "4", "--nj", "1",
            "--nclusters", "16", "--vocab_size", "80", "--mini_lm_sentences", "40", "--tts_limit", "2",
            "--slm_num_words", "4", "--judge", "pocketsphinx", "--vocoder_args", "--number_of_steps=5",
            "--phonetic_args", "--steps 3 --batch-frames 3000 --targets phonemes --layer 3",
            "--train_args", "--number_of_epochs=1 --steps_per_epoch=3 --warmup_steps=1 --log_interval=1 "
                            "--ckpt_interval_steps=0 --noprogressbar", *extra]
    return subprocess.run(args, capture_output=True, text=True, timeout=600)


@pytest.mark.timeout(600)
def test_mini_pipeline_end_to_end(tmp_path):
    res = _run(tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    for n in range(12):
        assert f"Stage {n}:" in res.stderr
    exp = tmp_path / "exp" / "mini"
    asr = json.loads((exp / "score" / "asr_test_clean" / "summary.json").read_text())
    assert asr["n_utts"] == 4 and asr["error_rate"] >= 0
    tts = json.loads((exp / "score" / "tts_test_clean" / "summary.json").read_text())
    assert {r["audio"] for r in tts} == {"synthesized", "real (ceiling)"} and all(r["n_utts"] == 2 for r in tts)
    # the mini run's TTS is best of 4, ranked by the model's own joint CTC/attention ASR score
    settings = json.loads((exp / "decode" / "tts_test_clean" / "decoding.json").read_text())
    assert settings["candidates"] == 4 and settings["rerank_ctc_weight"] == 0.7
    slm = json.loads((exp / "score" / "slm_swuggy" / "summary.json").read_text())
    # every word pair is spoken by each of the four held-out voices (run.sh's slm_voices)
    assert slm["n_pairs"] == 16 and 0 <= slm["accuracy"] <= 100
    assert len(slm["per_voice"]) == 4 and all(v["n"] == 4 for v in slm["per_voice"].values())
    results = (tmp_path / "RESULTS.md").read_text()
    assert "<!-- begin mini -->" in results and "swuggy" in results and "test_clean" in results
    assert (tmp_path / "mini_curves.png").is_file()
    assert (exp / "export" / "most.json").is_file()
    info = json.loads((exp / "export" / "most.json").read_text())
    assert info["encoder"]["kind"] == "phonetic" and (exp / "export" / "encoder" / "model.safetensors").is_file()
    assert json.loads((tmp_path / "exp" / "phonetic_encoder" / "valid.json").read_text())["steps"] == 3
    # opt-in: the pseudowords inside the test sentences (one pair per sentence and voice)
    sentences = _run(tmp_path, "--evals", "slm_sentences", "--stop_stage", "10", stage=9)
    assert sentences.returncode == 0, sentences.stderr[-3000:]
    in_context = json.loads((exp / "score" / "slm_swuggy_sentences" / "summary.json").read_text())
    assert in_context["n_pairs"] == 16 and set(in_context["per_voice"]) == set(slm["per_voice"])
    # a rerun of the data stages finds them done and redoes nothing
    again = _run(tmp_path, "--stop_stage", "7")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "generating the mini corpus" not in again.stderr and "dumping" not in again.stderr
