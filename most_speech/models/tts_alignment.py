"""A guided-attention prior for TTS in a decoder-only LM: attention heads that read the text in step with the units.

A small model trained from scratch on text -> units learns slowly where in the text each unit is: its samples
start right and drift into other words mid-sentence. Tachibana et al. (2018, "Efficiently trainable
text-to-speech ... with guided attention", DC-TTS) fix the same failure in an encoder-decoder TTS by
penalising attention far from the diagonal ``n / N = t / T``. Here there is no cross-attention: the text is
part of the prompt. So, in the chosen heads, the query that predicts unit ``t`` of ``T`` pays for every bit of
attention that goes anywhere but the text tokens near ``(t + 0.5) / T`` of the way through the text::

    W[t, j] = 1 - exp(-((n_j + 0.5) / N - (t + 0.5) / T) ** 2 / (2 sigma ** 2))   for text token n_j of N
    W[t, j] = 1                                                                    for every other key
    loss    = mean over units and heads of  sum_j A[t, j] * W[t, j]                (in [0, 1])

The prior is a training loss only: at inference the heads track the text on their own. No library computes it
for a decoder-only prompt (DC-TTS and its ports weight an encoder-decoder attention matrix).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

__all__ = ["diagonal_penalty", "guided_attention_loss"]


def diagonal_penalty(unit_index: Tensor, num_units: Tensor, text_index: Tensor, num_text: Tensor,
                     sigma: float) -> Tensor:
    """``1 - exp(-(y - x)^2 / (2 sigma^2))`` with ``x = (t + 0.5) / T`` and ``y = (n + 0.5) / N``; broadcasts.

    Examples
    --------
    >>> w = diagonal_penalty(torch.arange(4.)[:, None], torch.tensor(4.), torch.arange(2.)[None], torch.tensor(2.), 0.2)
    >>> w.shape, bool(w[0, 0] < w[0, 1]), bool(w[3, 1] < w[3, 0])
    (torch.Size([4, 2]), True, True)
    """
    x = (unit_index + 0.5) / num_units
    y = (text_index + 0.5) / num_text
    return 1.0 - torch.exp(-(y - x) ** 2 / (2.0 * sigma ** 2))


def guided_attention_loss(query: Tensor, key: Tensor, scale: float, starts: Tensor, lengths: Tensor,
                          text_lengths: Tensor, mask: Optional[Tensor] = None, sigma: float = 0.2) -> Tensor:
    """Mean off-diagonal attention of the queries that predict TTS units (see the module docstring).

    Parameters
    ----------
    query, key : Tensor
        ``[B, h, L, d]``: the recorded heads' queries and keys (positions already rotated), as the attention
        multiplies them.
    scale : float
        The attention's softmax scale.
    starts : Tensor
        ``[S, 2]`` (row, column of the first unit) per TTS response; the column before it holds ``boa``, and the
        ``text_lengths[s]`` columns before ``boa`` hold the text.
    lengths, text_lengths : Tensor
        ``[S]``: units and text tokens of each response.
    mask : Tensor, optional
        The attention's ``[B | 1, 1, L, L]`` mask (bool: True = attend, or additive float); None: causal.
    sigma : float
        Width of the allowed band, in fractions of the text (DC-TTS: 0.2).

    Returns
    -------
    Tensor
        Scalar in ``[0, 1]``: 0 when every unit's query attends only to its own stretch of text.

    Examples
    --------
    >>> q, k = torch.randn(1, 1, 12, 8), torch.randn(1, 1, 12, 8)
    >>> loss = guided_attention_loss(q, k, 8 ** -0.5, torch.tensor([[0, 6]]), torch.tensor([5]), torch.tensor([3]))
    >>> 0.0 <= float(loss) <= 1.0
    True
    """
    device = query.device
    rows, first = starts[:, 0].to(device), starts[:, 1].to(device)
    lengths, text_lengths = lengths.to(device), text_lengths.to(device)
    L = key.shape[2]
    t = torch.arange(int(lengths.max()), device=device)
    q_cols = (first[:, None] - 1 + t[None]).clamp(0, L - 1)                      # [S, T]: boa predicts unit 0
    valid = t[None] < lengths[:, None]
    q = query[rows[:, None], :, q_cols]                                          # [S, T, h, d]
    scores = torch.einsum("sthd,shld->shtl", q.float(), key[rows].float()) * scale
    allowed = torch.arange(L, device=device)[None, None] <= q_cols[..., None]    # causal [S, T, L]
    if mask is not None:
        m = mask[rows if mask.shape[0] > 1 else torch.zeros_like(rows), 0]        # [S, L, L]
        m = m[torch.arange(len(rows), device=device)[:, None], q_cols]           # [S, T, L]
        if m.dtype == torch.bool:
            allowed = allowed & m
        else:
            scores = scores + m[:, None].float()
    probs = scores.masked_fill(~allowed[:, None], float("-inf")).softmax(-1)
    n = torch.arange(L, device=device)[None] - (first - 1 - text_lengths)[:, None]  # text index of each key [S, L]
    in_text = (n >= 0) & (n < text_lengths[:, None])
    w = diagonal_penalty(t[None, :, None].float(), lengths[:, None, None].float(), n[:, None].float(),
                         text_lengths.clamp(min=1)[:, None, None].float(), sigma)
    w = torch.where(in_text[:, None], w, torch.ones_like(w))                      # [S, T, L]
    per_query = (probs * w[:, None]).sum(-1)                                      # [S, h, T]
    keep = valid[:, None].expand_as(per_query)
    return per_query[keep].mean()
