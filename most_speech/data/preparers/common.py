"""Helpers shared by the corpus preparers: prefixed ids and audio durations."""
from __future__ import annotations

import re
from typing import Optional

import soundfile as sf

from most_speech.data.fileio import PathLike

_WS = re.compile(r"\s+")


def corpus_id(prefix: Optional[str], raw: str) -> str:
    """``"<prefix>-<raw>"`` with whitespace replaced by ``_`` (ids never contain whitespace).

    Examples
    --------
    >>> corpus_id("ls", "1089-134686-0000"), corpus_id(None, "a b")
    ('ls-1089-134686-0000', 'a_b')
    """
    raw = _WS.sub("_", str(raw).strip())
    if not raw:
        raise ValueError("empty utterance id")
    return f"{prefix}-{raw}" if prefix else raw


def audio_duration(path: PathLike) -> float:
    """Duration in seconds read from the audio file's header (soundfile), with a clear error.

    Examples
    --------
    >>> import tempfile, pathlib, numpy as np
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.wav"
    >>> sf.write(p, np.zeros(8000, dtype="float32"), 16000)
    >>> audio_duration(p)
    0.5
    """
    try:
        info = sf.info(str(path))
    except (RuntimeError, OSError) as err:
        raise ValueError(f"cannot read audio header of {path}: {err}") from err
    return round(info.frames / info.samplerate, 4)
