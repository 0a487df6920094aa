"""Stage-2 data: SmolTalk dialogues -> speech instructions (spoken user turn -> text answer) + text instructions.

``python -m most_speech.recipes.smoltalk --dialogues data/smoltalk_train.jsonl --out data/tasks --split train
--wav-dir data/speech_instructions/train [--voice espeak-ng:en-us | --tts-export ../LibriHeavy/exp/mini/export]
[--limit 2000] [--max-words 40]``

For every dialogue whose first user turn is short enough to speak (``--max-words``), the user turn is
synthesized to ``<wav-dir>/<id>.wav`` and the dialogue yields a ``speech_instruction`` entry
``{"id", "audio", "duration", "question", "answer", "output": "text"}`` (the first assistant turn is the
answer); every dialogue also yields a ``text_instruction`` entry (its ``messages``). The spoken side comes from
a local engine (:class:`~most_speech.audio.tts_engines.LocalTTS`, via
:func:`~most_speech.scoring.synth.synthesize_many`) or, with ``--tts-export``, from a stage-1 MoST export
(:class:`~most_speech.inference.MoSTTTS`), MoST's own recipe. Writes
``<out>/{speech_instruction,text_instruction}_<split>.jsonl``.
"""
from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from tqdm import tqdm

from most_speech.data.manifest import read_manifest, write_manifest

logger = logging.getLogger(__name__)

__all__ = ["first_exchange", "speech_instruction_entries", "main"]

_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def first_exchange(messages: Sequence[dict]) -> Optional[tuple]:
    """``(user, assistant)`` texts of the first user turn and the assistant turn after it, or None.

    Examples
    --------
    >>> first_exchange([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"},
    ...                 {"role": "assistant", "content": "Hello."}])
    ('Hi?', 'Hello.')
    """
    for i, m in enumerate(messages[:-1]):
        if m.get("role") == "user" and messages[i + 1].get("role") == "assistant":
            return m["content"].strip(), messages[i + 1]["content"].strip()
    return None


def _synthesize(texts: List[str], paths: List[Path], voice: str, tts_export: Optional[str]) -> None:
    if tts_export is None:
        from most_speech.scoring.synth import synthesize_many

        synthesize_many(texts, paths, voice=voice)
        return
    from most_speech.audio.io import save_audio
    from most_speech.inference import MoSTTTS

    tts = MoSTTTS.from_pretrained(tts_export)
    for text, path in tqdm(list(zip(texts, paths)), desc="stage-1 TTS", unit="utt"):
        if not path.is_file():
            save_audio(path, tts.synthesize(text), tts.sample_rate)


def speech_instruction_entries(dialogues: Sequence[dict], wav_dir, voice: str = "espeak-ng:en-us",
                               tts_export: Optional[str] = None, max_words: int = 40) -> List[dict]:
    """Synthesize the first user turn of each dialogue and return the ``speech_instruction`` entries."""
    from most_speech.audio.io import audio_info

    wav_dir = Path(wav_dir)
    wav_dir.mkdir(parents=True, exist_ok=True)
    picked = []
    for d in dialogues:
        pair = first_exchange(d.get("messages") or [])
        if pair and 0 < len(pair[0].split()) <= max_words and pair[1]:
            picked.append((d["id"], *pair))
    paths = [wav_dir / f"{_SAFE.sub('_', uid)}.wav" for uid, _, _ in picked]
    _synthesize([q for _, q, _ in picked], paths, voice, tts_export)
    entries = []
    for (uid, question, answer), path in zip(picked, paths):
        frames, sr = audio_info(path)
        entries.append({"id": uid, "audio": str(path.resolve()), "duration": round(frames / sr, 3),
                        "question": question, "answer": answer, "output": "text"})
    return entries


def build(dialogues_path, out_dir, split: str, wav_dir, voice: str, tts_export: Optional[str] = None,
          limit: int = 0, max_words: int = 40) -> Dict[str, Path]:
    """Read a SmolTalk manifest (``most-prepare-data smoltalk``) and write both task manifests of ``split``."""
    dialogues = read_manifest(dialogues_path, required=("messages",)).entries()
    if limit:
        dialogues = dialogues[:limit]
    speech = speech_instruction_entries(dialogues, wav_dir, voice, tts_export, max_words)
    if not speech:
        raise ValueError(f"{dialogues_path}: no dialogue has a user turn of at most {max_words} words")
    text = [{"id": d["id"], "messages": d["messages"]} for d in dialogues]
    out = Path(out_dir)
    logger.info("%s: %d speech instructions, %d text instructions", split, len(speech), len(text))
    return {"speech_instruction": write_manifest(speech, out / f"speech_instruction_{split}.jsonl"),
            "text_instruction": write_manifest(text, out / f"text_instruction_{split}.jsonl")}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m most_speech.recipes.smoltalk", description=__doc__.split("\n")[0])
    p.add_argument("--dialogues", required=True, help="SmolTalk manifest from most-prepare-data smoltalk")
    p.add_argument("--out", required=True, help="task manifest folder")
    p.add_argument("--split", default="train")
    p.add_argument("--wav-dir", required=True, help="where the spoken user turns go")
    p.add_argument("--voice", default="espeak-ng:en-us", help="local TTS voice spec (espeak-ng:V or flite:V)")
    p.add_argument("--tts-export", help="speak with a stage-1 MoST export instead of a local engine")
    p.add_argument("--limit", type=int, default=0, help="use the first N dialogues (0: all)")
    p.add_argument("--max-words", type=int, default=40, help="longest user turn that is spoken")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    paths = build(a.dialogues, a.out, a.split, a.wav_dir, a.voice, a.tts_export, a.limit, a.max_words)
    print("\n".join(f"wrote {p}" for p in paths.values()))


if __name__ == "__main__":
    main()
