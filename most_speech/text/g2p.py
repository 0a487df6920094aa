"""Grapheme-to-phoneme conversion with espeak-ng, for phoneme CTC targets.

espeak-ng's own pronunciation rules and lexicon give each sentence a phoneme sequence in its ASCII
mnemonics (``-x``): ``"hello world"`` -> ``h @ l oU | w 3: l d``. Stress marks and espeak-ng's bare
length / juncture marks (``:``, ``;``, ``!`` standing alone) are dropped (a CTC target should name the sound,
not its prominence or its context); ``|`` separates words so that a phoneme recogniser still sees
word boundaries. espeak-ng is the mini corpus's own synthesiser, so no new dependency comes with it.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

WORD_BOUNDARY = "|"
_STRESS_MARKS = str.maketrans("", "", "',%=")


def parse_espeak_phonemes(line: str) -> list[str]:
    """Phoneme list of one line of ``espeak-ng -x --sep=_`` output, words separated by ``|``.

    Examples
    --------
    >>> parse_espeak_phonemes("h_@_l_'oU w_'3:_l_d_:")
    ['h', '@', 'l', 'oU', '|', 'w', '3:', 'l', 'd']
    """
    words = []
    for word in line.split():
        phones = [p for p in word.translate(_STRESS_MARKS).split("_") if _is_phoneme(p)]
        if phones:
            words.append(phones)
    out: list[str] = []
    for i, phones in enumerate(words):
        out += ([WORD_BOUNDARY] if i else []) + phones
    return out


def _is_phoneme(symbol: str) -> bool:
    """A phoneme names a sound: a letter or digit, or ``@`` (schwa); bare marks like ``:`` do not."""
    return any(c.isalnum() or c == "@" for c in symbol)


def espeak_phonemes(texts: list[str], voice: str = "en-us", executable: str = "espeak-ng", jobs: int = 0
                    ) -> list[list[str]]:
    """Phoneme sequences of ``texts`` (one per text, ``[]`` where espeak-ng finds nothing to say).

    The texts go through ``jobs`` espeak-ng processes at once (0: one per CPU core), each phonemising a
    contiguous block of them line by line (a line's phonemes do not depend on the lines around it), so a few
    thousand sentences take seconds.

    Parameters
    ----------
    texts : list of str
        Sentences without line breaks.
    voice : str
        espeak-ng voice whose pronunciation rules are used (``en-us``, ``en``, ...).
    jobs : int
        espeak-ng processes run at once (0: ``os.cpu_count()``); blocks hold at least 100 texts.

    Examples
    --------
    >>> espeak_phonemes(["hello world"])                                   # doctest: +SKIP
    [['h', '@', 'l', 'oU', '|', 'w', '3:', 'l', 'd']]
    """
    lines = [" ".join(t.split()) for t in texts]
    for i, line in enumerate(lines):
        if not line:
            raise ValueError(f"text {i} is empty; espeak-ng would skip it and shift every later line")
    if shutil.which(executable) is None:
        raise FileNotFoundError(f"{executable} is not installed; phoneme targets need it (apt install espeak-ng)")
    if not lines:
        return []
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(lines) // 100))
    size = -(-len(lines) // jobs)
    blocks = [lines[i:i + size] for i in range(0, len(lines), size)]
    with ThreadPoolExecutor(len(blocks)) as pool:  # threads only wait: the work is in espeak-ng processes
        out = [line for block in pool.map(lambda b: _phonemise_block(b, voice, executable), blocks) for line in block]
    return [parse_espeak_phonemes(line) for line in out]


def _phonemise_block(lines: list[str], voice: str, executable: str) -> list[str]:
    """espeak-ng's output line for each of ``lines``, through one process."""
    out = [line for line in _run_espeak("\n".join(lines), voice, executable).splitlines() if line.strip()]
    if len(out) != len(lines):
        # espeak-ng splits a line at clause punctuation on rare inputs: fall back to one process per text
        out = [" ".join(_run_espeak(line, voice, executable).split()) for line in lines]
    return out


def _run_espeak(text: str, voice: str, executable: str) -> str:
    """``espeak-ng -x`` phoneme output (``_`` between phonemes) of ``text``, one line per input line."""
    proc = subprocess.run([executable, "-q", "-x", "--sep=_", "-v", voice], input=text + "\n",
                          capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"{executable} -v {voice} failed: {(proc.stderr or proc.stdout).strip()[:300]}")
    return proc.stdout
