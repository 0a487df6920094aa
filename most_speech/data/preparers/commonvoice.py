"""Common Voice preparer: ``<cv_dir>/<lang>/{train,dev,test,validated,...}.tsv`` + ``<lang>/clips/*.mp3``.

Columns are read by header name (``client_id``, ``path``, ``sentence`` are required; the rest - ``up_votes``,
``down_votes``, ``age``, ``gender``, ``accents``, ``locale``, ``segment``, ``sentence_id``, ``variant``,
``sentence_domain`` - are kept as extra fields when non-empty), so releases with more or fewer columns work.
Durations come from ``<lang>/clip_durations.tsv`` (``clip``, ``duration[ms]``) when present, otherwise from the
clip's header when the file is there, otherwise they are left out (and counted in the log).
"""
from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Dict, Iterator, Optional, Sequence

from tqdm import tqdm

from most_speech.data.fileio import PathLike, open_text
from most_speech.data.manifest import ManifestError, to_data_root_path, write_manifest
from most_speech.data.preparers.common import audio_duration, corpus_id

logger = logging.getLogger(__name__)

REQUIRED = ("client_id", "path", "sentence")
EXTRA = ("up_votes", "down_votes", "age", "gender", "accents", "accent", "locale", "segment", "sentence_id",
         "variant", "sentence_domain")


def _reader(f, path):
    # Common Voice sentences contain unbalanced quotes: read tab-separated with no quoting at all.
    reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
    if reader.fieldnames is None:
        raise ManifestError(f"{path}: empty file (no header)")
    return reader


def read_clip_durations(lang_dir: Path) -> Dict[str, float]:
    """``clip file name -> seconds`` from ``clip_durations.tsv`` (empty when the file is absent)."""
    path = lang_dir / "clip_durations.tsv"
    if not path.exists():
        return {}
    with open_text(path) as f:
        reader = _reader(f, path)
        column = next((c for c in reader.fieldnames if c.startswith("duration")), None)
        if "clip" not in reader.fieldnames or column is None:
            raise ManifestError(f"{path}: expected columns 'clip' and 'duration[ms]', got {reader.fieldnames}")
        return {row["clip"]: float(row[column]) / 1000.0 for row in reader}


def iter_tsv(tsv: Path, lang: str, data_root: Path, durations: Dict[str, float], prefix: str,
             stats: Dict[str, int]) -> Iterator[dict]:
    """Entries of one split file."""
    lang_dir = tsv.parent
    with open_text(tsv) as f:
        reader = _reader(f, tsv)
        missing = [c for c in REQUIRED if c not in reader.fieldnames]
        if missing:
            raise ManifestError(f"{tsv}: missing columns {missing}; header has {reader.fieldnames}")
        for lineno, row in enumerate(reader, start=2):
            clip = (row.get("path") or "").strip()
            if not clip:
                raise ManifestError(f"{tsv}, line {lineno}: empty 'path'")
            uid = corpus_id(f"{prefix}-{lang}", Path(clip).stem)
            where = f"{tsv}, line {lineno}, id {uid!r}"
            audio = lang_dir / "clips" / clip
            entry = {"id": uid, "audio": to_data_root_path(audio, data_root, where),
                     "text": (row.get("sentence") or "").strip(), "spk_id": row["client_id"],
                     "lang": (row.get("locale") or lang).strip() or lang}
            if clip in durations:
                entry["duration"] = round(durations[clip], 4)
            elif audio.exists():
                entry["duration"] = audio_duration(audio)
            else:
                stats["no_duration"] = stats.get("no_duration", 0) + 1
            entry.update({k: row[k].strip() for k in EXTRA if row.get(k) and row[k].strip()})
            yield entry


def prepare_commonvoice(cv_dir: PathLike, lang: str, out_dir: PathLike,
                        splits: Sequence[str] = ("train", "dev", "test"), data_root: Optional[PathLike] = None,
                        prefix: str = "cv") -> Dict[str, Path]:
    """Write ``<out_dir>/commonvoice_<lang>_<split>.jsonl`` per split; return ``{split: path}``.

    Parameters
    ----------
    cv_dir : path
        Folder holding one sub-folder per language (``en/``, ``fr/``, ...).
    lang : str
        Language folder name.
    data_root : path, optional
        What ``{data_root}`` stands for (default ``cv_dir``).

    Examples
    --------
    >>> # prepare_commonvoice("cv-corpus-17.0", "en", "data")
    """
    lang_dir = Path(cv_dir) / lang
    if not lang_dir.is_dir():
        raise FileNotFoundError(f"Common Voice language folder not found: {lang_dir}")
    data_root = Path(data_root or cv_dir)
    durations = read_clip_durations(lang_dir)
    out = {}
    for split in splits:
        tsv = lang_dir / f"{split}.tsv"
        if not tsv.exists():
            raise FileNotFoundError(f"Common Voice split file not found: {tsv}")
        stats: Dict[str, int] = {}
        entries = tqdm(iter_tsv(tsv, lang, data_root, durations, prefix, stats), desc=f"cv {lang} {split}",
                       leave=False)
        out[split] = write_manifest(entries, Path(out_dir) / f"commonvoice_{lang}_{split}.jsonl")
        if stats.get("no_duration"):
            logger.warning("Common Voice %s/%s: %d clips without duration (no clip_durations.tsv, no file)",
                           lang, split, stats["no_duration"])
        logger.info("Common Voice %s %s -> %s", lang, split, out[split])
    return out
