"""Batch synthesis of evaluation sentences (spoken-LM pairs, spoken questions) with the local TTS engines.

The engines themselves (espeak-ng, flite; 16 kHz output) live in :mod:`most_speech.audio.tts_engines`; this
module only adds what evaluation builders need: many sentences to many files, resumable, with progress.
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import List, Sequence

from tqdm.auto import tqdm

from most_speech.scoring.io import PathLike

__all__ = ["synthesize_many", "DEFAULT_VOICE"]

log = logging.getLogger(__name__)

#: voice spec (see :mod:`most_speech.audio.tts_engines`): espeak-ng's US-English voice
DEFAULT_VOICE = "espeak-ng:en-us"


def synthesize_many(texts: Sequence[str], out_paths: Sequence[PathLike], voice: str = DEFAULT_VOICE,
                    overwrite: bool = False, progress: bool = True, jobs: int = 1) -> List[Path]:
    """Synthesize each text to its 16 kHz WAV path; existing files are kept unless ``overwrite``.

    Parameters
    ----------
    texts : sequence of str
        Sentences to speak.
    out_paths : sequence of path
        One ``.wav`` per text (written atomically, so a rerun after a crash resumes cleanly).
    voice : str
        Voice spec such as ``"espeak-ng:en-us"`` or ``"flite:slt"``.
    jobs : int
        Sentences spoken at once (threads: each runs an engine process; the files are the same either way).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> [p.name for p in synthesize_many(["one", "two"], [d / "1.wav", d / "2.wav"], progress=False)]
    ['1.wav', '2.wav']
    """
    from most_speech.audio.tts_engines import synthesize

    if len(texts) != len(out_paths):
        raise ValueError(f"{len(texts)} texts but {len(out_paths)} output paths")
    todo = [(text, Path(path)) for text, path in zip(texts, out_paths)]

    def speak(item):
        text, path = item
        if overwrite or not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            synthesize(text, voice, path)
        return path

    with ThreadPoolExecutor(max(1, jobs)) as pool:
        return list(tqdm(pool.map(speak, todo), total=len(todo), desc=f"TTS {voice}", disable=not progress))
