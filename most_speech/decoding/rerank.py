"""Best-of-N TTS: sample several unit sequences per text and keep the one the model's own ASR understands best.

A sampled unit sequence can swallow or garble a word; another sample of the same text may not. Speech LMs
that sample their output (VALL-E-style TTS) are commonly decoded best-of-N with an ASR ranking the candidates.
Here the ranker is the MoST model itself, in its ASR role: each candidate is voiced by the vocoder, encoded by
the model's own front-end, and scored by :meth:`~most_speech.decoding.asr.ASRDecoder.score`, the teacher-forced
``log P(text | audio)`` (joint with the CTC head when it has one). Nothing outside the export is used, so the
ranking does not peek at the intelligibility judge.
"""
from __future__ import annotations

from typing import Callable, List, Sequence

import torch
import torchaudio

from .asr import ASRDecoder

#: sample rate of the audio the model's front-end reads
FRONTEND_SAMPLE_RATE = 16000


class SelfASRReranker:
    """Score TTS candidates by how likely the model's ASR finds the text in their audio.

    Parameters
    ----------
    asr : ASRDecoder
        The model in its ASR role; its ``ctc_weight`` sets the joint score's weight.
    to_entries : callable
        ``list of 16 kHz waveforms -> ASR entries`` (``_Loaded.entries`` of an export: it adds units for
        models that read units).
    sample_rate : int
        The candidates' sample rate (the vocoder's); resampled to 16 kHz for the front-end.

    Examples
    --------
    >>> ranker = SelfASRReranker(ASRDecoder(model, templates, features=src, ctc_weight=0.7),
    ...                          loaded.entries, vocoder.sample_rate)              # doctest: +SKIP
    >>> ranker.scores("HELLO WORLD", [wav_a, wav_b])                              # doctest: +SKIP
    tensor([-12.3, -31.9])
    """

    def __init__(self, asr, to_entries: Callable[[List[torch.Tensor]], List[dict]], sample_rate: int):
        self.asr = asr
        self.to_entries = to_entries
        self.sample_rate = sample_rate

    @classmethod
    def for_export(cls, loaded, ctc_weight: float = 0.0) -> "SelfASRReranker":
        """The ranker of a loaded export: its model as the ASR (``ctc_weight > 0`` needs a CTC head)."""
        asr = ASRDecoder(loaded.model, loaded.templates, features=loaded.features, ctc_weight=ctc_weight)
        return cls(asr, loaded.entries, loaded.vocoder.sample_rate)

    def scores(self, text: str, wavs: Sequence[torch.Tensor]) -> torch.Tensor:
        """``log P(text | wav)`` per candidate; empty or too short candidates get -inf."""
        out = torch.full((len(wavs),), float("-inf"))
        keep = [k for k, w in enumerate(wavs) if w.numel() >= self.sample_rate // 10]
        if keep:
            audio = [self._resampled(wavs[k]) for k in keep]
            out[keep] = self.asr.score(self.to_entries(audio), [text] * len(keep)).float()
        return out

    def _resampled(self, wav: torch.Tensor) -> torch.Tensor:
        if self.sample_rate == FRONTEND_SAMPLE_RATE:
            return wav
        return torchaudio.functional.resample(wav, self.sample_rate, FRONTEND_SAMPLE_RATE)
