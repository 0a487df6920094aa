"""Spoken-LM evaluation by likelihood pairs (ZeroSpeech sWUGGY / sBLIMP, s/tStoryCloze).

A pair holds a *good* and a *bad* item (word vs pseudoword, grammatical vs ungrammatical sentence, true vs false
story ending), each a sequence of unit or token ids. The model is right when it gives the good item the higher
log-probability; a tie counts one half (the ZeroSpeech 2021 convention). Accuracy comes with a 95% Wilson score
interval and with the accuracy of the *length baseline* (the shorter item wins): a summed log-probability
favours shorter sequences, so a model has learned something about the pairs only where it beats that baseline.
A pair set spoken by several voices holds one pair per (id, voice); accuracy is pooled over all of them and
broken down per voice, because one voice's figure can sit several points off the others by chance.

Scoring is pluggable: ``score_fn(list_of_id_sequences) -> list[float]`` log-probabilities. For pairs with a
shared ``prompt`` (a story context), the sequences are ``prompt + item`` and ``score_fn`` is called with a
keyword ``prompt_lengths`` so only the continuation is scored. :func:`make_score_fn` builds one from any
Hugging Face causal LM through :func:`sequence_logprob`.
"""
from __future__ import annotations

import logging
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from tqdm.auto import tqdm

from most_speech.scoring.io import PathLike, atomic_write_text, read_jsonl

__all__ = ["LikelihoodPair", "PairResult", "sequence_logprob", "make_score_fn", "evaluate_pairs",
           "wilson_interval", "sign_test", "read_pairs", "write_pairs", "PAIR_TYPES"]

log = logging.getLogger(__name__)

#: pair types and the benchmark each stands for
PAIR_TYPES = {"lexical": "sWUGGY", "syntactic": "sBLIMP", "story": "sStoryCloze/tStoryCloze"}
ScoreFn = Callable[..., Sequence[float]]


@dataclass
class LikelihoodPair:
    """One minimal pair of id sequences; ``group`` is e.g. the BLiMP paradigm, ``voice`` who spoke it."""

    id: str
    good: List[int]
    bad: List[int]
    type: str = "lexical"
    group: str = ""
    prompt: List[int] = field(default_factory=list)
    voice: str = ""

    @property
    def key(self) -> str:
        """Unique within a pair set: ``id``, or ``voice/id`` when the set is spoken by several voices."""
        return f"{self.voice}/{self.id}" if self.voice else self.id


@dataclass
class PairResult:
    """Accuracy over pairs with its 95% Wilson interval, per pair type, per group and per voice.

    ``length_baseline`` is the accuracy of preferring the shorter item (ties 1/2), a fraction like
    :attr:`accuracy`; ``vs_length`` counts the pairs the model gets right where that baseline is wrong and
    the reverse, and :attr:`length_p` is the two-sided sign-test p-value of the difference.
    ``equal_length`` is (points, pairs) over the pairs whose two items have the same length, where the
    length effect of a summed log-probability cannot decide. ``pair_scores`` is keyed by
    :attr:`LikelihoodPair.key`.
    """

    n: int
    score: float
    ci: Tuple[float, float]
    per_type: Dict[str, Dict[str, float]]
    per_group: Dict[str, Dict[str, float]]
    pair_scores: Dict[str, Tuple[float, float]]
    length_baseline: float = float("nan")
    vs_length: Tuple[int, int] = (0, 0)
    equal_length: Tuple[float, int] = (0.0, 0)
    per_voice: Dict[str, Dict[str, float]] = field(default_factory=dict)

    @property
    def length_p(self) -> float:
        """Exact two-sided sign-test p-value of model vs length baseline on the pairs where they disagree."""
        return sign_test(*self.vs_length)

    @property
    def accuracy(self) -> float:
        return self.score / self.n if self.n else float("nan")

    def summary(self) -> Dict[str, object]:
        return {"n_pairs": self.n, "accuracy": round(100 * self.accuracy, 2),
                "ci95": [round(100 * x, 2) for x in self.ci],
                "length_baseline": round(100 * self.length_baseline, 2),
                "vs_length_baseline": {"model_only": self.vs_length[0], "baseline_only": self.vs_length[1],
                                       "p": round(self.length_p, 4)},
                "equal_length": self._equal_length_summary(), "per_type": self.per_type,
                "per_group": self.per_group, "per_voice": self.per_voice}

    def _equal_length_summary(self) -> Dict[str, object]:
        points, n = self.equal_length
        if not n:
            return {"n_pairs": 0, "accuracy": None, "ci95": None}
        return {"n_pairs": n, "accuracy": round(100 * points / n, 2),
                "ci95": [round(100 * x, 2) for x in wilson_interval(points, n)]}


def wilson_interval(successes: float, n: int, z: float = 1.959964) -> Tuple[float, float]:
    """Wilson score interval for a binomial proportion (default 95%).

    Written out rather than taken from ``scipy.stats.binomtest`` because ties make ``successes`` fractional
    (0.5 per tie), which scipy rejects; for whole numbers the two agree (tested).

    Examples
    --------
    >>> lo, hi = wilson_interval(8, 10)
    >>> round(lo, 4), round(hi, 4)
    (0.4902, 0.9433)
    """
    if n <= 0:
        return (float("nan"), float("nan"))
    if not 0 <= successes <= n:
        raise ValueError(f"successes {successes} outside [0, {n}]")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def sequence_logprob(model, batch_ids: torch.Tensor, attention_mask: torch.Tensor,
                     prompt_lengths: Optional[Sequence[int]] = None, normalize: bool = False) -> torch.Tensor:
    """Log-probability of each (right-padded) sequence under a causal LM, continuation tokens only.

    Token ``t`` is scored by the logits at ``t - 1``, so the first token of a sequence is never scored (put a
    BOS in front to score it). Tokens before ``prompt_lengths[b]`` are context and not scored.

    Parameters
    ----------
    model : transformers causal LM
        Called as ``model(input_ids=..., attention_mask=...)`` and must return ``.logits [B, T, V]``.
    batch_ids, attention_mask : LongTensor [B, T]
        Right-padded ids and their mask (1 real, 0 pad).
    prompt_lengths : sequence of int, optional
        Context length per sequence (default 0).
    normalize : bool
        Divide by the number of scored tokens (length-normalised log-probability).

    Returns
    -------
    torch.Tensor
        float [B]: summed (or mean) log-probabilities.

    Examples
    --------
    >>> from transformers import GPT2Config, GPT2LMHeadModel
    >>> lm = GPT2LMHeadModel(GPT2Config(vocab_size=10, n_layer=1, n_head=1, n_embd=8)).eval()
    >>> ids = torch.tensor([[1, 2, 3], [4, 5, 0]]); mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    >>> sequence_logprob(lm, ids, mask, prompt_lengths=[1, 1]).shape
    torch.Size([2])
    """
    with torch.inference_mode():
        logits = model(input_ids=batch_ids, attention_mask=attention_mask).logits.float()
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    targets = batch_ids[:, 1:]
    token_lp = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    positions = torch.arange(1, batch_ids.shape[1], device=batch_ids.device)
    prompts = torch.as_tensor(list(prompt_lengths) if prompt_lengths is not None else [0] * len(batch_ids),
                              device=batch_ids.device)
    keep = attention_mask[:, 1:].bool() & (positions[None, :] >= prompts[:, None])
    total = (token_lp * keep).sum(dim=1)
    if normalize:
        total = total / keep.sum(dim=1).clamp(min=1)
    return total


def _pad(seqs: Sequence[Sequence[int]], pad_id: int) -> Tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


def make_score_fn(model, batch_size: int = 16, normalize: bool = False, pad_id: int = 0,
                  bos_id: Optional[int] = None, device: Optional[str] = None, progress: bool = False) -> ScoreFn:
    """Turn a Hugging Face causal LM into ``score_fn(seqs, prompt_lengths=None) -> list[float]``.

    Sequences are sorted by length and batched (right padding) to waste little compute; results come back
    in input order. ``bos_id`` is prepended to every sequence so that its first token is scored too.

    Examples
    --------
    >>> from transformers import GPT2Config, GPT2LMHeadModel
    >>> lm = GPT2LMHeadModel(GPT2Config(vocab_size=10, n_layer=1, n_head=1, n_embd=8)).eval()
    >>> fn = make_score_fn(lm, batch_size=2, bos_id=0)
    >>> len(fn([[1, 2], [3], [4, 5, 6]]))
    3
    """
    device = device or next(model.parameters()).device

    def score_fn(seqs: Sequence[Sequence[int]], prompt_lengths: Optional[Sequence[int]] = None) -> List[float]:
        prompts = list(prompt_lengths) if prompt_lengths is not None else [0] * len(seqs)
        if bos_id is not None:
            seqs = [[bos_id] + list(s) for s in seqs]
            prompts = [p + 1 for p in prompts]
        if any(len(s) < 2 for s in seqs):
            raise ValueError("every sequence needs at least 2 tokens (or set bos_id) to be scored")
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
        out = [0.0] * len(seqs)
        starts = range(0, len(order), batch_size)
        for start in tqdm(starts, desc="LM scoring", disable=not progress):
            idx = order[start:start + batch_size]
            ids, mask = _pad([seqs[i] for i in idx], pad_id)
            lp = sequence_logprob(model, ids.to(device), mask.to(device), [prompts[i] for i in idx], normalize)
            for i, v in zip(idx, lp.tolist()):
                out[i] = v
        return out

    return score_fn


def _accumulate(table, key, value):
    table[key][0] += value
    table[key][1] += 1


def _finish(table) -> Dict[str, Dict[str, float]]:
    out = {}
    for key, (score, n) in sorted(table.items()):
        lo, hi = wilson_interval(score, n)
        out[key] = {"n": n, "accuracy": round(100 * score / n, 2), "ci95": [round(100 * lo, 2), round(100 * hi, 2)]}
    return out


def sign_test(wins: int, losses: int) -> float:
    """Exact two-sided binomial sign test of ``wins`` against ``losses`` (p = 1 when both are 0).

    Examples
    --------
    >>> round(sign_test(9, 1), 4), sign_test(3, 3)
    (0.0215, 1.0)
    """
    from scipy.stats import binomtest

    return float(binomtest(wins, wins + losses).pvalue) if wins + losses else 1.0


def _point(good: float, bad: float) -> float:
    return 1.0 if good > bad else 0.5 if good == bad else 0.0


def evaluate_pairs(pairs: Sequence[LikelihoodPair], score_fn: ScoreFn) -> PairResult:
    """Score every pair with ``score_fn`` and report accuracy (ties count 1/2) with a 95% Wilson interval.

    Examples
    --------
    >>> pairs = [LikelihoodPair("p1", [1, 1], [1, 2]), LikelihoodPair("p2", [3], [1, 1])]
    >>> res = evaluate_pairs(pairs, lambda seqs: [-float(sum(s)) for s in seqs])
    >>> res.accuracy, res.length_baseline
    (0.5, 0.75)
    """
    if not pairs:
        raise ValueError("no likelihood pairs to evaluate")
    repeated = sorted(k for k, n in Counter(p.key for p in pairs).items() if n > 1)
    if repeated:
        raise ValueError(f"duplicate pair ids (per voice): {repeated[:5]}")
    seqs = [p.prompt + p.good for p in pairs] + [p.prompt + p.bad for p in pairs]
    if any(p.prompt for p in pairs):
        prompts = [len(p.prompt) for p in pairs] * 2
        scores = list(score_fn(seqs, prompt_lengths=prompts))
    else:
        scores = list(score_fn(seqs))
    if len(scores) != len(seqs):
        raise RuntimeError(f"score_fn returned {len(scores)} scores for {len(seqs)} sequences")
    by_type, by_group, by_voice = (defaultdict(lambda: [0.0, 0]) for _ in range(3))
    points, pair_scores = [], {}
    for i, p in enumerate(pairs):
        good, bad = float(scores[i]), float(scores[i + len(pairs)])
        point = _point(good, bad)
        points.append(point)
        pair_scores[p.key] = (good, bad)
        _accumulate(by_type, p.type, point)
        if p.group:
            _accumulate(by_group, p.group, point)
        if p.voice:
            _accumulate(by_voice, p.voice, point)
    total = sum(points)
    length = [_point(-len(p.good), -len(p.bad)) for p in pairs]
    vs_length = (sum(m == 1 and b == 0 for m, b in zip(points, length)),
                 sum(m == 0 and b == 1 for m, b in zip(points, length)))
    equal = [pt for pt, p in zip(points, pairs) if len(p.good) == len(p.bad)]
    return PairResult(len(pairs), total, wilson_interval(total, len(pairs)), _finish(by_type),
                      _finish(by_group), pair_scores, sum(length) / len(pairs), vs_length, (sum(equal), len(equal)),
                      _finish(by_voice))


def read_pairs(path: PathLike) -> List[LikelihoodPair]:
    """Read pairs from JSONL: ``{"id", "good": [ids], "bad": [ids], "type", "group", "prompt": [ids], "voice"}``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "pairs.jsonl"
    >>> _ = p.write_text('{"id": "a", "good": [1, 2], "bad": [2, 1], "type": "syntactic"}\\n')
    >>> read_pairs(p)[0].type
    'syntactic'
    """
    pairs = []
    for i, row in enumerate(read_jsonl(path), 1):
        missing = [k for k in ("id", "good", "bad") if k not in row]
        if missing:
            raise ValueError(f"{path}: pair {i} (id {row.get('id')!r}) lacks field(s) {missing}")
        if not row["good"] or not row["bad"]:
            raise ValueError(f"{path}: pair {row['id']!r} has an empty good or bad sequence")
        pairs.append(LikelihoodPair(str(row["id"]), [int(x) for x in row["good"]], [int(x) for x in row["bad"]],
                                    row.get("type", "lexical"), row.get("group", ""),
                                    [int(x) for x in row.get("prompt", [])], row.get("voice", "")))
    return pairs


def write_pairs(path: PathLike, pairs: Sequence[LikelihoodPair]):
    """Write pairs as JSONL (the format :func:`read_pairs` reads), atomically.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = write_pairs(pathlib.Path(tempfile.mkdtemp()) / "p.jsonl", [LikelihoodPair("a", [1], [2])])
    >>> read_pairs(p)[0].bad
    [2]
    """
    import json

    lines = []
    for p in pairs:
        row = {"id": p.id, "type": p.type, "group": p.group, "good": list(p.good), "bad": list(p.bad)}
        if p.prompt:
            row["prompt"] = list(p.prompt)
        if p.voice:
            row["voice"] = p.voice
        lines.append(json.dumps(row))
    return atomic_write_text(path, "\n".join(lines) + "\n")
