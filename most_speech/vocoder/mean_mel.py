"""A training-free unit vocoder: per-unit mean log-mel + mean run length, then Griffin-Lim.

Fitting needs no gradients: each unit's mel frame vector is the average of the log-mel
frames it labels in aligned (units, audio) pairs, and its duration the average length of its
runs. Synthesis looks the means up, smooths them a little over time and inverts them with
the mel pseudo-inverse and Griffin-Lim (:mod:`~most_speech.vocoder.mel`). It is robotic but intelligible and takes
seconds to fit on CPU, which makes it the fallback when no HiFi-GAN has been trained.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from most_speech.audio.kmeans import dedup
from most_speech.vocoder.base import UnitVocoder
from most_speech.vocoder.mel import LOG_FLOOR, MelInverter, expand_by_durations, log_mel, mel_transform

__all__ = ["LOG_FLOOR", "MeanMelConfig", "MeanMelVocoder", "log_mel", "mel_transform"]


@dataclass
class MeanMelConfig:
    """Settings of :class:`MeanMelVocoder`.

    ``frames_per_unit`` mel frames are made per unit frame, so the mel hop is
    ``sample_rate / unit_rate / frames_per_unit`` samples (160 for 50 Hz units at 16 kHz).

    Examples
    --------
    >>> MeanMelConfig(km_tag="k", num_units=10).mel_hop
    160
    """

    km_tag: str
    num_units: int
    unit_rate: float = 50.0
    sample_rate: int = 16000
    frames_per_unit: int = 2
    n_fft: int = 512
    n_mels: int = 80
    f_min: float = 0.0
    f_max: float = 8000.0
    smooth_frames: int = 3
    griffin_lim_iters: int = 32

    @property
    def hop_length(self) -> int:
        return int(round(self.sample_rate / self.unit_rate))

    @property
    def mel_hop(self) -> int:
        hop = self.hop_length
        if hop % self.frames_per_unit:
            raise ValueError(
                f"frames_per_unit={self.frames_per_unit} does not divide the unit hop {hop}"
            )
        return hop // self.frames_per_unit


class MeanMelVocoder(UnitVocoder):
    """Per-unit mean log-mel + Griffin-Lim vocoder (no neural network).

    Parameters
    ----------
    config : MeanMelConfig
        Unit inventory, rates and analysis settings.

    Examples
    --------
    >>> voc = MeanMelVocoder(MeanMelConfig(km_tag="k", num_units=4, griffin_lim_iters=2))
    >>> voc.accumulate(torch.tensor([0, 0, 1]), torch.randn(960))
    >>> voc.finalize()
    >>> wavs = voc.synthesize([[0, 1]], km_tag="k")  # deduplicated: durations from stats
    >>> wavs[0].shape
    torch.Size([960])
    """

    vocoder_type = "mean_mel"

    def __init__(self, config: MeanMelConfig):
        super().__init__()
        self.cfg = config
        self.config = asdict(config)
        n, m = config.num_units, config.n_mels
        self.register_buffer("mel_means", torch.full((n, m), float(torch.log(torch.tensor(LOG_FLOOR)))))
        self.register_buffer("mean_durations", torch.ones(n))
        self.register_buffer("mel_sums", torch.zeros(n, m, dtype=torch.float64))
        self.register_buffer("frame_counts", torch.zeros(n, dtype=torch.float64))
        self.register_buffer("run_sums", torch.zeros(n, dtype=torch.float64))
        self.register_buffer("run_counts", torch.zeros(n, dtype=torch.float64))
        self._mel = mel_transform(config)
        self._inverter = MelInverter(config)

    @classmethod
    def from_config(cls, config: dict) -> "MeanMelVocoder":
        return cls(MeanMelConfig(**config))

    def accumulate(self, units: torch.Tensor, wav: torch.Tensor) -> None:
        """Add one aligned (frame-rate units, 1-D waveform) pair to the statistics."""
        k = self.cfg.frames_per_unit
        mel = log_mel(wav.float(), self.cfg, self._mel).double()
        n = min(len(units), mel.shape[0] // k)
        if n == 0:
            return
        units = units[:n].long()
        frame_units = units.repeat_interleave(k)
        self.mel_sums.index_add_(0, frame_units, mel[: n * k])
        self.frame_counts.index_add_(0, frame_units, torch.ones(n * k, dtype=torch.float64))
        # the first and last runs may be cut by the segment edges: leave them out
        values, counts = dedup(units)
        if len(values) > 2:
            values, counts = values[1:-1], counts[1:-1]
        self.run_sums.index_add_(0, values, counts.double())
        self.run_counts.index_add_(0, values, torch.ones(len(values), dtype=torch.float64))

    def finalize(self) -> None:
        """Turn the statistics into means (unseen units get the global means)."""
        seen = self.frame_counts > 0
        if not bool(seen.any()):
            raise ValueError("no (units, audio) pairs were accumulated")
        global_mel = self.mel_sums[seen].sum(0) / self.frame_counts[seen].sum()
        means = self.mel_sums / self.frame_counts.clamp_min(1)[:, None]
        means[~seen] = global_mel
        self.mel_means.copy_(means.float())
        has_runs = self.run_counts > 0
        global_dur = (
            self.run_sums[has_runs].sum() / self.run_counts[has_runs].sum()
            if bool(has_runs.any())
            else torch.tensor(1.0, dtype=torch.float64)
        )
        durs = self.run_sums / self.run_counts.clamp_min(1)
        durs[~has_runs] = global_dur
        self.mean_durations.copy_(durs.float())

    def expand(self, units: torch.Tensor) -> torch.Tensor:
        """Deduplicated units -> frame-rate units using the mean durations.

        Rounding is done on the running total so that durations of 1.4 frames do not
        all shrink to 1 frame.

        Examples
        --------
        >>> voc = MeanMelVocoder(MeanMelConfig(km_tag="k", num_units=3))
        >>> voc.mean_durations.copy_(torch.tensor([1.5, 2.0, 1.0]))
        tensor([1.5000, 2.0000, 1.0000])
        >>> voc.expand(torch.tensor([0, 1, 0])).tolist()  # ends at round(1.5, 3.5, 5.0)
        [0, 0, 1, 1, 0]
        """
        return expand_by_durations(units, self.mean_durations[units])

    def units_to_log_mel(self, frame_units: torch.Tensor) -> torch.Tensor:
        """Frame-rate units -> smoothed log-mel frames ``(frames, n_mels)``."""
        mel = self.mel_means[frame_units].repeat_interleave(self.cfg.frames_per_unit, dim=0)
        width = self.cfg.smooth_frames
        if width > 1:
            x = mel.T[None]  # (1, n_mels, T)
            pad = (width // 2, width - 1 - width // 2)
            mel = F.avg_pool1d(F.pad(x, pad, mode="replicate"), width, stride=1)[0].T
        return mel

    def griffin_lim_iterations(self, n_iter: int):
        """``with vocoder.griffin_lim_iterations(8):`` voices with fewer Griffin-Lim iterations (a draft)."""
        return self._inverter.iterations(n_iter)

    def _synthesize_tensors(self, units, deduplicated):
        # Griffin-Lim couples neighbouring frames, so padded batches would change the
        # tail of short items: synthesize one utterance at a time (it is cheap).
        return [self._synthesize_one(u, deduplicated) for u in units]

    def _synthesize_one(self, units: torch.Tensor, deduplicated: bool) -> torch.Tensor:
        frame_units = self.expand(units) if deduplicated else units
        return self._inverter(self.units_to_log_mel(frame_units), len(frame_units) * self.hop_length)
