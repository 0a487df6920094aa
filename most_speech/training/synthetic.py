"""A synthetic speech-text corpus for tests, benchmarks and smoke runs of the trainer.

Every word of a small vocabulary owns a fixed random unit sequence; an utterance is a random word string,
its "speech" the concatenation of its words' units (each unit repeated 1-2 times, like real 50 Hz units
before deduplication). ASR (units -> text), TTS (text -> units) and text-LM examples built from it are
learnable by a tiny model in a few dozen steps, so a falling loss is a meaningful check.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from most_speech.data.manifest import write_manifest

WORDS = ("red green blue cat dog bird runs sleeps eats fast slowly the a big small one two three "
         "house tree").split()


def _sentences(rng: np.random.Generator, n: int, min_words: int, max_words: int) -> List[List[str]]:
    return [list(rng.choice(WORDS, size=int(rng.integers(min_words, max_words + 1)))) for _ in range(n)]


#: k-means tag of the synthetic lexicon's "units" (no k-means model made them; the tag names the lexicon).
SYNTHETIC_KM_TAG = "synthetic-lexicon-km"


def make_synthetic_corpus(folder, num_utterances: int = 64, num_units: int = 20, seed: int = 0,
                          min_words: int = 2, max_words: int = 5, text_vocab_size: int = 60,
                          valid_utterances: int = 0) -> Dict[str, Path]:
    """Write ``tokenizer/`` and ``{asr,tts,text_lm}.jsonl`` (+ ``valid_*.jsonl``) under ``folder``.

    Returns
    -------
    dict
        ``tokenizer_dir``, ``data_folder`` and one path per manifest.

    Examples
    --------
    >>> import tempfile
    >>> paths = make_synthetic_corpus(tempfile.mkdtemp(), num_utterances=8)
    >>> sorted(k for k in paths if k.endswith("jsonl"))
    ['asr.jsonl', 'text_lm.jsonl', 'tts.jsonl']
    """
    from most_speech.text.tokenizer import MoSTTokenizer, train_sentencepiece

    folder = Path(folder)
    rng = np.random.default_rng(seed)
    lexicon = {w: [int(u) for u in rng.integers(0, num_units, size=int(rng.integers(2, 4)))] for w in WORDS}
    sp = train_sentencepiece([" ".join(WORDS)] * 5 + [" ".join(s) for s in _sentences(rng, 200, 2, 6)],
                             folder / "sp" / "sp", vocab_size=text_vocab_size)
    tok_dir = MoSTTokenizer.from_sentencepiece(sp, num_units=num_units, pad_to_multiple_of=8).save(
        folder / "tokenizer")
    paths: Dict[str, Path] = {"tokenizer_dir": tok_dir, "data_folder": folder}
    for prefix, count in (("", num_utterances), ("valid_", valid_utterances)):
        if count <= 0:
            continue
        speech = []
        for i, words in enumerate(_sentences(rng, count, min_words, max_words)):
            units = [u for w in words for u in lexicon[w] for _ in range(int(rng.integers(1, 3)))]
            speech.append({"id": f"{prefix}utt{i:05d}", "text": " ".join(words), "units": units,
                           "km_tag": SYNTHETIC_KM_TAG})
        texts = [{"id": f"{prefix}txt{i:05d}", "text": " ".join(w)}
                 for i, w in enumerate(_sentences(rng, count, min_words, max_words + 3))]
        for task, entries in (("asr", speech), ("tts", speech), ("text_lm", texts)):
            name = f"{prefix}{task}.jsonl"
            paths[name] = write_manifest(entries, folder / name)
    (folder / "lexicon.json").write_text(json.dumps(lexicon))
    return paths


def synthetic_task_overrides(paths: Dict[str, Path], valid: Optional[bool] = None) -> Dict[str, object]:
    """``tasks`` / ``valid_tasks`` hparams for the corpus written by :func:`make_synthetic_corpus`."""
    weights = {"asr": 0.4, "tts": 0.4, "text_lm": 0.2}
    out: Dict[str, object] = {"tasks": {t: {"manifest": str(paths[f"{t}.jsonl"]), "weight": w}
                                        for t, w in weights.items()}}
    if valid or (valid is None and "valid_asr.jsonl" in paths):
        out["valid_tasks"] = {t: {"manifest": str(paths[f"valid_{t}.jsonl"])} for t in weights}
    return out
