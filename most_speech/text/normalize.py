"""English text normalisation for training targets: the project's ONE normaliser, shared with scoring.

The rules (Unicode folding, lower case, numbers / ordinals / years / decimals / percent spelled out, a few
abbreviations, punctuation removed except in-word apostrophes, whitespace collapsed) live in
:func:`most_speech.scoring.normalize.normalize_text`, which every score uses. This module only re-exports them
for data preparation and adds the output case, so a normalised training target and a scored reference can
never disagree.
"""
from __future__ import annotations

from most_speech.scoring.normalize import normalize_text, number_to_words, ordinal_to_words

__all__ = ["normalize_english", "normalize_text", "number_to_words", "ordinal_to_words"]


def normalize_english(text: str, case: str = "lower") -> str:
    """Normalise English text exactly as scoring does, in lower or upper case.

    Parameters
    ----------
    text : str
        Raw text.
    case : {"lower", "upper"}
        Output case (``"lower"`` is :func:`normalize_text` itself).

    Returns
    -------
    str
        Words separated by single spaces.

    Examples
    --------
    >>> normalize_english("Mr. Smith paid 1,250 dollars on the 3rd of May!")
    'mister smith paid one thousand two hundred fifty dollars on the third of may'
    >>> normalize_english("Don't stop: 42 cats!", case="upper")
    "DON'T STOP FORTY TWO CATS"
    """
    if case not in ("lower", "upper"):
        raise ValueError(f"case must be 'lower' or 'upper', got {case!r}")
    out = normalize_text(text)
    return out.upper() if case == "upper" else out
