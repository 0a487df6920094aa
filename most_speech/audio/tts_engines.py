"""Local text-to-speech through the espeak-ng and flite command-line engines.

Both engines are small Debian packages that run offline, so the project can make
speech (a multi-speaker mini corpus, spoken questions, spoken-LM pairs, user turns
of dialogues) without any downloaded model. Neither has a maintained Python
binding that covers voices, variants, rate and pitch for both, so this module
drives their command-line programs and returns 16 kHz mono float32 audio.

A *voice spec* is a string ``"engine:voice"``, e.g. ``"espeak-ng:en-gb-scotland+f3"``
(an espeak-ng language voice with an optional ``+variant``) or ``"flite:slt"``.
A spec without ``engine:`` means espeak-ng.
"""
from __future__ import annotations

import io
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLE_RATE = 16000
ENGINES = ("espeak-ng", "flite")
ESPEAK_DEFAULT_RATE = 175  # words per minute, espeak-ng's own default
ESPEAK_DEFAULT_PITCH = 50  # 0-99, espeak-ng's own default
# Mean F0 (Hz) of each flite voice; pitch 50 keeps it, 0/99 go half an octave down/up.
FLITE_BASE_F0 = {"slt": 170.0, "kal": 105.0, "kal16": 105.0, "awb": 140.0, "rms": 110.0}
_INSTALL_HINT = {
    "espeak-ng": "install the Debian package: apt-get install espeak-ng",
    "flite": "install the Debian package: apt-get install flite",
}


class TTSEngineError(RuntimeError):
    """An engine is missing, a voice is unknown, or synthesis failed."""


def check_engine(engine: str) -> str:
    """Return the path of ``engine``'s program, or raise a clear error.

    Examples
    --------
    >>> check_engine("espeak-ng")  # doctest: +SKIP
    '/usr/bin/espeak-ng'
    """
    if engine not in ENGINES:
        raise TTSEngineError(f"unknown TTS engine {engine!r}; expected one of {ENGINES}")
    path = shutil.which(engine)
    if path is None:
        raise TTSEngineError(f"{engine} was not found on PATH; {_INSTALL_HINT[engine]}")
    return path


def _run(cmd: list[str], text_in: bytes | None = None) -> bytes:
    check_engine(cmd[0])
    proc = subprocess.run(cmd, input=text_in, capture_output=True)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()
        raise TTSEngineError(f"{' '.join(cmd[:4])} ... failed (exit {proc.returncode}): {err}")
    return proc.stdout


@lru_cache(maxsize=None)
def _espeak_voice_table() -> tuple[tuple[str, str, str], ...]:
    """(language, gender, file) rows of ``espeak-ng --voices=en``."""
    rows = []
    for line in _run(["espeak-ng", "--voices=en"]).decode().splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 5:
            rows.append((parts[1], parts[2].split("/")[-1], parts[4]))
    return tuple(rows)


def list_voices(engine: str) -> list[str]:
    """Voices of ``engine`` that work on this machine.

    For espeak-ng these are the English language voices (``en-us``, ``en-gb-x-rp``,
    ...) without the MBROLA ones, which need extra packages. For flite they are
    the names printed by ``flite -lv``. Variants (``+f3``) are listed by
    :func:`list_variants`.

    Examples
    --------
    >>> "slt" in list_voices("flite")  # doctest: +SKIP
    True
    """
    if engine == "espeak-ng":
        voices = {lang for lang, _, path in _espeak_voice_table()
                  if not path.startswith(("mb/", "!v/"))}
        return sorted(voices)
    if engine == "flite":
        out = _run(["flite", "-lv"]).decode()
        return sorted(out.split(":", 1)[-1].split())
    raise TTSEngineError(f"unknown TTS engine {engine!r}; expected one of {ENGINES}")


@lru_cache(maxsize=None)
def list_variants() -> dict[str, str]:
    """espeak-ng voice variants (name used after ``+``) mapped to their gender ``M``/``F``.

    Examples
    --------
    >>> list_variants()["f3"]  # doctest: +SKIP
    'F'
    """
    variants = {}
    for line in _run(["espeak-ng", "--voices=variant"]).decode().splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 5 and parts[4].startswith("!v/"):
            variants[parts[4][3:]] = parts[2].split("/")[-1]
    return variants


def parse_voice(spec: str) -> tuple[str, str, str | None]:
    """Split a voice spec into ``(engine, voice, variant)``.

    Examples
    --------
    >>> parse_voice("espeak-ng:en-gb+f3")
    ('espeak-ng', 'en-gb', 'f3')
    >>> parse_voice("flite:slt")
    ('flite', 'slt', None)
    >>> parse_voice("en-us")
    ('espeak-ng', 'en-us', None)
    """
    engine, _, name = spec.rpartition(":")
    engine = engine or "espeak-ng"
    voice, _, variant = name.partition("+")
    if not voice:
        raise TTSEngineError(f"empty voice in voice spec {spec!r}")
    return engine, voice, variant or None


@lru_cache(maxsize=8)
def _resampler(sr: int):
    # transforms.Resample builds its sinc kernel once; functional.resample rebuilds it per call,
    # which cost more than the synthesis itself.
    import torchaudio.transforms as T

    return T.Resample(sr, SAMPLE_RATE)


def _resample(wav: np.ndarray, sr: int) -> np.ndarray:
    if sr == SAMPLE_RATE:
        return wav.astype(np.float32)
    import torch

    with torch.inference_mode():
        out = _resampler(sr)(torch.from_numpy(wav.astype(np.float32)))
    return out.numpy()


@dataclass
class LocalTTS:
    """One local synthetic voice: engine, voice, optional espeak variant, rate and pitch.

    Parameters
    ----------
    engine : str
        ``"espeak-ng"`` or ``"flite"``.
    voice : str
        espeak-ng language voice (``"en-us"``) or flite voice (``"slt"``).
    variant : str, optional
        espeak-ng voice variant (``"f3"``, ``"m1"``, ``"klatt"``...); not used by flite.
    rate : float
        Speaking rate in words per minute on espeak-ng's scale (175 is normal);
        flite maps it to ``duration_stretch = 175 / rate``.
    pitch : float
        Pitch on espeak-ng's 0-99 scale (50 is the voice's own); flite maps it to a
        target mean F0 up to half an octave away (the ``rms`` voice ignores it).

    Examples
    --------
    >>> wav, sr = LocalTTS("flite", "slt", rate=160).synthesize("Hello there.")  # doctest: +SKIP
    >>> sr  # doctest: +SKIP
    16000
    """

    engine: str
    voice: str
    variant: str | None = None
    rate: float = ESPEAK_DEFAULT_RATE
    pitch: float = ESPEAK_DEFAULT_PITCH

    @classmethod
    def from_spec(cls, spec: str, **kwargs) -> "LocalTTS":
        """Build from a voice spec such as ``"espeak-ng:en-gb+m3"``.

        Examples
        --------
        >>> LocalTTS.from_spec("flite:awb", rate=150).voice
        'awb'
        """
        engine, voice, variant = parse_voice(spec)
        return cls(engine, voice, variant, **kwargs)

    def synthesize(self, text: str) -> tuple[np.ndarray, int]:
        """Speak ``text``; return ``(float32 mono waveform, 16000)``."""
        if not text.strip():
            raise TTSEngineError("cannot synthesize empty text")
        if self.engine == "espeak-ng":
            wav, sr = self._espeak(text)
        elif self.engine == "flite":
            wav, sr = self._flite(text)
        else:
            raise TTSEngineError(f"unknown TTS engine {self.engine!r}; expected one of {ENGINES}")
        if wav.size == 0:
            raise TTSEngineError(f"{self.engine} voice {self.voice!r} produced no audio for {text!r}")
        return _resample(wav, sr), SAMPLE_RATE

    def _espeak(self, text: str) -> tuple[np.ndarray, int]:
        name = self.voice + (f"+{self.variant}" if self.variant else "")
        cmd = ["espeak-ng", "-v", name, "-s", str(int(round(self.rate))),
               "-p", str(int(round(self.pitch))), "--stdout"]
        # Text goes through stdin so that a leading "-" is never read as an option.
        data = _run(cmd, text.encode("utf-8"))
        if not data:
            raise TTSEngineError(f"espeak-ng voice {name!r} is not available")
        wav, sr = sf.read(io.BytesIO(data), dtype="float32")
        return wav, sr

    def _flite(self, text: str) -> tuple[np.ndarray, int]:
        base_f0 = FLITE_BASE_F0.get(self.voice, 120.0)
        f0 = base_f0 * 2.0 ** ((self.pitch - ESPEAK_DEFAULT_PITCH) / 100.0)
        stretch = ESPEAK_DEFAULT_RATE / max(float(self.rate), 1.0)
        with tempfile.TemporaryDirectory(prefix="most_flite_") as tmp:
            txt, out = Path(tmp) / "in.txt", Path(tmp) / "out.wav"
            txt.write_text(text, encoding="utf-8")
            _run(["flite", "-voice", self.voice, "--setf", f"duration_stretch={stretch:.4f}",
                  "--setf", f"int_f0_target_mean={f0:.1f}", "-f", str(txt), "-o", str(out)])
            if not out.exists():
                raise TTSEngineError(f"flite voice {self.voice!r} wrote no audio")
            wav, sr = sf.read(out, dtype="float32")
        return wav, sr


def synthesize(text: str, voice: str, out_wav: str | os.PathLike | None = None,
               rate: float = ESPEAK_DEFAULT_RATE, pitch: float = ESPEAK_DEFAULT_PITCH,
               ) -> tuple[np.ndarray, int]:
    """Speak one utterance with a voice spec; optionally write a 16 kHz WAV atomically.

    Parameters
    ----------
    text : str
        What to say.
    voice : str
        Voice spec, e.g. ``"espeak-ng:en-us+f2"`` or ``"flite:slt"``.
    out_wav : path, optional
        Where to write a 16-bit PCM WAV (written to a temporary file, then renamed).

    Returns
    -------
    (numpy.ndarray, int)
        float32 waveform and its rate, 16000.

    Examples
    --------
    >>> wav, sr = synthesize("Good morning.", "flite:slt", "q1.wav")  # doctest: +SKIP
    """
    wav, sr = LocalTTS.from_spec(voice, rate=rate, pitch=pitch).synthesize(text)
    if out_wav is not None:
        write_audio_atomic(out_wav, wav, sr, "WAV")
    return wav, sr


def write_audio_atomic(path: str | os.PathLike, wav: np.ndarray, sr: int, fmt: str) -> None:
    """Write ``wav`` to ``path`` in soundfile format ``fmt`` via a temporary file and rename.

    Examples
    --------
    >>> write_audio_atomic("a.flac", np.zeros(160, "float32"), 16000, "FLAC")  # doctest: +SKIP
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            sf.write(fh, np.clip(wav, -1.0, 1.0), sr, format=fmt,
                     subtype=None if fmt == "MP3" else "PCM_16")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
