"""Small file helpers shared across most_speech: atomic writes, JSON Lines, transparent ``.gz`` reading.

Every output of the data pipeline is written to a temporary file next to its destination and moved into
place with :func:`os.replace`, so an interrupted run never leaves a half-written manifest behind.
"""
from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Iterable, Iterator, Union

PathLike = Union[str, os.PathLike]


def open_text(path: PathLike) -> IO[str]:
    """Open a text file for reading (UTF-8), decompressing it when the name ends in ``.gz``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
    >>> _ = p.write_text("hi\\n")
    >>> with open_text(p) as f:
    ...     f.read()
    'hi\\n'
    """
    path = Path(path)
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


@contextlib.contextmanager
def atomic_writer(path: PathLike, mode: str = "w") -> Iterator[IO]:
    """Context manager yielding a file object whose content replaces ``path`` only on success.

    Writes gzip when ``path`` ends in ``.gz``. The parent directory is created when missing.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
    >>> with atomic_writer(p) as f:
    ...     _ = f.write("done\\n")
    >>> p.read_text()
    'done\\n'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        if path.suffix == ".gz":
            raw = gzip.open(tmp, "wb")
            handle = io.TextIOWrapper(raw, encoding="utf-8") if "b" not in mode else raw
        else:
            handle = open(tmp, mode, encoding=None if "b" in mode else "utf-8")
        with handle:
            yield handle
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def atomic_write_text(path: PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically and return the path.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = atomic_write_text(pathlib.Path(tempfile.mkdtemp()) / "x.txt", "abc")
    >>> p.read_text()
    'abc'
    """
    with atomic_writer(path) as f:
        f.write(text)
    return Path(path)


def atomic_write_json(path: PathLike, obj) -> Path:
    """Write ``obj`` as indented JSON, atomically.

    Examples
    --------
    >>> import tempfile, pathlib, json
    >>> p = atomic_write_json(pathlib.Path(tempfile.mkdtemp()) / "a.json", {"wer": 0.5})
    >>> json.loads(p.read_text())["wer"]
    0.5
    """
    return atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def read_jsonl(path: PathLike) -> list:
    """Read a JSON Lines file (``.gz`` too) into a list of dicts; errors name the file and line.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.jsonl"
    >>> _ = p.write_text('{"id": "u1"}\\n\\n{"id": "u2"}\\n')
    >>> [r["id"] for r in read_jsonl(p)]
    ['u1', 'u2']
    """
    rows = []
    with open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: invalid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
    return rows


def write_jsonl(path: PathLike, rows: Iterable[dict]) -> Path:
    """Write dicts as JSON Lines, atomically (gzip when ``path`` ends in ``.gz``).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = write_jsonl(pathlib.Path(tempfile.mkdtemp()) / "a.jsonl", [{"id": "u1"}])
    >>> p.read_text()
    '{"id": "u1"}\\n'
    """
    with atomic_writer(path) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return Path(path)
