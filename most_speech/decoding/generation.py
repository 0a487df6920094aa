"""Generation building blocks shared by the ASR, TTS and spoken-QA decoders.

``model.generate`` (transformers, with the model's absorbed-MLA KV cache) does batch decoding, greedy and
beam search. What transformers does not provide and MoST needs is written here: a logits processor that keeps
speech generation on unit tokens, length limits tied to the input text, left-padded batching of prompts with
their continuous-audio features, and a step-by-step sampling loop for streaming.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional, Sequence

import torch
from transformers import LogitsProcessor, LogitsProcessorList
from transformers.generation.logits_process import (TemperatureLogitsWarper, TopKLogitsWarper,
                                                    TopPLogitsWarper)

from ..text.token_layout import TokenLayout


@dataclass
class SamplingConfig:
    """Sampling settings for speech (unit) generation.

    ``temperature <= 0`` means greedy. ``top_k = 0`` and ``top_p = 1`` switch those filters off.
    """

    temperature: float = 0.8
    top_k: int = 50
    top_p: float = 0.95
    seed: Optional[int] = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    def generate_kwargs(self) -> dict:
        if self.greedy:
            return {"do_sample": False}
        return {"do_sample": True, "temperature": self.temperature, "top_k": self.top_k or None,
                "top_p": self.top_p}

    def warpers(self) -> LogitsProcessorList:
        procs = LogitsProcessorList()
        if not self.greedy:
            procs.append(TemperatureLogitsWarper(self.temperature))
            if self.top_k:
                procs.append(TopKLogitsWarper(self.top_k))
            if self.top_p < 1.0:
                procs.append(TopPLogitsWarper(self.top_p))
        return procs


class UnitOnlyLogitsProcessor(LogitsProcessor):
    """Keep speech generation well formed: ``boa`` first (unless the prompt ends in it), then unit tokens or
    ``eoa``; everything else gets ``-inf``. ``min_units`` forbids ``eoa`` before that many units;
    ``max_units`` (one per prompt) forces ``eoa`` once a row has that many. Beams of a prompt are adjacent rows.

    Examples
    --------
    >>> from most_speech.text.token_layout import TokenLayout
    >>> layout = TokenLayout.build(text_vocab_size=10, num_units=4)
    >>> proc = UnitOnlyLogitsProcessor(layout, prompt_length=2)
    >>> scores = proc(torch.tensor([[1, 2]]), torch.zeros(1, layout.vocab_size))
    >>> torch.isfinite(scores[0]).nonzero().flatten().tolist() == [layout.boa_id]
    True
    """

    def __init__(self, layout: TokenLayout, prompt_length: int, min_units: int = 0,
                 max_units: Optional[Sequence[int]] = None):
        self.layout = layout
        self.prompt_length = prompt_length
        self.min_units = min_units
        self.max_units = None if max_units is None else torch.as_tensor(list(max_units))
        self._unit_mask = None

    def _masks(self, vocab: int, device):
        if self._unit_mask is None or self._unit_mask.device != device:
            unit = torch.zeros(vocab, dtype=torch.bool, device=device)
            unit[self.layout.unit_offset:self.layout.unit_offset + self.layout.num_units] = True
            self._unit_mask = unit
        return self._unit_mask

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        lay = self.layout
        units = self._masks(scores.shape[-1], scores.device)
        generated = input_ids[:, self.prompt_length:]
        is_unit = (generated >= lay.unit_offset) & (generated < lay.unit_offset + lay.num_units)
        started = (generated == lay.boa_id).any(1)
        if self.prompt_length > 0:  # a prompt that already ends in boa
            started |= input_ids[:, self.prompt_length - 1] == lay.boa_id
        done = (generated == lay.eoa_id).any(1)
        allowed = units.expand_as(scores).clone()
        allowed[:, lay.eoa_id] = is_unit.sum(1) >= self.min_units
        if self.max_units is not None:  # per-row budget reached: only eoa
            full = is_unit.sum(1) >= self.max_units.to(scores.device).repeat_interleave(
                scores.shape[0] // self.max_units.numel())
            allowed[full] = False
            allowed[full, lay.eoa_id] = True
        allowed[~started] = False
        allowed[~started, lay.boa_id] = True
        # After eoa only EOS may follow (generate() stops at eoa when it is an eos_token_id).
        allowed[done] = False
        allowed[done, lay.eos_id] = True
        return scores.masked_fill(~allowed, float("-inf"))


def tts_unit_budget(num_text_tokens: int, unit_rate: float, max_units_per_token: float = 24.0,
                    min_units_per_token: float = 0.0, floor: int = 10, cap: int = 4096):
    """(min_units, max_units) for a text of ``num_text_tokens`` tokens.

    The maximum is proportional to the text length (a sub-word token rarely lasts over ~0.5 s of speech, 24
    units at 50 units/s: small SentencePiece vocabularies make many whole words one token, and in the mini
    corpus an utterance's tokens last up to 0.37 s on average), so a model that never emits ``eoa`` stops.
    """
    max_units = int(min(cap, max(floor, round(max_units_per_token * num_text_tokens * unit_rate / 50.0))))
    min_units = int(min(max_units - 1, round(min_units_per_token * num_text_tokens)))
    return max(0, min_units), max_units


@dataclass
class PromptBatch:
    """Left-padded prompts ready for ``model.generate``."""

    input_ids: torch.LongTensor
    attention_mask: torch.LongTensor
    audio_features: Optional[torch.Tensor] = None
    audio_feature_lengths: Optional[torch.LongTensor] = None

    def to(self, device) -> "PromptBatch":
        """The same batch on ``device`` (the model's), so decoding runs where the model is."""
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return PromptBatch(move(self.input_ids), move(self.attention_mask), move(self.audio_features),
                           move(self.audio_feature_lengths))

    def generate_kwargs(self) -> dict:
        kw = {"attention_mask": self.attention_mask}
        if self.audio_features is not None:
            kw.update(audio_features=self.audio_features, audio_feature_lengths=self.audio_feature_lengths)
        return kw


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int,
             features: Optional[Sequence[torch.Tensor]] = None) -> PromptBatch:
    """Left-pad token prompts; pad the continuous-audio segments (in row-major span order) along time.

    Examples
    --------
    >>> b = left_pad([[5, 6, 7], [8]], pad_id=0)
    >>> b.input_ids.tolist(), b.attention_mask.tolist()
    ([[5, 6, 7], [0, 0, 8]], [[1, 1, 1], [0, 0, 1]])
    """
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        if len(p):
            ids[i, width - len(p):] = torch.as_tensor(list(p), dtype=torch.long)
            mask[i, width - len(p):] = 1
    batch = PromptBatch(ids, mask)
    if features:
        lengths = torch.tensor([f.shape[0] for f in features])
        feats = torch.zeros(len(features), int(lengths.max()), features[0].shape[1], dtype=features[0].dtype)
        for i, f in enumerate(features):
            feats[i, :f.shape[0]] = f
        batch.audio_features, batch.audio_feature_lengths = feats, lengths
    return batch


@torch.no_grad()
def iter_tokens(model, input_ids: torch.LongTensor, *, max_new_tokens: int, stop_ids: Sequence[int],
                processors: Optional[LogitsProcessorList] = None, sampling: Optional[SamplingConfig] = None,
                use_cache: bool = True, prefill: Optional[Callable] = None) -> Iterator[int]:
    """Yield generated token ids one at a time for a single prompt (batch 1), with the KV cache.

    This is the loop behind streaming synthesis: the caller can turn tokens into audio while later tokens
    are still being generated. ``prefill(model)`` may replace the first forward (e.g. a spliced prompt) and
    must return ``(logits, past_key_values)``.
    """
    sampling = sampling or SamplingConfig(temperature=0)
    processors = LogitsProcessorList([*(processors or []), *sampling.warpers()])
    gen = torch.Generator().manual_seed(sampling.seed) if sampling.seed is not None else None
    ids = input_ids
    if prefill is not None:
        logits, past = prefill(model)
    else:
        out = model(input_ids=ids, use_cache=use_cache)
        logits, past = out.logits[:, -1], out.past_key_values
    for _ in range(max_new_tokens):
        scores = processors(ids, logits.float())
        if sampling.greedy:
            token = scores.argmax(-1)
        else:
            token = torch.multinomial(scores.softmax(-1), 1, generator=gen).squeeze(1)
        tok = int(token)
        yield tok
        if tok in stop_ids:
            return
        ids = torch.cat([ids, token[:, None]], 1)
        if use_cache:
            out = model(input_ids=token[:, None], past_key_values=past, use_cache=True)
            logits, past = out.logits[:, -1], out.past_key_values
        else:
            logits = model(input_ids=ids, use_cache=False).logits[:, -1]


def chunks(seq: Sequence, size: int) -> List[Sequence]:
    """Split ``seq`` into consecutive pieces of at most ``size`` items."""
    return [seq[i:i + size] for i in range(0, len(seq), size)]
