"""Light Kaldi-compatible frontends (fbank, MFCC) with the HubertEncoder interface, and ``build_encoder``.

Every encoder is a callable ``(wavs [B, T], wav_lengths [B]) -> (feats [B, T', D], feat_lengths [B])`` with
``.frame_rate``, ``.dim`` and ``.frames_for(num_samples)``, so a recipe switches encoder by config.
"""
from __future__ import annotations

import torch
import torchaudio.compliance.kaldi as kaldi
from torch import nn

SAMPLE_RATE = 16000


class KaldiFrontend(nn.Module):
    """Kaldi fbank or MFCC (``torchaudio.compliance.kaldi``), 25 ms windows every 10 ms (100 frames/s).

    Parameters
    ----------
    kind : {"fbank", "mfcc"}
    num_bins : int
        Mel bins (fbank: the feature dimension).
    num_ceps : int
        Cepstra kept for MFCC (the feature dimension).
    dither : float
        Kaldi dither; 0 (default) makes features deterministic.
    **kaldi_options
        Passed on to ``kaldi.fbank`` / ``kaldi.mfcc``.

    Examples
    --------
    >>> fe = KaldiFrontend("fbank", num_bins=80)
    >>> feats, lens = fe(torch.randn(2, 16000), torch.tensor([16000, 8000]))
    >>> feats.shape, lens.tolist(), fe.frame_rate
    (torch.Size([2, 98, 80]), [98, 48], 100.0)
    """

    def __init__(self, kind: str = "fbank", num_bins: int = 80, num_ceps: int = 13, dither: float = 0.0,
                 **kaldi_options):
        super().__init__()
        if kind not in ("fbank", "mfcc"):
            raise ValueError(f"KaldiFrontend kind must be 'fbank' or 'mfcc', got {kind!r}")
        self.kind, self.num_bins, self.num_ceps = kind, num_bins, num_ceps
        self.options = dict(sample_frequency=SAMPLE_RATE, dither=dither, num_mel_bins=num_bins, **kaldi_options)
        if kind == "mfcc":
            self.options["num_ceps"] = num_ceps
        self.frame_length_ms = self.options.get("frame_length", 25.0)
        self.frame_shift_ms = self.options.get("frame_shift", 10.0)

    @property
    def frame_rate(self) -> float:
        """Frames per second."""
        return 1000.0 / self.frame_shift_ms

    @property
    def dim(self) -> int:
        """Feature dimension."""
        return self.num_bins if self.kind == "fbank" else self.num_ceps

    def frames_for(self, num_samples):
        """Frames for ``num_samples`` (Kaldi ``snip_edges``: whole windows only)."""
        win = int(SAMPLE_RATE * self.frame_length_ms / 1000)
        hop = int(SAMPLE_RATE * self.frame_shift_ms / 1000)
        n = (num_samples - win) // hop + 1
        return n.clamp(min=0) if isinstance(n, torch.Tensor) else max(int(n), 0)

    @torch.no_grad()
    def forward(self, wavs, wav_lengths=None):
        """Features of each waveform (computed one by one: Kaldi's functions take one waveform)."""
        items = split_batch(wavs, wav_lengths)
        fn = kaldi.fbank if self.kind == "fbank" else kaldi.mfcc
        outs = []
        for i, w in enumerate(items):
            if self.frames_for(w.shape[0]) < 1:
                raise ValueError(f"waveform {i} has {w.shape[0]} samples, shorter than one {self.kind} window")
            # Kaldi works on int16-scaled samples
            outs.append(fn(w.float()[None] * 32768.0, **self.options))
        lengths = torch.tensor([o.shape[0] for o in outs], dtype=torch.long)
        return nn.utils.rnn.pad_sequence(outs, batch_first=True), lengths


def split_batch(wavs, wav_lengths) -> list[torch.Tensor]:
    """A padded batch ``[B, T]`` (cut to ``wav_lengths``), one waveform or a list of them, as a list of 1-D tensors.

    Examples
    --------
    >>> [w.shape[0] for w in split_batch(torch.zeros(2, 8), torch.tensor([8, 5]))]
    [8, 5]
    """
    if isinstance(wavs, (list, tuple)):
        return [torch.as_tensor(w).reshape(-1) for w in wavs]
    if wavs.dim() == 1:
        wavs = wavs[None]
    if wavs.dim() != 2:
        raise ValueError(f"wavs must be [B, T] or a list of [T] tensors, got shape {tuple(wavs.shape)}")
    if wav_lengths is None:
        return list(wavs)
    if len(wav_lengths) != wavs.shape[0]:
        raise ValueError(f"wav_lengths has {len(wav_lengths)} entries for a batch of {wavs.shape[0]}")
    return [w[: int(n)] for w, n in zip(wavs, wav_lengths)]


# encoders loaded from a model directory, and what that directory is
MODEL_DIR_ENCODERS = {"hubert": "a converted HuBERT directory", "phonetic": "most-train-phonetic-encoder output"}


def build_encoder(kind: str, **kwargs) -> nn.Module:
    """Build a feature encoder by name: ``"hubert"``, ``"phonetic"``, ``"fbank"`` or ``"mfcc"``.

    Parameters
    ----------
    kind : str
    **kwargs
        ``hubert``: ``model_dir`` (required), ``layer``, ``chunk_seconds``, ...;
        ``phonetic``: ``model_dir`` (required, :class:`~most_speech.audio.phonetic.PhoneticEncoder`), ``layer``;
        ``fbank`` / ``mfcc``: ``KaldiFrontend`` options.

    Examples
    --------
    >>> build_encoder("mfcc", num_ceps=20).dim
    20
    """
    if kind in MODEL_DIR_ENCODERS and kwargs.get("model_dir") is None:
        raise ValueError(f"build_encoder({kind!r}) needs model_dir ({MODEL_DIR_ENCODERS[kind]})")
    if kind == "hubert":  # imported here: transformers takes seconds to load, fbank / phonetic need none of it
        from most_speech.audio.hubert import HubertEncoder

        return HubertEncoder.from_pretrained(kwargs.pop("model_dir"), **kwargs)
    if kind == "phonetic":
        from most_speech.audio.phonetic import PhoneticEncoder

        return PhoneticEncoder.from_pretrained(kwargs["model_dir"], layer=kwargs.get("layer"))
    if kind in ("fbank", "mfcc"):
        return KaldiFrontend(kind, **kwargs)
    raise ValueError(f"unknown encoder {kind!r}: expected 'hubert', 'phonetic', 'fbank' or 'mfcc'")
