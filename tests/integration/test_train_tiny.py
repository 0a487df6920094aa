"""End-to-end training of the tiny recipe config on a generated corpus (CPU)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from most_speech.training.run import main
from most_speech.training.synthetic import make_synthetic_corpus

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "LibriHeavy"
TINY = RECIPE / "hparams" / "tiny.yaml"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_synthetic_corpus(tmp_path_factory.mktemp("corpus"), num_utterances=48, valid_utterances=6)


def _args(corpus, out, *extra):
    return [str(TINY), f"--output_folder={out}", f"--tokenizer_dir={corpus['tokenizer_dir']}",
            f"--data_folder={corpus['data_folder']}", "--device=cpu", "--noprogressbar", *extra]


def _scalars(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder)).Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tiny_training_loss_falls_and_logs(corpus, tmp_path):
    valid = {t: {"manifest": str(corpus[f"valid_{t}.jsonl"])} for t in ("asr", "tts", "text_lm")}
    brain = main(_args(corpus, tmp_path, "--steps_per_epoch=20", "--number_of_epochs=2", "--log_interval=5",
                       "--ckpt_interval_steps=0", f"--valid_tasks={json.dumps(valid)}"))
    scalars = _scalars(tmp_path / "tb")
    for tag in ("train/loss/asr", "train/loss/tts", "train/loss/text_lm", "train/aux_loss", "train/lr",
                "train/tokens_per_s", "train/balance/text/max_over_mean", "train/balance/audio/max_over_mean",
                "valid/loss/asr", "valid/loss/tts", "valid/loss/text_lm"):
        assert tag in scalars, tag
    assert all(v == 0.0 for _, v in scalars["train/balance/audio/outside_group"])
    for task in ("asr", "tts"):
        curve = [v for _, v in scalars[f"train/loss/{task}"]]
        assert curve[-1] < curve[0] - 0.2, (task, curve)
    first_valid, last_valid = (v for _, v in scalars["valid/loss"])
    assert last_valid < first_valid
    assert all(v > 0 for _, v in scalars["train/aux_loss"])
    # per-task step counts are what the mixed stream scheduled, in the configured proportions
    steps = dict(brain.monitor.task_steps)
    assert steps == brain.stream.counts(40)
    assert sum(steps.values()) == 40 and steps["text_lm"] < steps["asr"]
    assert "loss/asr" in (tmp_path / "train_log.txt").read_text()
    from transformers import AutoModelForCausalLM

    exported = AutoModelForCausalLM.from_pretrained(str(tmp_path / "model"))
    assert exported.config.km_tag == "synthetic-lexicon-km"  # the units' k-means tag travels with the model
    # so do the templates' settings, for most-export to decode the way training built examples
    template = json.loads((tmp_path / "model" / "template.json").read_text())
    assert template["dedup_target_units"] is True and template["speech_input"] == "units"
    assert template["tts_instruction"] == "Convert the following text into speech."
    for (name, a), b in zip(brain.model.state_dict().items(), exported.state_dict().values()):
        assert torch.equal(a, b), name


def test_bad_data_stops_before_the_first_step(corpus, tmp_path):
    bad = tmp_path / "tts_bad.jsonl"
    lines = Path(corpus["tts.jsonl"]).read_text().splitlines()
    entry = json.loads(lines[0])
    entry.update(id="oob", units=[1, 2, 999])
    bad.write_text("\n".join(lines + [json.dumps(entry)]) + "\n")
    tasks = {"tts": {"manifest": str(bad), "weight": 1.0}}
    with pytest.raises(ValueError, match="oob"):
        main(_args(corpus, tmp_path / "strict", f"--tasks={json.dumps(tasks)}"))
    assert not list((tmp_path / "strict" / "save").glob("CKPT*"))
    brain = main(_args(corpus, tmp_path / "lenient", f"--tasks={json.dumps(tasks)}", "--skip_bad=True",
                       "--steps_per_epoch=2", "--number_of_epochs=1"))
    assert brain.optimizer_step == 2
    logged = [json.loads(x) for x in (tmp_path / "lenient" / "bad_items.jsonl").read_text().splitlines()]
    assert [x["id"] for x in logged] == ["oob"] and "999" in logged[0]["reason"]


def _intra_epoch_checkpoint(save, min_step):
    for meta_file in save.glob("CKPT+*/CKPT.yaml"):
        meta = yaml.safe_load(meta_file.read_text())
        if meta.get("brain_intra_epoch_ckpt") and meta.get("step", 0) >= min_step:
            return meta["step"]
    return None


def _same_weights(folder_a, folder_b):
    a = load_file(str(folder_a / "model" / "model.safetensors"))
    b = load_file(str(folder_b / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_stopped_run_resumes_to_the_same_weights(corpus, tmp_path):
    common = ("--steps_per_epoch=5", "--number_of_epochs=2", "--log_interval=100", "--ckpt_interval_steps=0")
    stopped = main(_args(corpus, tmp_path / "a", *common, "--optimizer_step_limit=7"))
    assert stopped.optimizer_step == 7 and stopped.stream.step == 7
    resumed = main(_args(corpus, tmp_path / "a", *common))
    assert resumed.optimizer_step == 10 and sum(resumed.monitor.task_steps.values()) == 3
    main(_args(corpus, tmp_path / "b", *common))
    _same_weights(tmp_path / "a", tmp_path / "b")


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(corpus, tmp_path):
    common = ("--steps_per_epoch=8", "--number_of_epochs=2", "--ckpt_interval_steps=3", "--log_interval=100")
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, str(RECIPE / "train.py"), *_args(corpus, killed, *common)],
                            cwd=RECIPE, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        step = None
        while step is None and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
            step = _intra_epoch_checkpoint(killed / "save", min_step=3)
        assert step is not None, "no mid-epoch checkpoint appeared before the run ended"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "model").exists()
    resumed = main(_args(corpus, killed, *common))
    assert resumed.optimizer_step == 16
    assert 0 < sum(resumed.monitor.task_steps.values()) < 16  # only the rest was trained
    main(_args(corpus, tmp_path / "straight", *common))
    _same_weights(killed, tmp_path / "straight")
