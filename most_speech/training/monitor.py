"""Training metrics: loss per task, aux loss, learning rate, tokens/s and expert balance per modality.

Scalars go to TensorBoard (``<output_folder>/tb``), optionally to Weights & Biases, and as text lines to
``<output_folder>/train_log.txt`` (SpeechBrain's ``FileTrainLogger``). Only the main process writes.

Expert balance: the model reports, per MoE layer, how many (token, slot) picks each expert got from tokens
of each modality mark. For modality ``m`` with expert group ``G_m`` the monitor logs, summed over layers
and the logging interval, ``balance/<m>/max_over_mean`` (load of the busiest expert of ``G_m`` over the
group's mean load: 1.0 is perfect balance) and ``balance/<m>/outside_group`` (share of picks that left the
group: must stay 0 with modality-aware routing).
"""
from __future__ import annotations

import logging
import time
from collections import defaultdict
from typing import Dict, List, Mapping, Optional, Sequence

import torch
from speechbrain.utils.distributed import if_main_process

from most_speech.text.token_layout import MODALITY_IDS

logger = logging.getLogger(__name__)


def expert_balance(counts: torch.Tensor, groups: Mapping[int, Sequence[int]]) -> Dict[str, float]:
    """Balance statistics of a ``[num_marks, E]`` routing-count matrix (see the module docstring).

    Examples
    --------
    >>> c = torch.tensor([[3., 1., 0., 0.], [0., 0., 2., 2.]])
    >>> expert_balance(c, {0: [0, 1], 1: [2, 3]})
    {'text/max_over_mean': 1.5, 'text/outside_group': 0.0, 'audio/max_over_mean': 1.0, 'audio/outside_group': 0.0}
    """
    names = {v: k for k, v in MODALITY_IDS.items()}
    out = {}
    for mark, experts in groups.items():
        if mark >= counts.shape[0]:
            continue
        row = counts[mark].double()
        total = float(row.sum())
        if total <= 0:
            continue
        inside = row[list(experts)]
        name = names.get(mark, str(mark))
        out[f"{name}/max_over_mean"] = float(inside.max() / inside.mean()) if float(inside.sum()) > 0 else 0.0
        out[f"{name}/outside_group"] = float(1.0 - inside.sum() / total)
    return out


class TrainingMonitor:
    """Accumulates per-step statistics and writes them every ``log_interval`` optimizer steps.

    Parameters
    ----------
    output_folder : str
        TensorBoard logs go to ``<output_folder>/tb``.
    expert_groups : mapping of int to list of int
        Modality mark -> routed experts (``config.expert_groups_by_mark()``).
    log_interval : int
        Optimizer steps between two writes.
    train_logger : speechbrain FileTrainLogger, optional
        Receives a text line per interval and per epoch.
    use_tensorboard, use_wandb : bool
    wandb_kwargs : dict, optional
        Passed to ``wandb.init``.

    Examples
    --------
    >>> import tempfile
    >>> mon = TrainingMonitor(tempfile.mkdtemp(), {0: [0, 1]}, log_interval=1, use_tensorboard=False)
    >>> mon.record_batch("asr", loss=2.0, lm_loss=1.9, aux_loss=0.1, tokens=10)
    >>> stats = mon.flush(step=1, lr=1e-3); stats["loss/asr"], stats["aux_loss"]
    (2.0, 0.1)
    """

    def __init__(self, output_folder: str, expert_groups: Mapping[int, Sequence[int]], log_interval: int = 10,
                 train_logger=None, use_tensorboard: bool = True, use_wandb: bool = False,
                 wandb_kwargs: Optional[dict] = None):
        self.main = if_main_process()
        self.expert_groups = {int(k): list(v) for k, v in expert_groups.items()}
        self.log_interval = max(1, int(log_interval))
        self.train_logger = train_logger if self.main else None
        self.writer = None
        if use_tensorboard and self.main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=f"{output_folder}/tb")
        self.wandb = None
        if use_wandb and self.main:
            try:
                import wandb
            except ImportError as err:
                raise ImportError("use_wandb: True needs the wandb package (pip install wandb)") from err
            self.wandb = wandb
            wandb.init(dir=output_folder, **(wandb_kwargs or {}))
        self.task_steps: Dict[str, int] = defaultdict(int)
        self._reset()

    def _reset(self) -> None:
        self._loss: Dict[str, List[float]] = defaultdict(list)
        self._aux: List[float] = []
        self._extra: Dict[str, List[float]] = defaultdict(list)
        self._tokens = 0
        self._counts: Optional[torch.Tensor] = None
        self._t0 = time.perf_counter()

    def record_batch(self, task: str, loss: float, lm_loss: float, aux_loss: float, tokens: int,
                     routing_counts: Optional[Sequence[torch.Tensor]] = None,
                     extra_losses: Optional[Mapping[str, Optional[float]]] = None) -> None:
        """Add one trained batch. ``extra_losses``: auxiliary losses by name (``ctc_loss``, ``unit_ctc_loss``,
        ...; None: the batch had none), each averaged over the batches that had it."""
        for name, value in (extra_losses or {}).items():
            if value is not None:
                self._extra[name].append(float(value))
        self.task_steps[task] += 1
        self._loss[task].append(float(loss))
        self._loss["lm/" + task].append(float(lm_loss))
        self._aux.append(float(aux_loss))
        self._tokens += int(tokens)
        if routing_counts:
            total = sum(c.detach().float().cpu() for c in routing_counts)
            self._counts = total if self._counts is None else self._counts + total

    def flush(self, step: int, lr: float, extra: Optional[Mapping[str, float]] = None) -> Dict[str, float]:
        """Compute the interval's statistics, write them, reset; returns them."""
        elapsed = max(time.perf_counter() - self._t0, 1e-9)
        stats = {f"loss/{k}": sum(v) / len(v) for k, v in self._loss.items() if not k.startswith("lm/")}
        stats.update({f"lm_loss/{k[3:]}": sum(v) / len(v) for k, v in self._loss.items() if k.startswith("lm/")})
        if self._aux:
            stats["aux_loss"] = sum(self._aux) / len(self._aux)
        stats.update({name: sum(v) / len(v) for name, v in self._extra.items()})
        stats["lr"] = float(lr)
        stats["tokens_per_s"] = self._tokens / elapsed
        if self._counts is not None:
            stats.update({f"balance/{k}": v for k, v in expert_balance(self._counts, self.expert_groups).items()})
        stats.update(extra or {})
        self.write(stats, step)
        self._reset()
        return stats

    def write(self, stats: Mapping[str, float], step: int, prefix: str = "train") -> None:
        if not self.main:
            return
        if self.writer is not None:
            for k, v in stats.items():
                self.writer.add_scalar(f"{prefix}/{k}", v, step)
            self.writer.flush()
        if self.wandb is not None:
            self.wandb.log({f"{prefix}/{k}": v for k, v in stats.items()}, step=step)
        if self.train_logger is not None:
            # SpeechBrain's logger names each value by the keyword it came in (train_stats -> "train loss")
            split = prefix if prefix in ("train", "valid", "test") else "train"
            self.train_logger.log_stats({"step": step, "stage": prefix},
                                        **{f"{split}_stats": {k: round(float(v), 6) for k, v in stats.items()}})

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.wandb is not None:
            self.wandb.finish()
