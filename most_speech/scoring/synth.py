"""Batch synthesis of evaluation sentences (spoken-LM pairs, spoken questions) with the local TTS engines.

The engines themselves (espeak-ng, flite; 16 kHz output) live in :mod:`most_speech.audio.tts_engines`; this
module only adds what evaluation builders need: many sentences to many files, resumable, with progress.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Sequence

from tqdm.auto import tqdm

from most_speech.scoring.io import PathLike

__all__ = ["synthesize_many", "DEFAULT_VOICE"]

log = logging.getLogger(__name__)

#: voice spec (see :mod:`most_speech.audio.tts_engines`): espeak-ng's US-English voice
DEFAULT_VOICE = "espeak-ng:en-us"


def synthesize_many(texts: Sequence[str], out_paths: Sequence[PathLike], voice: str = DEFAULT_VOICE,
                    overwrite: bool = False, progress: bool = True) -> List[Path]:
    """Synthesize each text to its 16 kHz WAV path; existing files are kept unless ``overwrite``.

    Parameters
    ----------
    texts : sequence of str
        Sentences to speak.
    out_paths : sequence of path
        One ``.wav`` per text (written atomically, so a rerun after a crash resumes cleanly).
    voice : str
        Voice spec such as ``"espeak-ng:en-us"`` or ``"flite:slt"``.

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
    done = []
    for text, path in tqdm(list(zip(texts, out_paths)), desc=f"TTS {voice}", disable=not progress):
        path = Path(path)
        if overwrite or not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            synthesize(text, voice, path)
        done.append(path)
    return done
