"""Modality-aware Mixture-of-Experts (MAMoE): router, routed experts, shared experts, balance loss.

The layer is DeepSeek-V2's MoE block with one change (MoST): every token carries a modality mark, and its router
may only pick experts from that modality's group. State-dict names equal transformers' ``DeepseekV2Moe``
(``gate.weight``, ``experts.gate_up_proj``, ``experts.down_proj``, ``shared_experts.{gate,up,down}_proj.weight``)
so DeepSeek-V2 checkpoints load directly.

Routing (DESIGN §2): fp32 gate logits -> softmax (over all experts, or over the token's group when
``config.group_softmax``) -> out-of-group experts set to ``-inf`` -> top-k (greedy or group-limited greedy) ->
optional renormalisation and ``routed_scaling_factor``.

Dispatch: the (token, slot) pairs are sorted by expert and each expert's contiguous block is multiplied in one
``torch.nn.functional.grouped_mm`` call per projection; nothing on that path waits for the host. Where
``grouped_mm`` has no kernel for the device/dtype (float64, CUDA before SM80, unaligned bf16 shapes) a segment
loop wrapped in one autograd function takes over (see :class:`_SegmentMM`). Inference on CPU with many tokens
(prefill) loops over experts with plain GEMMs instead: no autograd is involved, and it keeps every temporary
small (see :meth:`RoutedExperts._experts_one_by_one`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.activations import ACT2FN

logger = logging.getLogger(__name__)

__all__ = ["MoSTMLP", "ModalityAwareRouter", "RoutedExperts", "MAMoE", "MoEOutput", "balance_loss",
           "modality_group_mask", "grouped_linear"]


# ---------------------------------------------------------------------------------------------------- helpers
def modality_group_mask(config) -> Tensor:
    """``[num_marks, E]`` bool table: ``mask[m, e]`` is True when mark ``m`` may use routed expert ``e``.

    Marks that name no group get an all-False row (they are rejected at run time as unknown marks).

    Examples
    --------
    >>> from most_speech.models.configuration import MoSTConfig
    >>> modality_group_mask(MoSTConfig.tiny()).int().tolist()
    [[1, 1, 1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 1, 1, 1, 1]]
    """
    groups = config.expert_groups_by_mark()
    # Explicit CPU: the model may be built under a meta-device context, and this table is never loaded.
    mask = torch.zeros(max(groups) + 1, config.n_routed_experts, dtype=torch.bool, device="cpu")
    for mark, experts in groups.items():
        mask[mark, experts] = True
    return mask


def _check_marks(marks: Tensor, known: Tensor) -> None:
    """Raise ``ValueError`` when a mark is negative, too large, or names no expert group (one host sync)."""
    bad = (marks < 0) | (marks >= known.numel())
    bad = bad | ~known[marks.clamp(0, known.numel() - 1)]
    if bool(bad.any()):
        unknown = sorted(set(marks[bad].tolist()))
        valid = torch.nonzero(known).flatten().tolist()
        raise ValueError(f"MAMoE: unknown modality mark(s) {unknown} in modality_ids; the config's "
                         f"modality_expert_groups define marks {valid}")


# ---------------------------------------------------------------------------------------------------- dense MLP
class MoSTMLP(nn.Module):
    """Dense SwiGLU MLP ``down(act(gate(x)) * up(x))`` (DeepSeek-V2's dense layers and shared experts).

    Parameters
    ----------
    config : MoSTConfig
        Uses ``hidden_size``, ``intermediate_size``, ``hidden_act`` and ``mlp_bias``.
    intermediate_size : int, optional
        Overrides ``config.intermediate_size`` (shared experts: ``moe_intermediate_size * n_shared_experts``).

    Examples
    --------
    >>> from most_speech.models.configuration import MoSTConfig
    >>> mlp = MoSTMLP(MoSTConfig.tiny(), intermediate_size=16)
    >>> mlp(torch.randn(3, 64)).shape
    torch.Size([3, 64])
    """

    def __init__(self, config, intermediate_size: Optional[int] = None):
        super().__init__()
        hidden = config.hidden_size
        inter = config.intermediate_size if intermediate_size is None else intermediate_size
        bias = bool(getattr(config, "mlp_bias", False))
        self.gate_proj = nn.Linear(hidden, inter, bias=bias)
        self.up_proj = nn.Linear(hidden, inter, bias=bias)
        self.down_proj = nn.Linear(inter, hidden, bias=bias)
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


# ---------------------------------------------------------------------------------------------------- router
class ModalityAwareRouter(nn.Module):
    """DeepSeek-V2 top-k softmax router that only routes a token inside its modality's expert group.

    Parameters
    ----------
    config : MoSTConfig
        Uses ``n_routed_experts``, ``num_experts_per_tok``, ``topk_method``, ``n_group``, ``topk_group``,
        ``norm_topk_prob``, ``routed_scaling_factor``, ``use_modality_aware_routing``, ``group_softmax`` and
        ``modality_expert_groups``.

    Notes
    -----
    Weights follow DeepSeek-V2's original gate: with ``norm_topk_prob`` and ``top_k > 1`` the k weights are
    divided by their sum (+1e-20), otherwise they are multiplied by ``routed_scaling_factor`` (DeepSeek-V2's
    ``if ... norm_topk_prob: normalise else: scale``; released V2 checkpoints use ``norm_topk_prob=False``).
    Out-of-group experts get score ``-inf`` before top-k, so every pick is an expert of the token's own
    modality, with positive weight.

    Examples
    --------
    >>> from most_speech.models.configuration import MoSTConfig
    >>> router = ModalityAwareRouter(MoSTConfig.tiny())
    >>> idx, w, scores = router(torch.randn(5, 64), torch.tensor([0, 1, 1, 0, 1]))
    >>> bool(((idx >= 4) == torch.tensor([0, 1, 1, 0, 1]).bool()[:, None]).all())
    True
    """

    def __init__(self, config):
        super().__init__()
        self.num_experts = config.n_routed_experts
        self.top_k = config.num_experts_per_tok
        self.topk_method = config.topk_method
        self.n_group = config.n_group
        self.topk_group = config.topk_group
        self.norm_topk_prob = bool(config.norm_topk_prob)
        self.routed_scaling_factor = float(config.routed_scaling_factor)
        self.modality_aware = bool(config.use_modality_aware_routing)
        self.group_softmax = bool(config.group_softmax) and self.modality_aware
        self.initializer_range = float(getattr(config, "initializer_range", 0.02))
        self.weight = nn.Parameter(torch.empty(self.num_experts, config.hidden_size))
        # A plain attribute, not a buffer: it is derived from the config, must not enter the state dict, and must
        # survive meta-device construction (a non-persistent buffer created on "meta" is never filled in).
        self._mark_mask_cpu = modality_group_mask(config)
        self._mark_mask_cache: Dict[torch.device, Tensor] = {}
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, std=self.initializer_range)

    @property
    def num_marks(self) -> int:
        return self._mark_mask_cpu.shape[0]

    def mark_mask(self, device: torch.device) -> Tensor:
        """The ``[num_marks, E]`` group table on ``device`` (copied once per device)."""
        if device not in self._mark_mask_cache:
            self._mark_mask_cache[device] = self._mark_mask_cpu.to(device)
        return self._mark_mask_cache[device]

    def check_marks(self, modality_ids: Tensor) -> None:
        """Raise ``ValueError`` naming any mark that has no expert group."""
        _check_marks(modality_ids, self.mark_mask(modality_ids.device).any(1))

    def forward(self, hidden: Tensor, modality_ids: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
        """Route ``hidden [N, H]`` with marks ``modality_ids [N]`` (None: all text).

        Returns
        -------
        topk_idx : Tensor
            ``[N, k]`` long expert indices.
        topk_weight : Tensor
            ``[N, k]`` float32 routing weights.
        scores : Tensor
            ``[N, E]`` float32 routing probabilities (global softmax, or within-group softmax when
            ``group_softmax``), the ``P`` of the balance loss.
        """
        logits = F.linear(hidden.float(), self.weight.float())
        allowed = None
        if self.modality_aware:
            if modality_ids is None:
                modality_ids = torch.zeros(hidden.shape[0], dtype=torch.long, device=hidden.device)
            allowed = self.mark_mask(hidden.device)[modality_ids]
        if self.group_softmax:
            scores = torch.where(allowed, logits, float("-inf")).softmax(dim=-1)
        else:
            scores = logits.softmax(dim=-1, dtype=torch.float32)
        choice = scores if allowed is None else torch.where(allowed, scores, float("-inf"))
        if self.topk_method == "group_limited_greedy":
            topk_weight, topk_idx = self._group_limited_topk(choice)
        else:
            topk_weight, topk_idx = torch.topk(choice, k=self.top_k, dim=-1, sorted=False)
        if self.top_k > 1 and self.norm_topk_prob:
            topk_weight = topk_weight / (topk_weight.sum(dim=-1, keepdim=True) + 1e-20)
        else:
            topk_weight = topk_weight * self.routed_scaling_factor
        return topk_idx, topk_weight, scores

    def _group_limited_topk(self, choice: Tensor) -> Tuple[Tensor, Tensor]:
        """Top-k inside the ``topk_group`` contiguous expert groups with the best (masked) max score.

        When a modality's experts are spread so that a token's best groups hold fewer than k of them, the
        group-limited pick would contain ``-inf`` (out-of-group) entries; such tokens fall back to plain greedy
        top-k within their modality, so the no-out-of-group-pick guarantee holds for every configuration.
        """
        n = choice.shape[0]
        grouped = choice.view(n, self.n_group, self.num_experts // self.n_group)
        best = grouped.max(dim=-1).values.topk(self.topk_group, dim=-1, sorted=False).indices
        keep = torch.zeros(n, self.n_group, dtype=torch.bool, device=choice.device).scatter_(1, best, True)
        limited = grouped.masked_fill(~keep[:, :, None], float("-inf")).view(n, self.num_experts)
        weight, idx = torch.topk(limited, k=self.top_k, dim=-1, sorted=False)
        if self.modality_aware:
            short = torch.isinf(weight).any(dim=-1, keepdim=True)
            greedy_weight, greedy_idx = torch.topk(choice, k=self.top_k, dim=-1, sorted=False)
            weight = torch.where(short, greedy_weight, weight)
            idx = torch.where(short, greedy_idx, idx)
        return weight, idx


# ---------------------------------------------------------------------------------------------------- grouped matmul
_GROUPED_MM_OK: Dict[Tuple[str, torch.dtype], bool] = {}


def _probe_grouped_mm(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether ``F.grouped_mm`` runs forward and backward for this device type and dtype (probed once)."""
    key = (device.type, dtype)
    if key not in _GROUPED_MM_OK:
        ok = hasattr(F, "grouped_mm")
        if ok:
            try:  # the probe must not inherit the caller's no_grad / inference mode
                with torch.inference_mode(False), torch.enable_grad():
                    _try_grouped_mm(device, dtype)
            except (RuntimeError, NotImplementedError, TypeError) as err:
                logger.info("grouped_mm unavailable for %s/%s (%s); using the segment loop", device.type, dtype, err)
                ok = False
        _GROUPED_MM_OK[key] = ok
    return _GROUPED_MM_OK[key]


def _try_grouped_mm(device: torch.device, dtype: torch.dtype) -> None:
    x = torch.randn(16, 16, device=device, dtype=dtype, requires_grad=True)
    w = torch.randn(2, 16, 16, device=device, dtype=dtype, requires_grad=True)
    offs = torch.tensor([8, 16], device=device, dtype=torch.int32)
    y = F.grouped_mm(x, w.transpose(-2, -1), offs=offs)
    torch.autograd.grad(y, (x, w), torch.ones_like(y))


def _grouped_mm_usable(x: Tensor, weight: Tensor) -> bool:
    """grouped_mm needs 16-byte aligned row strides and base pointers (its CPU backward too)."""
    if not _probe_grouped_mm(x.device, x.dtype):
        return False
    size = x.element_size()
    return (all((d * size) % 16 == 0 for d in weight.shape[1:]) and x.data_ptr() % 16 == 0
            and weight.data_ptr() % 16 == 0)


class _SegmentMM(torch.autograd.Function):
    """``x_sorted @ weight[e].T`` per expert segment: the fallback when ``grouped_mm`` has no kernel.

    One autograd node for all experts, so backward writes each expert's slice of ONE weight gradient (indexing
    ``weight[e]`` inside autograd instead would allocate a full ``[E, out, in]`` gradient per expert). It reads
    the offsets on the host once per call, which ``grouped_mm`` avoids.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, offs: Tensor) -> Tensor:
        bounds = [0] + offs.tolist()
        out = x.new_empty(x.shape[0], weight.shape[1])
        for e in range(weight.shape[0]):
            s, t = bounds[e], bounds[e + 1]
            if t > s:
                torch.mm(x[s:t], weight[e].t(), out=out[s:t])
        ctx.save_for_backward(x, weight)
        ctx.bounds = bounds
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        bounds = ctx.bounds
        grad = grad.contiguous()
        grad_x = torch.zeros_like(x) if ctx.needs_input_grad[0] else None
        grad_w = torch.zeros_like(weight) if ctx.needs_input_grad[1] else None
        for e in range(weight.shape[0]):
            s, t = bounds[e], bounds[e + 1]
            if t == s:
                continue
            if grad_x is not None:
                torch.mm(grad[s:t], weight[e], out=grad_x[s:t])
            if grad_w is not None:
                torch.mm(grad[s:t].t(), x[s:t], out=grad_w[e])
        return grad_x, grad_w, None


class _ContiguousGrad(torch.autograd.Function):
    """Identity whose backward makes the incoming gradient dense.

    ``grouped_mm``'s CPU backward rejects zero-stride gradients (``y.sum().backward()`` fails with "Invalid
    strides/sizes", DESIGN §4); routing every grouped product through this keeps any loss working.
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return grad.contiguous()


class _WeightedSwiGLU(torch.autograd.Function):
    """``silu(gate) * up * weight[:, None]`` from the fused ``[S, 2I]`` gate/up product, in one node.

    Hand-written so that backward writes the gate and up gradients straight into one ``[S, 2I]`` tensor (autograd
    of ``split``/``chunk`` would concatenate them: an extra full copy).
    """

    @staticmethod
    def forward(ctx, gate_up: Tensor, weight: Tensor) -> Tensor:
        gate, up = gate_up.chunk(2, dim=-1)
        silu = F.silu(gate)
        ctx.save_for_backward(gate_up, silu, weight)
        return torch.mul(silu, up).mul_(weight[:, None])

    @staticmethod
    def backward(ctx, grad: Tensor):
        gate_up, silu, weight = ctx.saved_tensors
        gate, up = gate_up.chunk(2, dim=-1)
        grad = grad.contiguous()
        grad_weight = torch.mul(silu, up).mul_(grad).sum(-1) if ctx.needs_input_grad[1] else None
        grad_scaled = grad * weight[:, None]
        grad_gate_up = torch.empty_like(gate_up)
        d_gate, d_up = grad_gate_up.chunk(2, dim=-1)
        torch.mul(grad_scaled, silu, out=d_up)
        torch.ops.aten.silu_backward.grad_input(grad_scaled.mul_(up), gate, grad_input=d_gate)
        return grad_gate_up, grad_weight


class _DispatchRows(torch.autograd.Function):
    """``x[token]``: copy each token's row once per (token, slot) pair, in expert-sorted order.

    Written by hand because autograd's backward of an index gather is a scatter-add (``index_add_``), which on
    CPU is a slow serial loop; here it is a gather through the inverse permutation plus a sum over the k slots.
    """

    @staticmethod
    def forward(ctx, x: Tensor, token: Tensor, inverse: Tensor, k: int) -> Tensor:
        ctx.save_for_backward(inverse)
        ctx.k = k
        return x.index_select(0, token)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (inverse,) = ctx.saved_tensors
        return _combine(grad, inverse, ctx.k), None, None, None


class _CombineRows(torch.autograd.Function):
    """``out[t] = sum of the rows of y that belong to token t``: the adjoint of :class:`_DispatchRows`."""

    @staticmethod
    def forward(ctx, y: Tensor, token: Tensor, inverse: Tensor, k: int) -> Tensor:
        ctx.save_for_backward(token)
        return _combine(y, inverse, k)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (token,) = ctx.saved_tensors
        return grad.index_select(0, token), None, None, None


def _combine(y: Tensor, inverse: Tensor, k: int) -> Tensor:
    if k == 1:
        return y.index_select(0, inverse)
    # One [N, H] gather per slot into a reused buffer, then an add: never a [k*N, H] temporary. On CPU a
    # fresh allocation above glibc's mmap threshold (32 MB at most) is page-faulted in on every call, which
    # cost more than the gather itself (bench/moe.py, 2 threads: 14 ms vs 2 ms for 2048 x 6 rows of 1024).
    slots = inverse.view(-1, k).t()
    out = y.index_select(0, slots[0])
    buf = torch.empty_like(out)
    for j in range(1, k):
        out.add_(torch.index_select(y, 0, slots[j], out=buf))
    return out


def grouped_linear(x_sorted: Tensor, weight: Tensor, offs: Tensor) -> Tensor:
    """Per-expert ``nn.Linear`` on expert-sorted rows: rows ``offs[e-1]:offs[e]`` times ``weight[e].T``.

    Parameters
    ----------
    x_sorted : Tensor
        ``[S, in]`` rows sorted by expert.
    weight : Tensor
        ``[E, out, in]`` (``nn.Linear`` layout per expert).
    offs : Tensor
        ``[E]`` int32 cumulative row counts; ``offs[-1] == S``.

    Examples
    --------
    >>> w = torch.randn(2, 3, 4)
    >>> x = torch.randn(5, 4)
    >>> y = grouped_linear(x, w, torch.tensor([2, 5], dtype=torch.int32))
    >>> torch.allclose(y[:2], x[:2] @ w[0].T, atol=1e-6) and torch.allclose(y[2:], x[2:] @ w[1].T, atol=1e-6)
    True
    """
    if _grouped_mm_usable(x_sorted, weight):
        out = F.grouped_mm(x_sorted, weight.transpose(-2, -1), offs=offs)
    else:
        out = _SegmentMM.apply(x_sorted, weight, offs)
    return _ContiguousGrad.apply(out) if out.requires_grad else out


# ---------------------------------------------------------------------------------------------------- routed experts
class RoutedExperts(nn.Module):
    """All routed experts as two fused 3-D weights (transformers' layout) with sort-and-group dispatch.

    Parameters
    ----------
    config : MoSTConfig
        Uses ``n_routed_experts``, ``hidden_size``, ``moe_intermediate_size`` and ``hidden_act``.

    Attributes
    ----------
    gate_up_proj : nn.Parameter
        ``[E, 2I, H]``: rows ``:I`` are each expert's gate projection, rows ``I:`` its up projection.
    down_proj : nn.Parameter
        ``[E, H, I]``.

    Examples
    --------
    >>> from most_speech.models.configuration import MoSTConfig
    >>> experts = RoutedExperts(MoSTConfig.tiny())
    >>> h = torch.randn(4, 64)
    >>> idx = torch.tensor([[0, 1], [1, 2], [5, 7], [0, 7]])
    >>> experts(h, idx, torch.full((4, 2), 0.5)).shape
    torch.Size([4, 64])
    """

    def __init__(self, config):
        super().__init__()
        E, H, I = config.n_routed_experts, config.hidden_size, config.moe_intermediate_size
        self.num_experts, self.hidden_dim, self.intermediate_dim = E, H, I
        self.initializer_range = float(getattr(config, "initializer_range", 0.02))
        self.gate_up_proj = nn.Parameter(torch.empty(E, 2 * I, H))
        self.down_proj = nn.Parameter(torch.empty(E, H, I))
        self.act_fn = ACT2FN[config.hidden_act]
        self.fused_silu = config.hidden_act == "silu"
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.gate_up_proj, std=self.initializer_range)
        nn.init.normal_(self.down_proj, std=self.initializer_range)

    def _compute_dtype(self, hidden: Tensor) -> torch.dtype:
        # grouped_mm is not autocast-aware: follow autocast by hand, else use the weights' dtype.
        if torch.is_autocast_enabled(hidden.device.type):
            return torch.get_autocast_dtype(hidden.device.type)
        return self.gate_up_proj.dtype

    def forward(self, hidden: Tensor, topk_idx: Tensor, topk_weight: Tensor) -> Tensor:
        """``[N, H]`` output ``sum_k topk_weight[:, k] * expert_{topk_idx[:, k]}(hidden)``."""
        n, k = topk_idx.shape
        dtype = self._compute_dtype(hidden)
        sorted_expert, order = torch.sort(topk_idx.reshape(-1), stable=True)
        token = order // k
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(order.numel(), device=order.device)
        # Offsets straight from the sorted ids: no bincount/histc round trip and no host sync.
        offs = torch.searchsorted(sorted_expert, torch.arange(self.num_experts, device=hidden.device),
                                  right=True, out_int32=True)
        # The routing weight is applied before the (linear) down projection: [S, I] is smaller than [S, H].
        weight = topk_weight.reshape(-1)[order].to(dtype)
        if self._loop_experts(hidden, order.numel()):
            return self._experts_one_by_one(hidden.to(dtype), token, weight, offs).to(hidden.dtype)
        x = _DispatchRows.apply(hidden.to(dtype), token, inverse, k)
        gate_up = grouped_linear(x, self.gate_up_proj.to(dtype), offs)
        if self.fused_silu:
            act = _WeightedSwiGLU.apply(gate_up, weight)
        else:
            gate, up = gate_up.chunk(2, dim=-1)
            act = self.act_fn(gate) * up * weight[:, None]
        y = grouped_linear(act, self.down_proj.to(dtype), offs)
        return _CombineRows.apply(y, token, inverse, k).to(hidden.dtype)

    def _loop_experts(self, hidden: Tensor, pairs: int) -> bool:
        needs_grad = torch.is_grad_enabled() and (hidden.requires_grad or self.gate_up_proj.requires_grad)
        return not needs_grad and hidden.device.type == "cpu" and pairs > self.LOOP_ABOVE_PAIRS

    # Inference on CPU with many pairs runs expert by expert with plain GEMMs and scatter-adds each block into
    # the output, so every temporary is one expert's block: small enough to stay below glibc's mmap threshold
    # and be recycled, where the [N*k, H] buffers of the grouped pass are page-faulted in afresh on every call
    # (that cost more than the gathers themselves; bench/moe.py). Offsets on the host cost nothing on CPU, and
    # without autograd indexing one expert's weight is free. Training keeps the grouped pass.
    LOOP_ABOVE_PAIRS = 2048

    def _experts_one_by_one(self, hidden: Tensor, token: Tensor, weight: Tensor, offs: Tensor) -> Tensor:
        I = self.intermediate_dim
        gate_up_w = self.gate_up_proj.to(hidden.dtype)
        down_w = self.down_proj.to(hidden.dtype)
        out = torch.zeros_like(hidden)
        bounds = [0] + offs.tolist()
        for e in range(self.num_experts):
            s, t = bounds[e], bounds[e + 1]
            if t == s:
                continue
            rows = token[s:t]
            gate_up = torch.mm(hidden.index_select(0, rows), gate_up_w[e].t())
            act = self.act_fn(gate_up[:, :I]).mul_(gate_up[:, I:]).mul_(weight[s:t, None])
            out.index_add_(0, rows, torch.mm(act, down_w[e].t()))
        return out


# ---------------------------------------------------------------------------------------------------- balance loss
def balance_loss(scores: Tensor, topk_idx: Tensor, groups: Tensor, group_mask: Tensor, valid: Tensor,
                 batch_size: int, alpha: float, seq_aux: bool) -> Tensor:
    """DeepSeek-V2's expert-balance loss, per modality group, padding excluded (DESIGN §2).

    For group ``m`` with experts ``G_m`` (``E_m`` of them) and its ``N_m`` non-padding tokens:
    ``f_i = E_m / (k N_m) * count_i``, ``P_i = mean(scores_i)``, ``L_m = alpha * sum_{i in G_m} f_i P_i``; with
    ``seq_aux`` the same per sequence, averaged over the sequences holding tokens of ``m``. The result is the mean
    of ``L_m`` over the groups present. No host sync; differentiable through ``scores``.

    Parameters
    ----------
    scores : Tensor
        ``[N, E]`` float32 routing probabilities (``N = batch_size * T``, sequence-major).
    topk_idx : Tensor
        ``[N, k]`` picked experts.
    groups : Tensor
        ``[N]`` long group index of each token (its modality mark; all zeros with routing off).
    group_mask : Tensor
        ``[M, E]`` bool experts of each group.
    valid : Tensor
        ``[N]`` bool, False for padding.
    batch_size : int
        Number of sequences ``B``.
    alpha : float
        ``aux_loss_alpha``.
    seq_aux : bool
        Sequence-level (True) or batch-level loss.

    Examples
    --------
    >>> scores = torch.tensor([[0.5, 0.5], [0.5, 0.5]])
    >>> balance_loss(scores, torch.tensor([[0], [1]]), torch.zeros(2, dtype=torch.long),
    ...              torch.ones(1, 2, dtype=torch.bool), torch.ones(2, dtype=torch.bool), 1, 1.0, False)
    tensor(1.)
    """
    n, k = topk_idx.shape
    M, E = group_mask.shape
    segments = batch_size * M if seq_aux else M
    seg = groups
    if seq_aux:
        seg = torch.arange(n, device=scores.device) // (n // batch_size) * M + groups
    w = valid.to(scores.dtype)
    # Segment sums as a small matmul: index_add_ of [N, E] rows is a slow serial scatter on CPU.
    member = F.one_hot(seg, segments).to(scores.dtype) * w[:, None]
    n_seg = member.sum(0)
    p_sum = member.t() @ scores
    pair = (seg[:, None] * E + topk_idx).reshape(-1)
    counts = scores.new_zeros(segments * E).index_add_(0, pair, w.repeat_interleave(k)).view(segments, E)
    seg_mask = group_mask.repeat(segments // M, 1)
    e_m = seg_mask.sum(1).to(scores.dtype)
    denom = n_seg.clamp_min(1.0)
    f = counts * (e_m / (k * denom))[:, None]
    loss_seg = alpha * (f * (p_sum / denom[:, None]) * seg_mask).sum(1)
    present = (n_seg > 0).to(scores.dtype).view(-1, M)
    loss_m = (loss_seg.view(-1, M) * present).sum(0) / present.sum(0).clamp_min(1.0)
    group_present = (present.sum(0) > 0).to(scores.dtype)
    return (loss_m * group_present).sum() / group_present.sum().clamp_min(1.0)


# ---------------------------------------------------------------------------------------------------- the layer
@dataclass
class MoEOutput:
    """What :class:`MAMoE` returns.

    Attributes
    ----------
    hidden_states : Tensor
        ``[B, T, H]`` layer output.
    aux_loss : Tensor
        Scalar balance loss, already times ``aux_loss_alpha``; a 0.0 tensor in eval mode or when alpha is 0.
    expert_counts : Tensor
        ``[num_marks, E]`` long: (token, slot) picks per expert for each modality mark, non-padding tokens
        only, detached.
    """

    hidden_states: Tensor
    aux_loss: Tensor
    expert_counts: Tensor


class MAMoE(nn.Module):
    """Modality-aware MoE block: ``y = sum_k w_k E_k(h) + shared(h)`` with per-modality routing.

    Parameters
    ----------
    config : MoSTConfig

    Attributes
    ----------
    gate : ModalityAwareRouter
    experts : RoutedExperts
    shared_experts : MoSTMLP
        Intermediate size ``moe_intermediate_size * n_shared_experts``; absent when ``n_shared_experts`` is
        0 or None.
    validate_marks : bool
        Check every call that each mark has an expert group (one host sync). A model that validates its marks
        once per forward may switch this off in its layers.

    Examples
    --------
    >>> from most_speech.models.configuration import MoSTConfig
    >>> moe = MAMoE(MoSTConfig.tiny()).train()
    >>> out = moe(torch.randn(2, 5, 64), modality_ids=torch.randint(0, 2, (2, 5)))
    >>> out.hidden_states.shape, out.aux_loss.shape, out.expert_counts.shape
    (torch.Size([2, 5, 64]), torch.Size([]), torch.Size([2, 8]))
    >>> int(out.expert_counts.sum())  # k=2 picks for each of the 10 tokens
    20
    """

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.top_k = config.num_experts_per_tok
        self.aux_loss_alpha = float(config.aux_loss_alpha)
        self.seq_aux = bool(config.seq_aux)
        self.validate_marks = True
        self.gate = ModalityAwareRouter(config)
        self.experts = RoutedExperts(config)
        if config.n_shared_experts:
            self.shared_experts = MoSTMLP(config, config.moe_intermediate_size * config.n_shared_experts)

    def forward(self, hidden_states: Tensor, modality_ids: Optional[Tensor] = None,
                token_mask: Optional[Tensor] = None) -> MoEOutput:
        """Apply the block to ``hidden_states [B, T, H]``.

        Parameters
        ----------
        hidden_states : Tensor
            ``[B, T, H]``.
        modality_ids : Tensor, optional
            ``[B, T]`` long marks (0 text, 1 audio, ...); None means all text.
        token_mask : Tensor, optional
            ``[B, T]`` bool, False at padding (excluded from the balance loss and the counts).
        """
        B, T, H = hidden_states.shape
        x = hidden_states.reshape(B * T, H)
        marks = self._flat_marks(modality_ids, B, T, x.device)
        topk_idx, topk_weight, scores = self.gate(x, marks)
        y = self.experts(x, topk_idx, topk_weight)
        if hasattr(self, "shared_experts"):
            y = y + self.shared_experts(x)
        valid = (torch.ones(B * T, dtype=torch.bool, device=x.device) if token_mask is None
                 else self._flat_mask(token_mask, B, T))
        return MoEOutput(hidden_states=y.view(B, T, H), aux_loss=self._aux_loss(scores, topk_idx, marks, valid, B),
                         expert_counts=self._expert_counts(topk_idx, marks, valid))

    def _flat_marks(self, modality_ids: Optional[Tensor], B: int, T: int, device) -> Tensor:
        if modality_ids is None:
            return torch.zeros(B * T, dtype=torch.long, device=device)
        if tuple(modality_ids.shape) != (B, T):
            raise ValueError(f"MAMoE: modality_ids has shape {tuple(modality_ids.shape)}, expected {(B, T)}")
        if modality_ids.dtype.is_floating_point or modality_ids.dtype == torch.bool:
            raise ValueError(f"MAMoE: modality_ids must be an integer tensor, got {modality_ids.dtype}")
        marks = modality_ids.reshape(-1).long()
        if self.validate_marks:
            self.gate.check_marks(marks)
        return marks

    @staticmethod
    def _flat_mask(token_mask: Tensor, B: int, T: int) -> Tensor:
        if tuple(token_mask.shape) != (B, T):
            raise ValueError(f"MAMoE: token_mask has shape {tuple(token_mask.shape)}, expected {(B, T)}")
        return token_mask.reshape(-1).bool()

    def _aux_loss(self, scores: Tensor, topk_idx: Tensor, marks: Tensor, valid: Tensor, B: int) -> Tensor:
        if not self.training or self.aux_loss_alpha <= 0:
            return scores.new_zeros(())
        if self.gate.modality_aware:
            groups, group_mask = marks, self.gate.mark_mask(scores.device)
        else:
            groups = torch.zeros_like(marks)
            group_mask = torch.ones(1, self.gate.num_experts, dtype=torch.bool, device=scores.device)
        return balance_loss(scores, topk_idx, groups, group_mask, valid, B, self.aux_loss_alpha, self.seq_aux)

    @torch.no_grad()
    def _expert_counts(self, topk_idx: Tensor, marks: Tensor, valid: Tensor) -> Tensor:
        E, M = self.gate.num_experts, self.gate.num_marks
        pair = (marks.clamp(0, M - 1)[:, None] * E + topk_idx).reshape(-1)
        ones = valid.long().repeat_interleave(self.top_k)
        return torch.zeros(M * E, dtype=torch.long, device=topk_idx.device).index_add_(0, pair, ones).view(M, E)
