"""Log-mel analysis, mel -> waveform inversion (pseudo-inverse + Griffin-Lim) and duration expansion.

Shared by the vocoders that predict mel frames (:mod:`~most_speech.vocoder.mean_mel`,
:mod:`~most_speech.vocoder.conv_mel`): they differ only in how units become log-mel frames.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
import torchaudio

LOG_FLOOR = 1e-5


def mel_transform(config) -> torchaudio.transforms.MelSpectrogram:
    """The magnitude mel analysis shared by fitting, synthesis and evaluation.

    ``config`` has ``sample_rate``, ``n_fft``, ``mel_hop``, ``f_min``, ``f_max`` and ``n_mels``
    (a :class:`~most_speech.vocoder.MeanMelConfig` or :class:`~most_speech.vocoder.ConvMelConfig`).

    Examples
    --------
    >>> from most_speech.vocoder import MeanMelConfig
    >>> mel_transform(MeanMelConfig(km_tag="k", num_units=2))(torch.zeros(3200)).shape
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


def log_mel(wav: torch.Tensor, config, transform: torchaudio.transforms.MelSpectrogram | None = None) -> torch.Tensor:
    """Log-magnitude mel frames ``(frames, n_mels)`` of a 1-D waveform.

    ``transform``: a :func:`mel_transform` of ``config`` built once by a caller that analyses many waveforms.
    """
    transform = transform if transform is not None else mel_transform(config)
    return torch.log(transform(wav).clamp_min(LOG_FLOOR)).T


def expand_by_durations(units: torch.Tensor, durations: torch.Tensor) -> torch.Tensor:
    """Deduplicated units -> frame-rate units, each repeated for its (fractional) duration in frames.

    Rounding is done on the running total so that durations of 1.4 frames do not all shrink to
    1 frame; every unit keeps at least one frame.

    Examples
    --------
    >>> expand_by_durations(torch.tensor([0, 1, 0]), torch.tensor([1.5, 2.0, 1.5])).tolist()
    [0, 0, 1, 1, 0]
    """
    ends = torch.round(torch.cumsum(durations.double(), 0)).long()
    reps = torch.diff(ends, prepend=torch.zeros(1, dtype=torch.long, device=ends.device)).clamp_min(1)
    return units.repeat_interleave(reps)


class MelInverter(torch.nn.Module):
    """Log-mel frames -> waveform: mel pseudo-inverse, then torchaudio's Griffin-Lim.

    torchaudio's ``InverseMelScale`` solves a least-squares problem on every call; the
    pseudo-inverse of its (fixed) filterbank gives the same minimum-norm solution with one
    matmul, ~10x faster. It holds no trainable or saved state (everything derives from the config).

    Examples
    --------
    >>> from most_speech.vocoder import MeanMelConfig
    >>> inv = MelInverter(MeanMelConfig(km_tag="k", num_units=2, griffin_lim_iters=2))
    >>> inv(torch.zeros(10, 80), n_samples=1600).shape
    torch.Size([1600])
    """

    def __init__(self, config):
        super().__init__()
        self.n_fft, self.mel_hop = config.n_fft, config.mel_hop
        fbank = torchaudio.functional.melscale_fbanks(
            config.n_fft // 2 + 1, config.f_min, config.f_max, config.n_mels, config.sample_rate
        )
        self.register_buffer("mel_pinv", torch.linalg.pinv(fbank.T), persistent=False)
        self.griffin_lim = torchaudio.transforms.GriffinLim(
            n_fft=config.n_fft,
            hop_length=config.mel_hop,
            power=1.0,
            n_iter=config.griffin_lim_iters,
            rand_init=False,  # deterministic: equal inputs give equal audio
        )

    @contextmanager
    def iterations(self, n_iter: int):
        """Run Griffin-Lim with ``n_iter`` iterations inside the ``with`` block (a cheaper draft, e.g. to rank
        best-of-N candidates; the waveform of the kept one is made again with the configured count).

        Examples
        --------
        >>> from most_speech.vocoder import MeanMelConfig
        >>> inv = MelInverter(MeanMelConfig(km_tag="k", num_units=2, griffin_lim_iters=32))
        >>> with inv.iterations(4):
        ...     inv.griffin_lim.n_iter
        4
        >>> inv.griffin_lim.n_iter
        32
        """
        if n_iter < 1:
            raise ValueError(f"Griffin-Lim needs at least 1 iteration, got {n_iter}")
        configured = self.griffin_lim.n_iter
        self.griffin_lim.n_iter = int(n_iter)
        try:
            yield self
        finally:
            self.griffin_lim.n_iter = configured

    def forward(self, log_mel_frames: torch.Tensor, n_samples: int) -> torch.Tensor:
        """``(frames, n_mels)`` log-mel -> 1-D waveform of ``n_samples``, peak at most 1."""
        spec = torch.relu(self.mel_pinv @ torch.exp(log_mel_frames).T)  # (n_freq, frames)
        # Griffin-Lim's centred STFT reflects n_fft // 2 samples at each edge, so a very short unit sequence
        # (a streaming chunk, a one-unit answer) is padded with silent frames and trimmed back below.
        min_frames = self.n_fft // self.mel_hop + 2
        spec = F.pad(spec, (0, max(0, min_frames - spec.shape[1])))
        wav = self.griffin_lim(spec)
        wav = F.pad(wav, (0, max(0, n_samples - wav.shape[-1])))[:n_samples]
        return wav / wav.abs().max().clamp_min(1.0)
