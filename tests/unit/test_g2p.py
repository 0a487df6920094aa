"""espeak-ng grapheme-to-phoneme conversion (phoneme CTC targets)."""
import shutil

import pytest

from most_speech.text.g2p import espeak_phonemes, parse_espeak_phonemes


def test_parse_drops_stress_and_bare_marks_and_keeps_word_boundaries():
    assert parse_espeak_phonemes("D_@2 n_'O@_T  b_r_,E_k_f_@_s_t_:_: l_i_!") == [
        "D", "@2", "|", "n", "O@", "T", "|", "b", "r", "E", "k", "f", "@", "s", "t", "|", "l", "i"]
    assert parse_espeak_phonemes("   ") == []


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_espeak_phonemes_one_sequence_per_text_in_order():
    texts = ["the dog", "hello world", "no"] * 20
    out = espeak_phonemes(texts)
    assert len(out) == len(texts)
    assert out[:3] == [["D", "@2", "|", "d", "0", "g"], ["h", "@", "l", "oU", "|", "w", "3:", "l", "d"],
                       ["n", "oU"]]
    assert out[3:6] == out[:3]
    # several espeak-ng processes, one per block of at least 100 texts: the same phonemes in the same order
    many = [f"{t} {i}" for i, t in enumerate(texts * 5)]
    assert espeak_phonemes(many, jobs=3) == espeak_phonemes(many, jobs=1)
    assert espeak_phonemes([]) == []
    with pytest.raises(RuntimeError, match="-v nosuchvoice failed: .*voice does not exist"):
        espeak_phonemes(["hello"], voice="nosuchvoice")


def test_espeak_phonemes_errors():
    with pytest.raises(ValueError, match="text 1 is empty"):
        espeak_phonemes(["a", " "])
    with pytest.raises(FileNotFoundError, match="not-espeak is not installed"):
        espeak_phonemes(["a"], executable="not-espeak")


def test_espeak_phonemes_falls_back_to_one_process_per_text_when_lines_split(tmp_path):
    fake = tmp_path / "fake-espeak"  # echoes its input with every word on its own line
    fake.write_text("#!/bin/sh\nwhile read -r line; do for w in $line; do echo \"$w\"; done; done\n")
    fake.chmod(0o755)
    assert espeak_phonemes(["h_'a w_o", "n_o"], executable=str(fake)) == [["h", "a", "|", "w", "o"], ["n", "o"]]
