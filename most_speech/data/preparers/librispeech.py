"""LibriSpeech preparer: ``<split>/<spk>/<chapter>/<spk>-<chapter>-<utt>.flac`` + ``<spk>-<chapter>.trans.txt``."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, Iterator, Optional, Sequence

from tqdm import tqdm

from most_speech.data.fileio import PathLike
from most_speech.data.manifest import ManifestError, to_data_root_path, write_manifest
from most_speech.data.preparers.common import audio_duration, corpus_id

logger = logging.getLogger(__name__)


def find_splits(corpus_dir: PathLike) -> list:
    """Split folders of ``corpus_dir``: those holding at least one ``*.trans.txt`` two levels down."""
    return sorted(p.name for p in Path(corpus_dir).iterdir()
                  if p.is_dir() and next(p.glob("*/*/*.trans.txt"), None) is not None)


def iter_split(split_dir: Path, data_root: Path, prefix: str) -> Iterator[dict]:
    """Entries of one split folder, in sorted transcript order."""
    for trans in sorted(split_dir.glob("*/*/*.trans.txt")):
        spk, chapter = trans.parent.parent.name, trans.parent.name
        for lineno, line in enumerate(trans.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            uid, _, text = line.strip().partition(" ")
            where = f"{trans}, line {lineno}, id {uid!r}"
            audio = trans.parent / f"{uid}.flac"
            if not audio.exists():
                raise ManifestError(f"{where}: audio file {audio} is missing")
            if not uid.startswith(f"{spk}-{chapter}-"):
                raise ManifestError(f"{where}: utterance id does not match folder {spk}/{chapter}")
            yield {"id": corpus_id(prefix, uid), "audio": to_data_root_path(audio, data_root, where),
                   "duration": audio_duration(audio), "text": text.strip(), "spk_id": spk, "lang": "en",
                   "chapter_id": chapter}


def prepare_librispeech(corpus_dir: PathLike, out_dir: PathLike, splits: Optional[Sequence[str]] = None,
                        data_root: Optional[PathLike] = None, prefix: str = "ls") -> Dict[str, Path]:
    """Write ``<out_dir>/librispeech_<split>.jsonl`` per split (all splits found when ``splits`` is None).

    Parameters
    ----------
    corpus_dir : path
        The ``LibriSpeech`` folder holding ``train-clean-100``, ``test-clean``, ...
    data_root : path, optional
        What ``{data_root}`` stands for (default ``corpus_dir``); audio must lie inside it.

    Examples
    --------
    >>> # prepare_librispeech("LibriSpeech", "data", splits=["test-clean"])
    """
    corpus_dir = Path(corpus_dir)
    data_root = Path(data_root or corpus_dir)
    splits = list(splits) if splits else find_splits(corpus_dir)
    if not splits:
        raise FileNotFoundError(f"no LibriSpeech split folders with *.trans.txt under {corpus_dir}")
    out = {}
    for split in splits:
        split_dir = corpus_dir / split
        if not split_dir.is_dir():
            raise FileNotFoundError(f"LibriSpeech split folder not found: {split_dir}")
        entries = tqdm(iter_split(split_dir, data_root, prefix), desc=f"librispeech {split}", leave=False)
        out[split] = write_manifest(entries, Path(out_dir) / f"librispeech_{split}.jsonl")
        logger.info("LibriSpeech %s -> %s", split, out[split])
    return out
