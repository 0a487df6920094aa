"""Human-readable outputs of a :class:`~most_speech.scoring.wer.CorpusScore`.

``result.txt`` follows Kaldi's / ESPnet's per-utterance alignment layout (``id:``, ``Scores: (#C #S #D #I)``,
``REF:``/``HYP:``/``Eval:`` lines with errors in upper case and ``***`` for the missing side of an insertion
or deletion), ``ref.trn``/``hyp.trn`` are sclite inputs, ``worst.md`` lists the worst utterances.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List

from most_speech.scoring.io import PathLike, atomic_write_json, atomic_write_text, write_trn
from most_speech.scoring.wer import CorpusScore, UttScore

__all__ = ["format_alignment", "format_result", "worst_table", "write_report"]

_GAP = "***"
_SPACE = "<sp>"


def _columns(utt: UttScore):
    """REF / HYP / Eval cells, errors upper-cased, each column padded to its widest cell."""
    refs, hyps, evals = [], [], []
    for r, h, op in utt.alignment:
        r = _GAP if r is None else (r if op == "C" else r.upper())
        h = _GAP if h is None else (h if op == "C" else h.upper())
        r, h = (_SPACE if r == " " else r), (_SPACE if h == " " else h)  # visible spaces for CER
        width = max(len(r), len(h), 1)
        refs.append(r.ljust(width))
        hyps.append(h.ljust(width))
        evals.append(("" if op == "C" else op).ljust(width))
    return refs, hyps, evals


def format_alignment(utt: UttScore) -> str:
    """Kaldi/ESPnet-style alignment block of one utterance.

    Examples
    --------
    >>> from most_speech.scoring.wer import score_texts
    >>> print(format_alignment(score_texts({"u1": "a b c"}, {"u1": "a x c d"}).utts[0]))
    id: (u1)
    Scores: (#C #S #D #I) 2 1 0 1
    REF:  a B c ***
    HYP:  a X c D
    Eval:   S   I
    """
    refs, hyps, evals = _columns(utt)
    lines = [
        f"id: ({utt.id})",
        f"Scores: (#C #S #D #I) {utt.correct} {utt.sub} {utt.dele} {utt.ins}",
        "REF:  " + " ".join(refs),
        "HYP:  " + " ".join(hyps),
        "Eval: " + " ".join(evals),
    ]
    return "\n".join(line.rstrip() for line in lines)


def _summary_lines(score: CorpusScore) -> List[str]:
    s = score.summary()
    name = "WER" if score.unit == "word" else "CER"
    lines = [
        f"%{name} {s['error_rate']:.2f} [ {score.errors} / {score.ref_len}, {score.ins} ins, "
        f"{score.dele} del, {score.sub} sub ]",
        f"%SER {s['sentence_error_rate']:.2f} [ {sum(u.errors > 0 for u in score.utts)} / {len(score.utts)} ]",
    ]
    if score.missing:
        lines.append(f"missing hypotheses ({len(score.missing)}, scored as empty): {' '.join(score.missing)}")
    if score.extra:
        lines.append(f"hypotheses without reference ({len(score.extra)}, ignored): {' '.join(score.extra)}")
    return lines


def format_result(score: CorpusScore) -> str:
    """Full ``result.txt`` text: the corpus summary, then one alignment block per utterance.

    Examples
    --------
    >>> from most_speech.scoring.wer import score_texts
    >>> print(format_result(score_texts({"u1": "a b"}, {"u1": "a b"})).splitlines()[0])
    %WER 0.00 [ 0 / 2, 0 ins, 0 del, 0 sub ]
    """
    blocks = ["\n".join(_summary_lines(score))] + [format_alignment(u) for u in score.utts]
    return "\n\n".join(blocks) + "\n"


def _cell(text: str, limit: int = 80) -> str:
    text = text.replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def worst_table(score: CorpusScore, n: int = 10) -> str:
    """Markdown table of the ``n`` utterances with the most errors (ties: higher error rate first).

    Examples
    --------
    >>> from most_speech.scoring.wer import score_texts
    >>> t = worst_table(score_texts({"a": "x y", "b": "x y"}, {"a": "x y", "b": "z"}), n=1)
    >>> t.splitlines()[2].split("|")[1].strip()
    'b'
    """
    name = "WER" if score.unit == "word" else "CER"
    ranked = sorted(score.utts, key=lambda u: (u.errors, u.error_rate), reverse=True)[:n]
    rows = [
        f"| id | ref len | S | D | I | {name} % | reference | hypothesis |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for u in ranked:
        rows.append(f"| {u.id} | {u.ref_len} | {u.sub} | {u.dele} | {u.ins} | {100 * u.error_rate:.1f} "
                    f"| {_cell(u.ref)} | {_cell(u.hyp)} |")
    return "\n".join(rows) + "\n"


def write_report(score: CorpusScore, out_dir: PathLike, n_worst: int = 20) -> Dict[str, Path]:
    """Write ``summary.json``, ``result.txt``, ``worst.md``, ``ref.trn`` and ``hyp.trn`` into ``out_dir``.

    The ``.trn`` files hold the normalised texts that were scored, so sclite on them reproduces our figures.

    Examples
    --------
    >>> import tempfile
    >>> from most_speech.scoring.wer import score_texts
    >>> paths = write_report(score_texts({"u1": "a b"}, {"u1": "a"}), tempfile.mkdtemp())
    >>> sorted(paths)
    ['hyp.trn', 'ref.trn', 'result.txt', 'summary.json', 'worst.md']
    """
    out = Path(out_dir)
    return {
        "summary.json": atomic_write_json(out / "summary.json", score.summary()),
        "result.txt": atomic_write_text(out / "result.txt", format_result(score)),
        "worst.md": atomic_write_text(out / "worst.md", worst_table(score, n_worst)),
        "ref.trn": write_trn(out / "ref.trn", {u.id: u.ref for u in score.utts}),
        "hyp.trn": write_trn(out / "hyp.trn", {u.id: u.hyp for u in score.utts}),
    }
