"""Continuous audio input for training: encoder frames for the audio spans of a batch.

A batch's ``audio_spans`` (per row, in position order) name utterances by key; a feature source returns
one ``[N, D]`` matrix per key, and :func:`batch_audio_features` pads them into the ``[S, N, D]`` /
``[S]`` tensors that ``MoSTForCausalLM.forward(audio_features=..., audio_feature_lengths=...)`` splices in.

Sources: :class:`StoreFeatures` (precomputed frames in a kaldiio feature store, the fast path) and
:class:`HubertFeatures` (a frozen :class:`~most_speech.audio.hubert.HubertEncoder` run on the fly).
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence

import torch

from most_speech.data.manifest import relocate


class StoreFeatures:
    """Frames from a feature store (:class:`~most_speech.audio.store.FeatureReader` directory or scp file).

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from pathlib import Path
    >>> from most_speech.audio.store import FeatureWriter
    >>> d = Path(tempfile.mkdtemp())
    >>> with FeatureWriter(d / "feats.0-of-1") as w:
    ...     w.write("u1", np.ones((3, 4), dtype=np.float32))
    >>> StoreFeatures(d)(["u1"])[0].shape
    torch.Size([3, 4])
    """

    def __init__(self, path):
        from most_speech.audio.store import FeatureReader

        self.reader = FeatureReader(path)

    def keys(self):
        return self.reader.keys()

    def __call__(self, keys: Sequence[str]) -> List[torch.Tensor]:
        return [torch.as_tensor(self.reader[k], dtype=torch.float32) for k in keys]


class HubertFeatures:
    """Frames computed on the fly by a frozen HuBERT encoder from the manifests' audio.

    Parameters
    ----------
    encoder : HubertEncoder
        Frozen encoder (kept in eval mode, no gradients).
    entries : mapping of str to dict
        Utterance key -> manifest entry (``audio``, optional ``start``/``duration``).
    data_root : str, optional
        Replaces ``{data_root}`` in audio paths.
    """

    def __init__(self, encoder, entries: Mapping[str, dict], data_root: Optional[str] = None,
                 sample_rate: int = 16000):
        self.encoder = encoder.eval()
        self.entries = entries
        self.data_root = data_root
        self.sample_rate = sample_rate

    def keys(self):
        return self.entries.keys()

    @torch.no_grad()
    def __call__(self, keys: Sequence[str]) -> List[torch.Tensor]:
        from most_speech.audio.io import load_audio

        wavs = []
        for k in keys:
            e = relocate(self.entries[k], self.data_root) if self.data_root else self.entries[k]
            wavs.append(load_audio(e["audio"], self.sample_rate, e.get("start", 0.0), e.get("duration")))
        lengths = torch.tensor([w.numel() for w in wavs])
        padded = torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True)
        device = next(self.encoder.parameters()).device
        feats, feat_lengths = self.encoder(padded.to(device), lengths.to(device))
        return [feats[i, :int(n)].float().cpu() for i, n in enumerate(feat_lengths)]


def batch_audio_features(audio_spans: Sequence[Sequence], source) -> Optional[Dict[str, torch.Tensor]]:
    """``{"audio_features": [S, N, D], "audio_feature_lengths": [S]}`` for a batch, or None without spans.

    When a span knows its transcript (ASR examples) the dict also holds ``audio_ctc_targets [S, L]`` (padded
    with 0) and ``audio_ctc_target_lengths [S]`` (0 for spans without one), the model's CTC targets.

    Examples
    --------
    >>> from most_speech.data.templates import AudioSpan
    >>> src = lambda keys: [torch.ones(2, 3), torch.ones(4, 3)][:len(keys)]
    >>> out = batch_audio_features([[AudioSpan(1, "a")], [AudioSpan(1, "b", transcript=(7, 8))]], src)
    >>> out["audio_features"].shape, out["audio_feature_lengths"].tolist()
    (torch.Size([2, 4, 3]), [2, 4])
    >>> out["audio_ctc_targets"].tolist(), out["audio_ctc_target_lengths"].tolist()
    ([[0, 0], [7, 8]], [0, 2])
    """
    keys = [span.key for row in audio_spans for span in row]
    if not keys:
        return None
    if source is None:
        raise ValueError(f"the batch has continuous audio spans (e.g. {keys[0]!r}) but no feature source is "
                         f"configured (set audio_features_store or use speech_input: units)")
    mats = source(keys)
    lengths = torch.tensor([m.shape[0] for m in mats], dtype=torch.long)
    out = {"audio_features": torch.nn.utils.rnn.pad_sequence(mats, batch_first=True),
           "audio_feature_lengths": lengths}
    transcripts = [span.transcript or () for row in audio_spans for span in row]
    if any(transcripts):
        out["audio_ctc_targets"] = torch.nn.utils.rnn.pad_sequence(
            [torch.tensor(t, dtype=torch.long) for t in transcripts], batch_first=True)
        out["audio_ctc_target_lengths"] = torch.tensor([len(t) for t in transcripts], dtype=torch.long)
    return out


def batch_unit_spans(unit_spans: Sequence[Sequence]) -> Optional[Dict[str, torch.Tensor]]:
    """The model's ``unit_spans`` argument for a batch's TTS unit spans (per row), or None without any.

    ``{"starts": [S, 2] (row, first unit column), "lengths": [S], "targets": [S, L] (text ids, padded with 0),
    "target_lengths": [S]}``.

    Examples
    --------
    >>> from most_speech.data.templates import UnitSpan
    >>> out = batch_unit_spans([[], [UnitSpan(5, 30, (7, 8, 9))]])
    >>> out["starts"].tolist(), out["lengths"].tolist(), out["targets"].tolist()
    ([[1, 5]], [30], [[7, 8, 9]])
    >>> batch_unit_spans([[], []]) is None
    True
    """
    spans = [(row, span) for row, row_spans in enumerate(unit_spans) for span in row_spans if span.transcript]
    if not spans:
        return None
    return {"starts": torch.tensor([[row, span.position] for row, span in spans], dtype=torch.long),
            "lengths": torch.tensor([span.length for _, span in spans], dtype=torch.long),
            "targets": torch.nn.utils.rnn.pad_sequence(
                [torch.tensor(span.transcript, dtype=torch.long) for _, span in spans], batch_first=True),
            "target_lengths": torch.tensor([len(span.transcript) for _, span in spans], dtype=torch.long)}
