"""WER/CER, transcript files joined by id, reports and the ``most-score wer`` CLI, on hand-made cases."""
import json

import pytest

from most_speech.scoring.cli import main
from most_speech.scoring.io import read_transcripts, write_trn
from most_speech.scoring.report import format_alignment, format_result, worst_table, write_report
from most_speech.scoring.wer import cer, score_files, score_texts, wer


def test_corpus_wer_is_sum_of_edits_over_sum_of_ref_words():
    # u1: "a b c d" vs "a x c d e" -> 1 sub + 1 ins over 4; u2: "e f" vs "e" -> 1 del over 2
    s = score_texts({"u1": "a b c d", "u2": "e f"}, {"u1": "a x c d e", "u2": "e"})
    assert (s.sub, s.dele, s.ins, s.ref_len) == (1, 1, 1, 6)
    assert s.error_rate == pytest.approx(3 / 6)  # a mean of per-utterance WERs would give (2/4 + 1/2) / 2 too
    s2 = score_texts({"u1": "a b c d e f g h", "u2": "x"}, {"u1": "a b c d e f g h", "u2": "y"})
    assert s2.error_rate == pytest.approx(1 / 9)  # the per-utterance mean would be 0.5
    per = {u.id: (u.sub, u.dele, u.ins, u.ref_len) for u in s.utts}
    assert per == {"u1": (1, 0, 1, 4), "u2": (0, 1, 0, 2)}


def test_normaliser_applies_to_both_sides():
    assert wer(["Hello, World! It's 5 o'clock."], ["hello world it's five o'clock"]) == 0.0
    assert wer(["Hello world"], ["hello word"]) == pytest.approx(0.5)


def test_cer_counts_characters_including_spaces():
    # "ab cd" (5 chars) vs "ab d": delete "c" -> 1 / 5
    assert cer(["ab cd"], ["ab d"]) == pytest.approx(1 / 5)
    s = score_texts(["ab cd"], ["abxcd"], unit="char")
    assert (s.sub, s.ref_len) == (1, 5)


def test_empty_reference_and_hypothesis():
    s = score_texts({"a": "", "b": "x y"}, {"a": "extra", "b": ""})
    assert (s.ins, s.dele, s.ref_len) == (1, 2, 2)
    assert s.error_rate == pytest.approx(3 / 2)
    assert score_texts({}, {}).error_rate == 0.0


def test_missing_and_extra_ids(caplog):
    s = score_texts({"a": "x y", "b": "z"}, {"a": "x y", "c": "q"})
    assert s.missing == ["b"] and s.extra == ["c"]
    assert s.dele == 1 and s.error_rate == pytest.approx(1 / 3)
    assert "have no hypothesis" in caplog.text
    with pytest.raises(ValueError, match=r"1 without hypothesis \['b'\].*1 without reference \['c'\]"):
        score_texts({"a": "x y", "b": "z"}, {"a": "x y", "c": "q"}, strict=True)


def test_list_inputs_must_have_equal_length():
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        score_texts(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="unit"):
        score_texts(["a"], ["a"], unit="phone")


def test_read_transcripts_formats(tmp_path):
    (tmp_path / "text").write_text("u1 hello world\nu2\n\nu3 a b\n")
    (tmp_path / "h.jsonl").write_text('{"id": "u1", "text": "x"}\n{"id": 7, "text": "y"}\n')
    (tmp_path / "r.trn").write_text("<s> hello there </s> (u1)\nbye (u2)\n")
    assert read_transcripts(tmp_path / "text") == {"u1": "hello world", "u2": "", "u3": "a b"}
    assert read_transcripts(tmp_path / "h.jsonl") == {"u1": "x", "7": "y"}
    assert read_transcripts(tmp_path / "r.trn") == {"u1": "hello there", "u2": "bye"}


@pytest.mark.parametrize("content, match", [
    ("u1 a\nu1 b\n", "duplicate utterance id 'u1'"),
    ('{"id": "u1"}\n', "lacks 'id' or 'text'"),
    ('{"id": "u1", "text": "a"}\n{oops\n', r"bad\.jsonl:2: invalid JSON"),
])
def test_read_transcripts_errors_name_the_problem(tmp_path, content, match):
    path = tmp_path / ("bad.jsonl" if content.startswith("{") else "bad")
    path.write_text(content)
    with pytest.raises(ValueError, match=match):
        read_transcripts(path)
    with pytest.raises(FileNotFoundError, match="nope"):
        read_transcripts(tmp_path / "nope")


def test_score_files_joins_by_id_not_line_order(tmp_path):
    (tmp_path / "ref").write_text("u1 one two three\nu2 four five\n")
    (tmp_path / "hyp.jsonl").write_text('{"id": "u2", "text": "4 5"}\n{"id": "u1", "text": "one 2 three"}\n')
    s = score_files(tmp_path / "ref", tmp_path / "hyp.jsonl")
    assert s.errors == 0 and s.ref_len == 5


def test_alignment_block_marks_errors_like_kaldi():
    utt = score_texts({"u1": "the cat sat on the mat"}, {"u1": "the bat sat the mat down"}).utts[0]
    assert format_alignment(utt).splitlines() == [
        "id: (u1)",
        "Scores: (#C #S #D #I) 4 1 1 1",
        "REF:  the CAT sat ON  the mat ***",
        "HYP:  the BAT sat *** the mat DOWN",
        "Eval:     S       D           I",
    ]


def test_result_summary_line_and_worst_table():
    s = score_texts({"a": "x y z", "b": "x y", "c": "x"}, {"a": "x y z", "b": "q", "c": "r s"})
    first = format_result(s).splitlines()[0]
    assert first == "%WER 66.67 [ 4 / 6, 1 ins, 1 del, 2 sub ]"
    rows = worst_table(s, n=2).splitlines()[2:]
    assert [r.split("|")[1].strip() for r in rows] == ["c", "b"]  # c: 2 errors (200%), b: 2 errors (100%)


def test_write_report_and_trn_roundtrip(tmp_path):
    s = score_texts({"u1": "Hello there!", "u2": "good bye"}, {"u1": "hello", "u2": "good bye"})
    paths = write_report(s, tmp_path / "out")
    assert read_transcripts(paths["ref.trn"]) == {"u1": "hello there", "u2": "good bye"}
    assert read_transcripts(paths["hyp.trn"]) == {"u1": "hello", "u2": "good bye"}
    summary = json.loads(paths["summary.json"].read_text())
    assert summary["error_rate"] == 25.0 and summary["del"] == 1
    assert "id: (u1)" in paths["result.txt"].read_text()
    assert write_trn(tmp_path / "x.trn", {"a": "b c"}).read_text() == "b c (a)\n"
    assert not list((tmp_path / "out").glob(".*tmp"))  # atomic writes leave no temporaries


def test_cli_wer(tmp_path, capsys):
    (tmp_path / "ref").write_text("u1 a b c d\nu2 e f\n")
    (tmp_path / "hyp").write_text("u1 a x c d\nu2 e f\n")
    assert main(["wer", "--ref", str(tmp_path / "ref"), "--hyp", str(tmp_path / "hyp"),
                 "--out", str(tmp_path / "o")]) == 0
    assert "%WER 16.67 [ 1 / 6, 0 ins, 0 del, 1 sub ]" in capsys.readouterr().out
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["sub"] == 1
    assert main(["wer", "--ref", str(tmp_path / "ref"), "--hyp", str(tmp_path / "hyp"), "--unit", "char",
                 "--out", str(tmp_path / "c")]) == 0
    # chars: "a b c d e f" -> refs "a b c d" (7) + "e f" (3); one substitution
    assert json.loads((tmp_path / "c" / "summary.json").read_text())["error_rate"] == 10.0
    (tmp_path / "hyp2").write_text("u1 a b c d\n")
    assert main(["wer", "--ref", str(tmp_path / "ref"), "--hyp", str(tmp_path / "hyp2"), "--strict",
                 "--out", str(tmp_path / "s")]) == 2
    assert "u2" in capsys.readouterr().err
