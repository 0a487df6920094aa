"""Training engines: what turns a loss into an optimizer step.

SpeechBrain 1.1.2's ``Brain`` knows single-device, DataParallel and DDP training but not DeepSpeed, so the
trainer delegates ``backward`` / ``step`` and checkpoint state to an engine:

:class:`TorchEngine`
    Plain PyTorch (single device, or DDP through ``torchrun`` — the Brain wraps the model in DDP and skips
    gradient sync on accumulation micro-steps). Gradient clipping, an optional fp16 ``GradScaler``,
    skipping of non-finite steps, LR schedule step.
:class:`DeepSpeedEngine`
    ``deepspeed.initialize`` with a ZeRO config file (ZeRO-2 by default), our torch AdamW as client
    optimizer (no FusedAdam JIT build) and our LR schedule; DeepSpeed does bf16, gradient accumulation,
    clipping and the schedule step. Launch with the ``deepspeed`` launcher or ``torchrun``; on CPU it runs
    with gloo and ``deepspeed_shm_comm: False`` skips the JIT build of DeepSpeed's shared-memory op.
"""
from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Optional

import torch

from most_speech.training.checkpoints import add_torch_recoverables

logger = logging.getLogger(__name__)


class TorchEngine:
    """Optimizer step for single-device and DDP training.

    Parameters
    ----------
    model : torch.nn.Module
    optimizer : torch.optim.Optimizer
    scheduler : LR scheduler, optional (stepped once per optimizer step)
    max_grad_norm : float
        Gradient clipping norm (MoST: 1.0); ``0`` or ``None`` disables clipping.
    scaler : torch.GradScaler, optional
        For fp16 training.

    Examples
    --------
    >>> model = torch.nn.Linear(2, 1)
    >>> engine = TorchEngine(model, torch.optim.SGD(model.parameters(), lr=0.1))
    >>> engine.backward(model(torch.ones(1, 2)).sum())
    >>> engine.step() > 0
    True
    """

    name = "torch"
    accumulates_internally = False

    def __init__(self, model, optimizer, scheduler=None, max_grad_norm: Optional[float] = 1.0, scaler=None):
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.max_grad_norm = max_grad_norm
        self.scaler = scaler if scaler is not None and scaler.is_enabled() else None
        self.skipped_steps = 0

    @property
    def module(self) -> torch.nn.Module:
        """The bare model (no DDP wrapper)."""
        return getattr(self.model, "module", self.model)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def _params(self):
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    def step(self) -> float:
        """Clip, step optimizer and schedule, zero gradients; returns the gradient norm (before clipping).

        A step whose gradient norm is not finite is skipped (and counted in ``skipped_steps``).
        """
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        max_norm = self.max_grad_norm if self.max_grad_norm else float("inf")
        norm = float(torch.nn.utils.clip_grad_norm_(self._params(), max_norm))
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        elif math.isfinite(norm):
            self.optimizer.step()
        if not math.isfinite(norm):
            self.skipped_steps += 1
            logger.warning("non-finite gradient norm (%s): optimizer step skipped", norm)
        if self.scheduler is not None:
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def register(self, checkpointer) -> None:
        """Add model (safetensors), optimizer and scheduler to a checkpointer."""
        add_torch_recoverables(checkpointer, self.module, self.optimizer, self.scheduler)
        if self.scaler is not None:
            checkpointer.add_recoverable("scaler", self.scaler, optional_load=True)


def disable_deepspeed_shm_comm() -> None:
    """Keep DeepSpeed from JIT-building its CPU shared-memory collective op (~60 s on first use).

    ``deepspeed.comm`` builds the op only when ``deepspeed.ops.__compatible_ops__`` marks it compatible; that
    dict is computed once and cached in the module (edits persist by design), so marking the op incompatible
    makes the torch backend fall back to plain gloo collectives.
    """
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def init_deepspeed_distributed(dist_backend: Optional[str] = None, shm_comm: bool = False) -> None:
    """Initialise ``deepspeed.comm`` (once): gloo on CPU, nccl on GPUs; single-process defaults for the
    ``RANK`` / ``LOCAL_RANK`` / ``WORLD_SIZE`` / ``MASTER_ADDR`` / ``MASTER_PORT`` variables a launcher sets."""
    import deepspeed

    if not shm_comm:
        disable_deepspeed_shm_comm()
    for var, default in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1"),
                         ("MASTER_PORT", "29500")):
        os.environ.setdefault(var, default)
    if dist_backend is None:
        dist_backend = "nccl" if torch.cuda.is_available() else "gloo"
    if not (deepspeed.comm.is_initialized() and torch.distributed.is_initialized()):
        deepspeed.init_distributed(dist_backend=dist_backend)


def load_deepspeed_config(config, grad_accumulation: int, max_grad_norm: Optional[float],
                          precision: Optional[str] = None) -> dict:
    """Read a DeepSpeed JSON config (path or dict) and make it agree with the trainer's settings.

    One trainer batch is one DeepSpeed micro-batch, so ``train_micro_batch_size_per_gpu`` is 1 and
    ``gradient_accumulation_steps`` the trainer's; ``gradient_clipping`` follows ``max_grad_norm``;
    ``precision`` ("bf16" / "fp16" / "fp32") overrides the file's mixed-precision sections.

    Examples
    --------
    >>> cfg = load_deepspeed_config({"zero_optimization": {"stage": 2}}, 4, 1.0, "bf16")
    >>> cfg["gradient_accumulation_steps"], cfg["bf16"], cfg["zero_optimization"]["stage"]
    (4, {'enabled': True}, 2)
    """
    if not isinstance(config, dict):
        path = Path(config)
        try:
            config = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"cannot read DeepSpeed config {path}: {err}") from err
    cfg = dict(config)
    cfg.pop("train_batch_size", None)
    cfg["train_micro_batch_size_per_gpu"] = 1
    cfg["gradient_accumulation_steps"] = int(grad_accumulation)
    cfg["gradient_clipping"] = float(max_grad_norm or 0.0)
    cfg.setdefault("zero_allow_untested_optimizer", True)
    cfg.setdefault("steps_per_print", 10 ** 9)
    if precision is not None:
        cfg["bf16"] = {"enabled": precision == "bf16"}
        cfg["fp16"] = {**cfg.get("fp16", {}), "enabled": precision == "fp16"}
        if precision != "fp16":
            cfg.pop("fp16")
    return cfg


class DeepSpeedEngine:
    """DeepSpeed training engine (ZeRO 0-3, bf16, accumulation, clipping) around our optimizer and schedule.

    Parameters
    ----------
    model : torch.nn.Module
    optimizer : torch.optim.Optimizer
        A torch optimizer (client optimizer; DeepSpeed wraps it for ZeRO).
    scheduler : LR scheduler, optional
        Stepped by DeepSpeed at accumulation boundaries.
    config : dict
        DeepSpeed config (see :func:`load_deepspeed_config`).
    dist_backend : str, optional
        ``gloo`` on CPU, ``nccl`` on GPUs (default: by device).
    shm_comm : bool
        Allow DeepSpeed's shared-memory CPU collectives (JIT-built on first use).
    """

    name = "deepspeed"
    accumulates_internally = True

    def __init__(self, model, optimizer, scheduler, config: dict, dist_backend: Optional[str] = None,
                 shm_comm: bool = False):
        import deepspeed

        init_deepspeed_distributed(dist_backend, shm_comm)
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=config)
        self.config = config
        self.skipped_steps = 0

    @property
    def model(self):
        return self.engine

    @property
    def module(self) -> torch.nn.Module:
        return self.engine.module

    def backward(self, loss: torch.Tensor) -> None:
        """DeepSpeed scales by the accumulation steps itself: pass the unscaled micro-batch loss."""
        self.engine.backward(loss)

    def at_boundary(self) -> bool:
        """Whether the coming ``step()`` completes an accumulation cycle (an optimizer update)."""
        return bool(self.engine.is_gradient_accumulation_boundary())

    def step(self) -> float:
        """Call after every micro-batch; DeepSpeed updates (and clips, and steps the schedule) at boundaries."""
        self.engine.step()
        norm = self.engine.get_global_grad_norm()
        return float(norm) if norm is not None else float("nan")

    def zero_grad(self) -> None:
        self.engine.zero_grad()

    def lr(self) -> float:
        return float(self.engine.get_lr()[0])

    def register(self, checkpointer) -> None:
        """Model, optimizer and schedule go into one DeepSpeed checkpoint folder inside each checkpoint.

        DeepSpeed reads its own files with ``torch.load(weights_only=False)``: resume only from checkpoints
        this training wrote (their SHA-256 sums are verified before loading).
        """
        checkpointer.add_recoverable("deepspeed", self, custom_save_hook=_ds_save, custom_load_hook=_ds_load)


def _ds_save(engine: DeepSpeedEngine, path) -> None:
    engine.engine.save_checkpoint(str(path), tag="state", save_latest=False)


def _ds_load(engine: DeepSpeedEngine, path, end_of_epoch=False) -> None:
    del end_of_epoch
    load_path, _ = engine.engine.load_checkpoint(str(path), tag="state", load_optimizer_states=True,
                                                 load_lr_scheduler_states=True)
    if load_path is None:
        raise RuntimeError(f"DeepSpeed could not load its checkpoint from {path}")
