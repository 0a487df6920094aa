"""Word and character error rates with jiwer, per utterance and for a corpus.

Every score here normalises both sides with :func:`most_speech.text.normalize.normalize_text` (the one
normaliser of the project). Corpus error rates are ``sum(S + D + I) / sum(reference length)`` over all
utterances, never a mean of per-utterance rates. CER counts characters of the normalised text including the
single spaces between words (jiwer's and ESPnet's convention).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import jiwer

from most_speech.scoring.io import PathLike, read_transcripts
from most_speech.text.normalize import normalize_text

__all__ = ["UttScore", "CorpusScore", "score_texts", "score_files", "wer", "cer", "align_pairs"]

log = logging.getLogger(__name__)

#: one aligned position: (ref token or None, hyp token or None, op in {"C", "S", "D", "I"})
AlignedPair = Tuple[Optional[str], Optional[str], str]
_OPS = {"equal": "C", "substitute": "S", "delete": "D", "insert": "I"}


@dataclass
class UttScore:
    """Edit counts and alignment of one utterance (tokens are words or characters)."""

    id: str
    ref: str
    hyp: str
    ref_len: int
    sub: int
    dele: int
    ins: int
    alignment: List[AlignedPair] = field(default_factory=list, repr=False)

    @property
    def errors(self) -> int:
        return self.sub + self.dele + self.ins

    @property
    def correct(self) -> int:
        return self.ref_len - self.sub - self.dele

    @property
    def error_rate(self) -> float:
        """Errors over reference length; an empty reference gives 0 if no insertion, else inf."""
        if self.ref_len == 0:
            return 0.0 if self.ins == 0 else float("inf")
        return self.errors / self.ref_len


@dataclass
class CorpusScore:
    """Corpus-level result: per-utterance scores plus the ids that did not match up."""

    unit: str
    utts: List[UttScore]
    missing: List[str] = field(default_factory=list)
    extra: List[str] = field(default_factory=list)

    def _total(self, name: str) -> int:
        return sum(getattr(u, name) for u in self.utts)

    @property
    def ref_len(self) -> int:
        return self._total("ref_len")

    @property
    def sub(self) -> int:
        return self._total("sub")

    @property
    def dele(self) -> int:
        return self._total("dele")

    @property
    def ins(self) -> int:
        return self._total("ins")

    @property
    def errors(self) -> int:
        return self.sub + self.dele + self.ins

    @property
    def error_rate(self) -> float:
        """Sum of edits over sum of reference tokens (0.0 for an empty corpus)."""
        return self.errors / self.ref_len if self.ref_len else 0.0

    @property
    def sentence_error_rate(self) -> float:
        return sum(u.errors > 0 for u in self.utts) / len(self.utts) if self.utts else 0.0

    def summary(self) -> Dict[str, object]:
        """Figures as a JSON-ready dict (rates in percent, rounded to 0.01)."""
        return {
            "unit": self.unit,
            "error_rate": round(100 * self.error_rate, 2),
            "n_utts": len(self.utts),
            "ref_tokens": self.ref_len,
            "correct": self.ref_len - self.sub - self.dele,
            "sub": self.sub,
            "del": self.dele,
            "ins": self.ins,
            "sentence_error_rate": round(100 * self.sentence_error_rate, 2),
            "missing_hyp_ids": list(self.missing),
            "extra_hyp_ids": list(self.extra),
        }


def align_pairs(ref_tokens: Sequence[str], hyp_tokens: Sequence[str], chunks) -> List[AlignedPair]:
    """Expand jiwer alignment chunks into token pairs with C/S/D/I operations.

    Examples
    --------
    >>> out = jiwer.process_words("a b c", "a x c d")
    >>> align_pairs(out.references[0], out.hypotheses[0], out.alignments[0])
    [('a', 'a', 'C'), ('b', 'x', 'S'), ('c', 'c', 'C'), (None, 'd', 'I')]
    """
    pairs: List[AlignedPair] = []
    for ch in chunks:
        op = _OPS[ch.type]
        refs = list(ref_tokens[ch.ref_start_idx:ch.ref_end_idx])
        hyps = list(hyp_tokens[ch.hyp_start_idx:ch.hyp_end_idx])
        if op == "D":
            pairs += [(r, None, op) for r in refs]
        elif op == "I":
            pairs += [(None, h, op) for h in hyps]
        else:
            pairs += [(r, h, op) for r, h in zip(refs, hyps)]
    return pairs


def _utt_scores(ids, refs, hyps, unit) -> List[UttScore]:
    if not ids:
        return []
    process = jiwer.process_words if unit == "word" else jiwer.process_characters
    out = process(list(refs), list(hyps))
    scores = []
    for i, utt_id in enumerate(ids):
        pairs = align_pairs(out.references[i], out.hypotheses[i], out.alignments[i])
        counts = {op: sum(p[2] == op for p in pairs) for op in "SDI"}
        scores.append(UttScore(utt_id, refs[i], hyps[i], len(out.references[i]),
                               counts["S"], counts["D"], counts["I"], pairs))
    return scores


def _as_mapping(texts) -> Dict[str, str]:
    if isinstance(texts, Mapping):
        return {str(k): v for k, v in texts.items()}
    return {f"utt{i:06d}": t for i, t in enumerate(texts)}


def score_texts(
    refs: Union[Mapping[str, str], Sequence[str]],
    hyps: Union[Mapping[str, str], Sequence[str]],
    unit: str = "word",
    normalizer: Optional[Callable[[str], str]] = normalize_text,
    strict: bool = False,
) -> CorpusScore:
    """Score hypotheses against references, joined by utterance id.

    Parameters
    ----------
    refs, hyps : mapping id -> text, or equal-length sequences (joined by position)
        Reference and hypothesis transcripts.
    unit : {"word", "char"}
        WER or CER.
    normalizer : callable or None
        Applied to both sides; defaults to THE normaliser; ``None`` scores the raw text.
    strict : bool
        If True, a reference id without a hypothesis (or the reverse) raises ``ValueError``. Otherwise a
        missing hypothesis counts as empty (all deletions) and an extra one is ignored; both are listed in
        the result and logged.

    Returns
    -------
    CorpusScore

    Examples
    --------
    >>> s = score_texts({"a": "the cat sat", "b": "Hello!"}, {"a": "the cat sat down", "b": "yellow"})
    >>> s.sub, s.dele, s.ins, s.ref_len, round(s.error_rate, 2)
    (1, 0, 1, 4, 0.5)
    """
    if unit not in ("word", "char"):
        raise ValueError(f"unit must be 'word' or 'char', got {unit!r}")
    if not isinstance(refs, Mapping) and not isinstance(hyps, Mapping) and len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    refs, hyps = _as_mapping(refs), _as_mapping(hyps)
    missing = [k for k in refs if k not in hyps]
    extra = [k for k in hyps if k not in refs]
    if (missing or extra) and strict:
        raise ValueError(f"ids do not match: {len(missing)} without hypothesis {missing[:10]}, "
                         f"{len(extra)} without reference {extra[:10]}")
    if missing:
        log.warning("%d reference ids have no hypothesis (scored as empty): %s", len(missing), missing[:10])
    if extra:
        log.warning("%d hypothesis ids have no reference (ignored): %s", len(extra), extra[:10])
    norm = normalizer or (lambda t: " ".join(t.split()))
    ids = list(refs)
    ref_texts = [norm(refs[k]) for k in ids]
    hyp_texts = [norm(hyps.get(k, "")) for k in ids]
    return CorpusScore(unit, _utt_scores(ids, ref_texts, hyp_texts, unit), missing, extra)


def score_files(ref: PathLike, hyp: PathLike, unit: str = "word", strict: bool = False,
                normalizer: Optional[Callable[[str], str]] = normalize_text) -> CorpusScore:
    """Score a hypothesis file against a reference file (JSONL ``{"id","text"}``, Kaldi ``text`` or ``.trn``).

    Utterances are joined by id, never by line order; see :func:`score_texts` for ``strict``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "ref").write_text("u1 a b c\\nu2 d e\\n")
    >>> _ = (d / "hyp.jsonl").write_text('{"id": "u2", "text": "d e"}\\n{"id": "u1", "text": "a c"}\\n')
    >>> score_files(d / "ref", d / "hyp.jsonl").summary()["error_rate"]
    20.0
    """
    return score_texts(read_transcripts(ref), read_transcripts(hyp), unit=unit, strict=strict,
                       normalizer=normalizer)


def wer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Corpus WER (a fraction) of parallel lists, after THE normaliser.

    Examples
    --------
    >>> wer(["one two three", "four"], ["one too three", "4"])
    0.25
    """
    return score_texts(list(refs), list(hyps), unit="word").error_rate


def cer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Corpus CER (a fraction) of parallel lists, after THE normaliser; spaces count as characters.

    Examples
    --------
    >>> cer(["ab cd"], ["ab cx"])
    0.2
    """
    return score_texts(list(refs), list(hyps), unit="char").error_rate
