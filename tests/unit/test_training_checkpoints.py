"""AtomicCheckpointer: atomic appearance, verification, fallback to the previous good checkpoint."""
import random

import numpy as np
import pytest
import torch

from most_speech.training.checkpoints import (AtomicCheckpointer, CheckpointError, RNGState, add_torch_recoverables,
                                              latest_checkpoint, verify_checkpoint)


def _model(seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))


def _ckpter(folder, model, opt=None):
    ck = AtomicCheckpointer(folder)
    add_torch_recoverables(ck, model, opt)
    return ck


def test_roundtrip_model_and_optimizer(tmp_path):
    model = _model(0)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(3, 4)).pow(2).mean().backward()
    opt.step()
    _ckpter(tmp_path, model, opt).save_checkpoint(meta={"step": 1})
    fresh = _model(1)
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=0.1)
    ckpt = _ckpter(tmp_path, fresh, fresh_opt).recover_if_possible()
    assert ckpt.meta["step"] == 1
    for a, b in zip(model.parameters(), fresh.parameters()):
        assert torch.equal(a, b)
    assert torch.equal(opt.state_dict()["state"][0]["exp_avg"], fresh_opt.state_dict()["state"][0]["exp_avg"])
    assert (ckpt.path / "model.ckpt").read_bytes()[:8] != b"PK\x03\x04\x00\x00\x08\x08"  # not a torch zip


@pytest.mark.parametrize("damage", ["truncate", "delete", "flip"])
def test_damaged_newest_checkpoint_falls_back_to_previous(tmp_path, damage, caplog):
    model = _model(0)
    ck = _ckpter(tmp_path, model)
    ck.save_checkpoint(meta={"step": 1})
    good = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    newest = ck.save_checkpoint(meta={"step": 2})
    target = newest.path / "model.ckpt"
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[:50])
    elif damage == "delete":
        target.unlink()
    else:
        data = bytearray(target.read_bytes())
        data[-1] ^= 0xFF
        target.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="model.ckpt"):
        verify_checkpoint(newest.path)
    fresh = _model(5)
    with caplog.at_level("WARNING"):
        ckpt = _ckpter(tmp_path, fresh).recover_if_possible()
    assert ckpt.meta["step"] == 1
    assert "skipping damaged checkpoint" in caplog.text
    for a, b in zip(good, fresh.parameters()):
        assert torch.equal(a, b)
    assert latest_checkpoint(tmp_path).meta["step"] == 1


def test_interrupted_save_leaves_no_checkpoint(tmp_path):
    model = _model(0)
    ck = _ckpter(tmp_path, model)
    ck.save_checkpoint(meta={"step": 1})

    def crash(obj, path):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise KeyboardInterrupt("killed while saving")

    ck.add_recoverable("extra", object(), custom_save_hook=crash, custom_load_hook=lambda *a: None)
    with pytest.raises(KeyboardInterrupt):
        ck.save_checkpoint(meta={"step": 2})
    steps = [c.meta["step"] for c in ck.list_checkpoints()]
    assert steps == [1]
    assert list(tmp_path.glob(".tmp-CKPT*"))  # the debris is hidden, not a checkpoint
    ck.remove_stale_tmp()
    assert not list(tmp_path.glob(".tmp-CKPT*"))


def test_all_damaged_raises(tmp_path):
    model = _model(0)
    ck = _ckpter(tmp_path, model)
    (ck.save_checkpoint(meta={"step": 1}).path / "model.ckpt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="no usable checkpoint"):
        _ckpter(tmp_path, _model(1)).recover_if_possible()


def test_rng_state_roundtrip(tmp_path):
    rng = RNGState()
    path = tmp_path / "rng.ckpt"
    rng._save(path)
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    random.seed(99), np.random.seed(99), torch.manual_seed(99)
    rng._load(path)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected
