"""Feature-space augmentation of filterbank frames that SpeechBrain's augmenters do not provide.

SpeechBrain's ``SpectrogramDrop`` and ``Warping`` give SpecAugment's masks and a *local* warp around a
random point. Vocal-tract length perturbation (VTLP, Jaitly & Hinton 2013) instead stretches the whole
frequency axis by one factor per utterance, which is what separates one speaker's formants from
another's; on precomputed log-mel frames it is a resampling of the channel axis.
:class:`FrequencyScale` does that, and composes with SpeechBrain's ``Augmenter`` like its own
augmentations (``(batch, time, channels)`` in and out).
"""
from __future__ import annotations

import torch
from torch import nn


class FrequencyScale(nn.Module):
    """Stretch or squeeze each example's channel (mel) axis by a random factor in ``[low, high]``.

    Output channel ``c`` reads the input at ``c * factor`` (linear interpolation; positions past the top
    channel repeat it), so a factor above 1 moves spectral peaks down, as a longer vocal tract does.

    Parameters
    ----------
    low, high : float
        Range of the uniform per-example factor; ``low <= 1 <= high`` keeps the identity reachable.

    Examples
    --------
    >>> aug = FrequencyScale(0.9, 1.1)
    >>> feats = torch.randn(3, 50, 80)
    >>> aug(feats).shape
    torch.Size([3, 50, 80])
    >>> torch.equal(FrequencyScale(1.0, 1.0)(feats), feats)
    True
    """

    def __init__(self, low: float = 0.9, high: float = 1.1):
        super().__init__()
        if not 0 < low <= high:
            raise ValueError(f"FrequencyScale needs 0 < low <= high, got low={low}, high={high}")
        self.low, self.high = float(low), float(high)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """``feats``: ``(batch, time, channels)``; returns the same shape."""
        if feats.dim() != 3:
            raise ValueError(f"FrequencyScale expects (batch, time, channels), got shape {tuple(feats.shape)}")
        batch, _, channels = feats.shape
        factor = torch.empty(batch, 1, device=feats.device).uniform_(self.low, self.high)
        pos = (torch.arange(channels, device=feats.device, dtype=torch.float32)[None] * factor)
        pos = pos.clamp(max=channels - 1)
        lo = pos.floor().long()
        hi = (lo + 1).clamp(max=channels - 1)
        frac = (pos - lo.to(pos.dtype)).to(feats.dtype)[:, None, :]
        gather = lambda idx: torch.gather(feats, 2, idx[:, None, :].expand(-1, feats.shape[1], -1))  # noqa: E731
        return gather(lo) * (1 - frac) + gather(hi) * frac
