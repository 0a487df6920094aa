"""THE English text normaliser of most_speech: every score and every normalised training target uses it.

WER, CER, TTS intelligibility, spoken-QA answer matching and the judge ceilings all pass references and
hypotheses through this one function, so that numbers from different scripts are comparable.

Rules, applied in this order:

1. Unicode NFKC (full-width forms, ligatures, superscripts become plain characters); curly quotes and
   apostrophes become ASCII ``'``.
2. Lower case.
3. Numbers are spelt out in words (American style, no "and": 105 -> "one hundred five"):

   * thousands separators are removed (``1,234`` -> ``1234``);
   * ordinals with a suffix: ``1st`` -> "first", ``22nd`` -> "twenty second", ``103rd`` -> "one hundred third";
   * decimals: ``3.14`` -> "three point one four";
   * years: a bare 4-digit number from 1100 to 1999 or 2010 to 2099 is read as a year
     (``1984`` -> "nineteen eighty four", ``1900`` -> "nineteen hundred", ``1905`` -> "nineteen oh five",
     ``2024`` -> "twenty twenty four"); 2000-2009 read as "two thousand five" either way;
   * other integers 0..999999 are read as cardinals; longer digit strings are read digit by digit;
   * ``%`` -> "percent"; a trailing ``s`` makes a plural (``1990s`` -> "nineteen nineties").

   Currency, times, fractions and Roman numerals are NOT expanded; British/American spelling is not unified.
4. A few unambiguous abbreviations are spelt out: ``mr`` -> "mister", ``mrs`` -> "missus", ``dr`` -> "doctor",
   ``vs`` -> "versus" (with or without the period); others stay as written.
5. Punctuation and symbols are removed (replaced by a space), except apostrophes inside a word
   (``don't``, ``o'clock`` stay; quotes around a word go). Hyphenated words split (``well-known`` ->
   "well known").
6. Whitespace collapses to single spaces, trimmed.

Why our own code: the brief asks for spelled-out numbers, and no number speller is among the pinned
packages (transformers' Whisper normaliser goes the other way, words to digits).
"""
from __future__ import annotations

import re
import unicodedata

__all__ = ["normalize_text", "normalize_english", "number_to_words", "ordinal_to_words", "year_to_words"]

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_ORDINAL_IRREGULAR = {
    "one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
    "nine": "ninth", "twelve": "twelfth",
}
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u02bc": "'", "\u00b4": "'", "`": "'"})

_ORDINAL_RE = re.compile(r"\b(\d+)(st|nd|rd|th)\b")
_DECIMAL_RE = re.compile(r"(?<![\d.])(\d+)\.(\d+)(?![\d.]*\d)")
_THOUSANDS_RE = re.compile(r"\b\d{1,3}(?:,\d{3})+\b")
_INT_RE = re.compile(r"\d+")
_PLURAL_RE = re.compile(r"(\d+)s\b")
_APOSTROPHE_RE = re.compile(r"(?<![^\W_])'|'(?![^\W_])")  # an apostrophe not between two word chars
_ABBREVIATIONS = {"mr": "mister", "mrs": "missus", "dr": "doctor", "vs": "versus"}


def _below_thousand(n: int) -> list:
    words = []
    if n >= 100:
        words += [_ONES[n // 100], "hundred"]
        n %= 100
        if n == 0:
            return words
    if n < 20:
        words.append(_ONES[n])
    else:
        words.append(_TENS[n // 10])
        if n % 10:
            words.append(_ONES[n % 10])
    return words


def number_to_words(n: int) -> str:
    """Spell out an integer 0..999999 in American English words (no "and").

    Parameters
    ----------
    n : int
        The number; outside 0..999999 it is read digit by digit.

    Returns
    -------
    str
        Space-separated words.

    Examples
    --------
    >>> number_to_words(105)
    'one hundred five'
    >>> number_to_words(21042)
    'twenty one thousand forty two'
    """
    if not 0 <= n <= 999_999:
        return " ".join(_ONES[int(d)] for d in str(abs(n)))
    if n < 1000:
        return " ".join(_below_thousand(n))
    words = _below_thousand(n // 1000) + ["thousand"]
    if n % 1000:
        words += _below_thousand(n % 1000)
    return " ".join(words)


def ordinal_to_words(n: int) -> str:
    """Spell out an ordinal number 0..999999.

    Examples
    --------
    >>> ordinal_to_words(22)
    'twenty second'
    >>> ordinal_to_words(40)
    'fortieth'
    """
    words = number_to_words(n).split()
    last = words[-1]
    if last in _ORDINAL_IRREGULAR:
        last = _ORDINAL_IRREGULAR[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last = last + "th"
    return " ".join(words[:-1] + [last])


def year_to_words(n: int) -> str:
    """Read a 4-digit number as a year, following the rule in the module docstring.

    Examples
    --------
    >>> year_to_words(1984)
    'nineteen eighty four'
    >>> year_to_words(1905)
    'nineteen oh five'
    >>> year_to_words(2005)
    'two thousand five'
    """
    if not 1100 <= n <= 2099 or 2000 <= n <= 2009:
        return number_to_words(n)
    head, tail = divmod(n, 100)
    if tail == 0:
        return f"{number_to_words(head)} hundred"
    if tail < 10:
        return f"{number_to_words(head)} oh {number_to_words(tail)}"
    return f"{number_to_words(head)} {number_to_words(tail)}"


def _spell_integer(digits: str) -> str:
    n = int(digits)
    if len(digits) == 4 and (1100 <= n <= 1999 or 2010 <= n <= 2099):
        return f" {year_to_words(n)} "
    if len(digits) > 1 and digits.startswith("0"):
        return " " + " ".join(_ONES[int(d)] for d in digits) + " "
    return f" {number_to_words(n)} "


def _pluralize(words: list) -> str:
    """Plural of a spelled number, for decades: ["nineteen", "ninety"] -> "nineteen nineties"."""
    last = words[-1]
    last = last[:-1] + "ies" if last.endswith("y") else last + "s"
    return " ".join(words[:-1] + [last])


def _spell_numbers(text: str) -> str:
    # a number written with separators is a quantity, never a year
    text = _THOUSANDS_RE.sub(lambda m: f" {number_to_words(int(m.group(0).replace(',', '')))} ", text)
    text = _ORDINAL_RE.sub(lambda m: f" {ordinal_to_words(int(m.group(1)))} ", text)
    text = _DECIMAL_RE.sub(
        lambda m: f" {number_to_words(int(m.group(1)))} point "
        + " ".join(_ONES[int(d)] for d in m.group(2)) + " ",
        text,
    )
    text = text.replace("%", " percent ")
    text = _PLURAL_RE.sub(lambda m: f" {_pluralize(_spell_integer(m.group(1)).split())} ", text)
    return _INT_RE.sub(lambda m: _spell_integer(m.group(0)), text)


def _strip_punctuation(text: str) -> str:
    chars = []
    for ch in text:
        cat = unicodedata.category(ch)
        keep = ch == "'" or not (cat.startswith("P") or cat.startswith("S"))
        chars.append(ch if keep else " ")
    return _APOSTROPHE_RE.sub(" ", "".join(chars))


def normalize_text(text: str) -> str:
    """Normalise English text for scoring (the one normaliser every score uses).

    Parameters
    ----------
    text : str
        Raw reference or hypothesis text.

    Returns
    -------
    str
        Lower-case words separated by single spaces; see the module docstring for the rules.

    Examples
    --------
    >>> normalize_text("Hello, Mr. World!  It's 3 o'clock.")
    "hello mister world it's three o'clock"
    >>> normalize_text("In 1984 the 2nd test cost 1,250 dollars (12.5%).")
    'in nineteen eighty four the second test cost one thousand two hundred fifty dollars twelve point five percent'
    """
    if not isinstance(text, str):
        raise TypeError(f"normalize_text expects str, got {type(text).__name__}")
    text = unicodedata.normalize("NFKC", text).translate(_QUOTES).lower()
    text = _spell_numbers(text)
    words = _strip_punctuation(text).split()
    return " ".join(_ABBREVIATIONS.get(w, w) for w in words)


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
