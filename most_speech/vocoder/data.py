"""Vocoder training data: an audio manifest joined with a unit file by utterance id.

The manifest is JSON Lines ``{"id", "audio", "start"?, "duration"?}`` (``{data_root}`` in
``audio`` is replaced by ``data_root``); the unit file is JSON Lines
``{"id", "units": [...], "km_tag"}``, or the store ``most-dump-units`` writes: lines ``{"id", "units"}``
with the tag in the header file ``<name>.km_tag`` beside it. Units are matched by id, never by line order.
"""
from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass

import torch

from most_speech.data.manifest import iter_manifest, relocate
from most_speech.audio.io import load_audio
from most_speech.audio.store import km_tag_path

logger = logging.getLogger(__name__)

# Units may be a frame or two longer than the audio (feature padding at the edges); more
# than this means they belong to other audio.
MAX_EXTRA_FRAMES = 2


@dataclass
class Utterance:
    """One training utterance: where its audio is and its frame-rate units."""

    id: str
    audio: str
    units: torch.Tensor
    start: float = 0.0
    duration: float | None = None


def header_km_tag(path) -> str | None:
    """The km_tag of a unit file's header (``units.km_tag`` beside ``units.jsonl``), or None without one.

    ``most-dump-units`` writes this header instead of a ``km_tag`` field on every line.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> header_km_tag(d / "units.jsonl") is None
    True
    >>> _ = (d / "units.km_tag").write_text("k\\n")
    >>> header_km_tag(d / "units.jsonl")
    'k'
    """
    tag_file = km_tag_path(path)
    if not tag_file.is_file():
        return None
    tag = tag_file.read_text(encoding="utf-8").strip()
    if not tag:
        raise ValueError(f"{path}: km_tag header {tag_file} is empty")
    return tag


def _record_tag(rec: dict, header: str | None, path, where: str) -> str:
    """A unit record's km_tag: its own field, else the file's header; the two must agree."""
    if "km_tag" not in rec:
        if header is None:
            raise ValueError(
                f"{where}: utterance {rec['id']!r} has no 'km_tag' field and {path} has no km_tag "
                f"header ({km_tag_path(path)}); which k-means model made these units?"
            )
        return header
    if header is not None and rec["km_tag"] != header:
        raise ValueError(
            f"{where}: utterance {rec['id']!r} has km_tag {rec['km_tag']!r} but the header "
            f"{km_tag_path(path)} says {header!r}"
        )
    return rec["km_tag"]


def read_unit_file(path, km_tag: str | None = None) -> tuple[dict, str]:
    """Read a unit JSONL file into ``{id: LongTensor}`` and its (single) km_tag.

    Parameters
    ----------
    path : str or Path
        JSON Lines with ``id`` and ``units`` per line. The tag comes from each line's ``km_tag``
        field or, for lines without one, from the header file ``<path without .jsonl>.km_tag``
        that ``most-dump-units`` writes; lines that carry a tag must agree with the header.
    km_tag : str, optional
        Expected tag; every line must have it.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "u.jsonl"
    >>> _ = p.write_text('{"id": "a", "units": [1, 1, 2], "km_tag": "k"}\\n')
    >>> units, tag = read_unit_file(p)
    >>> units["a"].tolist(), tag
    ([1, 1, 2], 'k')
    >>> _ = p.write_text('{"id": "a", "units": [3]}\\n')
    >>> _ = p.with_suffix(".km_tag").write_text("k2\\n")
    >>> read_unit_file(p)[1]
    'k2'
    """
    header = header_km_tag(path)
    units, tags = {}, set()
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{where}: invalid JSON ({err.msg})") from err
            for key in ("id", "units"):
                if key not in rec:
                    raise ValueError(f"{where}: unit record has no {key!r} field")
            if rec["id"] in units:
                raise ValueError(f"{where}: duplicate id {rec['id']!r}")
            tag = _record_tag(rec, header, path, where)
            if km_tag is not None and tag != km_tag:
                raise ValueError(
                    f"{where}: utterance {rec['id']!r} has km_tag {tag!r}, expected {km_tag!r}"
                )
            if not rec["units"]:
                raise ValueError(f"{where}: utterance {rec['id']!r} has no units")
            tags.add(tag)
            units[rec["id"]] = torch.as_tensor(rec["units"], dtype=torch.long)
    if not units:
        raise ValueError(f"{path}: no unit records")
    if len(tags) != 1:
        raise ValueError(f"{path}: expected one km_tag, found {sorted(tags)}")
    return units, tags.pop()


def join_manifest_units(manifest, unit_file, data_root=None, km_tag=None):
    """Join audio manifest entries with their units by id.

    Entries without units are skipped with a warning; if none remain it is an error.

    Returns
    -------
    utterances : list of Utterance
    km_tag : str

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "m.jsonl").write_text('{"id": "a", "audio": "{data_root}/a.wav"}\\n')
    >>> _ = (d / "u.jsonl").write_text('{"id": "a", "units": [4, 4], "km_tag": "k"}\\n')
    >>> utts, tag = join_manifest_units(d / "m.jsonl", d / "u.jsonl", data_root="/corpus")
    >>> utts[0].audio, utts[0].units.tolist(), tag
    ('/corpus/a.wav', [4, 4], 'k')
    """
    units, tag = read_unit_file(unit_file, km_tag)
    out, missing = [], []
    for entry in iter_manifest(manifest, required=("audio",)):
        if data_root is not None:
            entry = relocate(entry, data_root)
        if entry["id"] not in units:
            missing.append(entry["id"])
            continue
        out.append(
            Utterance(
                entry["id"], entry["audio"], units[entry["id"]],
                float(entry.get("start", 0.0)), entry.get("duration"),
            )
        )
    if missing:
        logger.warning("%d manifest entries have no units in %s (e.g. %s)", len(missing), unit_file, missing[0])
    if not out:
        raise ValueError(f"no manifest entry of {manifest} has units in {unit_file}")
    return out, tag


def aligned_pair(utt: Utterance, sample_rate: int, hop: int):
    """Load an utterance and trim units and audio to a whole number of unit frames.

    Examples
    --------
    >>> import tempfile, numpy as np, soundfile as sf
    >>> p = tempfile.mktemp(suffix=".wav")
    >>> sf.write(p, np.zeros(1000, dtype="float32"), 16000)
    >>> units, wav = aligned_pair(Utterance("a", p, torch.tensor([1, 2, 3, 4])), 16000, 320)
    >>> units.tolist(), wav.shape
    ([1, 2, 3], torch.Size([960]))
    """
    wav = load_audio(utt.audio, sample_rate, utt.start, utt.duration)
    n_audio = wav.shape[0] // hop
    if len(utt.units) > n_audio + MAX_EXTRA_FRAMES:
        raise ValueError(
            f"utterance {utt.id!r}: {len(utt.units)} units but only {n_audio} frames of audio "
            f"({utt.audio}); were the units made from this audio at this unit rate?"
        )
    n = min(len(utt.units), n_audio)
    if n == 0:
        raise ValueError(f"utterance {utt.id!r}: audio shorter than one unit frame ({utt.audio})")
    return utt.units[:n], wav[: n * hop]


class SegmentDataset(torch.utils.data.Dataset):
    """Random aligned crops of ``segment_frames`` units and their audio.

    Utterances shorter than a segment are repeated (units and audio together) to fill it.

    Examples
    --------
    >>> ds = SegmentDataset([], 16000, 320, 4)
    >>> len(ds)
    0
    """

    def __init__(self, utterances, sample_rate: int, hop: int, segment_frames: int, seed=None):
        self.utterances = list(utterances)
        self.sample_rate, self.hop, self.segment_frames = sample_rate, hop, segment_frames
        self.rng = random.Random(seed)

    def __len__(self):
        return len(self.utterances)

    def __getitem__(self, index):
        units, wav = aligned_pair(self.utterances[index], self.sample_rate, self.hop)
        reps = -(-self.segment_frames // len(units))
        if reps > 1:
            units, wav = units.repeat(reps), wav.repeat(reps)
        first = self.rng.randint(0, len(units) - self.segment_frames)
        last = first + self.segment_frames
        return units[first:last], wav[first * self.hop : last * self.hop]


def collate_segments(items):
    """Stack equal-length crops into ``(units (B, T), wav (B, 1, T * hop))``.

    Examples
    --------
    >>> u, w = collate_segments([(torch.zeros(2, dtype=torch.long), torch.zeros(640))] * 3)
    >>> u.shape, w.shape
    (torch.Size([3, 2]), torch.Size([3, 1, 640]))
    """
    units = torch.stack([u for u, _ in items])
    wavs = torch.stack([w for _, w in items]).unsqueeze(1)
    return units, wavs
