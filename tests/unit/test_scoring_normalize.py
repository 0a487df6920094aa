"""THE normaliser: every rule of most_speech.text.normalize on hand-made cases."""
import pytest

from most_speech.text.normalize import normalize_text, number_to_words, ordinal_to_words, year_to_words


@pytest.mark.parametrize("n, words", [
    (0, "zero"), (7, "seven"), (13, "thirteen"), (20, "twenty"), (42, "forty two"), (100, "one hundred"),
    (105, "one hundred five"), (999, "nine hundred ninety nine"), (1000, "one thousand"),
    (21042, "twenty one thousand forty two"), (999999, "nine hundred ninety nine thousand nine hundred ninety nine"),
    (1000000, "one zero zero zero zero zero zero"),
])
def test_number_to_words(n, words):
    assert number_to_words(n) == words


@pytest.mark.parametrize("n, words", [
    (1, "first"), (2, "second"), (3, "third"), (5, "fifth"), (8, "eighth"), (9, "ninth"), (12, "twelfth"),
    (20, "twentieth"), (21, "twenty first"), (100, "one hundredth"), (103, "one hundred third"),
])
def test_ordinals(n, words):
    assert ordinal_to_words(n) == words


@pytest.mark.parametrize("n, words", [
    (1984, "nineteen eighty four"), (1900, "nineteen hundred"), (1905, "nineteen oh five"),
    (2005, "two thousand five"), (2024, "twenty twenty four"), (1066, "one thousand sixty six"),
])
def test_years(n, words):
    assert year_to_words(n) == words


@pytest.mark.parametrize("raw, norm", [
    ("Hello,   World!", "hello world"),
    ("Don't stop: it's rock'n'roll.", "don't stop it's rock'n'roll"),
    ("'Quoted' words and the dogs' toys", "quoted words and the dogs toys"),
    ("curly \u2019apostrophe\u2019 don\u2019t", "curly apostrophe don't"),
    ("well-known e-mail", "well known e mail"),
    ("\uff26\uff55\uff4c\uff4c-width \uff12", "full width two"),  # NFKC
    ("In 1984 we met", "in nineteen eighty four we met"),
    ("It cost 1,984 dollars", "it cost one thousand nine hundred eighty four dollars"),
    ("the 2nd and 21st", "the second and twenty first"),
    ("3.14 and 50%", "three point one four and fifty percent"),
    ("the 1990s", "the nineteen nineties"),
    ("007", "zero zero seven"),
    ("Mr. Smith vs Dr Jones", "mister smith versus doctor jones"),
    ("  \t\n ", ""),
])
def test_normalize_text(raw, norm):
    assert normalize_text(raw) == norm


def test_normalize_is_idempotent():
    raw = "On May 3rd, 1999, Mr. O'Neil paid $1,250.50 -- 'twas 12% more!"
    once = normalize_text(raw)
    assert normalize_text(once) == once
    assert "o'neil" in once and "'twas" not in once


def test_normalize_rejects_non_text():
    with pytest.raises(TypeError, match="expects str"):
        normalize_text(None)
