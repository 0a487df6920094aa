"""The tiny recipe through the DeepSpeed engine: ZeRO-2, bf16, gradient accumulation, checkpoint resume.

CPU runs use gloo in one process with DeepSpeed's shared-memory op disabled (``deepspeed_shm_comm: False``)
and a torch AdamW client optimizer, so nothing is JIT-compiled. The GPU variant is the documented command::

    cd recipes/LibriHeavy
    deepspeed --num_gpus=1 train.py hparams/tiny.yaml --engine=deepspeed --device=cuda:0 \\
        --deepspeed_precision=bf16 --output_folder=exp/tiny_ds --tokenizer_dir=... --data_folder=...
"""
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from most_speech.training.synthetic import make_synthetic_corpus

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "LibriHeavy"
TINY = RECIPE / "hparams" / "tiny.yaml"
DS_CONFIG = RECIPE / "hparams" / "deepspeed_zero2.json"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_synthetic_corpus(tmp_path_factory.mktemp("corpus"), num_utterances=24)


def _args(corpus, out, *extra, device="cpu"):
    return [str(TINY), f"--output_folder={out}", f"--tokenizer_dir={corpus['tokenizer_dir']}",
            f"--data_folder={corpus['data_folder']}", f"--device={device}", "--noprogressbar", "--engine=deepspeed",
            f"--deepspeed_config={DS_CONFIG}", "--deepspeed_precision=bf16", "--log_interval=1",
            "--ckpt_interval_steps=0", "--steps_per_epoch=4", "--grad_accumulation_factor=2", *extra]


@pytest.fixture
def single_process_env(monkeypatch):
    for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1"),
                       ("MASTER_PORT", str(_free_port()))):
        monkeypatch.setenv(key, value)
    yield
    import deepspeed.comm

    if torch.distributed.is_initialized():
        deepspeed.comm.destroy_process_group()


def test_deepspeed_zero2_bf16_trains_and_resumes_on_cpu(corpus, tmp_path, single_process_env):
    from most_speech.training.run import main

    brain = main(_args(corpus, tmp_path, "--number_of_epochs=1"))
    engine = brain.engine.engine
    assert brain.engine.name == "deepspeed"
    assert engine.zero_optimization_stage() == 2 and engine.bfloat16_enabled()
    assert engine.gradient_accumulation_steps() == 2
    assert brain.optimizer_step == 2 and brain.stream.step == 4
    assert isinstance(engine.optimizer.optimizer, torch.optim.AdamW)  # client optimizer, no FusedAdam build
    weights_before = {k: v.clone() for k, v in brain.model.state_dict().items()}
    ckpts = list((tmp_path / "save").glob("CKPT+*/deepspeed.ckpt/state/*optim_states.pt"))
    assert ckpts, "DeepSpeed optimizer state missing from the checkpoint"
    assert (tmp_path / "model" / "model.safetensors").is_file()

    resumed = main(_args(corpus, tmp_path, "--number_of_epochs=2"))
    assert resumed.optimizer_step == 4 and resumed.stream.step == 8
    assert sum(resumed.monitor.task_steps.values()) == 4  # only epoch 2 was trained
    changed = [k for k, v in resumed.model.state_dict().items() if not torch.equal(v, weights_before[k])]
    assert changed  # training continued from the restored weights
    assert all(torch.isfinite(v.float()).all() for v in resumed.model.state_dict().values())


@pytest.mark.slow
def test_deepspeed_launcher_one_process_cpu(corpus, tmp_path):
    """The real launcher path: ``deepspeed`` CLI spawning one gloo process on CPU."""
    launcher = Path(sys.executable).with_name("deepspeed")
    if not launcher.exists():
        pytest.skip("deepspeed launcher not on PATH")
    env = {**os.environ, "DS_ACCELERATOR": "cpu"}
    cmd = [str(launcher), "--num_nodes=1", "--num_gpus=1", f"--master_port={_free_port()}", "train.py",
           *_args(corpus, tmp_path, "--number_of_epochs=1")]
    result = subprocess.run(cmd, cwd=RECIPE, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (tmp_path / "model" / "model.safetensors").is_file()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_deepspeed_zero2_bf16_on_gpu(corpus, tmp_path):
    cmd = ["deepspeed", "--num_gpus=1", f"--master_port={_free_port()}", "train.py",
           *_args(corpus, tmp_path, "--number_of_epochs=1", device="cuda:0")]
    result = subprocess.run(cmd, cwd=RECIPE, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (tmp_path / "model" / "model.safetensors").is_file()
