"""Audio input for the scorers: files or arrays to mono float32 at 16 kHz.

File I/O goes through soundfile (torchaudio.load needs torchcodec, which is unusable here); resampling is
torchaudio's.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Tuple, Union

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from most_speech.scoring.io import PathLike

__all__ = ["AudioLike", "load_audio", "resample", "write_wav"]

TARGET_SR = 16000
#: a path, a 1-D float array already at 16 kHz, or ``(array, sample_rate)``
AudioLike = Union[str, os.PathLike, np.ndarray, Tuple[np.ndarray, int]]


def resample(wav: np.ndarray, orig_sr: int, new_sr: int = TARGET_SR) -> np.ndarray:
    """Resample a 1-D float waveform with torchaudio's band-limited sinc interpolation.

    Examples
    --------
    >>> resample(np.zeros(22050, dtype=np.float32), 22050).shape
    (16000,)
    """
    if orig_sr == new_sr:
        return wav.astype(np.float32, copy=False)
    out = AF.resample(torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32)), orig_sr, new_sr)
    return out.numpy()


def load_audio(item: AudioLike, sample_rate: int = TARGET_SR) -> np.ndarray:
    """Load one audio item as mono float32 in [-1, 1] at ``sample_rate``.

    Parameters
    ----------
    item : path, ndarray or (ndarray, int)
        A sound file (any format soundfile reads; channels are averaged), an array assumed to be at
        ``sample_rate`` already, or an array with its sample rate.

    Examples
    --------
    >>> load_audio((np.ones((2, 800), dtype=np.float32).T, 8000)).shape
    (1600,)
    """
    if isinstance(item, (str, os.PathLike)):
        path = Path(item)
        if not path.is_file():
            raise FileNotFoundError(f"audio file not found: {path}")
        try:
            wav, sr = sf.read(str(path), dtype="float32", always_2d=True)
        except Exception as e:  # soundfile raises its own LibsndfileError
            raise ValueError(f"cannot read audio file {path}: {e}") from None
    elif isinstance(item, tuple):
        wav, sr = np.asarray(item[0], dtype=np.float32), int(item[1])
    else:
        wav, sr = np.asarray(item, dtype=np.float32), sample_rate
    if wav.ndim == 2:
        wav = wav.mean(axis=1)
    if wav.ndim != 1:
        raise ValueError(f"expected mono or (samples, channels) audio, got shape {wav.shape}")
    return resample(wav, sr, sample_rate)


def write_wav(path: PathLike, wav: np.ndarray, sample_rate: int = TARGET_SR) -> Path:
    """Write 16-bit PCM WAV atomically (temporary file, then ``os.replace``).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = write_wav(pathlib.Path(tempfile.mkdtemp()) / "a.wav", np.zeros(160, dtype=np.float32))
    >>> sf.info(str(p)).samplerate
    16000
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    sf.write(str(tmp), np.clip(wav, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
    os.replace(tmp, path)
    return path
