"""Kaldi data directories in and out: ``wav.scp``, ``text``, ``segments``, ``utt2spk`` (+ ``spk2utt``, ``utt2dur``).

These are plain two-column (``segments``: four-column) tables, parsed here directly. kaldiio's
``load_scp`` would resolve every ``wav.scp`` entry to *audio* (and run piped commands to do so); the manifest
needs only the paths, and a data directory must never execute commands on import. Piped entries
(``cmd ... |``) and extended filenames (``file.ark:123``) therefore raise a clear error by default; with
``on_pipe="skip"`` they are dropped and counted.

Import: without ``segments`` each recording is one utterance (id = recording id); with ``segments`` each
segment carries ``start``/``duration`` and its ``recording_id``. Relative paths in ``wav.scp`` are taken
relative to ``base_dir`` (Kaldi's recipe folder; default the current directory) and must lie in ``data_root``.

Export writes Kaldi's C-locale sorted files; segments are written when any entry has ``start``.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

from most_speech.data.fileio import PathLike, atomic_write_text
from most_speech.data.manifest import DATA_ROOT, ManifestError, relocate, to_data_root_path, validate_entry
from most_speech.data.preparers.common import audio_duration

logger = logging.getLogger(__name__)

_ARK_OFFSET = re.compile(r"\.ark:\d+$")


def read_table(path: Path, columns: int = 2, required: bool = True) -> Dict[str, Tuple[int, List[str]]]:
    """``key -> (line number, other fields)`` of a Kaldi table; ``columns=2`` keeps the rest of the line whole."""
    if not path.exists():
        if required:
            raise FileNotFoundError(f"Kaldi data dir file missing: {path}")
        return {}
    table: Dict[str, Tuple[int, List[str]]] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.strip().split(None, 1) if columns == 2 else line.split()
        if columns != 2 and len(parts) != columns:
            raise ManifestError(f"{path}, line {lineno}: expected {columns} fields, got {len(parts)}")
        key = parts[0]
        if key in table:
            raise ManifestError(f"{path}, line {lineno}, id {key!r}: duplicate key (first on line {table[key][0]})")
        table[key] = (lineno, parts[1:] if len(parts) > 1 else [""])
    return table


def _wav_path(spec: str, base_dir: Path) -> Optional[Path]:
    """Path of one wav.scp entry, or None for a piped / ark entry (the caller decides)."""
    if spec.endswith("|") or _ARK_OFFSET.search(spec):
        return None
    path = Path(spec)
    return path if path.is_absolute() else base_dir / path


def read_kaldi_dir(data_dir: PathLike, data_root: PathLike, base_dir: Optional[PathLike] = None,
                   on_pipe: str = "error", lang: Optional[str] = None, prefix: Optional[str] = None) -> List[dict]:
    """Manifest entries of a Kaldi data directory.

    Parameters
    ----------
    data_dir : path
        Folder with ``wav.scp`` and ``text`` (``segments``, ``utt2spk``, ``utt2dur`` optional).
    data_root : path
        What ``{data_root}`` stands for; every audio path must lie inside it.
    base_dir : path, optional
        Folder that relative ``wav.scp`` paths are relative to (default: current directory).
    on_pipe : {"error", "skip"}
        Piped commands / ark offsets in ``wav.scp``: refuse, or drop those utterances (counted in the log).
    lang : str, optional
        ``lang`` field to set on every entry.
    prefix : str, optional
        Prefix for the ids (``"<prefix>-<utt>"``).

    Examples
    --------
    >>> # read_kaldi_dir("data/train", data_root="/corpora")  -> [{"id": ..., "audio": "{data_root}/..."}, ...]
    """
    if on_pipe not in ("error", "skip"):
        raise ValueError(f"on_pipe must be 'error' or 'skip', got {on_pipe!r}")
    data_dir, base = Path(data_dir), Path(base_dir or os.getcwd())
    wav = read_table(data_dir / "wav.scp")
    text = read_table(data_dir / "text")
    segments = read_table(data_dir / "segments", columns=4, required=False)
    utt2spk = read_table(data_dir / "utt2spk", required=False)
    utt2dur = read_table(data_dir / "utt2dur", required=False)
    rows = ({u: (n, f[0], float(f[1]), float(f[2])) for u, (n, f) in segments.items()} if segments
            else {r: (n, r, None, None) for r, (n, _) in wav.items()})
    entries, skipped = [], 0
    for utt, (lineno, rec, start, end) in rows.items():
        src = "segments" if segments else "wav.scp"
        where = f"{data_dir / src}, line {lineno}, id {utt!r}"
        if rec not in wav:
            raise ManifestError(f"{where}: recording {rec!r} not in wav.scp")
        spec = wav[rec][1][0]
        path = _wav_path(spec, base)
        if path is None:
            if on_pipe == "error":
                raise ManifestError(f"{data_dir / 'wav.scp'}, line {wav[rec][0]}, id {rec!r}: piped command or "
                                    f"ark offset {spec!r} is not supported; extract the audio to files first "
                                    f"(or pass on_pipe='skip')")
            skipped += 1
            continue
        if utt not in text:
            raise ManifestError(f"{where}: no transcript in {data_dir / 'text'}")
        entry = {"id": f"{prefix}-{utt}" if prefix else utt, "audio": to_data_root_path(path, data_root, where),
                 "text": text[utt][1][0].strip()}
        if segments:
            entry["recording_id"] = rec
            entry["start"] = start
            if end is not None and end >= 0:
                entry["duration"] = round(end - start, 4)
            elif path.exists():
                entry["duration"] = round(audio_duration(path) - start, 4)
        elif utt in utt2dur:
            entry["duration"] = float(utt2dur[utt][1][0])
        elif path.exists():
            entry["duration"] = audio_duration(path)
        if utt in utt2spk:
            entry["spk_id"] = utt2spk[utt][1][0].strip()
        if lang:
            entry["lang"] = lang
        entries.append(validate_entry(entry, str(data_dir / src), lineno))
    if skipped:
        logger.warning("%s: skipped %d utterances with piped / ark wav.scp entries", data_dir, skipped)
    return entries


def _c_sorted(lines: Iterable[str]) -> str:
    out = sorted(lines, key=lambda s: s.encode("utf-8"))
    return "".join(line + "\n" for line in out)


def _recording_id(entry: dict) -> str:
    if entry.get("recording_id"):
        return str(entry["recording_id"])
    audio = entry["audio"]
    return audio[len(DATA_ROOT) + 1:] if audio.startswith(DATA_ROOT + "/") else audio.lstrip("/")


def write_kaldi_dir(entries: Iterable[dict], data_dir: PathLike, data_root: PathLike) -> Path:
    """Write a Kaldi data directory (``wav.scp``, ``text``, ``utt2spk``, ``spk2utt``, and ``segments`` /
    ``utt2dur`` when known) from manifest entries; ``{data_root}`` is replaced by ``data_root``.

    Examples
    --------
    >>> # write_kaldi_dir(read_manifest("data/librispeech_dev-clean.jsonl"), "kaldi/dev", "/corpora/LibriSpeech")
    """
    data_dir = Path(data_dir)
    entries = [relocate(e, data_root) | {"_orig_audio": e.get("audio")} for e in entries]
    if not entries:
        raise ValueError("write_kaldi_dir: no entries")
    for k, e in enumerate(entries, start=1):
        if "audio" not in e:
            raise ManifestError(f"entry {k}, id {e.get('id')!r}: Kaldi export needs 'audio'")
        for key in ("id", "audio", "spk_id"):
            if key in e and re.search(r"\s", str(e[key])):
                raise ManifestError(f"entry {k}, id {e.get('id')!r}: Kaldi forbids whitespace in {key} {e[key]!r}")
    use_segments = any("start" in e for e in entries)
    wav, text, utt2spk, utt2dur, segments = {}, [], [], [], []
    spk2utt: Dict[str, List[str]] = {}
    for e in entries:
        uid, spk = e["id"], str(e.get("spk_id") or e["id"])
        rec = _recording_id({**e, "audio": e["_orig_audio"]}) if use_segments else uid
        if wav.get(rec, e["audio"]) != e["audio"]:
            raise ManifestError(f"id {uid!r}: recording {rec!r} maps to two audio files")
        wav[rec] = e["audio"]
        text.append(f"{uid} {' '.join(str(e.get('text', '')).split())}".rstrip())
        utt2spk.append(f"{uid} {spk}")
        spk2utt.setdefault(spk, []).append(uid)
        if "duration" in e:
            utt2dur.append(f"{uid} {e['duration']}")
        if use_segments:
            start = float(e.get("start", 0.0))
            end = start + float(e["duration"]) if "duration" in e else -1
            segments.append(f"{uid} {rec} {start:.3f} {end:.3f}" if end >= 0 else f"{uid} {rec} {start:.3f} -1")
    files = {"wav.scp": _c_sorted(f"{r} {p}" for r, p in wav.items()), "text": _c_sorted(text),
             "utt2spk": _c_sorted(utt2spk),
             "spk2utt": _c_sorted(f"{s} {' '.join(sorted(u, key=str.encode))}" for s, u in spk2utt.items())}
    if use_segments:
        files["segments"] = _c_sorted(segments)
    if len(utt2dur) == len(entries):
        files["utt2dur"] = _c_sorted(utt2dur)
    for name, content in files.items():
        atomic_write_text(data_dir / name, content)
    return data_dir
