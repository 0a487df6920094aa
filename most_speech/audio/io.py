"""Audio file I/O: read (a segment of) a file as mono 16 kHz float, write atomically.

soundfile (libsndfile) decodes wav, flac, ogg and, with libsndfile >= 1.1, mp3. Where libsndfile cannot open a
file whose extension is a compressed format (mp3, m4a, ...), ffmpeg is used as a fallback decoder.
``torchaudio.load``/``save`` are not used: they need torchcodec, which is not usable here (DESIGN.md §4).
"""
from __future__ import annotations

import logging
import os
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

logger = logging.getLogger(__name__)

#: Extensions that are decoded by ffmpeg when libsndfile cannot open them.
FFMPEG_EXTENSIONS = {".mp3", ".m4a", ".aac", ".opus", ".wma", ".mp4", ".webm"}

# A segment that ends this many seconds past the end of the file is still accepted (rounding of
# start/duration in manifests); anything beyond is reported as truncated audio.
_END_TOLERANCE_S = 0.05


class AudioError(ValueError):
    """An audio file is missing, unreadable, empty or truncated; the message names the file."""


def audio_info(path: str | os.PathLike) -> tuple[int, int]:
    """Return ``(num_frames, sample_rate)`` of an audio file without decoding it.

    Examples
    --------
    >>> import tempfile, torch
    >>> p = tempfile.mkdtemp() + "/a.wav"
    >>> save_audio(p, torch.zeros(800), 16000)
    >>> audio_info(p)
    (800, 16000)
    """
    path = _existing(path)
    try:
        info = sf.info(str(path))
        return int(info.frames), int(info.samplerate)
    except (sf.LibsndfileError, RuntimeError) as exc:
        if path.suffix.lower() in FFMPEG_EXTENSIONS:
            wav, sr = _ffmpeg_decode(path, 0.0, None)
            return wav.shape[0], sr
        raise AudioError(f"cannot read audio file {path}: {exc}") from exc


def load_audio(
    path: str | os.PathLike,
    sample_rate: int | None = 16000,
    start: float = 0.0,
    duration: float | None = None,
) -> torch.Tensor:
    """Read a file (or a segment of it) as a mono float32 waveform.

    Parameters
    ----------
    path : str or PathLike
        wav / flac / ogg / mp3 (or anything ffmpeg decodes, for the extensions in ``FFMPEG_EXTENSIONS``).
    sample_rate : int or None
        Resample to this rate with ``torchaudio.functional.resample``; None keeps the file's rate.
    start, duration : float
        Segment in seconds. The reader seeks to ``start`` rather than decoding the whole file.

    Returns
    -------
    torch.Tensor
        float32 ``[T]``, channels averaged.

    Raises
    ------
    AudioError
        The file is missing, not audio, empty, truncated, or the segment lies outside it.

    Examples
    --------
    >>> import tempfile, torch
    >>> p = tempfile.mkdtemp() + "/a.flac"
    >>> save_audio(p, torch.zeros(2, 8000), 8000)
    >>> load_audio(p, 16000, start=0.25, duration=0.5).shape
    torch.Size([8000])
    """
    path = _existing(path)
    if start < 0 or (duration is not None and duration <= 0):
        raise AudioError(f"audio file {path}: bad segment start={start} duration={duration}")
    try:
        data, sr = _read_soundfile(path, start, duration)
    except (sf.LibsndfileError, RuntimeError) as exc:
        if path.suffix.lower() not in FFMPEG_EXTENSIONS:
            raise AudioError(f"cannot read audio file {path}: {exc}") from exc
        logger.debug("libsndfile cannot read %s (%s); decoding with ffmpeg", path, exc)
        data, sr = _ffmpeg_decode(path, start, duration)
    if data.size == 0:
        raise AudioError(f"audio file {path} is empty (no samples from {start:.3f} s)")
    wav = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))
    if wav.dim() == 2:
        wav = wav.mean(dim=1)
    if sample_rate is not None and sr != sample_rate:
        wav = AF.resample(wav, sr, sample_rate)
    return wav


def save_audio(path: str | os.PathLike, wav, sample_rate: int) -> None:
    """Write a waveform atomically (temporary file in the same folder, then ``os.replace``).

    Parameters
    ----------
    path : str or PathLike
        The format follows the extension (wav, flac, ogg, mp3).
    wav : torch.Tensor or numpy.ndarray
        ``[T]`` mono or ``[C, T]`` channels-first, float in [-1, 1].
    sample_rate : int

    Examples
    --------
    >>> import tempfile, torch
    >>> p = tempfile.mkdtemp() + "/b.wav"
    >>> save_audio(p, torch.zeros(160), 16000)
    >>> load_audio(p).shape
    torch.Size([160])
    """
    path = Path(path)
    data = wav.detach().cpu().float().numpy() if isinstance(wav, torch.Tensor) else np.asarray(wav, np.float32)
    if data.ndim == 2:
        data = data.T  # soundfile wants [T, C]
    elif data.ndim != 1:
        raise AudioError(f"cannot write {path}: waveform must be [T] or [C, T], got shape {data.shape}")
    fmt = path.suffix.lstrip(".").upper()
    if fmt not in sf.available_formats():
        raise AudioError(f"cannot write {path}: unknown audio format {fmt!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        sf.write(tmp, data, sample_rate, format=fmt)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _existing(path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"cannot read audio file {path}: no such file")
    return path


def _read_soundfile(path: Path, start: float, duration: float | None) -> tuple[np.ndarray, int]:
    with sf.SoundFile(str(path)) as f:
        sr, total = f.samplerate, f.frames
        _check_riff_complete(path, f)
        first = int(round(start * sr))
        want = -1 if duration is None else int(round(duration * sr))
        _check_segment(path, first, want, total, sr)
        if first:
            f.seek(first)
        frames = total - first if want < 0 else min(want, total - first)
        data = f.read(frames, dtype="float32", always_2d=True)
    if data.shape[0] < frames:
        raise AudioError(
            f"audio file {path} is truncated: header promises {total} frames, "
            f"decoding stopped at {first + data.shape[0]}"
        )
    return data, sr


def _check_segment(path: Path, first: int, want: int, total: int, sr: int) -> None:
    if total <= 0:
        raise AudioError(f"audio file {path} is empty (0 frames)")
    if first >= total:
        raise AudioError(f"audio file {path}: segment start {first / sr:.3f} s is past the end ({total / sr:.3f} s)")
    if want > 0 and first + want > total + _END_TOLERANCE_S * sr:
        raise AudioError(
            f"audio file {path}: segment {first / sr:.3f}+{want / sr:.3f} s runs past the end "
            f"({total / sr:.3f} s): file truncated or manifest wrong"
        )


def _check_riff_complete(path: Path, f: sf.SoundFile) -> None:
    """libsndfile silently shortens a WAV whose data chunk is cut off; compare with the header's size.

    soundfile exposes neither the header's data size nor a warning, so the RIFF chunk list is walked here.
    """
    if f.format != "WAV":
        return
    with open(path, "rb") as fh:
        if fh.read(4) != b"RIFF":
            return
        fh.seek(12)
        while True:
            head = fh.read(8)
            if len(head) < 8:
                return
            cid, size = head[:4], struct.unpack("<I", head[4:])[0]
            if cid == b"data":
                have = os.path.getsize(path) - fh.tell()
                if size != 0xFFFFFFFF and have < size:
                    raise AudioError(
                        f"audio file {path} is truncated: data chunk holds {have} of {size} bytes"
                    )
                return
            fh.seek(size + (size & 1), os.SEEK_CUR)


def _ffmpeg_decode(path: Path, start: float, duration: float | None) -> tuple[np.ndarray, int]:
    """Decode with ffmpeg at the file's own rate (resampling stays with torchaudio), seeking to ``start``."""
    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        raise AudioError(f"cannot read audio file {path}: libsndfile cannot decode it and ffmpeg is not installed")
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries", "stream=sample_rate,channels",
         "-of", "csv=p=0", str(path)], capture_output=True, text=True)
    fields = probe.stdout.strip().split(",")
    if probe.returncode != 0 or len(fields) != 2:
        raise AudioError(f"cannot read audio file {path}: ffprobe found no audio stream ({probe.stderr.strip()})")
    sr, channels = int(fields[0]), int(fields[1])
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-ss", f"{start:.6f}"]
    if duration is not None:
        cmd += ["-t", f"{duration:.6f}"]
    cmd += ["-i", str(path), "-f", "f32le", "-acodec", "pcm_f32le", "-"]
    out = subprocess.run(cmd, capture_output=True)
    if out.returncode != 0:
        raise AudioError(f"cannot read audio file {path}: ffmpeg failed: {out.stderr.decode(errors='replace')}")
    data = np.frombuffer(out.stdout, dtype=np.float32).copy()
    return data[: len(data) // channels * channels].reshape(-1, channels), sr
