"""Reading transcript files (JSONL, Kaldi ``text``, sclite ``.trn``) and writing outputs atomically."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Dict, Iterable, Mapping, Tuple, Union

# Generic file helpers live in one place; re-exported here for the scoring modules.
from most_speech.data.fileio import atomic_write_json, atomic_write_text, read_jsonl

__all__ = ["read_transcripts", "write_trn", "atomic_write_text", "atomic_write_json", "read_jsonl"]

PathLike = Union[str, os.PathLike]
_SPHINX_MARKERS = {"<s>", "</s>", "<sil>"}
_TRN_RE = re.compile(r"^(.*?)\s*\(([^()]+)\)\s*$")


def _parse_lines(path: PathLike, lines: Iterable[Tuple[int, str]], fmt: str) -> Iterable[Tuple[str, str]]:
    for lineno, line in lines:
        if fmt == "trn":
            m = _TRN_RE.match(line)
            if not m:
                raise ValueError(f"{path}:{lineno}: not a .trn line 'text (utt_id)': {line!r}")
            # Sphinx-style .trn wraps the text in <s> ... </s>; those are markers, not words
            words = [w for w in m.group(1).split() if w not in _SPHINX_MARKERS]
            yield m.group(2), " ".join(words)
        else:
            parts = line.split(maxsplit=1)
            yield parts[0], parts[1] if len(parts) > 1 else ""


def _detect_format(path: Path, first_line: str) -> str:
    if path.suffix in (".jsonl", ".json") or first_line.lstrip().startswith("{"):
        return "jsonl"
    if path.suffix == ".trn" or _TRN_RE.match(first_line):
        return "trn"
    return "kaldi"


def read_transcripts(path: PathLike, text_key: str = "text", fmt: str = "auto") -> Dict[str, str]:
    """Read ``{utt_id: text}`` from a JSONL, Kaldi ``text`` or sclite ``.trn`` file.

    Parameters
    ----------
    path : str or PathLike
        JSONL with objects ``{"id": ..., "text": ...}``; Kaldi ``text`` (``utt_id word word ...``);
        or ``.trn`` (``word word ... (utt_id)``).
    text_key : str
        JSONL field holding the text.
    fmt : {"auto", "jsonl", "kaldi", "trn"}
        ``auto`` decides from the suffix and the first line.

    Returns
    -------
    dict
        Transcripts keyed by utterance id, in file order.

    Raises
    ------
    ValueError
        On a duplicate id, a JSONL row without ``id`` / ``text_key``, or a malformed line; the message names
        the file and line.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "text"
    >>> _ = p.write_text("u1 hello world\\nu2 bye\\n")
    >>> read_transcripts(p)
    {'u1': 'hello world', 'u2': 'bye'}
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"transcript file not found: {path}")
    raw = path.read_text(encoding="utf-8").splitlines()
    lines = [(i, ln) for i, ln in enumerate(raw, 1) if ln.strip()]
    if fmt == "auto":
        fmt = _detect_format(path, lines[0][1] if lines else "")
    out: Dict[str, str] = {}
    if fmt == "jsonl":
        pairs = []
        for i, row in enumerate(read_jsonl(path), 1):
            if "id" not in row or text_key not in row:
                raise ValueError(f"{path}: record {i} lacks 'id' or {text_key!r}: {row}")
            pairs.append((str(row["id"]), str(row[text_key])))
    elif fmt in ("kaldi", "trn"):
        pairs = _parse_lines(path, lines, fmt)
    else:
        raise ValueError(f"unknown transcript format {fmt!r} for {path}")
    for utt_id, text in pairs:
        if utt_id in out:
            raise ValueError(f"{path}: duplicate utterance id {utt_id!r}")
        out[utt_id] = text
    return out


def write_trn(path: PathLike, texts: Mapping[str, str]) -> Path:
    """Write an sclite ``.trn`` file, one ``text (utt_id)`` line per utterance, atomically.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = write_trn(pathlib.Path(tempfile.mkdtemp()) / "hyp.trn", {"u1": "hello world"})
    >>> p.read_text()
    'hello world (u1)\\n'
    """
    return atomic_write_text(path, "".join(f"{text} ({utt_id})\n" for utt_id, text in texts.items()))
