"""Tests of the one English normaliser used for targets and scoring."""
import pytest

from most_speech.text.normalize import normalize_english, number_to_words, ordinal_to_words


@pytest.mark.parametrize("n, words", [
    (0, "zero"), (7, "seven"), (13, "thirteen"), (40, "forty"), (99, "ninety nine"), (100, "one hundred"),
    (101, "one hundred one"), (1000, "one thousand"), (2024, "two thousand twenty four"),
    (1_000_001, "one million one"), (3_000_000_000, "three billion"),
])
def test_number_to_words(n, words):
    assert number_to_words(n) == words


@pytest.mark.parametrize("n, words", [(1, "first"), (2, "second"), (3, "third"), (5, "fifth"), (12, "twelfth"),
                                      (20, "twentieth"), (21, "twenty first"), (100, "one hundredth")])
def test_ordinal_to_words(n, words):
    assert ordinal_to_words(n) == words


@pytest.mark.parametrize("raw, norm", [
    ("Hello, World!", "hello world"),
    ("It\u2019s the 3rd time; he paid $1,250.", "it's the third time he paid one thousand two hundred fifty dollars"),
    ("'Quoted' text -- and   spaces", "quoted text and spaces"),
    ("Growth of 2.5% in 1,000 days", "growth of two point five percent in one thousand days"),
    ("well-known e.g. A_B", "well known e g a b"),
    ("", ""),
])
def test_normalize_english(raw, norm):
    assert normalize_english(raw) == norm


def test_upper_case_and_idempotent():
    text = "Don't stop: 42 cats!"
    upper = normalize_english(text, case="upper")
    assert upper == "DON'T STOP FORTY TWO CATS"
    assert normalize_english(upper, case="upper") == upper
    assert normalize_english(normalize_english(text)) == normalize_english(text)


def test_bad_case_rejected():
    with pytest.raises(ValueError, match="case"):
        normalize_english("x", case="title")
