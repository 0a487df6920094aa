"""Best-of-N TTS: sample several unit sequences per text and keep the one a recogniser understands best.

A sampled unit sequence can swallow or garble a word; another sample of the same text may not. Speech LMs
that sample their output (VALL-E-style TTS) are commonly decoded best-of-N with an ASR ranking the candidates.
Each candidate is voiced by the vocoder and scored ``log P(text | audio)`` by a recogniser from the export
itself, so the ranking never peeks at the intelligibility judge:

* :class:`SelfASRReranker` - the MoST model in its ASR role (any export);
* :class:`EncoderCTCReranker` - the speech encoder's own CTC head (an encoder trained with one, such as the
  phonetic encoder that stands in for HuBERT in the mini recipe);
* :class:`SummedReranker` - the sum of several rankers' log-likelihoods (a product of experts).

:func:`build_reranker` makes either from an export by name.
"""
from __future__ import annotations

from typing import Callable, List, Sequence

import torch
import torch.nn.functional as F
import torchaudio

from .asr import ASRDecoder

#: the rankers :func:`build_reranker` knows
RERANKERS = ("self", "encoder_ctc", "self+encoder_ctc")

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
        return _resampled(wav, self.sample_rate)


def _resampled(wav: torch.Tensor, sample_rate: int) -> torch.Tensor:
    if sample_rate == FRONTEND_SAMPLE_RATE:
        return wav
    return torchaudio.functional.resample(wav, sample_rate, FRONTEND_SAMPLE_RATE)


class EncoderCTCReranker:
    """Score TTS candidates by the CTC log-likelihood the speech encoder's own CTC head gives their text.

    The encoder must have been trained with a CTC head on characters or phonemes
    (:class:`~most_speech.audio.phonetic.PhoneticEncoder`): the text is turned into its training targets (the
    same normaliser, and espeak-ng phonemes for ``targets="phonemes"``) and each candidate scores
    ``log P_ctc(targets | audio)``. It is a second opinion, independent of the LM: on four sets of 100 mini-run
    sentences its picks among 8 candidates read at 55.6 % judge WER on average, the model's own ASR's at 56.6 %
    and those of the sum of the two (:class:`SummedReranker`) at 54.6 % (LibriHeavy ``RESULTS.md``, *Two
    recognisers, eight candidates*).

    Parameters
    ----------
    encoder : PhoneticEncoder
        Anything with ``frontend(wavs, lengths) -> (fbank, lengths)``, ``ctc_log_probs(fbank, lengths)`` and a
        ``config`` with ``vocab`` and ``targets``.
    sample_rate : int
        The candidates' sample rate (the vocoder's); resampled to 16 kHz for the encoder.
    espeak_voice : str
        espeak-ng voice of phoneme targets (the one the encoder was trained with; ``most-train-phonetic-encoder
        --espeak-voice``).

    Examples
    --------
    >>> ranker = EncoderCTCReranker(loaded.encoder, loaded.vocoder.sample_rate)   # doctest: +SKIP
    >>> ranker.scores("HELLO WORLD", [wav_a, wav_b])                              # doctest: +SKIP
    tensor([-18.2, -40.5])
    """

    def __init__(self, encoder, sample_rate: int, espeak_voice: str = "en-us"):
        if not callable(getattr(encoder, "ctc_log_probs", None)):
            raise ValueError(f"the speech encoder ({type(encoder).__name__}) has no CTC head to rank with; "
                             f"use the model's own ASR (reranker 'self')")
        self.encoder = encoder
        self.sample_rate = sample_rate
        self.espeak_voice = espeak_voice
        self._index = {s: i + 1 for i, s in enumerate(encoder.config.vocab)}  # 0 is the blank

    def targets(self, text: str) -> torch.Tensor:
        """The CTC target ids of ``text`` (symbols outside the encoder's vocabulary are left out)."""
        from ..audio.phonetic_fit import normalize_transcript, target_symbols

        symbols = target_symbols({"t": normalize_transcript(text)}, self.encoder.config.targets,
                                 self.espeak_voice).get("t", [])
        ids = [self._index[s] for s in symbols if s in self._index]
        if not ids:
            raise ValueError(f"text {text!r} has no symbol the encoder's CTC head knows")
        return torch.tensor(ids)

    @torch.no_grad()
    def scores(self, text: str, wavs: Sequence[torch.Tensor]) -> torch.Tensor:
        """``log P_ctc(text | wav)`` per candidate; empty, too short or unalignable candidates get -inf."""
        out = torch.full((len(wavs),), float("-inf"))
        keep = [k for k, w in enumerate(wavs) if w.numel() >= self.sample_rate // 10]
        if not keep:
            return out
        audio = [_resampled(wavs[k], self.sample_rate) for k in keep]
        lengths = torch.tensor([a.shape[0] for a in audio])
        batch = torch.nn.utils.rnn.pad_sequence([a.float() for a in audio], batch_first=True)
        fbank, fbank_lengths = self.encoder.frontend(batch, lengths)
        training = getattr(self.encoder, "training", False)
        if training:
            self.encoder.eval()  # no dropout in the scores (the frozen encoder's forward does the same)
        try:
            log_probs, frames = self.encoder.ctc_log_probs(fbank, fbank_lengths)
        finally:
            if training:
                self.encoder.train()
        target = self.targets(text)
        nll = F.ctc_loss(log_probs.float().transpose(0, 1), target.repeat(len(keep), 1), frames.cpu(),
                         torch.full((len(keep),), len(target)), reduction="none")
        out[keep] = -nll.cpu()  # an unalignable candidate (too few frames) has infinite loss: -inf
        return out


class SummedReranker:
    """Score TTS candidates by the sum of several rankers' scores (log-likelihoods: a product of experts).

    Two recognisers err on different candidates: on the mini run's candidates the sum of the model's own
    ASR score and the phonetic encoder's CTC score picked better among 8 than either alone (LibriHeavy
    ``RESULTS.md``).

    Examples
    --------
    >>> class Const:
    ...     def __init__(self, *v): self.v = torch.tensor(v)
    ...     def scores(self, text, wavs): return self.v
    >>> SummedReranker([Const(-1.0, -5.0), Const(-4.0, -1.0)]).scores("hi", [None, None])
    tensor([-5., -6.])
    """

    def __init__(self, rankers: Sequence):
        if not rankers:
            raise ValueError("SummedReranker needs at least one ranker")
        self.rankers = list(rankers)

    def scores(self, text: str, wavs: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.stack([r.scores(text, wavs).float() for r in self.rankers]).sum(0)


def build_reranker(name: str, loaded, ctc_weight: float = 0.0):
    """The best-of-N ranker ``name`` (one of :data:`RERANKERS`) of a loaded export.

    ``"self"``: the export's model as ASR, ``ctc_weight`` its joint CTC weight; ``"encoder_ctc"``: the export's
    speech encoder's CTC head (``ctc_weight`` unused); ``"self+encoder_ctc"``: the sum of the two scores.

    Examples
    --------
    >>> build_reranker("encoder_ctc", loaded)                                     # doctest: +SKIP
    <most_speech.decoding.rerank.EncoderCTCReranker object at ...>
    """
    if name == "self":
        return SelfASRReranker.for_export(loaded, ctc_weight)
    if name == "encoder_ctc":
        return EncoderCTCReranker(loaded.encoder, loaded.vocoder.sample_rate)
    if name == "self+encoder_ctc":
        return SummedReranker([build_reranker("self", loaded, ctc_weight), build_reranker("encoder_ctc", loaded)])
    raise ValueError(f"unknown reranker {name!r}; expected one of {RERANKERS}")
