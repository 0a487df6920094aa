"""Audio I/O: formats, segments, downmix, resampling, atomic writes, errors naming the file."""
import math
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from most_speech.audio import io as audio_io
from most_speech.audio.io import AudioError, audio_info, load_audio, save_audio


def _tone(seconds=1.0, sr=16000, freq=440.0):
    t = torch.arange(int(seconds * sr)) / sr
    return 0.3 * torch.sin(2 * math.pi * freq * t)


@pytest.mark.parametrize("ext", ["wav", "flac", "ogg", "mp3"])
def test_formats_round_trip(tmp_path, ext):
    wav = _tone(1.0)
    path = tmp_path / f"a.{ext}"
    save_audio(path, wav, 16000)
    got = load_audio(path)
    assert got.dtype == torch.float32 and got.dim() == 1
    assert abs(got.shape[0] - 16000) <= 1200  # lossy codecs pad a little
    if ext in ("wav", "flac"):
        assert got.shape[0] == 16000 and torch.allclose(got, wav, atol=1e-4)
    else:  # same tone: strong correlation over the middle
        n = 8000
        a, b = got[4000:4000 + n], wav[4000:4000 + n]
        lag = max(range(-1200, 1201), key=lambda d: float((got[4000 + d:4000 + d + n] * b).sum()))
        a = got[4000 + lag:4000 + lag + n]
        assert torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.9


def test_segment_is_read_by_seeking(tmp_path, monkeypatch):
    wav = torch.linspace(-0.5, 0.5, 48000)
    path = tmp_path / "seg.flac"
    save_audio(path, wav, 16000)
    reads = []
    real_read = sf.SoundFile.read

    def spy(self, frames=-1, *a, **k):
        reads.append(frames)
        return real_read(self, frames, *a, **k)

    monkeypatch.setattr(sf.SoundFile, "read", spy)
    seg = load_audio(path, start=1.25, duration=0.5)
    assert reads == [8000]  # only the segment was decoded
    assert torch.allclose(seg, wav[20000:28000], atol=1e-4)


def test_downmix_and_resample(tmp_path):
    left, right = _tone(1.0, 22050, 300.0), _tone(1.0, 22050, 500.0)
    path = tmp_path / "stereo.wav"
    save_audio(path, torch.stack([left, right]), 22050)
    native = load_audio(path, sample_rate=None)
    assert torch.allclose(native, (left + right) / 2, atol=1e-4)
    resampled = load_audio(path)
    assert resampled.shape[0] == 16000
    spectrum = torch.fft.rfft(resampled).abs()
    assert set(torch.topk(spectrum, 2).indices.tolist()) == {300, 500}  # 1 s: bin index = Hz
    assert audio_info(path) == (22050, 22050)


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "keep.wav"
    save_audio(path, _tone(0.1), 16000)
    before = path.read_bytes()

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(audio_io.sf, "write", boom)
    with pytest.raises(RuntimeError):
        save_audio(path, _tone(0.2), 16000)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.wav"]  # no temporary left behind


def test_bad_audio_errors_name_the_file(tmp_path):
    missing = tmp_path / "missing.wav"
    with pytest.raises(AudioError, match="missing.wav"):
        load_audio(missing)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"this is not audio at all" * 10)
    with pytest.raises(AudioError, match="junk.wav"):
        load_audio(junk)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="empty.wav.*empty|empty.*empty.wav"):
        load_audio(empty)
    full = tmp_path / "full.wav"
    save_audio(full, _tone(1.0), 16000)
    cut = tmp_path / "cut.wav"
    cut.write_bytes(full.read_bytes()[:20000])
    with pytest.raises(AudioError, match="cut.wav.*truncated"):
        load_audio(cut)
    flac = tmp_path / "full.flac"
    save_audio(flac, torch.randn(16000) * 0.1, 16000)
    cut_flac = tmp_path / "cut.flac"
    cut_flac.write_bytes(flac.read_bytes()[: flac.stat().st_size // 2])
    with pytest.raises(AudioError, match="cut.flac"):
        load_audio(cut_flac)
    with pytest.raises(AudioError, match="full.wav.*past the end"):
        load_audio(full, start=2.0)
    with pytest.raises(AudioError, match="full.wav.*truncated or manifest wrong"):
        load_audio(full, start=0.5, duration=1.0)
    assert issubclass(AudioError, ValueError)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")
def test_ffmpeg_fallback(tmp_path, monkeypatch):
    path = tmp_path / "a.mp3"
    save_audio(path, _tone(1.0, 16000, 440.0), 16000)

    def no_libsndfile(*a, **k):
        raise sf.LibsndfileError(0, "pretend libsndfile has no mp3")

    monkeypatch.setattr(audio_io, "_read_soundfile", no_libsndfile)
    seg = load_audio(path, 16000, start=0.25, duration=0.5)
    assert abs(seg.shape[0] - 8000) <= 2
    assert int(torch.fft.rfft(seg).abs().argmax()) * 2 == 440  # 0.5 s: bin = Hz / 2
