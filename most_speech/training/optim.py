"""AdamW with MoST's settings and a warmup + cosine / linear / constant learning-rate schedule.

The schedules are transformers' (``get_cosine_with_min_lr_schedule_with_warmup``,
``get_linear_schedule_with_warmup``, ``get_constant_schedule_with_warmup``): ``LambdaLR`` objects whose state
dicts hold only numbers, so they checkpoint with ``torch.save`` and load with ``weights_only=True``.
"""
from __future__ import annotations

from typing import Iterable, List, Sequence

import torch
from transformers import (get_constant_schedule_with_warmup, get_cosine_with_min_lr_schedule_with_warmup,
                          get_linear_schedule_with_warmup)

SCHEDULES = ("cosine", "linear", "constant")


def param_groups(model: torch.nn.Module, weight_decay: float) -> List[dict]:
    """Trainable parameters split into a decayed group (matrices) and an undecayed one (norms, biases).

    Examples
    --------
    >>> groups = param_groups(torch.nn.Linear(3, 2), weight_decay=0.1)
    >>> [len(g["params"]) for g in groups], [g["weight_decay"] for g in groups]
    ([1, 1], [0.1, 0.0])
    """
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_adamw(model: torch.nn.Module, lr: float, betas: Sequence[float] = (0.9, 0.95),
                weight_decay: float = 0.1, eps: float = 1e-8) -> torch.optim.AdamW:
    """``torch.optim.AdamW`` over the trainable parameters (MoST: betas 0.9 / 0.95).

    Examples
    --------
    >>> opt = build_adamw(torch.nn.Linear(3, 2), lr=1e-3)
    >>> opt.defaults["betas"]
    (0.9, 0.95)
    """
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=tuple(betas), eps=eps)


def build_schedule(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0,
                   decay: str = "cosine", min_lr_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup over ``warmup_steps`` optimizer steps, then ``decay`` until ``total_steps``.

    Parameters
    ----------
    optimizer : torch.optim.Optimizer
    total_steps : int
        Optimizer steps of the whole run (the schedule's end).
    warmup_steps : int
    decay : {"cosine", "linear", "constant"}
    min_lr_ratio : float
        Cosine floor as a fraction of the peak learning rate.

    Examples
    --------
    >>> opt = torch.optim.AdamW(torch.nn.Linear(2, 2).parameters(), lr=1.0)
    >>> sched = build_schedule(opt, total_steps=10, warmup_steps=2, decay="linear")
    >>> lrs = [sched.get_last_lr()[0]] + [(opt.step(), sched.step(), sched.get_last_lr()[0])[2] for _ in range(3)]
    >>> [round(x, 3) for x in lrs]
    [0.0, 0.5, 1.0, 0.875]
    """
    if decay not in SCHEDULES:
        raise ValueError(f"lr decay {decay!r} unknown; use one of {SCHEDULES}")
    if total_steps <= 0 or not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"need 0 <= warmup_steps ({warmup_steps}) <= total_steps ({total_steps}) and "
                         f"total_steps > 0")
    if decay == "cosine":
        return get_cosine_with_min_lr_schedule_with_warmup(optimizer, warmup_steps, total_steps,
                                                           min_lr_rate=min_lr_ratio)
    if decay == "linear":
        return get_linear_schedule_with_warmup(optimizer, warmup_steps, total_steps)
    return get_constant_schedule_with_warmup(optimizer, warmup_steps)


def trainable_parameters(modules: Iterable[torch.nn.Module]) -> List[torch.nn.Parameter]:
    """Parameters with ``requires_grad`` of several modules, without duplicates."""
    seen, out = set(), []
    for m in modules:
        for p in m.parameters():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                out.append(p)
    return out
