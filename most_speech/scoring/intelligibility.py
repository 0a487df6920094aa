"""TTS intelligibility: an ASR judge transcribes synthesized speech, scored against the input text.

Beside the synthesized audio's WER/CER we report the same judge on the real recordings of the same sentences
where they exist (the ceiling: a TTS system cannot be expected to beat the judge on human speech), as a table.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

from most_speech.scoring.io import PathLike, atomic_write_json, atomic_write_text, read_jsonl
from most_speech.scoring.judges import make_judge, transcribe_in_processes
from most_speech.scoring.report import write_report
from most_speech.scoring.wer import CorpusScore, score_texts

__all__ = ["IntelligibilityItem", "IntelligibilityResult", "evaluate_intelligibility", "load_items",
           "format_table", "write_intelligibility_report"]

log = logging.getLogger(__name__)


@dataclass
class IntelligibilityItem:
    """One sentence: its text, the synthesized audio and optionally a real recording of it."""

    id: str
    text: str
    audio: object
    real_audio: Optional[object] = None


@dataclass
class IntelligibilityResult:
    """Scores of one judge: synthesized audio, and the real-audio ceiling where available."""

    judge: str
    synth: Dict[str, CorpusScore]
    real: Dict[str, CorpusScore] = field(default_factory=dict)
    synth_on_real_ids: Dict[str, CorpusScore] = field(default_factory=dict)
    synth_hyps: Dict[str, str] = field(default_factory=dict)
    real_hyps: Dict[str, str] = field(default_factory=dict)

    def rows(self) -> List[Dict[str, object]]:
        """Table rows: audio kind, number of utterances, WER % and CER %."""
        def row(name, scores):
            return {"judge": self.judge, "audio": name, "n_utts": len(scores["word"].utts),
                    "wer": round(100 * scores["word"].error_rate, 2),
                    "cer": round(100 * scores["char"].error_rate, 2)}

        out = [row("synthesized", self.synth)]
        if self.real:
            if len(self.real["word"].utts) != len(self.synth["word"].utts):
                out.append(row("synthesized (ceiling subset)", self.synth_on_real_ids))
            out.append(row("real (ceiling)", self.real))
        return out


#: the real-audio field of ``synth.jsonl`` before ``most-decode tts`` wrote ``real_audio``: the manifest's whole
#: recording, not the sentence's segment, hence not used
OLD_REAL_KEY = "ref_audio"


def _resolve(path: str, base: Path, data_root: Optional[str]) -> str:
    if data_root is not None:
        path = path.replace("{data_root}", str(Path(data_root).absolute()))
    elif "{data_root}" in path:
        raise ValueError(f"audio path {path!r} uses {{data_root}} but no data_root was given")
    p = Path(path)
    return str(p if p.is_absolute() else base / p)


def load_items(manifest: PathLike, text_key: str = "text", audio_key: str = "audio",
               real_key: str = "real_audio", data_root: Optional[str] = None) -> List[IntelligibilityItem]:
    """Read intelligibility items from a JSONL manifest.

    Each line: ``{"id", "text", "audio": synthesized wav, "real_audio": optional real recording}``, as in the
    ``synth.jsonl`` of ``most-decode tts``. Relative paths are resolved against the manifest's folder;
    ``{data_root}`` is replaced by ``data_root``. The old ``ref_audio`` field (``synth.jsonl`` of earlier
    decodes) may name a whole recording rather than the sentence: it is ignored with a warning.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "m.jsonl").write_text('{"id": "u1", "text": "hi", "audio": "u1.wav"}\\n')
    >>> load_items(d / "m.jsonl")[0].audio == str(d / "u1.wav")
    True
    """
    manifest = Path(manifest)
    items, old_rows = [], []
    for i, row in enumerate(read_jsonl(manifest), 1):
        missing = [k for k in ("id", text_key, audio_key) if k not in row]
        if missing:
            raise ValueError(f"{manifest}: record {i} (id {row.get('id')!r}) lacks field(s) {missing}")
        real = row.get(real_key)
        if real is None and OLD_REAL_KEY in row:
            old_rows.append(row["id"])
        items.append(IntelligibilityItem(
            str(row["id"]), row[text_key], _resolve(row[audio_key], manifest.parent, data_root),
            _resolve(real, manifest.parent, data_root) if real else None))
    if old_rows:
        log.warning("%s: %d rows (e.g. %r) have %r but no %r: their real audio is not scored (it may be a whole "
                    "recording, not the sentence); re-run most-decode tts to write %r", manifest, len(old_rows),
                    old_rows[0], OLD_REAL_KEY, real_key, real_key)
    return items


def _score_both(refs: Mapping[str, str], hyps: Mapping[str, str]) -> Dict[str, CorpusScore]:
    return {unit: score_texts(refs, hyps, unit=unit, strict=True) for unit in ("word", "char")}


def evaluate_intelligibility(items: Sequence[IntelligibilityItem], judge, progress: bool = True, jobs: int = 1
                             ) -> IntelligibilityResult:
    """Transcribe synthesized (and real, where given) audio with ``judge`` and score against the texts.

    Parameters
    ----------
    items : sequence of IntelligibilityItem
        Unique ids; ``audio`` / ``real_audio`` may be paths or arrays (see :mod:`most_speech.scoring.audio`).
    judge : ASRJudge or spec
        Anything :func:`~most_speech.scoring.judges.make_judge` accepts.
    progress : bool
        Show a tqdm bar.
    jobs : int
        Worker processes that share the clips (synthesized and real together); more than 1 needs a spec
        string (:func:`~most_speech.scoring.judges.transcribe_in_processes`).

    Returns
    -------
    IntelligibilityResult

    Examples
    --------
    >>> import numpy as np
    >>> from most_speech.scoring.judges import CallableJudge
    >>> judge = CallableJudge(lambda wavs: ["a b" if len(w) > 10 else "a" for w in wavs], name="toy")
    >>> items = [IntelligibilityItem("u1", "a b", np.zeros(5), real_audio=np.zeros(20))]
    >>> [(r["audio"], r["wer"]) for r in evaluate_intelligibility(items, judge, progress=False).rows()]
    [('synthesized', 50.0), ('real (ceiling)', 0.0)]
    """
    ids = [it.id for it in items]
    if len(set(ids)) != len(ids):
        raise ValueError("intelligibility items have duplicate ids")
    with_real = [it for it in items if it.real_audio is not None]
    audio = [it.audio for it in items] + [it.real_audio for it in with_real]
    if jobs > 1:
        hyps = transcribe_in_processes(judge, audio, jobs=jobs, progress=progress)  # a spec string, or TypeError
        name = judge.partition(":")[0]  # make_judge's kinds are its judges' names
    else:
        judge = make_judge(judge)
        name, hyps = judge.name, judge.transcribe(audio, progress=progress)
    refs = {it.id: it.text for it in items}
    synth_hyps = dict(zip(ids, hyps[:len(items)]))
    result = IntelligibilityResult(name, _score_both(refs, synth_hyps), synth_hyps=synth_hyps)
    if with_real:
        real_ids = [it.id for it in with_real]
        real_refs = {k: refs[k] for k in real_ids}
        result.real_hyps = dict(zip(real_ids, hyps[len(items):]))
        result.real = _score_both(real_refs, result.real_hyps)
        result.synth_on_real_ids = _score_both(real_refs, {k: synth_hyps[k] for k in real_ids})
    log.info("intelligibility (%s): %s", name, result.rows())
    return result


def format_table(results: Sequence[IntelligibilityResult]) -> str:
    """Markdown table of one or more judges' results.

    Examples
    --------
    >>> from most_speech.scoring.wer import score_texts
    >>> r = IntelligibilityResult("toy", {u: score_texts(["a b"], ["a"], unit=u) for u in ("word", "char")})
    >>> print(format_table([r]))
    | judge | audio | utts | WER % | CER % |
    |---|---|---:|---:|---:|
    | toy | synthesized | 1 | 50.00 | 66.67 |
    """
    lines = ["| judge | audio | utts | WER % | CER % |", "|---|---|---:|---:|---:|"]
    for res in results:
        for r in res.rows():
            lines.append(f"| {r['judge']} | {r['audio']} | {r['n_utts']} | {r['wer']:.2f} | {r['cer']:.2f} |")
    return "\n".join(lines)


def write_intelligibility_report(results: Sequence[IntelligibilityResult], out_dir: PathLike) -> Path:
    """Write ``table.md``, ``summary.json`` and per-judge WER reports (``<judge>/synth``, ``<judge>/real``).

    Examples
    --------
    >>> import tempfile
    >>> from most_speech.scoring.wer import score_texts
    >>> r = IntelligibilityResult("toy", {u: score_texts(["a"], ["a"], unit=u) for u in ("word", "char")})
    >>> (write_intelligibility_report([r], tempfile.mkdtemp()) / "table.md").is_file()
    True
    """
    out = Path(out_dir)
    for res in results:
        write_report(res.synth["word"], out / res.judge / "synth")
        if res.real:
            write_report(res.real["word"], out / res.judge / "real")
    atomic_write_text(out / "table.md", format_table(results) + "\n")
    atomic_write_json(out / "summary.json", [row for res in results for row in res.rows()])
    return out
