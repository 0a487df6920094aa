"""ASR decoding: speech (continuous frames or units) -> text, batched, greedy or beam search, with the KV cache."""
from __future__ import annotations

import logging
from typing import Dict, Iterable, List, Optional, Sequence

import torch
from tqdm import tqdm

from ..data.templates import TaskTemplates
from .features import FeatureSource
from .generation import chunks, left_pad

log = logging.getLogger(__name__)


class ASRDecoder:
    """Transcribe manifest entries with a MoST model.

    Parameters
    ----------
    model : MoSTForCausalLM
    templates : TaskTemplates
        Builds the ASR prompt (MoST's instruction by default) in the model's speech-input mode.
    features : callable, optional
        Feature source for continuous input (:mod:`most_speech.decoding.features`); not needed for units.
    beam_size : int
        1 = greedy.
    max_new_tokens : int
    batch_size : int

    Examples
    --------
    >>> dec = ASRDecoder(model, templates, features=src, beam_size=4)           # doctest: +SKIP
    >>> dec.transcribe([{"id": "utt1", "audio": "a.wav"}])                      # doctest: +SKIP
    {'utt1': 'hello world'}
    """

    def __init__(self, model, templates: TaskTemplates, features: Optional[FeatureSource] = None,
                 beam_size: int = 1, max_new_tokens: int = 200, batch_size: int = 8, length_penalty: float = 1.0):
        self.model = model.eval()
        self.templates = templates
        self.tokenizer = templates.tokenizer
        self.features = features
        self.beam_size = beam_size
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.length_penalty = length_penalty

    def _prompt_batch(self, entries: Sequence[dict]):
        examples = [self.templates.build("asr", e, prompt_only=True) for e in entries]
        feats = None
        if any(ex.audio_spans for ex in examples):
            if self.features is None:
                raise ValueError("ASR prompts use continuous audio but the decoder has no feature source")
            feats = self.features(entries)
        return left_pad([ex.input_ids for ex in examples], self.tokenizer.pad_id, feats)

    @torch.no_grad()
    def decode_batch(self, entries: Sequence[dict]) -> List[str]:
        """Hypotheses of one batch, in order."""
        batch = self._prompt_batch(entries)
        out = self.model.generate(batch.input_ids, **batch.generate_kwargs(), max_new_tokens=self.max_new_tokens,
                                  num_beams=self.beam_size, do_sample=False, length_penalty=self.length_penalty,
                                  eos_token_id=self.tokenizer.eos_id, pad_token_id=self.tokenizer.pad_id)
        if batch.audio_features is None:  # generate() returns prompt + new tokens for token prompts
            out = out[:, batch.input_ids.shape[1]:]
        return [self.tokenizer.decode(self._until_eos(row)) for row in out.tolist()]

    def _until_eos(self, ids: List[int]) -> List[int]:
        eos = self.tokenizer.eos_id
        return ids[:ids.index(eos)] if eos in ids else ids

    def transcribe(self, entries: Iterable[dict], progress: bool = True) -> Dict[str, str]:
        """Transcribe all entries (batched); returns ``{id: hypothesis}``."""
        entries = list(entries)
        hyps: Dict[str, str] = {}
        for batch in tqdm(chunks(entries, self.batch_size), desc="asr decode", disable=not progress,
                          unit="batch"):
            for entry, hyp in zip(batch, self.decode_batch(batch)):
                hyps[entry["id"]] = hyp
        return hyps
