"""Spoken QA decoding: a spoken question -> a text answer (speech->text) or a spoken answer (speech->speech)."""
from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Sequence

import torch
from transformers import LogitsProcessorList

from ..data.templates import TaskTemplates
from .features import FeatureSource
from .generation import SamplingConfig, UnitOnlyLogitsProcessor, chunks, left_pad


class SpokenQADecoder:
    """Answer spoken questions (``speech_instruction`` prompts) in text or in speech.

    Parameters
    ----------
    model, templates, features
        As for :class:`~most_speech.decoding.asr.ASRDecoder`.
    vocoder : UnitVocoder, optional
        Needed for spoken answers.
    max_new_tokens, max_units : int
        Length limits of text answers and of spoken answers (units).

    Examples
    --------
    >>> qa = SpokenQADecoder(model, templates, features=src)                     # doctest: +SKIP
    >>> qa.answer_text([{"id": "q1", "audio": "q1.wav"}])                          # doctest: +SKIP
    {'q1': 'paris'}
    """

    def __init__(self, model, templates: TaskTemplates, features: Optional[FeatureSource] = None, vocoder=None,
                 km_tag: Optional[str] = None, max_new_tokens: int = 64, max_units: int = 500,
                 batch_size: int = 8, sampling: Optional[SamplingConfig] = None):
        self.model = model.eval()
        self.templates = templates
        self.tokenizer = templates.tokenizer
        self.layout = templates.layout
        self.features = features
        self.vocoder = vocoder
        self.km_tag = km_tag
        self.max_new_tokens = max_new_tokens
        self.max_units = max_units
        self.batch_size = batch_size
        self.sampling = sampling or SamplingConfig(temperature=0)

    def _batch(self, entries: Sequence[dict], output: str):
        examples = [self.templates.build("speech_instruction", dict(e, output=output), prompt_only=True)
                    for e in entries]
        feats = self.features(entries) if any(ex.audio_spans for ex in examples) else None
        if any(ex.audio_spans for ex in examples) and self.features is None:
            raise ValueError("spoken questions use continuous audio but the decoder has no feature source")
        return left_pad([ex.input_ids for ex in examples], self.tokenizer.pad_id, feats).to(self.model.device)

    def _generate(self, batch, **kw):
        out = self.model.generate(batch.input_ids, **batch.generate_kwargs(), pad_token_id=self.tokenizer.pad_id,
                                  **kw)
        return out if batch.audio_features is not None else out[:, batch.input_ids.shape[1]:]

    @torch.no_grad()
    def answer_text(self, entries: Iterable[dict]) -> Dict[str, str]:
        """Speech -> text answers, ``{id: answer}``."""
        answers = {}
        for part in chunks(list(entries), self.batch_size):
            out = self._generate(self._batch(part, "text"), max_new_tokens=self.max_new_tokens,
                                 eos_token_id=self.tokenizer.eos_id, **self.sampling.generate_kwargs())
            for e, row in zip(part, out.tolist()):
                row = row[:row.index(self.tokenizer.eos_id)] if self.tokenizer.eos_id in row else row
                answers[e["id"]] = self.tokenizer.decode(row)
        return answers

    @torch.no_grad()
    def answer_units(self, entries: Iterable[dict]) -> Dict[str, List[int]]:
        """Speech -> spoken answers as unit sequences, ``{id: units}``."""
        answers = {}
        for part in chunks(list(entries), self.batch_size):
            batch = self._batch(part, "units")
            # With audio features the prompt goes in as embeddings and the processor sees only new tokens.
            plen = batch.input_ids.shape[1] if batch.audio_features is None else 0
            proc = UnitOnlyLogitsProcessor(self.layout, plen, max_units=[self.max_units] * len(part))
            out = self._generate(batch, max_new_tokens=self.max_units + 2,
                                 logits_processor=LogitsProcessorList([proc]),
                                 eos_token_id=[self.layout.eoa_id, self.layout.eos_id],
                                 **self.sampling.generate_kwargs())
            for e, row in zip(part, out.tolist()):
                answers[e["id"]] = self.tokenizer.ids_to_units(row)
        return answers

    def answer_speech(self, entries: Iterable[dict]) -> Dict[str, torch.Tensor]:
        """Speech -> speech: spoken answers as waveforms, ``{id: wav}``."""
        if self.vocoder is None:
            raise ValueError("SpokenQADecoder has no vocoder: pass one for spoken answers")
        units = self.answer_units(entries)
        ids = list(units)
        wavs = self.vocoder.synthesize([units[i] or [0] for i in ids], km_tag=self.km_tag or self.vocoder.km_tag,
                                       deduplicated=self.templates.config.dedup_target_units)
        return {i: (w if units[i] else w[:0]) for i, w in zip(ids, wavs)}
