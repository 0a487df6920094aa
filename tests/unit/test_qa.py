"""Spoken QA scoring (WebQuestions format) on hand-made cases."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from most_speech.scoring.cli import main
from most_speech.scoring.qa import (QAItem, answer_matches, load_questions, score_qa,
                                    transcribe_answers, write_qa_report)

SHARED = Path(os.environ.get("MOST_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
WEBQ = SHARED / "webquestions" / "test.json"


@pytest.mark.parametrize("output, answers, hit", [
    ("They speak Jamaican English.", ["Jamaican Creole English Language", "Jamaican English"], "Jamaican English"),
    ("He was a LAWYER, I believe", ["Lawyer"], "Lawyer"),
    ("Parisian cafes", ["Paris"], None),                   # whole words only
    ("it was in 1984", ["nineteen eighty-four"], "nineteen eighty-four"),  # numbers normalised on both sides
    ("the answer is four", ["4"], "4"),
    ("", ["x"], None),
    ("anything", ["!!!"], None),                         # an answer that normalises to nothing never matches
])
def test_answer_matches(output, answers, hit):
    assert answer_matches(output, answers) == hit


def test_score_qa_accuracy_and_ci():
    items = [QAItem("q1", "?", ["Paris"]), QAItem("q2", "?", ["Lawyer"]), QAItem("q3", "?", ["blue"]),
             QAItem("q4", "?", ["1"])]
    res = score_qa(items, {"q1": "paris", "q2": "a doctor", "q3": "Blue!"})
    assert res.correct == {"q1": True, "q2": False, "q3": True, "q4": False}
    assert res.missing == ["q4"] and res.accuracy == 0.5
    s = res.summary()
    assert s["accuracy"] == 50.0 and s["ci95"][0] < 50.0 < s["ci95"][1]


def test_load_questions_formats_and_errors(tmp_path):
    (tmp_path / "q.jsonl").write_text('{"id": "a", "question": "why?", "answers": ["because"], "audio": "a.wav"}\n')
    item = load_questions(tmp_path / "q.jsonl")[0]
    assert item.audio == str(tmp_path / "a.wav") and item.answers == ["because"]
    (tmp_path / "bad.json").write_text('[{"qId": "x", "qText": "?", "answers": []}]')
    with pytest.raises(ValueError, match="question 1.*non-empty"):
        load_questions(tmp_path / "bad.json")
    (tmp_path / "dup.json").write_text('[{"qId": "x", "qText": "?", "answers": ["a"]}, '
                                       '{"qId": "x", "qText": "!", "answers": ["b"]}]')
    with pytest.raises(ValueError, match="duplicate"):
        load_questions(tmp_path / "dup.json")


def test_speech_instruction_manifests_score_as_questions(tmp_path):
    # stage 2's held-out speech instructions: one "answer" string per row; --limit scores the first N
    rows = [{"id": "d1", "audio": "d1.wav", "question": "HOW MANY WORDS ARE IN A B", "answer": "THERE ARE TWO WORDS"},
            {"id": "d2", "audio": "d2.wav", "question": "WHAT IS THE LAST WORD OF A B", "answer": "B"},
            {"id": "d3", "audio": "d3.wav", "question": "?", "answer": "C"}]
    (tmp_path / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = load_questions(tmp_path / "dev.jsonl")
    assert [it.answers for it in items] == [["THERE ARE TWO WORDS"], ["B"], ["C"]]
    (tmp_path / "pred.jsonl").write_text('{"id": "d1", "text": "there are two words"}\n{"id": "d2", "text": "a"}\n')
    assert main(["qa", "--questions", str(tmp_path / "dev.jsonl"), "--limit", "2", "--pred",
                 str(tmp_path / "pred.jsonl"), "--out", str(tmp_path / "o")]) == 0
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["n_questions"] == 2 and summary["accuracy"] == 50.0 and summary["missing_outputs"] == []
    (tmp_path / "blank.jsonl").write_text('{"id": "d1", "question": "?", "answer": " "}\n')
    with pytest.raises(ValueError, match="question 1.*answer string"):
        load_questions(tmp_path / "blank.jsonl")


@pytest.mark.skipif(not WEBQ.is_file(), reason="shared/data/webquestions absent")
def test_webquestions_file_loads():
    items = load_questions(WEBQ)
    assert len(items) == 2032 and items[0].id == "wqs000000" and items[0].answers[-1] == "Jamaican English"
    assert len(load_questions(WEBQ, limit=3)) == 3


def test_spoken_answers_are_transcribed_then_scored(tmp_path):
    items = [QAItem("q1", "?", ["Paris"]), QAItem("q2", "?", ["Lawyer"])]
    audio = {"q1": np.zeros(1600), "q2": np.zeros(3200)}
    fake_asr = lambda wavs: ["it is paris" if len(w) == 1600 else "a farmer" for w in wavs]  # noqa: E731
    outputs = transcribe_answers(audio, judge=fake_asr, progress=False)
    res = score_qa(items, outputs)
    assert res.correct == {"q1": True, "q2": False}
    write_qa_report(res, items, tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "details.jsonl").read_text().splitlines()]
    assert rows[0]["matched"] == "Paris" and rows[1]["output"] == "a farmer"


def test_build_spoken_questions_and_cli(tmp_path, capsys):
    (tmp_path / "q.json").write_text(json.dumps([
        {"qId": "q1", "qText": "what is the capital of france?", "answers": ["Paris"]},
        {"qId": "q2", "qText": "who wrote hamlet?", "answers": ["William Shakespeare", "Shakespeare"]}]))
    assert main(["build-qa", "--questions", str(tmp_path / "q.json"), "--out", str(tmp_path / "sq")]) == 0
    spoken = load_questions(tmp_path / "sq" / "questions.jsonl")
    assert [it.id for it in spoken] == ["q1", "q2"]
    assert all(sf.info(it.audio).samplerate == 16000 for it in spoken)
    (tmp_path / "pred.jsonl").write_text('{"id": "q1", "text": "Paris."}\n{"id": "q2", "text": "Marlowe"}\n')
    assert main(["qa", "--questions", str(tmp_path / "q.json"), "--pred", str(tmp_path / "pred.jsonl"),
                 "--out", str(tmp_path / "o")]) == 0
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["accuracy"] == 50.0
    assert "accuracy 50.00%" in capsys.readouterr().out


def test_cli_spoken_answers_resolve_paths_and_fail_clearly(tmp_path, capsys):
    (tmp_path / "q.json").write_text(json.dumps([{"qId": "q1", "qText": "?", "answers": ["Paris"]}]))
    (tmp_path / "ans.jsonl").write_text('{"id": "q1", "audio": "wav/q1.wav"}\n')
    assert main(["qa", "--questions", str(tmp_path / "q.json"), "--answer-audio", str(tmp_path / "ans.jsonl"),
                 "--judge", "pocketsphinx", "--out", str(tmp_path / "o")]) == 2
    assert str(tmp_path / "wav" / "q1.wav") in capsys.readouterr().err
