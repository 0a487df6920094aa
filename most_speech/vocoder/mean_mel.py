"""A training-free unit vocoder: per-unit mean log-mel + mean run length, then Griffin-Lim.

Fitting needs no gradients: each unit's mel frame vector is the average of the log-mel
frames it labels in aligned (units, audio) pairs, and its duration the average length of its
runs. Synthesis looks the means up, smooths them a little over time and inverts them with
torchaudio's ``InverseMelScale`` + ``GriffinLim``. It is robotic but intelligible and takes
seconds to fit on CPU, which makes it the fallback when no HiFi-GAN has been trained.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
import torchaudio

from most_speech.vocoder.base import UnitVocoder
from most_speech.vocoder.units import deduplicate

LOG_FLOOR = 1e-5


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


def mel_transform(config: MeanMelConfig) -> torchaudio.transforms.MelSpectrogram:
    """The magnitude mel analysis shared by fitting, synthesis and evaluation.

    Examples
    --------
    >>> cfg = MeanMelConfig(km_tag="k", num_units=2)
    >>> mel_transform(cfg)(torch.zeros(3200)).shape
    torch.Size([80, 21])
    """
    return torchaudio.transforms.MelSpectrogram(
        sample_rate=config.sample_rate,
        n_fft=config.n_fft,
        hop_length=config.mel_hop,
        f_min=config.f_min,
        f_max=config.f_max,
        n_mels=config.n_mels,
        power=1.0,
    )


def log_mel(wav: torch.Tensor, config: MeanMelConfig) -> torch.Tensor:
    """Log-magnitude mel frames ``(frames, n_mels)`` of a 1-D waveform."""
    return torch.log(mel_transform(config)(wav).clamp_min(LOG_FLOOR)).T


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
        # torchaudio's InverseMelScale solves a least-squares problem on every call; the
        # pseudo-inverse of its (fixed) filterbank gives the same minimum-norm solution with
        # one matmul, ~10x faster. Not persistent: it is derived from the config.
        fbank = torchaudio.functional.melscale_fbanks(
            config.n_fft // 2 + 1, config.f_min, config.f_max, m, config.sample_rate
        )
        self.register_buffer("_mel_pinv", torch.linalg.pinv(fbank.T), persistent=False)
        self._mel = mel_transform(config)
        self._griffin_lim = torchaudio.transforms.GriffinLim(
            n_fft=config.n_fft,
            hop_length=config.mel_hop,
            power=1.0,
            n_iter=config.griffin_lim_iters,
            rand_init=False,  # deterministic: equal inputs give equal audio
        )

    @classmethod
    def from_config(cls, config: dict) -> "MeanMelVocoder":
        return cls(MeanMelConfig(**config))

    def accumulate(self, units: torch.Tensor, wav: torch.Tensor) -> None:
        """Add one aligned (frame-rate units, 1-D waveform) pair to the statistics."""
        k = self.cfg.frames_per_unit
        mel = torch.log(self._mel(wav.float()).clamp_min(LOG_FLOOR)).T.double()
        n = min(len(units), mel.shape[0] // k)
        if n == 0:
            return
        units = units[:n].long()
        frame_units = units.repeat_interleave(k)
        self.mel_sums.index_add_(0, frame_units, mel[: n * k])
        self.frame_counts.index_add_(0, frame_units, torch.ones(n * k, dtype=torch.float64))
        # the first and last runs may be cut by the segment edges: leave them out
        values, counts = deduplicate(units)
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
        ends = torch.round(torch.cumsum(self.mean_durations[units].double(), 0)).long()
        reps = torch.diff(ends, prepend=torch.zeros(1, dtype=torch.long)).clamp_min(1)
        return units.repeat_interleave(reps)

    def units_to_log_mel(self, frame_units: torch.Tensor) -> torch.Tensor:
        """Frame-rate units -> smoothed log-mel frames ``(frames, n_mels)``."""
        mel = self.mel_means[frame_units].repeat_interleave(self.cfg.frames_per_unit, dim=0)
        width = self.cfg.smooth_frames
        if width > 1:
            x = mel.T[None]  # (1, n_mels, T)
            pad = (width // 2, width - 1 - width // 2)
            mel = F.avg_pool1d(F.pad(x, pad, mode="replicate"), width, stride=1)[0].T
        return mel

    def _synthesize_tensors(self, units, deduplicated):
        # Griffin-Lim couples neighbouring frames, so padded batches would change the
        # tail of short items: synthesize one utterance at a time (it is cheap).
        return [self._synthesize_one(u, deduplicated) for u in units]

    def _synthesize_one(self, units: torch.Tensor, deduplicated: bool) -> torch.Tensor:
        frame_units = self.expand(units) if deduplicated else units
        mel = torch.exp(self.units_to_log_mel(frame_units)).T  # (n_mels, frames)
        spec = torch.relu(self._mel_pinv @ mel)  # (n_freq, frames)
        n_samples = len(frame_units) * self.hop_length
        # Griffin-Lim's centred STFT reflects n_fft // 2 samples at each edge, so a very short unit sequence
        # (a streaming chunk, a one-unit answer) is padded with silent frames and trimmed back below.
        min_frames = self.cfg.n_fft // self.cfg.mel_hop + 2
        spec = F.pad(spec, (0, max(0, min_frames - spec.shape[1])))
        wav = self._griffin_lim(spec)
        wav = F.pad(wav, (0, max(0, n_samples - wav.shape[-1])))[:n_samples]
        return wav / wav.abs().max().clamp_min(1.0)
