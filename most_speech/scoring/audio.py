"""What the scorers accept as audio: a file path, a 16 kHz array, or ``(array, sample_rate)``.

Files are read by :func:`most_speech.audio.io.load_audio` (soundfile, channels averaged, torchaudio
resampling); this module only adds the array forms the judges also take.
"""
from __future__ import annotations

import os
from typing import Tuple, Union

import numpy as np
import torch
import torchaudio.functional as AF

__all__ = ["AudioLike", "load_audio", "TARGET_SR"]

TARGET_SR = 16000
#: a path, a 1-D float array already at 16 kHz, or ``(array, sample_rate)``
AudioLike = Union[str, os.PathLike, np.ndarray, torch.Tensor, Tuple[np.ndarray, int]]


def load_audio(item: AudioLike, sample_rate: int = TARGET_SR) -> np.ndarray:
    """Return one audio item as mono float32 numpy at ``sample_rate``.

    Parameters
    ----------
    item : path, array or (array, int)
        A sound file; an array (``[T]`` or ``[T, C]``) taken to be at ``sample_rate`` already; or an
        array with its own sample rate.

    Examples
    --------
    >>> load_audio((np.ones((800, 2), dtype=np.float32), 8000)).shape
    (1600,)
    """
    if isinstance(item, (str, os.PathLike)):
        from most_speech.audio.io import load_audio as load_file

        return load_file(item, sample_rate).numpy()
    if isinstance(item, tuple):
        wav, sr = torch.as_tensor(np.asarray(item[0], dtype=np.float32)), int(item[1])
    else:
        wav, sr = torch.as_tensor(np.asarray(item, dtype=np.float32)), sample_rate
    if wav.dim() == 2:
        wav = wav.mean(dim=1)
    if wav.dim() != 1:
        raise ValueError(f"expected mono [T] or [T, channels] audio, got shape {tuple(wav.shape)}")
    if sr != sample_rate:
        wav = AF.resample(wav, sr, sample_rate)
    return wav.numpy()
