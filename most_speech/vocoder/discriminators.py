"""SpeechBrain's HiFi-GAN discriminator (MPD + MSD) with an optional width divisor.

SpeechBrain's ``HifiganDiscriminator`` has fixed widths (up to 1024 channels, 70 M
parameters, 0.8 GB per checkpoint with its optimizer). Tests and CPU smoke runs need a
narrow one, so this builds SpeechBrain's module and, for ``width_divisor > 1``, swaps each
convolution for a narrower one of the same kernel, stride, padding and normalisation. The
forward passes stay SpeechBrain's.
"""
from __future__ import annotations

import math

from speechbrain.lobes.models.HifiGAN import HifiganDiscriminator
from torch import nn


def _narrow_conv(conv: nn.Module, divisor: int) -> nn.Module:
    """A narrower copy of a (weight- or spectral-normalised) Conv1d/Conv2d."""
    def width(c):
        return c if c == 1 else max(1, c // divisor)

    c_in, c_out = width(conv.in_channels), width(conv.out_channels)
    groups = math.gcd(conv.groups, math.gcd(c_in, c_out))
    base = nn.Conv2d if isinstance(conv, nn.Conv2d) else nn.Conv1d  # not the parametrized subclass
    new = base(
        c_in, c_out, conv.kernel_size, stride=conv.stride, padding=conv.padding,
        dilation=conv.dilation, groups=groups, bias=conv.bias is not None,
    )
    if hasattr(conv, "weight_orig"):  # old-style spectral norm hook
        return nn.utils.spectral_norm(new)
    if hasattr(conv, "parametrizations"):
        return nn.utils.parametrizations.weight_norm(new)
    return new


def _narrow_all(module: nn.Module, divisor: int) -> None:
    for name, child in module.named_children():
        if isinstance(child, (nn.Conv1d, nn.Conv2d)):
            setattr(module, name, _narrow_conv(child, divisor))
        else:
            _narrow_all(child, divisor)


class ScaledHifiganDiscriminator(HifiganDiscriminator):
    """HiFi-GAN multi-period + multi-scale discriminator, hidden widths divided by ``width_divisor``.

    Parameters
    ----------
    width_divisor : int
        1 gives SpeechBrain's discriminator unchanged.

    Examples
    --------
    >>> import torch
    >>> d = ScaledHifiganDiscriminator(width_divisor=16)
    >>> scores, feats = d(torch.randn(2, 1, 2560))
    >>> len(scores), sum(p.numel() for p in d.parameters()) < 1_000_000
    (8, True)
    """

    def __init__(self, width_divisor: int = 1):
        super().__init__()
        if width_divisor < 1:
            raise ValueError(f"width_divisor must be >= 1, got {width_divisor}")
        if width_divisor > 1:
            _narrow_all(self, width_divisor)
