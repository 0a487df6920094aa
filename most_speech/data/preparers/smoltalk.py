"""SmolTalk preparer: JSON Lines or parquet rows with ``messages`` -> dialogue manifests.

Each row becomes ``{"id", "messages": [{"role", "content"}...], "source"}``. Input is one file or a folder of
``*.jsonl``, ``*.jsonl.gz``, ``*.json`` (JSON Lines) and ``*.parquet`` files (read with pyarrow, batch by batch).
The split comes from the file name (``train-00000-of-00009.parquet`` -> ``train``) or the ``split`` argument.
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

from tqdm import tqdm

from most_speech.data.fileio import PathLike, atomic_writer, open_text
from most_speech.data.manifest import ManifestError, validate_entry

logger = logging.getLogger(__name__)

_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".parquet")
_SPLIT = re.compile(r"^(train|test|validation|dev)[-_.]")


def input_files(path: PathLike) -> List[Path]:
    """The row files under ``path`` (itself when it is a file), sorted."""
    path = Path(path)
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(_SUFFIXES))
    if not files:
        raise FileNotFoundError(f"no {', '.join(_SUFFIXES)} files under {path}")
    return files


def iter_rows(path: Path) -> Iterator[Tuple[str, dict]]:
    """Yield ``(where, row)`` from a JSON Lines or parquet file."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        row = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            for record in batch.to_pylist():
                row += 1
                yield f"{path}, row {row}", record
        return
    with open_text(path) as f:
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                try:
                    yield f"{path}, line {lineno}", json.loads(line)
                except json.JSONDecodeError as err:
                    raise ManifestError(f"{path}, line {lineno}: invalid JSON ({err.msg})") from err


def row_to_entry(row: dict, uid: str, where: str, default_source: str = "smoltalk") -> dict:
    """Dialogue entry of one row (roles and contents only), validated.

    Examples
    --------
    >>> row_to_entry({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
    ...               "source": "smol-magpie-ultra"}, "smoltalk-train-0", "f.jsonl line 1")["source"]
    'smol-magpie-ultra'
    """
    messages = row.get("messages")
    if not isinstance(messages, list):
        raise ManifestError(f"{where}: row has no 'messages' list")
    clean = [{"role": m.get("role"), "content": m.get("content")} if isinstance(m, dict) else m for m in messages]
    entry = {"id": uid, "messages": clean, "source": str(row.get("source") or default_source)}
    return validate_entry(entry, where)


def _split_of(path: Path, split: Optional[str]) -> str:
    if split:
        return split
    m = _SPLIT.match(path.name)
    return m.group(1) if m else "train"


def prepare_smoltalk(input_path: PathLike, out_dir: PathLike, split: Optional[str] = None,
                     prefix: str = "smoltalk", skip_invalid: bool = False) -> Dict[str, Path]:
    """Write ``<out_dir>/smoltalk_<split>.jsonl`` per split; return ``{split: path}``.

    Rows with a malformed ``messages`` raise :class:`ManifestError` naming file and row, or are skipped and
    counted with ``skip_invalid``.

    Examples
    --------
    >>> # prepare_smoltalk("smoltalk/data/all", "data")  -> {"train": ..., "test": ...}
    """
    by_split: Dict[str, List[Path]] = {}
    for f in input_files(input_path):
        by_split.setdefault(_split_of(f, split), []).append(f)
    out = {}
    for name, files in by_split.items():
        count, skipped = 0, 0
        dest = Path(out_dir) / f"smoltalk_{name}.jsonl"
        with atomic_writer(dest) as sink:
            for f in files:
                for where, row in tqdm(iter_rows(f), desc=f"smoltalk {f.name}", leave=False):
                    try:
                        entry = row_to_entry(row, f"{prefix}-{name}-{count:08d}", where)
                    except ManifestError:
                        if not skip_invalid:
                            raise
                        skipped += 1
                        continue
                    sink.write(json.dumps(entry, ensure_ascii=False) + "\n")
                    count += 1
        if skipped:
            logger.warning("SmolTalk %s: skipped %d malformed rows", name, skipped)
        logger.info("SmolTalk %s: %d dialogues -> %s", name, count, dest)
        out[name] = dest
    return out
