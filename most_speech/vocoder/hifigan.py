"""Unit HiFi-GAN with a duration predictor, wrapping SpeechBrain's ``UnitHifiganGenerator``.

SpeechBrain provides the generator (unit embedding, MRF blocks, ``VariancePredictor``) and
its training forward (which also returns predicted and target log(run length + 1)). Its
``inference`` only handles one utterance when durations are predicted and pads nothing, so
batched synthesis is written here: every sequence is padded with copies of its own edge
units by the network's receptive radius and trimmed afterwards, which makes the output of a
padded batch identical to one-by-one synthesis (SpeechBrain's convolutions reflect-pad, so
plain zero padding would change the ends of the shorter items).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from speechbrain.lobes.models.HifiGAN import (
    HifiganGenerator,
    UnitHifiganGenerator,
    process_duration,
)
from torch.nn.utils import parametrize

from most_speech.vocoder.base import UnitVocoder


@dataclass
class UnitHifiganConfig:
    """Architecture and unit inventory of :class:`UnitHifiganVocoder`.

    ``prod(upsample_factors)`` must equal ``sample_rate / unit_rate`` (320 for 50 Hz units
    at 16 kHz, 640 for 25 Hz).

    Examples
    --------
    >>> UnitHifiganConfig(km_tag="k", num_units=500).hop_length
    320
    """

    km_tag: str
    num_units: int
    unit_rate: float = 50.0
    sample_rate: int = 16000
    embedding_dim: int = 128
    upsample_factors: list = field(default_factory=lambda: [5, 4, 4, 2, 2])
    upsample_kernel_sizes: list = field(default_factory=lambda: [11, 8, 8, 4, 4])
    upsample_initial_channel: int = 512
    resblock_type: str = "1"
    resblock_kernel_sizes: list = field(default_factory=lambda: [3, 7, 11])
    resblock_dilation_sizes: list = field(
        default_factory=lambda: [[1, 3, 5], [1, 3, 5], [1, 3, 5]]
    )
    duration_predictor: bool = True
    var_pred_hidden_dim: int = 128
    var_pred_kernel_size: int = 3
    var_pred_dropout: float = 0.5

    @property
    def hop_length(self) -> int:
        return int(round(self.sample_rate / self.unit_rate))

    def __post_init__(self):
        if math.prod(self.upsample_factors) != self.hop_length:
            raise ValueError(
                f"upsample_factors {self.upsample_factors} multiply to "
                f"{math.prod(self.upsample_factors)}, but {self.unit_rate} Hz units at "
                f"{self.sample_rate} Hz need {self.hop_length}"
            )
        if len(self.upsample_kernel_sizes) != len(self.upsample_factors):
            raise ValueError("upsample_kernel_sizes and upsample_factors differ in length")
        if self.upsample_initial_channel >> len(self.upsample_factors) < 1:
            raise ValueError(
                f"upsample_initial_channel={self.upsample_initial_channel} is halved "
                f"{len(self.upsample_factors)} times and would reach 0 channels"
            )
        if len(self.resblock_kernel_sizes) != len(self.resblock_dilation_sizes):
            raise ValueError("resblock_kernel_sizes and resblock_dilation_sizes differ in length")


def generator_receptive_radius(config: UnitHifiganConfig) -> int:
    """Upper bound, in unit frames, on how far the generator looks left or right.

    Examples
    --------
    >>> generator_receptive_radius(UnitHifiganConfig(km_tag="k", num_units=2))
    23
    """
    radius = 3.0  # conv_pre, kernel 7
    rate = 1
    for u, k in zip(config.upsample_factors, config.upsample_kernel_sizes):
        radius += math.ceil(k / u) / 1.0 / rate  # transposed conv, in input samples
        rate *= u
        mrf = max(
            sum(d * (ks - 1) // 2 + (ks - 1) // 2 for d in dil)
            for ks, dil in zip(config.resblock_kernel_sizes, config.resblock_dilation_sizes)
        )
        radius += mrf / rate
    radius += 3 / rate  # conv_post, kernel 7
    return int(math.ceil(radius))


def duration_receptive_radius(config: UnitHifiganConfig) -> int:
    """How many neighbouring units the duration predictor sees on each side."""
    return 2 * (config.var_pred_kernel_size // 2)


def _edge_pad(seqs: list[torch.Tensor], context: int) -> tuple[torch.Tensor, list[int]]:
    """Stack 1-D sequences, each padded with its own first/last value.

    ``context`` copies go to the left and at least ``context`` to the right (more for the
    shorter items, up to the batch's longest). Returns the batch and the lengths.
    """
    lengths = [len(s) for s in seqs]
    width = max(lengths) + 2 * context
    rows = []
    for s in seqs:
        left = s[:1].expand(context)
        right = s[-1:].expand(width - context - len(s))
        rows.append(torch.cat([left, s, right]))
    return torch.stack(rows), lengths


class UnitHifiganVocoder(UnitVocoder):
    """Unit HiFi-GAN (SpeechBrain generator) with km_tag checks and batched inference.

    Parameters
    ----------
    config : UnitHifiganConfig
        Architecture; see ``most_speech/vocoder/hparams/*.yaml`` for trained settings.

    Examples
    --------
    >>> cfg = UnitHifiganConfig(km_tag="k", num_units=10, embedding_dim=8,
    ...     upsample_initial_channel=64, upsample_factors=[5, 4, 4, 2, 2],
    ...     resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3, 5]], var_pred_hidden_dim=8)
    >>> voc = UnitHifiganVocoder(cfg)
    >>> wav, (log_dur_pred, log_dur) = voc(torch.randint(0, 10, (2, 7)))
    >>> wav.shape
    torch.Size([2, 1, 2240])
    >>> [w.shape for w in voc.synthesize([[1, 2, 3]], km_tag="k", deduplicated=False)]
    [torch.Size([960])]
    """

    vocoder_type = "unit_hifigan"

    def __init__(self, config: UnitHifiganConfig):
        super().__init__()
        self.cfg = config
        self.config = asdict(config)
        self.generator = UnitHifiganGenerator(
            in_channels=config.embedding_dim,
            out_channels=1,
            resblock_type=config.resblock_type,
            resblock_dilation_sizes=config.resblock_dilation_sizes,
            resblock_kernel_sizes=config.resblock_kernel_sizes,
            upsample_kernel_sizes=config.upsample_kernel_sizes,
            upsample_initial_channel=config.upsample_initial_channel,
            upsample_factors=config.upsample_factors,
            vocab_size=config.num_units,
            embedding_dim=config.embedding_dim,
            duration_predictor=config.duration_predictor,
            var_pred_hidden_dim=config.var_pred_hidden_dim,
            var_pred_kernel_size=config.var_pred_kernel_size,
            var_pred_dropout=config.var_pred_dropout,
            pooling_type="none",
        )
        self.generator_context = generator_receptive_radius(config)
        self.duration_context = duration_receptive_radius(config)

    @classmethod
    def from_config(cls, config: dict) -> "UnitHifiganVocoder":
        return cls(UnitHifiganConfig(**config))

    def forward(self, frame_units: torch.Tensor):
        """Training forward on frame-rate units ``(batch, time)``.

        Returns
        -------
        wav : torch.Tensor
            ``(batch, 1, time * hop_length)``.
        durations : tuple
            ``(log_dur_pred, log_dur)`` over the inner runs (``(None, None)`` without a
            duration predictor), as SpeechBrain's ``GeneratorLoss`` expects.
        """
        return self.generator(frame_units.unsqueeze(-1))

    def duration_loss(self, frame_units: torch.Tensor) -> torch.Tensor:
        """MSE between predicted and true log(run length + 1), without running the generator.

        Examples
        --------
        >>> cfg = UnitHifiganConfig(km_tag="k", num_units=4, embedding_dim=8,
        ...     upsample_initial_channel=64, resblock_kernel_sizes=[3],
        ...     resblock_dilation_sizes=[[1, 3, 5]], var_pred_hidden_dim=8)
        >>> float(UnitHifiganVocoder(cfg).duration_loss(torch.tensor([[0, 0, 1, 2, 2, 3]]))) >= 0
        True
        """
        if not self.cfg.duration_predictor:
            raise ValueError("this vocoder has no duration predictor")
        emb = self.generator.unit_embedding(frame_units)
        feats, mask, runs = process_duration(frame_units.unsqueeze(-1), emb)
        pred = self.generator.var_predictor(feats)[mask]
        return F.mse_loss(pred, torch.log(runs + 1))

    def predict_durations(self, units: list[torch.Tensor]) -> list[torch.Tensor]:
        """Frames per deduplicated unit (SpeechBrain's rule: round(exp(pred) - 1), at least 1)."""
        batch, lengths = _edge_pad(units, self.duration_context)
        emb = self.generator.unit_embedding(batch.to(self._device))
        log_dur = self.generator.var_predictor(emb)
        frames = torch.clamp(torch.round(torch.exp(log_dur) - 1).long(), min=1).cpu()
        c = self.duration_context
        return [frames[i, c : c + n] for i, n in enumerate(lengths)]

    def generate(self, frame_units: list[torch.Tensor]) -> list[torch.Tensor]:
        """Frame-rate unit sequences -> waveforms of ``len * hop_length`` samples each."""
        c, hop = self.generator_context, self.cfg.hop_length
        batch, lengths = _edge_pad(frame_units, c)
        emb = self.generator.unit_embedding(batch.to(self._device)).transpose(1, 2)
        # the parent class's forward is the plain HiFi-GAN on (batch, channels, frames)
        wav = HifiganGenerator.forward(self.generator, emb)[:, 0].float().cpu()
        return [wav[i, c * hop : (c + n) * hop] for i, n in enumerate(lengths)]

    @property
    def _device(self) -> torch.device:
        return self.generator.unit_embedding.weight.device

    def _synthesize_tensors(self, units, deduplicated):
        with parametrize.cached():  # compute weight-normed weights once per call
            if deduplicated:
                if not self.cfg.duration_predictor:
                    raise ValueError(
                        "deduplicated units need a duration predictor, and this vocoder has "
                        "none: pass frame-rate units with deduplicated=False"
                    )
                durations = self.predict_durations(units)
                units = [u.repeat_interleave(d) for u, d in zip(units, durations)]
            return self.generate(units)
