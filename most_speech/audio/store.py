"""Feature and unit stores keyed by utterance id (never by line order), written shard by shard, atomically.

Feature store: a directory of Kaldi ark/scp pairs (kaldiio, float32 matrices), one pair per shard
(``feats.{rank}-of-{nj}.ark/.scp``) plus ``meta.json``. A shard is written to ``*.tmp`` files and renamed when
complete, so an interrupted run leaves no partial scp, and a rerun skips complete shards.

Unit store: ``units.jsonl`` lines ``{"id": ..., "units": [...]}`` (frame-rate units, not deduplicated), sharded the
same way (``units.{rank}-of-{nj}.jsonl``), with the k-means tag in a header file ``units.km_tag``.
"""
from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import kaldiio
import numpy as np

logger = logging.getLogger(__name__)

_SHARD_RE = re.compile(r"\.(\d+)-of-(\d+)$")


class MissingUtterance(KeyError):
    """An utterance id is not in a store; the message names the id and the store."""

    def __str__(self):
        return str(self.args[0])


def shard_ids(ids: Iterable[str], nj: int, rank: int) -> list[str]:
    """Ids of shard ``rank`` of ``nj``: every id whose index in the *sorted* id list is ``rank`` modulo ``nj``.

    Examples
    --------
    >>> shard_ids(["c", "a", "d", "b"], nj=2, rank=1)
    ['b', 'd']
    """
    if nj < 1 or not 0 <= rank < nj:
        raise ValueError(f"need nj >= 1 and 0 <= rank < nj, got nj={nj} rank={rank}")
    ordered = sorted(set(ids))
    return [u for i, u in enumerate(ordered) if i % nj == rank]


def shard_stem(name: str, nj: int, rank: int) -> str:
    """File stem of one shard, e.g. ``feats.0-of-4``.

    Examples
    --------
    >>> shard_stem("feats", 4, 0)
    'feats.0-of-4'
    """
    return f"{name}.{rank}-of-{nj}"


class FeatureWriter:
    """Write float32 matrices to one ark/scp pair; files appear under their final names only on ``commit``.

    Examples
    --------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> with FeatureWriter(d / "feats.0-of-1") as w:
    ...     w.write("utt1", np.zeros((3, 2)))
    >>> FeatureReader(d)["utt1"].shape
    (3, 2)
    """

    def __init__(self, stem: str | os.PathLike):
        self.stem = Path(stem)
        self.stem.parent.mkdir(parents=True, exist_ok=True)
        self.ark = self.stem.with_name(self.stem.name + ".ark")
        self.scp = self.stem.with_name(self.stem.name + ".scp")
        self._tmp_ark = self.ark.with_name(self.ark.name + ".tmp")
        self._fh = open(self._tmp_ark, "wb")
        self._entries: list[tuple[str, int, int]] = []
        self._seen: set[str] = set()

    def write(self, utt_id: str, mat) -> None:
        """Append one ``[T, D]`` matrix (stored as float32)."""
        if not utt_id or any(c.isspace() for c in utt_id):
            raise ValueError(f"utterance id {utt_id!r} is empty or contains whitespace (not allowed in scp files)")
        if utt_id in self._seen:
            raise ValueError(f"utterance {utt_id!r} written twice to {self.ark}")
        mat = np.ascontiguousarray(mat, dtype=np.float32)
        if mat.ndim != 2:
            raise ValueError(f"utterance {utt_id!r}: features must be a [T, D] matrix, got shape {mat.shape}")
        start = self._fh.tell()
        kaldiio.save_ark(self._fh, {utt_id: mat})
        # the scp offset points past "utt_id " to the binary matrix
        self._entries.append((utt_id, start + len(utt_id.encode()) + 1, mat.shape[0]))
        self._seen.add(utt_id)

    def commit(self) -> None:
        """Flush, then rename: ark first, scp (the index readers use) last."""
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        os.replace(self._tmp_ark, self.ark)
        lines = "".join(f"{u} {self.ark.name}:{off}\n" for u, off, _ in self._entries)
        lens = "".join(f"{u} {n}\n" for u, _, n in self._entries)
        _atomic_write_text(self.stem.with_name(self.stem.name + ".len"), lens)
        _atomic_write_text(self.scp, lines)

    def abort(self) -> None:
        """Drop the partial output."""
        if not self._fh.closed:
            self._fh.close()
        if self._tmp_ark.exists():
            self._tmp_ark.unlink()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.commit()
        else:
            self.abort()


class FeatureReader(Mapping):
    """Read matrices by utterance id from a feature store directory (all complete shards) or one scp file.

    Examples
    --------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> with FeatureWriter(d / "feats.0-of-1") as w:
    ...     w.write("b", np.ones((2, 4)))
    >>> r = FeatureReader(d)
    >>> sorted(r), r.num_frames("b")
    (['b'], 2)
    """

    def __init__(self, path: str | os.PathLike, name: str = "feats"):
        self.path = Path(path)
        scps = [self.path] if self.path.is_file() else sorted(self.path.glob(f"{name}.*.scp"))
        if not scps:
            raise FileNotFoundError(f"no feature store at {self.path} (no {name}.*.scp files)")
        self._index: dict[str, str] = {}
        self._lengths: dict[str, int] = {}
        for scp in scps:
            self._read_scp(scp)

    def _read_scp(self, scp: Path) -> None:
        for n, line in enumerate(scp.read_text().splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split(maxsplit=1)
            if len(parts) != 2:
                raise ValueError(f"{scp}:{n}: expected 'utt_id ark:offset', got {line!r}")
            utt, loc = parts
            if utt in self._index:
                raise ValueError(f"utterance {utt!r} appears twice in feature store {self.path} ({scp})")
            ark, _, off = loc.rpartition(":")
            self._index[utt] = f"{scp.parent / ark if not os.path.isabs(ark) else ark}:{off}"
        lens = scp.with_suffix(".len")
        if lens.is_file():
            for line in lens.read_text().splitlines():
                if line.strip():
                    utt, n = line.split()
                    self._lengths[utt] = int(n)

    def __getitem__(self, utt_id: str) -> np.ndarray:
        if utt_id not in self._index:
            raise MissingUtterance(f"utterance {utt_id!r} is not in feature store {self.path}")
        return np.array(kaldiio.load_mat(self._index[utt_id]), dtype=np.float32)  # writable copy

    def __iter__(self):
        return iter(sorted(self._index))

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, utt_id) -> bool:
        return utt_id in self._index

    def num_frames(self, utt_id: str) -> int:
        """Frame count of one utterance (from the ``.len`` index, no matrix read when present)."""
        if utt_id not in self._index:
            raise MissingUtterance(f"utterance {utt_id!r} is not in feature store {self.path}")
        if utt_id not in self._lengths:
            self._lengths[utt_id] = self[utt_id].shape[0]
        return self._lengths[utt_id]


def shard_complete(stem: str | os.PathLike, kind: str = "feats") -> bool:
    """Whether a shard's final index exists (``.scp`` for features, ``.jsonl`` for units)."""
    stem = Path(stem)
    return stem.with_name(stem.name + (".scp" if kind == "feats" else ".jsonl")).is_file()


class UnitWriter:
    """Write ``{"id", "units"}`` JSON lines for one shard, renamed into place on ``commit``.

    The k-means tag goes to the store's ``{name}.km_tag`` header; writing units of another tag into the same
    store is refused.

    Examples
    --------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> with UnitWriter(d / "units.jsonl", km_tag="toy-L1-km4-00000000") as w:
    ...     w.write("u1", [1, 1, 3])
    >>> UnitReader(d / "units.jsonl")["u1"].tolist()
    [1, 1, 3]
    """

    def __init__(self, path: str | os.PathLike, km_tag: str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _write_km_tag(km_tag_path(self.path), km_tag)
        self.km_tag = km_tag
        self._tmp = self.path.with_name(self.path.name + ".tmp")
        self._fh = open(self._tmp, "w")
        self._seen: set[str] = set()

    def write(self, utt_id: str, units) -> None:
        """Append the units of one utterance."""
        if utt_id in self._seen:
            raise ValueError(f"utterance {utt_id!r} written twice to {self.path}")
        units = [int(u) for u in np.asarray(units).reshape(-1)]
        self._fh.write(json.dumps({"id": utt_id, "units": units}) + "\n")
        self._seen.add(utt_id)

    def commit(self) -> None:
        """Flush and rename into place."""
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        """Drop the partial output."""
        if not self._fh.closed:
            self._fh.close()
        if self._tmp.exists():
            self._tmp.unlink()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.commit()
        else:
            self.abort()


class UnitReader(Mapping):
    """Units by utterance id from ``units.jsonl`` and/or its shards ``units.{r}-of-{nj}.jsonl``.

    ``km_tag`` holds the tag from the header file; pass ``expected_km_tag`` to refuse other units.
    """

    def __init__(self, path: str | os.PathLike, expected_km_tag: str | None = None):
        from most_speech.audio.kmeans import check_km_tag

        self.path = Path(path)
        stem, suffix = self.path.stem, self.path.suffix
        files = ([self.path] if self.path.is_file() else []) + sorted(
            p for p in self.path.parent.glob(f"{stem}.*-of-*{suffix}") if _SHARD_RE.search(p.stem))
        if not files:
            raise FileNotFoundError(f"no unit store at {self.path}")
        tag_file = km_tag_path(self.path)
        if not tag_file.is_file():
            raise FileNotFoundError(f"unit store {self.path} has no km_tag header ({tag_file})")
        self.km_tag = tag_file.read_text().strip()
        if expected_km_tag is not None:
            check_km_tag(expected_km_tag, self.km_tag, "consumer")
        self._units: dict[str, np.ndarray] = {}
        for f in files:
            self._read(f)

    def _read(self, f: Path) -> None:
        with open(f) as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    utt, units = rec["id"], rec["units"]
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
                    raise ValueError(f"{f}:{n}: not a units record ({exc})") from exc
                if utt in self._units:
                    raise ValueError(f"utterance {utt!r} appears twice in unit store {self.path} ({f}:{n})")
                self._units[utt] = np.asarray(units, dtype=np.int64)

    def __getitem__(self, utt_id: str) -> np.ndarray:
        if utt_id not in self._units:
            raise MissingUtterance(f"utterance {utt_id!r} is not in unit store {self.path}")
        return self._units[utt_id]

    def __iter__(self):
        return iter(sorted(self._units))

    def __len__(self) -> int:
        return len(self._units)


def km_tag_path(units_path: str | os.PathLike) -> Path:
    """Header file holding the k-means tag of a unit store: ``units.jsonl`` -> ``units.km_tag``.

    Shards share their store's header: ``units.0-of-4.jsonl`` -> ``units.km_tag``.
    """
    p = Path(units_path)
    stem = _SHARD_RE.sub("", p.stem)
    return p.with_name(stem + ".km_tag")


def _write_km_tag(path: Path, km_tag: str) -> None:
    from most_speech.audio.kmeans import check_km_tag

    if path.is_file():
        check_km_tag(path.read_text().strip(), km_tag, f"unit store {path.parent}")
        return
    _atomic_write_text(path, km_tag + "\n")


def write_meta(store_dir: str | os.PathLike, meta: dict) -> None:
    """Write (atomically) the store's ``meta.json``; an existing one must agree."""
    path = Path(store_dir) / "meta.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file():
        old = json.loads(path.read_text())
        if old != meta:
            raise ValueError(f"feature store {store_dir} was made with {old}, now asked for {meta}")
        return
    _atomic_write_text(path, json.dumps(meta, indent=2, sort_keys=True) + "\n")


def read_meta(store_dir: str | os.PathLike) -> dict:
    """The store's ``meta.json`` ({} when absent)."""
    path = Path(store_dir) / "meta.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
