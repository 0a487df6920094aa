"""Spoken question answering (WebQuestions "WebQ" format): accuracy = a gold answer is contained in the output.

Questions come as a JSON array of ``{"qId", "qText", "answers": [...]}`` (WebQuestions) or JSONL with
``id``/``question``/``answers``; a single ``answer`` string stands for a one-answer list, so stage 2's held-out
speech-instruction manifests (``speech_instruction_dev.jsonl``) score as they are. An output counts as correct
when, after THE normaliser (:func:`~most_speech.text.normalize.normalize_text`) on both sides, one gold answer
occurs in it as a whole word sequence (``"paris"`` matches "it is paris france" but not "parisian"). Speech
questions are synthesized locally (:func:`build_spoken_questions`) or recorded; speech answers are first
transcribed by an ASR judge (:func:`transcribe_answers`), so speech->text and speech->speech use the same scorer.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

from most_speech.scoring.io import PathLike, atomic_write_json, atomic_write_text, read_jsonl
from most_speech.scoring.judges import make_judge
from most_speech.text.normalize import normalize_text
from most_speech.scoring.slm import wilson_interval
from most_speech.scoring.synth import DEFAULT_VOICE, synthesize_many

__all__ = ["QAItem", "QAResult", "load_questions", "answer_matches", "score_qa", "build_spoken_questions",
           "transcribe_answers", "write_qa_report"]

log = logging.getLogger(__name__)
_SAFE_ID = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass
class QAItem:
    """A question with its gold answers and, when spoken, its audio."""

    id: str
    question: str
    answers: List[str]
    audio: Optional[str] = None


@dataclass
class QAResult:
    """Per-question correctness and the accuracy with its 95% Wilson interval."""

    correct: Dict[str, bool]
    matched: Dict[str, Optional[str]]
    outputs: Dict[str, str]
    missing: List[str]

    @property
    def n(self) -> int:
        return len(self.correct)

    @property
    def accuracy(self) -> float:
        return sum(self.correct.values()) / self.n if self.n else float("nan")

    def summary(self) -> Dict[str, object]:
        lo, hi = wilson_interval(sum(self.correct.values()), self.n)
        return {"n_questions": self.n, "accuracy": round(100 * self.accuracy, 2),
                "ci95": [round(100 * lo, 2), round(100 * hi, 2)], "missing_outputs": list(self.missing)}


def _item(row: dict, where: str) -> QAItem:
    qid = row.get("qId", row.get("id"))
    text = row.get("qText", row.get("question"))
    answers = row.get("answers")
    if answers is None and isinstance(row.get("answer"), str) and row["answer"].strip():
        answers = [row["answer"]]
    if qid is None or text is None or not isinstance(answers, list) or not answers:
        raise ValueError(f"{where}: question needs an id (qId/id), text (qText/question) and a non-empty "
                         f"answers list (or an answer string); got {row}")
    return QAItem(str(qid), str(text), [str(a) for a in answers], row.get("audio"))


def load_questions(path: PathLike, limit: Optional[int] = None) -> List[QAItem]:
    """Read WebQuestions JSON (array) or JSONL questions; relative ``audio`` paths resolve to the file's folder.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "q.json"
    >>> _ = p.write_text('[{"qId": "q1", "qText": "capital of france?", "answers": ["Paris"]}]')
    >>> load_questions(p)[0].answers
    ['Paris']
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: invalid JSON ({e.msg})") from None
    else:
        rows = read_jsonl(path)
    items = [_item(r, f"{path}: question {i}") for i, r in enumerate(rows[:limit] if limit else rows, 1)]
    for it in items:
        if it.audio and not Path(it.audio).is_absolute():
            it.audio = str(path.parent / it.audio)
    if len({it.id for it in items}) != len(items):
        raise ValueError(f"{path}: duplicate question ids")
    return items


def answer_matches(output: str, answers: Sequence[str]) -> Optional[str]:
    """The first gold answer contained (as whole words, after normalisation) in ``output``, else None.

    Examples
    --------
    >>> answer_matches("I think it's Paris, France.", ["Lyon", "paris"])
    'paris'
    >>> answer_matches("Parisian food", ["Paris"]) is None
    True
    """
    out = f" {normalize_text(output)} "
    for ans in answers:
        norm = normalize_text(ans)
        if norm and f" {norm} " in out:
            return ans
    return None


def score_qa(items: Sequence[QAItem], outputs: Mapping[str, str]) -> QAResult:
    """Score model outputs (text, or transcripts of spoken answers) keyed by question id.

    A question without an output counts as wrong and is listed in ``missing``.

    Examples
    --------
    >>> qs = [QAItem("a", "?", ["Paris"]), QAItem("b", "?", ["4", "four"]), QAItem("c", "?", ["x"])]
    >>> res = score_qa(qs, {"a": "paris", "b": "It is 4."})
    >>> res.correct, res.missing
    ({'a': True, 'b': True, 'c': False}, ['c'])
    """
    correct, matched, missing = {}, {}, []
    for it in items:
        if it.id not in outputs:
            missing.append(it.id)
        hit = answer_matches(outputs.get(it.id, ""), it.answers)
        correct[it.id], matched[it.id] = hit is not None, hit
    if missing:
        log.warning("%d questions have no output (counted wrong): %s", len(missing), missing[:10])
    return QAResult(correct, matched, {it.id: outputs.get(it.id, "") for it in items}, missing)


def build_spoken_questions(items: Sequence[QAItem], out_dir: PathLike, voice: str = DEFAULT_VOICE,
                           overwrite: bool = False, progress: bool = True, jobs: int = 1) -> Path:
    """Synthesize each question to ``out_dir/wav/<id>.wav`` and write ``questions.jsonl`` (with ``audio``).

    ``jobs`` questions are synthesized at once (:func:`~most_speech.scoring.synth.synthesize_many`).

    Examples
    --------
    >>> import tempfile
    >>> m = build_spoken_questions([QAItem("q1", "who are you?", ["me"])], tempfile.mkdtemp(), progress=False)
    >>> load_questions(m)[0].audio.endswith("q1.wav")
    True
    """
    out_dir = Path(out_dir)
    rel = [f"wav/{_SAFE_ID.sub('_', it.id)}.wav" for it in items]
    synthesize_many([it.question for it in items], [out_dir / r for r in rel], voice=voice,
                    overwrite=overwrite, progress=progress, jobs=jobs)
    lines = [json.dumps({"id": it.id, "question": it.question, "answers": it.answers, "audio": r})
             for it, r in zip(items, rel)]
    return atomic_write_text(out_dir / "questions.jsonl", "\n".join(lines) + "\n")


def transcribe_answers(audio: Mapping[str, object], judge="whisper", progress: bool = True) -> Dict[str, str]:
    """Transcribe spoken answers ``{question_id: wav path or array}`` with an ASR judge.

    Examples
    --------
    >>> import numpy as np
    >>> transcribe_answers({"q1": np.zeros(160)}, judge=lambda wavs: ["paris"] * len(wavs), progress=False)
    {'q1': 'paris'}
    """
    judge = make_judge(judge)
    ids = list(audio)
    return dict(zip(ids, judge.transcribe([audio[k] for k in ids], progress=progress)))


def write_qa_report(result: QAResult, items: Sequence[QAItem], out_dir: PathLike) -> Path:
    """Write ``summary.json`` and ``details.jsonl`` (question, gold, output, matched answer, correct).

    Examples
    --------
    >>> import tempfile
    >>> qs = [QAItem("a", "?", ["x"])]
    >>> (write_qa_report(score_qa(qs, {"a": "x"}), qs, tempfile.mkdtemp()) / "summary.json").is_file()
    True
    """
    out = Path(out_dir)
    rows = [json.dumps({"id": it.id, "question": it.question, "answers": it.answers,
                        "output": result.outputs[it.id], "matched": result.matched[it.id],
                        "correct": result.correct[it.id]}, ensure_ascii=False) for it in items]
    atomic_write_text(out / "details.jsonl", "\n".join(rows) + "\n")
    atomic_write_json(out / "summary.json", result.summary())
    return out
