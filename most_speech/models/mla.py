"""Multi-head latent attention (MLA, DeepSeek-V2) with YaRN RoPE and an absorbed latent-cache decode.

Parameter names and numerics follow transformers' ``DeepseekV2Attention`` so DeepSeek-V2 checkpoints load
unchanged, and the cache holds exactly what transformers stores: the normalised KV latent and the rotated shared
rope key, one "head" each. What differs is how the attention is computed:

* **Prefill** (nothing cached yet): the latent is expanded to per-head keys/values with ``kv_b_proj`` and fed to
  ``F.scaled_dot_product_attention``. Values are zero-padded to the q/k head dim, because SDPA's fused CPU kernel
  needs equal head dims (about 3-4x faster at 2048 tokens than its fallback, see ``bench/attention.py``).
* **Decode / continuation** (the cache already holds tokens): the up-projections are folded into the query and
  the output as in DeepSeek's inference code, so attention runs directly against the cached latent: a single
  shared key/value head, no re-expansion of the cache. transformers re-expands the whole cache every step.

Why not transformers' class: it has no absorbed decode path, and its SDPA call misses the fused CPU kernel
because value and key head dims differ.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from transformers.cache_utils import Cache
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
from transformers.models.deepseek_v2.modeling_deepseek_v2 import DeepseekV2RotaryEmbedding, yarn_apply_mscale

# RoPE variants whose frequencies change with the sequence length at run time; not supported here.
_DYNAMIC_ROPE_TYPES = ("dynamic", "longrope")


class MoSTRMSNorm(nn.Module):
    """RMS normalisation computed in fp32, then cast back before the weight (as ``DeepseekV2RMSNorm``).

    ``torch.nn.RMSNorm`` computes in the input dtype, which drifts from DeepSeek checkpoints in bf16; this
    module keeps DeepSeek's order of operations.

    Parameters
    ----------
    hidden_size : int
        Size of the last dimension (the weight has this shape).
    eps : float
        Added to the mean square before the reciprocal square root.

    Examples
    --------
    >>> norm = MoSTRMSNorm(8)
    >>> norm(torch.randn(2, 3, 8)).shape
    torch.Size([2, 3, 8])
    """

    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        normed = F.rms_norm(hidden_states.float(), (hidden_states.shape[-1],), eps=self.variance_epsilon)
        return self.weight * normed.to(hidden_states.dtype)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.variance_epsilon}"


def _rope_inv_freq(config) -> Tuple[torch.Tensor, float]:
    """Inverse frequencies and cos/sin multiplier from transformers' RoPE initialisers."""
    params = config.rope_parameters or {"rope_type": "default", "rope_theta": 10000.0}
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type in _DYNAMIC_ROPE_TYPES:
        raise ValueError(f"MoSTRotaryEmbedding: rope_parameters['rope_type']={rope_type!r} is not supported "
                         f"(use 'default', 'yarn' or another static type)")
    if rope_type == "default":
        return DeepseekV2RotaryEmbedding.compute_default_rope_parameters(config)
    if rope_type not in ROPE_INIT_FUNCTIONS:
        raise ValueError(f"MoSTRotaryEmbedding: unknown rope_parameters['rope_type']={rope_type!r}; "
                         f"known: default, {', '.join(sorted(ROPE_INIT_FUNCTIONS))}")
    return ROPE_INIT_FUNCTIONS[rope_type](config)


class MoSTRotaryEmbedding(nn.Module):
    """Rotary position embedding over the ``qk_rope_head_dim`` dims, with transformers' frequencies.

    Frequencies (default or YaRN: factor, original context, ``beta_fast``/``beta_slow``, ``mscale`` /
    ``mscale_all_dim``) come from transformers' RoPE initialisers, so they equal ``DeepseekV2RotaryEmbedding``.
    Instead of a complex tensor the forward returns real ``cos`` and ``sin``, already multiplied by the YaRN
    attention scaling (1.0 for DeepSeek-V2-Lite, where ``mscale == mscale_all_dim``).

    Parameters
    ----------
    config : MoSTConfig or DeepseekV2Config
        Uses ``rope_parameters``, ``qk_rope_head_dim`` and ``max_position_embeddings``.

    Examples
    --------
    >>> from most_speech.models.configuration import MoSTConfig
    >>> rope = MoSTRotaryEmbedding(MoSTConfig.tiny())
    >>> cos, sin = rope(torch.zeros(1), torch.arange(5)[None])
    >>> cos.shape
    torch.Size([1, 5, 4])
    """

    def __init__(self, config) -> None:
        super().__init__()
        inv_freq, self.attention_scaling = _rope_inv_freq(config)
        if inv_freq.numel() * 2 != config.qk_rope_head_dim:
            raise ValueError(f"MoSTRotaryEmbedding: RoPE covers {inv_freq.numel() * 2} dims but "
                             f"qk_rope_head_dim={config.qk_rope_head_dim} (check head_dim / partial_rotary_factor)")
        self.register_buffer("inv_freq", inv_freq.float(), persistent=False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Return ``(cos, sin)``, each ``[B, T, rope_dim // 2]`` fp32; ``x`` only gives the device."""
        if position_ids.dim() != 2:
            raise ValueError(f"MoSTRotaryEmbedding: position_ids must be [batch, seq], got {tuple(position_ids.shape)}")
        freqs = position_ids[..., None].float() * self.inv_freq.to(device=x.device)
        return freqs.cos() * self.attention_scaling, freqs.sin() * self.attention_scaling


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent pairs ``(x[2i], x[2i+1])`` by the angles behind ``cos``/``sin``.

    This is transformers' complex-pair rotation (``apply_rotary_emb``) in real arithmetic, and equivalent to
    DeepSeek's original de-interleave + ``rotate_half``: the output is elementwise equal to transformers' (so the
    cache matches theirs) and gives DeepSeek's ``q . k``. Computed in fp32, returned in ``x``'s dtype.

    Parameters
    ----------
    x : Tensor
        ``[B, heads, T, rope_dim]``.
    cos, sin : Tensor
        ``[B, T, rope_dim // 2]`` from :class:`MoSTRotaryEmbedding`.

    Examples
    --------
    >>> x = torch.randn(1, 2, 3, 4)
    >>> cos, sin = torch.ones(1, 3, 2), torch.zeros(1, 3, 2)
    >>> torch.equal(apply_rope(x, cos, sin), x)
    True
    """
    if x.shape[-1] != 2 * cos.shape[-1] or x.shape[-2] != cos.shape[-2]:
        raise ValueError(f"apply_rope: x {tuple(x.shape)} does not fit cos/sin {tuple(cos.shape)} "
                         f"(need x[..., T, 2*D] with cos[B, T, D])")
    x0, x1 = x.float().unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2).type_as(x)


def _offset_causal_mask(q_len: int, k_len: int, device) -> torch.Tensor:
    """``[1, 1, q_len, k_len]`` bool: query i (absolute position k_len - q_len + i) sees keys up to itself."""
    return torch.ones(q_len, k_len, dtype=torch.bool, device=device).tril(k_len - q_len)[None, None]


def _unmask_empty_rows(mask: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Open fully masked rows of a bool mask (SDPA gives NaN there); return the rows to zero afterwards."""
    has_key = mask.any(dim=-1, keepdim=True)
    if bool(has_key.all()):
        return mask, None
    return mask | ~has_key, ~has_key


class MLAAttention(nn.Module):
    """DeepSeek-V2 multi-head latent attention with a compressed-latent cache.

    Parameters
    ----------
    config : MoSTConfig or DeepseekV2Config
        Uses ``hidden_size``, ``num_attention_heads``, ``q_lora_rank``, ``kv_lora_rank``, ``qk_nope_head_dim``,
        ``qk_rope_head_dim``, ``v_head_dim``, ``attention_bias``, ``attention_dropout``, ``rope_parameters``.
    layer_idx : int
        Index of this layer in the cache.

    Attributes
    ----------
    scaling : float
        Softmax scale, ``q_head_dim ** -0.5`` times YaRN's ``mscale ** 2`` (as transformers).
    pad_v_for_sdpa : bool
        Zero-pad V to the q/k head dim in prefill so SDPA can use its fused kernel (default True).
    record_heads : int
        In training, a prefill keeps the first ``record_heads`` heads' queries and keys and the mask in
        ``recorded`` (0, the default: nothing kept); :mod:`~most_speech.models.tts_alignment` reads them.

    Examples
    --------
    >>> from most_speech.models.configuration import MoSTConfig
    >>> from transformers import DynamicCache
    >>> cfg = MoSTConfig.tiny()
    >>> attn, rope = MLAAttention(cfg, layer_idx=0), MoSTRotaryEmbedding(cfg)
    >>> x, cache = torch.randn(1, 5, cfg.hidden_size), DynamicCache()
    >>> attn(x, rope(x, torch.arange(5)[None]), past_key_values=cache).shape
    torch.Size([1, 5, 64])
    >>> cache.layers[0].keys.shape  # the latent, not per-head keys
    torch.Size([1, 1, 5, 32])
    """

    def __init__(self, config, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.q_lora_rank = config.q_lora_rank
        self.kv_lora_rank = config.kv_lora_rank
        self.qk_nope_head_dim = config.qk_nope_head_dim
        self.qk_rope_head_dim = config.qk_rope_head_dim
        self.v_head_dim = config.v_head_dim
        self.qk_head_dim = self.qk_nope_head_dim + self.qk_rope_head_dim
        self.attention_dropout = float(config.attention_dropout or 0.0)
        self.pad_v_for_sdpa = True
        # Heads whose queries/keys a training prefill keeps in ``recorded`` (the TTS alignment prior reads them).
        self.record_heads = 0
        self.recorded: Optional[Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]] = None
        self._build_projections(config)
        rope_parameters = config.rope_parameters or {"rope_type": "default"}
        self.scaling = yarn_apply_mscale(rope_parameters, self.qk_head_dim ** -0.5)

    def _build_projections(self, config) -> None:
        hidden, heads, bias = config.hidden_size, self.num_heads, config.attention_bias
        if self.q_lora_rank is None:
            self.q_proj = nn.Linear(hidden, heads * self.qk_head_dim, bias=False)
        else:
            self.q_a_proj = nn.Linear(hidden, self.q_lora_rank, bias=bias)
            self.q_a_layernorm = MoSTRMSNorm(self.q_lora_rank)
            self.q_b_proj = nn.Linear(self.q_lora_rank, heads * self.qk_head_dim, bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(hidden, self.kv_lora_rank + self.qk_rope_head_dim, bias=bias)
        self.kv_a_layernorm = MoSTRMSNorm(self.kv_lora_rank)
        self.kv_b_proj = nn.Linear(self.kv_lora_rank, heads * (self.qk_nope_head_dim + self.v_head_dim), bias=False)
        self.o_proj = nn.Linear(heads * self.v_head_dim, hidden, bias=bias)

    # ------------------------------------------------------------------ forward
    def forward(self, hidden_states: torch.Tensor, position_embeddings: Tuple[torch.Tensor, torch.Tensor],
                attention_mask: Optional[torch.Tensor] = None, past_key_values: Optional[Cache] = None,
                **kwargs) -> torch.Tensor:
        """Attend ``hidden_states`` ``[B, T, H]`` to the cache plus itself; return ``[B, T, H]``.

        ``attention_mask`` is None (causal, queries at the end of the keys) or ``[B, 1, T, S]`` (bool, True =
        attend; or additive float), ``S`` = cached + new tokens. Fully masked rows give zeros.
        """
        batch, q_len, _ = hidden_states.shape
        cos, sin = position_embeddings
        q_nope, q_pe = self._queries(hidden_states)
        latent, k_pe = self._latents(hidden_states)
        q_pe, k_pe = apply_rope(q_pe, cos, sin), apply_rope(k_pe, cos, sin)
        past_len = 0
        if past_key_values is not None:
            past_len = past_key_values.get_seq_length(self.layer_idx)
            latent, k_pe = past_key_values.update(latent, k_pe, self.layer_idx)
        self._check_mask(attention_mask, batch, q_len, latent.shape[2])
        if past_len == 0:
            out = self._attend_expanded(q_nope, q_pe, latent, k_pe, attention_mask)
        else:
            out = self._attend_absorbed(q_nope, q_pe, latent, k_pe, attention_mask)
        return self.o_proj(out.transpose(1, 2).reshape(batch, q_len, self.num_heads * self.v_head_dim))

    def _queries(self, hidden_states: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``q_nope [B, h, T, nope]`` and un-rotated ``q_pe [B, h, T, rope]``."""
        if self.q_lora_rank is None:
            q = self.q_proj(hidden_states)
        else:
            q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(hidden_states)))
        q = q.unflatten(-1, (self.num_heads, self.qk_head_dim)).transpose(1, 2)
        return q.split([self.qk_nope_head_dim, self.qk_rope_head_dim], dim=-1)

    def _latents(self, hidden_states: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Normalised KV latent ``[B, 1, T, rank]`` and un-rotated shared key ``[B, 1, T, rope]``."""
        latent, k_pe = self.kv_a_proj_with_mqa(hidden_states).split([self.kv_lora_rank, self.qk_rope_head_dim], -1)
        return self.kv_a_layernorm(latent).unsqueeze(1), k_pe.unsqueeze(1)

    def _check_mask(self, mask: Optional[torch.Tensor], batch: int, q_len: int, k_len: int) -> None:
        if mask is None:
            return
        if mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[2] != q_len or mask.shape[3] != k_len \
                or mask.shape[0] not in (1, batch):
            raise ValueError(f"MLAAttention layer {self.layer_idx}: attention_mask has shape {tuple(mask.shape)}, "
                             f"expected [{batch}, 1, {q_len}, {k_len}] (batch, 1, new tokens, cached + new tokens)")

    def _dropout_p(self) -> float:
        return self.attention_dropout if self.training else 0.0

    def _sdpa(self, q, k, v, mask, is_causal: bool = False) -> torch.Tensor:
        """SDPA with a bool/float mask; fully masked bool rows come out as zeros instead of NaN."""
        empty_rows = None
        if mask is not None and mask.dtype == torch.bool:
            mask, empty_rows = _unmask_empty_rows(mask)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self._dropout_p(),
                                             is_causal=is_causal, scale=self.scaling)
        return out if empty_rows is None else out.masked_fill(empty_rows, 0.0)

    def _attend_expanded(self, q_nope, q_pe, latent, k_pe, mask) -> torch.Tensor:
        """Prefill: per-head K/V from ``kv_b_proj``; returns ``[B, h, T, v]``."""
        q_len, k_len = q_nope.shape[2], latent.shape[2]
        kv = self.kv_b_proj(latent.squeeze(1)).unflatten(-1, (self.num_heads, -1)).transpose(1, 2)
        k_nope, value = kv.split([self.qk_nope_head_dim, self.v_head_dim], dim=-1)
        query = torch.cat((q_nope, q_pe), dim=-1)
        key = torch.cat((k_nope, k_pe.expand(-1, self.num_heads, -1, -1)), dim=-1)
        if self.record_heads and self.training:
            self.recorded = (query[:, :self.record_heads], key[:, :self.record_heads], mask)
        pad = self.qk_head_dim - self.v_head_dim if self.pad_v_for_sdpa else 0
        if pad > 0:
            value = F.pad(value, (0, pad))
        is_causal = mask is None and q_len == k_len
        if mask is None and not is_causal:
            mask = _offset_causal_mask(q_len, k_len, query.device)
        return self._sdpa(query, key, value, mask, is_causal=is_causal)[..., :self.v_head_dim]

    def _absorbed_weights(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """``W_UK [h, nope, rank]`` and ``W_UV [h, v, rank]`` as views of ``kv_b_proj.weight``."""
        w = self.kv_b_proj.weight.unflatten(0, (self.num_heads, self.qk_nope_head_dim + self.v_head_dim))
        return w[:, :self.qk_nope_head_dim], w[:, self.qk_nope_head_dim:]

    def _attend_absorbed(self, q_nope, q_pe, latent, k_pe, mask) -> torch.Tensor:
        """Decode: attend against the cached latent with up-projections folded in; returns ``[B, h, T, v]``.

        ``q' = cat(q_nope @ W_UK, q_pe)`` attends to ``k' = cat(latent, k_pe)`` with value ``latent``: a
        multi-query attention with one shared key/value head, so heads are folded into the query length and the
        scores are two batched matmuls (latent part + rope part) -- no copy of the cache into ``k'``. SDPA was
        slower here on CPU: ``enable_gqa`` and broadcast (expanded) K/V ran 40-100x slower at cache 2048, and
        building ``k'`` costs a full copy of the cache every step.
        """
        batch, heads, q_len, _ = q_nope.shape
        k_len = latent.shape[2]
        w_uk, w_uv = self._absorbed_weights()
        q_lat = torch.matmul(q_nope, w_uk).reshape(batch, heads * q_len, self.kv_lora_rank)
        latent, k_pe = latent.squeeze(1), k_pe.squeeze(1)                      # [B, S, rank], [B, S, rope]
        scores = torch.baddbmm(torch.bmm(q_lat, latent.transpose(1, 2)), q_pe.reshape(batch, heads * q_len, -1),
                               k_pe.transpose(1, 2), alpha=self.scaling, beta=self.scaling)   # [B, h*T, S]
        if mask is None and q_len > 1:
            mask = _offset_causal_mask(q_len, k_len, scores.device)
        probs, empty_rows = self._masked_softmax(scores, mask, heads)
        o_lat = torch.bmm(probs, latent)                                         # [B, h*T, rank]
        if empty_rows is not None:
            o_lat = o_lat.masked_fill(empty_rows, 0.0)
        o_lat = o_lat.view(batch, heads, q_len, self.kv_lora_rank)
        return torch.matmul(o_lat, w_uv.transpose(1, 2))                         # [B, h, T, v]

    def _masked_softmax(self, scores, mask, heads: int) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Softmax (fp32) of head-folded scores ``[B, h*T, S]`` under a ``[B|1, 1, T, S]`` mask, then dropout."""
        empty_rows = None
        if mask is not None:
            fold = mask.shape[0], heads * mask.shape[2], mask.shape[3]
            mask = mask.expand(-1, heads, -1, -1).reshape(fold)
            if mask.dtype == torch.bool:
                mask, empty_rows = _unmask_empty_rows(mask)
                scores = scores.masked_fill(~mask, float("-inf"))
            else:
                scores = scores + mask
        probs = scores.softmax(dim=-1, dtype=torch.float32).to(scores.dtype)
        return F.dropout(probs, p=self._dropout_p(), training=self.training), empty_rows


__all__ = ["MoSTRMSNorm", "MoSTRotaryEmbedding", "apply_rope", "MLAAttention"]
