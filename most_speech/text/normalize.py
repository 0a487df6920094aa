"""English text normalisation: the ONE normaliser used for training targets and for scoring.

:func:`normalize_english` maps ``"Mr. Smith paid $1,250 on the 3rd of May!"`` to
``"mr smith paid one thousand two hundred fifty dollars on the third of may"``: Unicode folded (NFKC, curly
quotes straightened), numbers spelled out (integers, decimals, ordinals, ``%`` and ``$``), punctuation removed
(apostrophes inside words kept, hyphens become spaces), whitespace collapsed, and one case applied.

Number handling is deliberately simple (no years read as "nineteen ninety", no dates, no currencies other than
the dollar): every score in the project goes through this same function, so references and hypotheses are
treated alike.
"""
from __future__ import annotations

import re
import unicodedata

_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
         "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_SCALES = [(10 ** 12, "trillion"), (10 ** 9, "billion"), (10 ** 6, "million"), (1000, "thousand")]
_ORDINAL_IRREGULAR = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
                      "nine": "ninth", "twelve": "twelfth"}

_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201b": "'", "\u02bc": "'", "\u201c": '"',
                         "\u201d": '"', "\u2013": "-", "\u2014": "-"})
_MONEY = re.compile(r"\$\s?(\d[\d,]*(?:\.\d+)?)")
_PERCENT = re.compile(r"(\d[\d,]*(?:\.\d+)?)\s?%")
_ORDINAL = re.compile(r"\b(\d+)(st|nd|rd|th)\b", re.IGNORECASE)
_NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")
_NOT_WORD = re.compile(r"[^\w' ]+")
_EDGE_APOSTROPHE = re.compile(r"(?<!\w)'|'(?!\w)")


def number_to_words(n: int) -> str:
    """Spell a non-negative integer in English words (no "and").

    Examples
    --------
    >>> number_to_words(1250)
    'one thousand two hundred fifty'
    >>> number_to_words(0)
    'zero'
    """
    if n < 0:
        return "minus " + number_to_words(-n)
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + ("" if ones == 0 else " " + _ONES[ones])
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return _ONES[hundreds] + " hundred" + ("" if rest == 0 else " " + number_to_words(rest))
    for scale, name in _SCALES:
        if n >= scale:
            head, rest = divmod(n, scale)
            return number_to_words(head) + " " + name + ("" if rest == 0 else " " + number_to_words(rest))
    raise AssertionError("unreachable")


def ordinal_to_words(n: int) -> str:
    """Spell an ordinal: ``3 -> "third"``, ``21 -> "twenty first"``.

    Examples
    --------
    >>> ordinal_to_words(21), ordinal_to_words(40), ordinal_to_words(12)
    ('twenty first', 'fortieth', 'twelfth')
    """
    words = number_to_words(n).split()
    last = words[-1]
    if last in _ORDINAL_IRREGULAR:
        last = _ORDINAL_IRREGULAR[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return " ".join(words[:-1] + [last])


def _spell_number(token: str) -> str:
    token = token.replace(",", "")
    if "." in token:
        whole, frac = token.split(".", 1)
        return number_to_words(int(whole)) + " point " + " ".join(_ONES[int(d)] for d in frac)
    return number_to_words(int(token))


def normalize_english(text: str, case: str = "lower") -> str:
    """Normalise English text for training targets and scoring.

    Parameters
    ----------
    text : str
        Raw text.
    case : {"lower", "upper"}
        Output case.

    Returns
    -------
    str
        Words separated by single spaces: no punctuation except in-word apostrophes, numbers spelled.

    Examples
    --------
    >>> normalize_english("Mr. Smith paid $1,250 on the 3rd of May!")
    'mr smith paid one thousand two hundred fifty dollars on the third of may'
    >>> normalize_english("\u201cDon't,\u201d she said -- it's 2.5%.", case="upper")
    "DON'T SHE SAID IT'S TWO POINT FIVE PERCENT"
    """
    if case not in ("lower", "upper"):
        raise ValueError(f"case must be 'lower' or 'upper', got {case!r}")
    text = unicodedata.normalize("NFKC", text).translate(_QUOTES)
    text = _MONEY.sub(lambda m: f" {_spell_number(m.group(1))} dollars ", text)
    text = _PERCENT.sub(lambda m: f" {_spell_number(m.group(1))} percent ", text)
    text = _ORDINAL.sub(lambda m: f" {ordinal_to_words(int(m.group(1)))} ", text)
    text = _NUMBER.sub(lambda m: f" {_spell_number(m.group(0))} ", text)
    text = text.replace("-", " ").replace("_", " ")
    text = _NOT_WORD.sub(" ", text)
    text = _EDGE_APOSTROPHE.sub(" ", text)
    text = " ".join(text.split())
    return text.lower() if case == "lower" else text.upper()
