"""Manifests: JSON Lines, one utterance (or text / dialogue) per line, keyed by a unique ``id``.

An utterance line looks like::

    {"id": "ls-1089-134686-0000", "audio": "{data_root}/test-clean/1089/134686/1089-134686-0000.flac",
     "duration": 10.43, "text": "HE HOPED ...", "spk_id": "1089", "lang": "en"}

Fields
------
``id`` (required, unique, no whitespace)
    The key of everything downstream (units, features, scores). Preparers prefix it with the corpus so
    that ids stay unique when corpora are mixed.
``audio``
    Path with the ``{data_root}`` placeholder; :func:`relocate` substitutes a real directory.
``start`` / ``duration``
    Seconds. ``start`` marks a segment of a longer recording; ``duration`` is the segment length.
``text``, ``spk_id``, ``lang``
    Transcript, speaker and language code.
``messages``
    Dialogue lines (SmolTalk): a list of ``{"role": "user"|"assistant"|"system", "content": str}``.
``units`` / ``km_tag``
    Speech units of the utterance and the tag of the k-means model that made them. Units live in a
    separate store keyed by ``id``; :func:`attach_units` copies them in by id, never by line order.

Any other field is kept untouched. A line must carry at least one of ``audio``, ``text``, ``messages`` or
``units`` (a speech-LM entry is units alone).
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

from most_speech.data.fileio import PathLike, atomic_writer, open_text

logger = logging.getLogger(__name__)

DATA_ROOT = "{data_root}"
ROLES = ("system", "user", "assistant")
_WS = re.compile(r"\s")


class ManifestError(ValueError):
    """A manifest line is malformed; the message names the file, line and utterance id."""


def _where(source: Optional[str], line: Optional[int], uid=None) -> str:
    parts = [str(source) if source else "<manifest>"]
    if line is not None:
        parts.append(f"line {line}")
    if uid is not None:
        parts.append(f"id {uid!r}")
    return ", ".join(parts)


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check_number(entry: dict, key: str, where: str, strictly_positive: bool = False) -> None:
    if key not in entry:
        return
    value = entry[key]
    if not _is_number(value):
        raise ManifestError(f"{where}: field {key!r} must be a finite number of seconds, got {value!r}")
    if value < 0 or (strictly_positive and value == 0):
        raise ManifestError(f"{where}: field {key!r} must be {'> 0' if strictly_positive else '>= 0'}, "
                            f"got {value}")


def _check_messages(messages, where: str) -> None:
    if not isinstance(messages, list) or not messages:
        raise ManifestError(f"{where}: field 'messages' must be a non-empty list")
    for k, msg in enumerate(messages):
        if not isinstance(msg, dict) or "role" not in msg or "content" not in msg:
            raise ManifestError(f"{where}: messages[{k}] must be a dict with 'role' and 'content'")
        if msg["role"] not in ROLES:
            raise ManifestError(f"{where}: messages[{k}] has role {msg['role']!r}; expected one of {ROLES}")
        if not isinstance(msg["content"], str):
            raise ManifestError(f"{where}: messages[{k}].content must be a string")


def validate_entry(entry, source: Optional[str] = None, line: Optional[int] = None,
                   required: Sequence[str] = ()) -> dict:
    """Check one manifest entry and return it; raise :class:`ManifestError` naming file, line and id.

    Parameters
    ----------
    entry : dict
        The decoded JSON object.
    source, line : optional
        File name and 1-based line number used in error messages.
    required : sequence of str
        Fields that must be present in addition to ``id``.

    Examples
    --------
    >>> validate_entry({"id": "a", "text": "hi"})["id"]
    'a'
    >>> validate_entry({"id": "a", "audio": "x.wav", "duration": -1}, "m.jsonl", 3)
    Traceback (most recent call last):
    ...
    most_speech.data.manifest.ManifestError: m.jsonl, line 3, id 'a': field 'duration' must be >= 0, got -1
    """
    if not isinstance(entry, dict):
        raise ManifestError(f"{_where(source, line)}: expected a JSON object, got {type(entry).__name__}")
    uid = entry.get("id")
    if not isinstance(uid, str) or not uid or _WS.search(uid):
        raise ManifestError(f"{_where(source, line)}: field 'id' must be a non-empty string without "
                            f"whitespace, got {uid!r}")
    where = _where(source, line, uid)
    for key in required:
        if key not in entry:
            raise ManifestError(f"{where}: missing required field {key!r}")
    if not any(k in entry for k in ("audio", "text", "messages", "units")):
        raise ManifestError(f"{where}: needs at least one of 'audio', 'text', 'messages' or 'units'")
    for key in ("audio", "text", "spk_id", "lang", "km_tag"):
        if key in entry and not isinstance(entry[key], str):
            raise ManifestError(f"{where}: field {key!r} must be a string, got {entry[key]!r}")
    _check_number(entry, "start", where)
    _check_number(entry, "duration", where)
    if "start" in entry and "duration" not in entry:
        raise ManifestError(f"{where}: a segment with 'start' also needs 'duration'")
    if "units" in entry:
        units = entry["units"]
        if not isinstance(units, list) or not all(isinstance(u, int) and not isinstance(u, bool) and u >= 0
                                                  for u in units):
            raise ManifestError(f"{where}: field 'units' must be a list of non-negative integers")
    if "messages" in entry:
        _check_messages(entry["messages"], where)
    return entry


def iter_manifest(path: PathLike, required: Sequence[str] = ()) -> Iterator[dict]:
    """Stream validated entries of a JSON Lines manifest (``.jsonl`` or ``.jsonl.gz``).

    Blank lines are skipped; duplicate ids raise :class:`ManifestError` naming both lines.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "m.jsonl"
    >>> _ = p.write_text('{"id": "a", "text": "x"}\\n{"id": "b", "text": "y"}\\n')
    >>> [e["id"] for e in iter_manifest(p)]
    ['a', 'b']
    """
    seen: Dict[str, int] = {}
    with open_text(path) as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                entry = json.loads(raw)
            except json.JSONDecodeError as err:
                raise ManifestError(f"{_where(path, lineno)}: invalid JSON ({err.msg})") from err
            validate_entry(entry, str(path), lineno, required)
            if entry["id"] in seen:
                raise ManifestError(f"{_where(path, lineno, entry['id'])}: duplicate id (first on line "
                                    f"{seen[entry['id']]})")
            seen[entry["id"]] = lineno
            yield entry


class Manifest(Mapping):
    """An ordered, id-keyed collection of manifest entries.

    Parameters
    ----------
    entries : iterable of dict
        Entries (validated; duplicate ids are an error).
    source : str, optional
        Where the entries came from, used in error messages.

    Examples
    --------
    >>> m = Manifest([{"id": "u1", "audio": "{data_root}/a.flac", "duration": 2.0, "text": "hi"}])
    >>> m["u1"]["text"], len(m)
    ('hi', 1)
    >>> m.relocate("/corpora/ls")["u1"]["audio"]
    '/corpora/ls/a.flac'
    """

    def __init__(self, entries: Iterable[dict] = (), source: Optional[str] = None):
        self.source = source
        self._entries: "OrderedDict[str, dict]" = OrderedDict()
        for k, entry in enumerate(entries, start=1):
            self.add(entry, line=k)

    def add(self, entry: dict, line: Optional[int] = None) -> None:
        """Validate and append one entry; a repeated id raises :class:`ManifestError`."""
        validate_entry(entry, self.source, line)
        if entry["id"] in self._entries:
            raise ManifestError(f"{_where(self.source, line, entry['id'])}: duplicate id")
        self._entries[entry["id"]] = entry

    def __getitem__(self, uid: str) -> dict:
        try:
            return self._entries[uid]
        except KeyError:
            raise KeyError(f"id {uid!r} not in manifest {self.source or ''}".rstrip()) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> List[dict]:
        """All entries in file order."""
        return list(self._entries.values())

    def relocate(self, data_root: PathLike) -> "Manifest":
        """A copy with ``{data_root}`` in every ``audio`` field replaced by ``data_root``."""
        return Manifest((relocate(e, data_root) for e in self._entries.values()), self.source)

    def total_hours(self) -> float:
        """Sum of ``duration`` over entries that have one, in hours."""
        return sum(e.get("duration", 0.0) for e in self._entries.values()) / 3600.0

    def write(self, path: PathLike) -> Path:
        """Write atomically as JSON Lines (see :func:`write_manifest`)."""
        return write_manifest(self._entries.values(), path)


def read_manifest(path: PathLike, required: Sequence[str] = ()) -> Manifest:
    """Read and validate a whole manifest into a :class:`Manifest`.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = write_manifest([{"id": "a", "text": "x"}], pathlib.Path(tempfile.mkdtemp()) / "m.jsonl")
    >>> list(read_manifest(p))
    ['a']
    """
    manifest = Manifest(source=str(path))
    manifest._entries.update((e["id"], e) for e in iter_manifest(path, required))
    return manifest


def write_manifest(entries: Iterable[dict], path: PathLike) -> Path:
    """Validate ``entries`` and write them atomically as JSON Lines (gzip when ``path`` ends in ``.gz``).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = write_manifest([{"id": "a", "text": "x"}], pathlib.Path(tempfile.mkdtemp()) / "m.jsonl")
    >>> p.read_text()
    '{"id": "a", "text": "x"}\\n'
    """
    seen = set()
    with atomic_writer(path) as f:
        for k, entry in enumerate(entries, start=1):
            validate_entry(entry, f"{path} (being written)", k)
            if entry["id"] in seen:
                raise ManifestError(f"{_where(str(path) + ' (being written)', k, entry['id'])}: duplicate id")
            seen.add(entry["id"])
            f.write(json.dumps(entry, ensure_ascii=False) + "\n")
    return Path(path)


def relocate(entry: dict, data_root: PathLike) -> dict:
    """Return a copy of ``entry`` with the ``{data_root}`` placeholder of ``audio`` replaced.

    Examples
    --------
    >>> relocate({"id": "a", "audio": "{data_root}/x.wav"}, "/data")["audio"]
    '/data/x.wav'
    """
    out = dict(entry)
    if isinstance(out.get("audio"), str):
        out["audio"] = out["audio"].replace(DATA_ROOT, str(data_root).rstrip("/\\") or "/")
    return out


def to_data_root_path(path: PathLike, data_root: PathLike, where: str = "") -> str:
    """Express ``path`` (absolute, or relative to the working directory) as ``{data_root}/<rel>``.

    Raises :class:`ManifestError` when ``path`` lies outside ``data_root``.

    Examples
    --------
    >>> to_data_root_path("/c/ls/a/b.flac", "/c/ls")
    '{data_root}/a/b.flac'
    """
    abs_path = Path(os.path.abspath(path))
    root = Path(os.path.abspath(data_root))
    try:
        rel = abs_path.relative_to(root)
    except ValueError:
        raise ManifestError(f"{where + ': ' if where else ''}audio {str(path)!r} is not inside data root "
                            f"{str(root)!r}") from None
    return f"{DATA_ROOT}/{rel.as_posix()}"


def attach_units(entries: Iterable[dict], units_by_id: Mapping[str, Sequence[int]], km_tag: Optional[str] = None,
                 missing: str = "error") -> List[dict]:
    """Copy units from a store keyed by id into the entries (never by line order).

    Parameters
    ----------
    entries : iterable of dict
        Manifest entries.
    units_by_id : mapping
        Utterance id -> sequence of unit integers (for instance ``most_speech.audio.store.UnitReader``).
    km_tag : str, optional
        Tag of the k-means model that produced the units, stored as ``km_tag`` on each entry; defaults to
        the store's ``km_tag`` attribute. An entry already tagged with another ``km_tag`` is an error.
    missing : {"error", "drop"}
        What to do with entries whose id has no units.

    Examples
    --------
    >>> attach_units([{"id": "a", "text": "x"}], {"a": [3, 3, 7]}, "hubert_l11_km500")[0]["units"]
    [3, 3, 7]
    """
    if missing not in ("error", "drop"):
        raise ValueError(f"missing must be 'error' or 'drop', got {missing!r}")
    km_tag = km_tag or getattr(units_by_id, "km_tag", None)
    if not km_tag:
        raise ValueError("attach_units: no km_tag given and the unit store has none")
    out, dropped = [], 0
    for entry in entries:
        if entry.get("km_tag", km_tag) != km_tag:
            raise ManifestError(f"id {entry['id']!r}: entry has km_tag {entry['km_tag']!r}, the units come from "
                                f"{km_tag!r}")
        if entry["id"] not in units_by_id:
            if missing == "error":
                raise ManifestError(f"id {entry['id']!r}: no units in the store for km_tag {km_tag!r}")
            dropped += 1
            continue
        out.append({**entry, "units": [int(u) for u in units_by_id[entry["id"]]], "km_tag": km_tag})
    if dropped:
        logger.warning("attach_units: dropped %d entries without units (km_tag %s)", dropped, km_tag)
    return out


# ---------------------------------------------------------------------------------------------- filtering
@dataclass
class FilterStats:
    """Counts and hours kept / dropped per reason by :func:`filter_entries`.

    Examples
    --------
    >>> s = FilterStats()
    >>> s.add("kept", 3600.0); s.add("too_long", 7200.0)
    >>> s.as_dict()["too_long"]
    {'count': 1, 'hours': 2.0}
    """

    counts: Dict[str, int] = field(default_factory=dict)
    seconds: Dict[str, float] = field(default_factory=dict)

    def add(self, reason: str, duration: Optional[float]) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        self.seconds[reason] = self.seconds.get(reason, 0.0) + float(duration or 0.0)

    def as_dict(self) -> Dict[str, Dict[str, float]]:
        """``{reason: {"count", "hours"}}`` with ``kept`` first and a ``total`` row last."""
        reasons = sorted(self.counts, key=lambda r: (r != "kept", r))
        out = {r: {"count": self.counts[r], "hours": self.seconds[r] / 3600.0} for r in reasons}
        out["total"] = {"count": sum(self.counts.values()), "hours": sum(self.seconds.values()) / 3600.0}
        return out

    def table(self) -> str:
        """A printable fixed-width table of :meth:`as_dict`."""
        rows = [f"{'reason':<16}{'count':>10}{'hours':>12}"]
        rows += [f"{r:<16}{v['count']:>10d}{v['hours']:>12.3f}" for r, v in self.as_dict().items()]
        return "\n".join(rows)


def filter_reason(entry: dict, min_duration: Optional[float] = None, max_duration: Optional[float] = None,
                  drop_empty_text: bool = True) -> str:
    """Why ``entry`` would be dropped (``"too_short"``, ``"too_long"``, ``"no_duration"``,
    ``"empty_text"``) or ``"kept"``.

    Entries without ``duration`` are dropped as ``no_duration`` only when a duration bound is given.

    Examples
    --------
    >>> filter_reason({"id": "a", "duration": 0.5, "text": "x"}, min_duration=1.0)
    'too_short'
    """
    if min_duration is not None or max_duration is not None:
        dur = entry.get("duration")
        if dur is None:
            return "no_duration"
        if min_duration is not None and dur < min_duration:
            return "too_short"
        if max_duration is not None and dur > max_duration:
            return "too_long"
    if drop_empty_text and "messages" not in entry and not str(entry.get("text", "")).strip():
        return "empty_text"
    return "kept"


def filter_entries(entries: Iterable[dict], min_duration: Optional[float] = None,
                   max_duration: Optional[float] = None,
                   drop_empty_text: bool = True) -> Tuple[List[dict], FilterStats]:
    """Keep entries within ``[min_duration, max_duration]`` seconds and with non-empty text.

    Returns
    -------
    kept : list of dict
    stats : FilterStats
        Counts and hours per reason (``stats.table()`` prints them).

    Examples
    --------
    >>> es = [{"id": "a", "duration": 2.0, "text": "x"}, {"id": "b", "duration": 40.0, "text": "y"},
    ...       {"id": "c", "duration": 3.0, "text": " "}]
    >>> kept, stats = filter_entries(es, max_duration=30.0)
    >>> [e["id"] for e in kept], stats.counts
    (['a'], {'kept': 1, 'too_long': 1, 'empty_text': 1})
    """
    if min_duration is not None and max_duration is not None and min_duration > max_duration:
        raise ValueError(f"min_duration {min_duration} > max_duration {max_duration}")
    kept, stats = [], FilterStats()
    for entry in entries:
        reason = filter_reason(entry, min_duration, max_duration, drop_empty_text)
        stats.add(reason, entry.get("duration"))
        if reason == "kept":
            kept.append(entry)
    return kept, stats


def merge_manifests(manifests: Iterable[Iterable[dict]]) -> Manifest:
    """Concatenate several manifests into one, failing on an id present in two of them.

    Examples
    --------
    >>> len(merge_manifests([[{"id": "a", "text": "x"}], [{"id": "b", "text": "y"}]]))
    2
    """
    merged = Manifest(source="<merged>")
    for entries in manifests:
        for entry in entries:
            merged.add(entry)
    return merged

