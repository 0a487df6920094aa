"""Recipe stage 6: tokenizer + token layout + task manifests for stage-1 training.

``python -m most_speech.recipes.tasks --train data/train.jsonl --valid data/dev.jsonl --units dump/units/all.jsonl
--tokenizer-dir data/tokenizer --out data/tasks [--feats dump/feats/all --frame-stack 4] [--lm-text lm.txt]``

Writes ``<out>/{asr,tts,text_lm,speech_lm}_train.jsonl`` from the training manifest and ``<out>/{...}_dev.jsonl``
from the validation manifest (the names ``hparams/stage1*.yaml`` read under ``<data_folder>/tasks/``), the shapes the trainer's ``tasks`` / ``valid_tasks`` expect
(:mod:`most_speech.data.templates`):

* ``asr``: the manifest entry (``id``, ``audio``, ``start``, ``duration``, ``text``) for continuous input, with
  ``num_frames`` (LM positions after the projector's frame stacking) when a feature store is given, and the
  utterance's ``units`` (for discrete-input configs);
* ``tts``: ``id``, ``text``, ``units``, ``km_tag``;
* ``text_lm``: ``id``, ``text`` from the transcripts plus, optionally, one sentence a line of ``--lm-text``;
* ``speech_lm``: ``id``, ``units``, ``km_tag`` (speech continuation; a yaml uses it only if it lists it).

A tokenizer directory that already holds a tokenizer (e.g. a converted DeepSeek-V2 checkpoint) is used as
it is; otherwise a SentencePiece model is trained on the training text and saved with its token layout
(``num_units`` unit tokens). Units are joined to entries by id (never by line order) and their ``km_tag``
is checked. The recipes' own code lives here because no library CLI does this join (see the issue #6).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

from tqdm import tqdm

from most_speech.data.fileio import atomic_write_text
from most_speech.data.manifest import attach_units, read_manifest, write_manifest
from most_speech.data.templates import TemplateConfig

logger = logging.getLogger(__name__)

__all__ = ["ensure_tokenizer", "task_entries", "write_task_manifests", "main"]

TOKENIZER_FILE = "token_layout.json"
# Added to the training text of a new tokenizer: the prompts every example carries must tokenize without
# unknown pieces even when the transcripts are upper case only (text_form=normalized).
_TEMPLATE_REPEATS = 20


def template_texts(config: Optional[TemplateConfig] = None) -> List[str]:
    """The fixed strings the task templates put around the data (instructions, dialogue prefixes)."""
    c = config or TemplateConfig()
    texts = [c.asr_instruction, c.tts_instruction, c.user_prefix, c.assistant_prefix]
    return [t for t in texts + ([c.speech_instruction] if c.speech_instruction else []) if t.strip()]


def ensure_tokenizer(tokenizer_dir, texts: Iterable[str], vocab_size: int, num_units: int,
                     pad_to_multiple_of: int = 8):
    """Load the tokenizer in ``tokenizer_dir``, or train a SentencePiece one on ``texts`` and save it there.

    Returns
    -------
    MoSTTokenizer

    Examples
    --------
    >>> import tempfile
    >>> tok = ensure_tokenizer(tempfile.mkdtemp(), ["the cat sat on the mat", "a dog ran"] * 30,
    ...                        vocab_size=30, num_units=16)
    >>> tok.layout.num_units
    16
    >>> tok.backend.sp.unk_id() in tok.encode("Transcribe the following speech into text.")  # prompts covered
    False
    """
    from most_speech.text.tokenizer import MoSTTokenizer, train_sentencepiece

    tokenizer_dir = Path(tokenizer_dir)
    if (tokenizer_dir / TOKENIZER_FILE).is_file():
        tok = MoSTTokenizer.from_pretrained(tokenizer_dir)
        if tok.layout.num_units < num_units:
            raise ValueError(f"tokenizer {tokenizer_dir} has {tok.layout.num_units} unit tokens, the k-means "
                             f"model makes {num_units}: retrain the tokenizer (delete the folder)")
        logger.info("using the existing tokenizer in %s (%d ids)", tokenizer_dir, tok.vocab_size)
        return tok
    texts = list(texts) + template_texts() * _TEMPLATE_REPEATS
    model = train_sentencepiece(texts, tokenizer_dir / "sp" / "sp", vocab_size=vocab_size)
    tok = MoSTTokenizer.from_sentencepiece(model, num_units=num_units, pad_to_multiple_of=pad_to_multiple_of)
    tok.save(tokenizer_dir)
    logger.info("trained a SentencePiece tokenizer (%d ids, %d units) in %s", tok.vocab_size, num_units,
                tokenizer_dir)
    return tok


def _frames(reader, uid: str, frame_stack: int) -> int:
    return math.ceil(reader.num_frames(uid) / frame_stack)


def task_entries(entries: Sequence[dict], units, feats=None, frame_stack: int = 1,
                 extra_text: Sequence[str] = (), prefix: str = "") -> Dict[str, List[dict]]:
    """The ``asr`` / ``tts`` / ``text_lm`` / ``speech_lm`` entries of one split.

    Parameters
    ----------
    entries : sequence of dict
        Prepared manifest entries (``id``, ``text``, ``audio``...).
    units : mapping
        Utterance id -> units (a :class:`~most_speech.audio.store.UnitReader`, with ``km_tag``).
    feats : FeatureReader, optional
        Continuous features; adds ``num_frames`` and drops utterances without features.
    frame_stack : int
        The model's ``audio_frame_stack`` (frames per LM position).
    extra_text : sequence of str
        More ``text_lm`` sentences.
    prefix : str
        Id prefix of the extra text lines.

    Examples
    --------
    >>> class U(dict): km_tag = "fbank_km4"
    >>> out = task_entries([{"id": "a", "text": "hi", "audio": "a.wav"}], U(a=[1, 1, 2]), extra_text=["yo"])
    >>> out["tts"][0]["units"], [e["text"] for e in out["text_lm"]], out["speech_lm"][0]
    ([1, 1, 2], ['hi', 'yo'], {'id': 'a', 'units': [1, 1, 2], 'km_tag': 'fbank_km4'})
    """
    with_units = attach_units(entries, units, missing="drop")
    if feats is not None:
        kept = [e for e in with_units if e["id"] in feats]
        if len(kept) < len(with_units):
            logger.warning("%d utterances have no features and are left out", len(with_units) - len(kept))
        with_units = [{**e, "num_frames": _frames(feats, e["id"], frame_stack)} for e in kept]
    asr = list(with_units)  # units keep their km_tag: training checks one tag across all unit data
    tts = [{"id": e["id"], "text": e["text"], "units": e["units"], "km_tag": e["km_tag"]} for e in with_units]
    text_lm = [{"id": e["id"], "text": e["text"]} for e in with_units]
    text_lm += [{"id": f"{prefix}lm{i:07d}", "text": t} for i, t in enumerate(extra_text)]
    speech_lm = [{"id": e["id"], "units": e["units"], "km_tag": e["km_tag"]} for e in with_units]
    return {"asr": asr, "tts": tts, "text_lm": text_lm, "speech_lm": speech_lm}


def _read_lines(path) -> List[str]:
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def write_task_manifests(out_dir, train_manifest, units_path, tokenizer_dir, valid_manifest=None,
                         feats_dir=None, frame_stack: int = 1, lm_text=None, vocab_size: int = 500,
                         num_units: Optional[int] = None) -> Dict[str, Path]:
    """Stage 6 as a function: tokenizer, then ``<out_dir>/<task>_{train,dev}.jsonl`` and ``stats.json``.

    Returns
    -------
    dict
        Manifest name -> path.
    """
    from most_speech.audio.store import FeatureReader, UnitReader

    out_dir = Path(out_dir)
    units = UnitReader(units_path)
    num_units = num_units or int(max(int(u.max()) for u in units.values() if len(u))) + 1
    feats = FeatureReader(feats_dir) if feats_dir else None
    extra = _read_lines(lm_text) if lm_text else []
    train = read_manifest(train_manifest, required=("id", "text")).entries()
    tok = ensure_tokenizer(tokenizer_dir, [e["text"] for e in train] + extra, vocab_size, num_units)
    if tok.layout.num_units < num_units:
        raise ValueError(f"{units_path}: units go up to {num_units - 1} but the tokenizer has "
                         f"{tok.layout.num_units} unit tokens")
    splits = {"train": task_entries(train, units, feats, frame_stack, extra)}
    if valid_manifest:
        splits["dev"] = task_entries(read_manifest(valid_manifest, required=("id", "text")).entries(),
                                        units, feats, frame_stack)
    paths, stats = {}, {"km_tag": units.km_tag, "num_units": num_units, "vocab_size": tok.vocab_size}
    for split, tasks in splits.items():
        for task, rows in tqdm(tasks.items(), desc=f"{split} tasks", unit="task"):
            name = f"{task}_{split}"
            if not rows:
                raise ValueError(f"no {name} entries: do the {split} manifest and {units_path} share ids?")
            paths[name] = write_manifest(rows, out_dir / f"{name}.jsonl")
            stats[name] = len(rows)
    atomic_write_text(out_dir / "stats.json", json.dumps(stats, indent=2) + "\n")
    logger.info("task manifests in %s: %s", out_dir, stats)
    return paths


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m most_speech.recipes.tasks", description=__doc__.split("\n")[0])
    p.add_argument("--train", required=True, help="prepared training manifest (JSONL with id, text, audio)")
    p.add_argument("--valid", help="prepared validation manifest")
    p.add_argument("--units", required=True, help="units JSONL (most-dump-units) covering both manifests")
    p.add_argument("--feats", help="feature store (most-dump-features) for continuous ASR input")
    p.add_argument("--frame-stack", type=int, default=1, help="the model's audio_frame_stack")
    p.add_argument("--lm-text", help="extra text-LM sentences, one a line")
    p.add_argument("--tokenizer-dir", required=True, help="existing tokenizer, or where to train one")
    p.add_argument("--vocab-size", type=int, default=500, help="SentencePiece size when training one")
    p.add_argument("--num-units", type=int, help="unit tokens (default: largest unit + 1)")
    p.add_argument("--out", required=True, help="output folder")
    return p


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    write_task_manifests(args.out, args.train, args.units, args.tokenizer_dir, args.valid, args.feats,
                         args.frame_stack, args.lm_text, args.vocab_size, args.num_units)


if __name__ == "__main__":
    main()
