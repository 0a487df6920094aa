"""TTS decoding: text -> unit tokens (sampled, KV cache, stop at end-of-audio) -> vocoder -> waveform.

Generation is kept on unit tokens by :class:`~most_speech.decoding.generation.UnitOnlyLogitsProcessor`, and
its length is bounded by the text length (:func:`~most_speech.decoding.generation.tts_unit_budget`), so a
model that never says end-of-audio still stops. ``stream`` yields audio chunks while units are generated.
"""
from __future__ import annotations

import logging
from contextlib import nullcontext
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import torch
from transformers import LogitsProcessorList

from ..audio.io import load_audio, save_audio
from ..data.templates import TaskTemplates
from .generation import SamplingConfig, UnitOnlyLogitsProcessor, chunks, iter_tokens, left_pad, tts_unit_budget

log = logging.getLogger(__name__)

#: sample rate of the real-audio clips cut for the intelligibility judges
REAL_CLIP_SAMPLE_RATE = 16000


def cut_real_clip(audio, clip, start: float = 0.0, duration: Optional[float] = None) -> Path:
    """Cut one real recording (or its ``start`` / ``duration`` segment) to a 16 kHz wav ``clip``.

    Segment manifests point into long recordings, so the judge's real-audio WER needs the sentence cut out.

    Returns
    -------
    Path
        ``clip``, absolute.

    Examples
    --------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> save_audio(d / "long.wav", torch.zeros(32000), 16000)
    >>> load_audio(cut_real_clip(d / "long.wav", d / "c.wav", 1.0, 0.5)).shape
    torch.Size([8000])
    """
    wav = load_audio(audio, REAL_CLIP_SAMPLE_RATE, start=float(start), duration=duration)
    save_audio(clip, wav, REAL_CLIP_SAMPLE_RATE)
    return Path(clip).resolve()


class TTSDecoder:
    """Synthesize speech with a MoST model and a unit vocoder.

    Parameters
    ----------
    model : MoSTForCausalLM
    templates : TaskTemplates
    vocoder : UnitVocoder, optional
        Needed for waveforms (``synthesize`` / ``stream``), not for ``generate_units``.
    km_tag : str, optional
        Tag of the k-means model whose units the LM was trained on; the vocoder refuses a different one.
    sampling : SamplingConfig
        Temperature / top-k / top-p (temperature 0: greedy).
    unit_rate : float
        Units per second of audio (50 for HuBERT-base units, 25 for mHuBERT-25Hz); scales the length limit.
    guidance_scale : float
        Classifier-free guidance: above 1 the next-unit log-probabilities become
        ``u + scale * (c - u)``, ``c`` given the text and ``u`` given no text (the prompt ``guidance_prompt``),
        which pushes the units towards what the text adds (transformers' CFG logits processor).
    guidance_prompt : {"instruction", "bos"}
        The unconditional prompt: the TTS instruction without text, or BOS alone (the ``speech_lm`` task's
        prompt: the natural choice for a model trained with that task).
    num_candidates : int
        Best-of-N: sample this many unit sequences per text and keep the one ``reranker`` scores highest
        (1: one sample, no ranking). Needs a vocoder and a reranker; ``stream`` always samples once.
    reranker : SelfASRReranker, EncoderCTCReranker or SummedReranker, optional
        ``reranker.scores(text, wavs) -> tensor`` (:mod:`most_speech.decoding.rerank`).
    draft_griffin_lim_iters : int, optional
        Best-of-N with a Griffin-Lim vocoder (conv-mel, mean-mel): voice the candidates for ranking with this
        many iterations and only the kept one with the vocoder's own (ignored with one candidate). On the mini
        run's candidates, rankers chose as well from 8-iteration drafts as from 32-iteration audio (LibriHeavy
        ``RESULTS.md``), and Griffin-Lim is most of the cost of a candidate.

    Examples
    --------
    >>> tts = TTSDecoder(model, templates, vocoder, km_tag=vocoder.km_tag)        # doctest: +SKIP
    >>> wav = tts.synthesize(["Hello world."])[0]                                   # doctest: +SKIP
    >>> best_of_4 = TTSDecoder(model, templates, vocoder, num_candidates=4,
    ...                        reranker=SelfASRReranker(asr, loaded.entries, 16000))  # doctest: +SKIP
    """

    def __init__(self, model, templates: TaskTemplates, vocoder=None, km_tag: Optional[str] = None,
                 sampling: Optional[SamplingConfig] = None, unit_rate: float = 50.0, batch_size: int = 8,
                 max_units_per_token: float = 24.0, min_units_per_token: float = 0.0,
                 guidance_scale: float = 1.0, guidance_prompt: str = "instruction", num_candidates: int = 1,
                 reranker=None, draft_griffin_lim_iters: Optional[int] = None):
        if guidance_prompt not in ("instruction", "bos"):
            raise ValueError(f"guidance_prompt must be 'instruction' or 'bos', got {guidance_prompt!r}")
        if num_candidates < 1 or (num_candidates > 1 and reranker is None):
            raise ValueError(f"num_candidates must be >= 1, and above 1 needs a reranker (got {num_candidates})")
        if num_candidates == 1:
            draft_griffin_lim_iters = None  # drafts only serve the ranking of several candidates
        if draft_griffin_lim_iters and not hasattr(vocoder, "griffin_lim_iterations"):
            raise ValueError(f"draft_griffin_lim_iters needs a Griffin-Lim vocoder (conv-mel, mean-mel), "
                             f"not {type(vocoder).__name__}")
        self.model = model.eval()
        self.templates = templates
        self.tokenizer = templates.tokenizer
        self.layout = templates.layout
        self.vocoder = vocoder
        self.km_tag = km_tag
        self.sampling = sampling or SamplingConfig()
        self.unit_rate = unit_rate
        self.batch_size = batch_size
        self.max_units_per_token = max_units_per_token
        self.min_units_per_token = min_units_per_token
        self.guidance_scale = guidance_scale
        self.guidance_prompt = guidance_prompt
        self.num_candidates = num_candidates
        self.reranker = reranker
        self.draft_griffin_lim_iters = draft_griffin_lim_iters

    def _prompt(self, text: str) -> List[int]:
        return self.templates.build("tts", {"id": "tts", "text": text}, prompt_only=True).input_ids

    def _unconditional_prompt(self) -> List[int]:
        if self.guidance_prompt == "bos":
            return [self.layout.bos_id]
        return [self.layout.bos_id] + self.tokenizer.encode(self.templates.config.tts_instruction, parse_special=False)

    def _guidance_kwargs(self, batch_size: int) -> dict:
        if self.guidance_scale == 1.0:
            return {}
        # one prompt for every row: no padding, so its positions are those the model was trained with
        uncond = torch.tensor([self._unconditional_prompt()] * batch_size, device=self.model.device)
        return {"guidance_scale": self.guidance_scale, "negative_prompt_ids": uncond}

    def _budget(self, text: str):
        n = len(self.tokenizer.encode(text, parse_special=False))
        return tts_unit_budget(n, self.unit_rate, self.max_units_per_token, self.min_units_per_token)

    @torch.no_grad()
    def generate_units_batch(self, texts: Sequence[str], use_cache: bool = True) -> List[List[int]]:
        """Unit sequences for one batch of texts (deduplicated or frame-rate, as the model was trained)."""
        prompts = [self._prompt(t) for t in texts]
        budgets = [self._budget(t) for t in texts]
        batch = left_pad(prompts, self.tokenizer.pad_id).to(self.model.device)
        width = batch.input_ids.shape[1]
        proc = UnitOnlyLogitsProcessor(self.layout, width, min_units=min(b[0] for b in budgets),
                                       max_units=[b[1] for b in budgets])
        if self.sampling.seed is not None:
            torch.manual_seed(self.sampling.seed)
        out = self.model.generate(batch.input_ids, attention_mask=batch.attention_mask,
                                  logits_processor=LogitsProcessorList([proc]),
                                  max_new_tokens=max(b[1] for b in budgets) + 2, use_cache=use_cache,
                                  eos_token_id=[self.layout.eoa_id, self.layout.eos_id],
                                  pad_token_id=self.tokenizer.pad_id, **self.sampling.generate_kwargs(),
                                  **self._guidance_kwargs(len(texts)))
        return [self.tokenizer.ids_to_units(row) for row in out[:, width:].tolist()]

    def generate_units(self, texts: Sequence[str], use_cache: bool = True) -> List[List[int]]:
        """Unit sequences for all texts, batched."""
        units: List[List[int]] = []
        for part in chunks(list(texts), self.batch_size):
            units += self.generate_units_batch(part, use_cache=use_cache)
        return units

    def _require_vocoder(self):
        if self.vocoder is None:
            raise ValueError("TTSDecoder has no vocoder: pass one to synthesize waveforms")
        return self.vocoder

    def synthesize(self, texts: Sequence[str]) -> List[torch.Tensor]:
        """Waveforms (1-D float tensors at the vocoder's sample rate) for ``texts``."""
        return self.synthesize_with_units(texts)[1]

    def synthesize_with_units(self, texts: Sequence[str]) -> Tuple[List[List[int]], List[torch.Tensor],
                                                                    List[Optional[float]]]:
        """Units, waveforms and the reranker's score (None without best-of-N) of each text.

        With ``num_candidates`` N > 1 every text is sampled N times (the N rows share a generation batch) and
        the candidate with the highest ``reranker`` score is kept.
        """
        n = self.num_candidates
        units = self.generate_units([t for t in texts for _ in range(n)])
        empty = [i for i, u in enumerate(units) if not u]
        if empty:
            log.warning("no units generated for %d of %d sample(s), e.g. for %r", len(empty), len(units),
                        texts[empty[0] // n])
        draft = self.draft_griffin_lim_iters
        wavs = self._vocode(units, griffin_lim_iters=draft)
        if n == 1:
            return units, wavs, [None] * len(texts)
        best, best_scores = [], []
        for i, text in enumerate(texts):
            scores = self.reranker.scores(text, wavs[i * n:(i + 1) * n])
            best.append(i * n + int(scores.argmax()))
            best_scores.append(float(scores.max()))
        best_units = [units[k] for k in best]
        best_wavs = self._vocode(best_units) if draft else [wavs[k] for k in best]
        return best_units, best_wavs, best_scores

    def _vocode(self, units: List[List[int]], griffin_lim_iters: Optional[int] = None) -> List[torch.Tensor]:
        """The vocoder's waveforms of generated unit sequences (empty for an empty sequence).

        Deduplicated units (the templates' ``dedup_target_units``) get the vocoder's predicted durations;
        frame-rate units are voiced as they are: the model chose their durations. ``griffin_lim_iters``: a
        draft with that many Griffin-Lim iterations.
        """
        vocoder = self._require_vocoder()
        with vocoder.griffin_lim_iterations(griffin_lim_iters) if griffin_lim_iters else nullcontext():
            wavs = vocoder.synthesize([u or [0] for u in units], km_tag=self.km_tag or vocoder.km_tag,
                                      deduplicated=self.templates.config.dedup_target_units)
        return [w if u else w[:0] for w, u in zip(wavs, units)]

    def stream(self, text: str, chunk_units: int = 25) -> Iterator[torch.Tensor]:
        """Yield waveform chunks of ``chunk_units`` units each while generation goes on.

        Each chunk is vocoded on its own, so there can be a small seam at chunk boundaries; larger chunks
        trade latency for fewer seams.
        """
        vocoder = self._require_vocoder()
        prompt = torch.tensor([self._prompt(text)])
        lo, hi = self._budget(text)
        proc = UnitOnlyLogitsProcessor(self.layout, prompt.shape[1], min_units=lo, max_units=[hi])
        pending: List[int] = []
        dedup = self.templates.config.dedup_target_units
        for tok in iter_tokens(self.model, prompt, max_new_tokens=hi + 2, processors=[proc],
                               sampling=self.sampling, stop_ids=(self.layout.eoa_id, self.layout.eos_id)):
            if self.layout.is_unit(tok):
                pending.append(tok - self.layout.unit_offset)
            if len(pending) >= chunk_units:
                yield vocoder.synthesize([pending], km_tag=self.km_tag or vocoder.km_tag, deduplicated=dedup)[0]
                pending = []
        if pending:
            yield vocoder.synthesize([pending], km_tag=self.km_tag or vocoder.km_tag, deduplicated=dedup)[0]
