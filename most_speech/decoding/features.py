"""Where decoders get the continuous-audio frames of an utterance: a speech encoder on the audio, or a store.

A feature source is any callable ``entries -> list of [frames, dim] tensors``. Batching all of a batch's
segments through the encoder at once is the fast path (``bench/features.py`` measures it).
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence

import torch

from ..audio.io import load_audio

FeatureSource = Callable[[Sequence[dict]], List[torch.Tensor]]


class EncoderFeatures:
    """Encode the manifest entries' audio (``audio``, optional ``start`` / ``duration``) with ``encoder``.

    Parameters
    ----------
    encoder : nn.Module
        ``encoder(wavs [B, T], lengths [B]) -> (feats [B, N, D], feat_lengths [B])`` (HubertEncoder,
        KaldiFrontend).
    data_root : str, optional
        Substituted for ``{data_root}`` in audio paths.

    Examples
    --------
    >>> from most_speech.audio.frontends import build_encoder
    >>> src = EncoderFeatures(build_encoder("fbank"))                  # doctest: +SKIP
    >>> feats = src([{"id": "a", "audio": "a.wav"}])                    # doctest: +SKIP
    """

    def __init__(self, encoder, data_root: Optional[str] = None, sample_rate: int = 16000):
        self.encoder = encoder
        self.data_root = data_root
        self.sample_rate = sample_rate

    def _path(self, entry: dict) -> str:
        path = entry["audio"]
        if self.data_root is not None:
            path = path.replace("{data_root}", self.data_root)
        return path

    @torch.no_grad()
    def __call__(self, entries: Sequence[dict]) -> List[torch.Tensor]:
        wavs = [load_audio(self._path(e), self.sample_rate, start=float(e.get("start", 0.0)),
                           duration=e.get("duration")) for e in entries]
        lengths = torch.tensor([w.shape[0] for w in wavs])
        batch = torch.nn.utils.rnn.pad_sequence([w.float() for w in wavs], batch_first=True)
        feats, feat_lengths = self.encoder(batch, lengths)
        return [feats[i, :int(n)].float() for i, n in enumerate(feat_lengths)]


class StoredFeatures:
    """Read precomputed frames by utterance id (or ``feature_key``) from a reader with ``reader[key]``."""

    def __init__(self, reader):
        self.reader = reader

    def __call__(self, entries: Sequence[dict]) -> List[torch.Tensor]:
        return [torch.as_tensor(self.reader[str(e.get("feature_key", e["id"]))]).float() for e in entries]
