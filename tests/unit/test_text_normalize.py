"""Tests of normalize_english: the data side of the one normaliser shared with scoring."""
import pytest

from most_speech.text.normalize import normalize_text
from most_speech.text.normalize import normalize_english

SAMPLES = ["Hello, World!", "It\u2019s the 3rd time; he paid 1,250 dollars.", "'Quoted' text -- and   spaces",
           "Growth of 2.5% in 1984", "well-known e.g. A_B", "", "Dr. Who vs. the 1990s"]


@pytest.mark.parametrize("raw, norm", [
    ("Hello, World!", "hello world"),
    ("It\u2019s the 3rd time; he paid 1,250 dollars.", "it's the third time he paid one thousand two hundred "
                                                        "fifty dollars"),
    ("'Quoted' text -- and   spaces", "quoted text and spaces"),
    ("well-known e.g. A_B", "well known e g a b"),
    ("", ""),
])
def test_normalize_english(raw, norm):
    assert normalize_english(raw) == norm


@pytest.mark.parametrize("raw", SAMPLES)
def test_same_function_as_scoring(raw):
    assert normalize_english(raw) == normalize_text(raw)
    assert normalize_english(raw, case="upper") == normalize_text(raw).upper()


def test_upper_case_and_idempotent():
    upper = normalize_english("Don't stop: 42 cats!", case="upper")
    assert upper == "DON'T STOP FORTY TWO CATS"
    for raw in SAMPLES:
        once = normalize_english(raw)
        assert normalize_english(once) == once


def test_bad_case_rejected():
    with pytest.raises(ValueError, match="case"):
        normalize_english("x", case="title")
