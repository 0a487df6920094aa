"""A light trained unit vocoder: units -> log-mel by a small convolutional network, then Griffin-Lim.

The mean-mel vocoder gives every unit one fixed mel frame and one fixed duration, whatever its
neighbours. Coarse units (fbank k-means, a few hundred clusters over many voices) leave a lot to
context, and on the mini corpus the Griffin-Lim inversion is not what limits intelligibility (the
judge understands Griffin-Lim from the real mel as well as the real audio), the unit -> mel
mapping is. This vocoder predicts each unit frame's mel frames from a window of neighbouring units
(a residual convolution stack) and each deduplicated unit's duration from its neighbours (a
smaller stack), trained with L1 / MSE losses for a few CPU minutes
(:func:`~most_speech.vocoder.fit.fit_conv_mel_vocoder`). Synthesis is one network pass and the
same Griffin-Lim inversion as :class:`~most_speech.vocoder.MeanMelVocoder`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from most_speech.vocoder.base import UnitVocoder
from most_speech.vocoder.mean_mel import MeanMelConfig
from most_speech.vocoder.mel import MelInverter, expand_by_durations


@dataclass
class ConvMelConfig(MeanMelConfig):
    """Settings of :class:`ConvMelVocoder`: the mel analysis of :class:`MeanMelConfig` plus the network.

    Examples
    --------
    >>> cfg = ConvMelConfig(km_tag="k", num_units=128, unit_rate=100)
    >>> cfg.mel_hop, cfg.channels
    (80, 192)
    """

    smooth_frames: int = 1  # the network's output is already smooth
    channels: int = 192
    layers: int = 4
    kernel_size: int = 5
    duration_channels: int = 96
    duration_layers: int = 2


class _ResidualConvStack(nn.Module):
    """``layers`` x (LayerNorm -> Conv1d -> GELU, residual) over ``(batch, time, channels)``."""

    def __init__(self, channels: int, layers: int, kernel_size: int):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (same-length convolutions), got {kernel_size}")
        self.norms = nn.ModuleList(nn.LayerNorm(channels) for _ in range(layers))
        self.convs = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2) for _ in range(layers)
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: ``(batch, time, channels)``; ``mask``: ``(batch, time)``, 1 on valid positions."""
        if mask is not None:
            mask = mask[..., None].to(x.dtype)
        for norm, conv in zip(self.norms, self.convs):
            if mask is not None:  # padded positions must not leak into valid ones through the kernel
                x = x * mask
            x = x + F.gelu(conv(norm(x).transpose(1, 2))).transpose(1, 2)
        return x if mask is None else x * mask


class ConvMelVocoder(UnitVocoder):
    """Units -> log-mel (convolutional network) + durations (small network) -> Griffin-Lim.

    Parameters
    ----------
    config : ConvMelConfig
        Unit inventory, rates, mel analysis and network sizes.

    Examples
    --------
    >>> voc = ConvMelVocoder(ConvMelConfig(km_tag="k", num_units=8, channels=16, duration_channels=8,
    ...                                    griffin_lim_iters=2))
    >>> voc.log_mel(torch.tensor([[1, 2, 3]])).shape  # 2 mel frames per unit frame
    torch.Size([1, 6, 80])
    >>> voc.synthesize([[1, 2, 3]], km_tag="k", deduplicated=False)[0].shape
    torch.Size([960])
    """

    vocoder_type = "conv_mel"

    def __init__(self, config: ConvMelConfig):
        super().__init__()
        self.cfg = config
        self.config = asdict(config)
        c, cd = config.channels, config.duration_channels
        self.embedding = nn.Embedding(config.num_units, c)
        self.mel_net = _ResidualConvStack(c, config.layers, config.kernel_size)
        self.mel_out = nn.Linear(c, config.n_mels * config.frames_per_unit)
        self.duration_embedding = nn.Embedding(config.num_units, cd)
        self.duration_net = _ResidualConvStack(cd, config.duration_layers, 3)
        self.duration_out = nn.Linear(cd, 1)
        # the network predicts normalised log-mel; the statistics are fitted with it and saved
        self.register_buffer("mel_mean", torch.zeros(config.n_mels))
        self.register_buffer("mel_std", torch.ones(config.n_mels))
        self._inverter = MelInverter(config)

    @classmethod
    def from_config(cls, config: dict) -> "ConvMelVocoder":
        return cls(ConvMelConfig(**config))

    def normalized_log_mel(self, frame_units: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``(batch, T)`` frame-rate units -> ``(batch, T * frames_per_unit, n_mels)`` normalised log-mel."""
        x = self.mel_out(self.mel_net(self.embedding(frame_units), mask))
        return x.reshape(x.shape[0], -1, self.cfg.n_mels)

    def log_mel(self, frame_units: torch.Tensor) -> torch.Tensor:
        """``(batch, T)`` frame-rate units -> ``(batch, T * frames_per_unit, n_mels)`` log-mel frames."""
        return self.normalized_log_mel(frame_units) * self.mel_std + self.mel_mean

    def log_durations(self, units: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``(batch, U)`` deduplicated units -> ``(batch, U)`` predicted log run lengths (in unit frames)."""
        return self.duration_out(self.duration_net(self.duration_embedding(units), mask))[..., 0]

    def expand(self, units: torch.Tensor) -> torch.Tensor:
        """Deduplicated units -> frame-rate units with the predicted durations (at least one frame each)."""
        durations = torch.exp(self.log_durations(units[None]))[0]
        return expand_by_durations(units, durations)

    def griffin_lim_iterations(self, n_iter: int):
        """``with vocoder.griffin_lim_iterations(8):`` voices with fewer Griffin-Lim iterations (a draft)."""
        return self._inverter.iterations(n_iter)

    def _synthesize_tensors(self, units, deduplicated):
        # one utterance at a time: Griffin-Lim dominates the cost, and no padding can reach the convolutions
        return [self._synthesize_one(u, deduplicated) for u in units]

    def _synthesize_one(self, units: torch.Tensor, deduplicated: bool) -> torch.Tensor:
        frame_units = self.expand(units) if deduplicated else units
        mel = self.log_mel(frame_units[None])[0]
        return self._inverter(mel, len(frame_units) * self.hop_length)
