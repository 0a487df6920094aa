"""LibriHeavy preparer: lhotse ``MonoCut`` lines of ``libriheavy_cuts_<split>.jsonl.gz`` -> manifests.

One manifest line per supervision: ``start`` = cut start + supervision start (seconds into the LibriLight
recording), ``duration`` = supervision duration, ``audio`` = ``{data_root}/<recording source>`` (sources are
relative to the LibriHeavy working directory, e.g. ``download/librilight/small/...flac``).

Text: ``texts[0]`` is cased and punctuated, ``texts[1]`` upper-case normalised. The default is the cased
form (``text_form="cased"``): MoST is a language model and learns to write ordinary text; WER is computed
after the one project normaliser (:func:`most_speech.text.normalize.normalize_english`) on both sides, so
punctuation never counts. ``text_form="normalized"`` takes ``texts[1]``.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Dict, Iterator, List, Sequence

from tqdm import tqdm

from most_speech.data.fileio import PathLike, open_text
from most_speech.data.manifest import DATA_ROOT, ManifestError, write_manifest
from most_speech.data.preparers.common import corpus_id

logger = logging.getLogger(__name__)

SPLITS = ("small", "medium", "large", "dev", "test_clean", "test_other")
_LANGS = {"english": "en"}


def cuts_file(cuts_dir: PathLike, split: str) -> Path:
    """Path of ``libriheavy_cuts_<split>.jsonl.gz`` (or the uncompressed ``.jsonl``) in ``cuts_dir``."""
    base = Path(cuts_dir) / f"libriheavy_cuts_{split}.jsonl"
    gz = base.with_suffix(".jsonl.gz")
    return gz if gz.exists() or not base.exists() else base


def _text(sup: dict, text_form: str, where: str) -> str:
    texts = (sup.get("custom") or {}).get("texts")
    if not isinstance(texts, list) or not texts:
        text = sup.get("text")
        if not isinstance(text, str):
            raise ManifestError(f"{where}: supervision has neither custom.texts nor text")
        return text
    k = 0 if text_form == "cased" else 1
    if k >= len(texts):
        raise ManifestError(f"{where}: custom.texts has no {text_form} form (index {k})")
    return texts[k]


def cut_to_entries(cut: dict, where: str, text_form: str = "cased", prefix: str = "lh") -> List[dict]:
    """Manifest entries (one per supervision) of one MonoCut dictionary.

    Examples
    --------
    >>> cut = {"id": "small/1/b/c_1", "start": 10.0, "duration": 4.0, "supervisions": [
    ...     {"id": "small/1/b/c_1", "start": 0.5, "duration": 3.0, "speaker": "1", "language": "English",
    ...      "custom": {"texts": ["Hi, you.", "HI YOU"]}}],
    ...     "recording": {"id": "r", "sources": [{"type": "file", "source": "download/x.flac"}]}}
    >>> e = cut_to_entries(cut, "cuts.jsonl line 1")[0]
    >>> e["id"], e["audio"], e["start"], e["duration"], e["text"]
    ('lh-small/1/b/c_1', '{data_root}/download/x.flac', 10.5, 3.0, 'Hi, you.')
    """
    try:
        sources = cut["recording"]["sources"]
        source = sources[0]
    except (KeyError, IndexError, TypeError):
        raise ManifestError(f"{where}: cut {cut.get('id')!r} has no recording.sources") from None
    if source.get("type") != "file":
        raise ManifestError(f"{where}: cut {cut.get('id')!r}: only file sources are supported, got "
                            f"{source.get('type')!r}")
    entries = []
    for sup in cut.get("supervisions") or []:
        sup_where = f"{where}, supervision {sup.get('id')!r}"
        entry = {
            "id": corpus_id(prefix, sup.get("id") or cut["id"]),
            "audio": f"{DATA_ROOT}/{source['source'].lstrip('/')}",
            "start": round(float(cut.get("start", 0.0)) + float(sup.get("start", 0.0)), 4),
            "duration": round(float(sup["duration"]), 4),
            "text": _text(sup, text_form, sup_where),
            "spk_id": str(sup.get("speaker", "")),
            "lang": _LANGS.get(str(sup.get("language", "English")).lower(), str(sup.get("language", "")).lower()),
            "recording_id": cut["recording"].get("id", cut.get("id")),
        }
        entries.append(entry)
    return entries


def iter_cuts(path: PathLike) -> Iterator[tuple]:
    """Yield ``(where, cut)`` for every line of a cuts file."""
    with open_text(path) as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}, line {lineno}"
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as err:
                raise ManifestError(f"{where}: invalid JSON ({err.msg})") from err


def prepare_libriheavy(cuts_dir: PathLike, out_dir: PathLike, splits: Sequence[str] = ("small", "dev",
                       "test_clean", "test_other"), text_form: str = "cased",
                       prefix: str = "lh") -> Dict[str, Path]:
    """Write ``<out_dir>/libriheavy_<split>.jsonl`` for every split; return ``{split: path}``.

    Examples
    --------
    >>> # prepare_libriheavy("libriheavy", "data", splits=["dev"])  -> {"dev": Path("data/libriheavy_dev.jsonl")}
    """
    if text_form not in ("cased", "normalized"):
        raise ValueError(f"text_form must be 'cased' or 'normalized', got {text_form!r}")
    out = {}
    for split in splits:
        if split not in SPLITS:
            raise ValueError(f"unknown LibriHeavy split {split!r}; known: {SPLITS}")
        path = cuts_file(cuts_dir, split)
        if not path.exists():
            raise FileNotFoundError(f"LibriHeavy cuts for split {split!r} not found: {path}")

        def entries(path=path, split=split):
            for where, cut in tqdm(iter_cuts(path), desc=f"libriheavy {split}", unit="cut", leave=False):
                yield from cut_to_entries(cut, where, text_form, prefix)

        out[split] = write_manifest(entries(), Path(out_dir) / f"libriheavy_{split}.jsonl")
        logger.info("LibriHeavy %s -> %s", split, out[split])
    return out
