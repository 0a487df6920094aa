"""Unit vocoders: discrete speech units (of one k-means model, its ``km_tag``) -> 16 kHz audio.

- :class:`UnitHifiganVocoder`: unit HiFi-GAN with a duration predictor (SpeechBrain generator).
- :class:`MeanMelVocoder`: training-free per-unit mean log-mel + Griffin-Lim, for CPU runs.
- :class:`ConvMelVocoder`: units -> log-mel by a small convolutional network (minutes of CPU training)
  + Griffin-Lim; more intelligible than mean-mel on coarse units (``most_speech/vocoder/README.md``).

All share :class:`UnitVocoder`'s interface (``synthesize``, ``save``, km_tag checks);
:func:`load_vocoder` reopens any of them from its saved directory.
"""
from __future__ import annotations

from pathlib import Path

from most_speech.vocoder.base import UnitVocoder, read_config
from most_speech.vocoder.conv_mel import ConvMelConfig, ConvMelVocoder
from most_speech.vocoder.hifigan import UnitHifiganConfig, UnitHifiganVocoder
from most_speech.vocoder.mean_mel import MeanMelConfig, MeanMelVocoder
from most_speech.vocoder.units import KmTagMismatchError, check_km_tag

HPARAMS_DIR = Path(__file__).parent / "hparams"
"""Packaged hparams files (``unit_hifigan_50hz.yaml``, ``unit_hifigan_25hz.yaml``, ...)."""

VOCODER_TYPES = {cls.vocoder_type: cls for cls in (UnitHifiganVocoder, MeanMelVocoder, ConvMelVocoder)}

__all__ = [
    "HPARAMS_DIR",
    "ConvMelConfig",
    "ConvMelVocoder",
    "KmTagMismatchError",
    "MeanMelConfig",
    "MeanMelVocoder",
    "UnitHifiganConfig",
    "UnitHifiganVocoder",
    "UnitVocoder",
    "check_km_tag",
    "default_cpu_vocoder_config",
    "load_vocoder",
]


def load_vocoder(directory, map_location: str = "cpu") -> UnitVocoder:
    """Load a saved vocoder of any type (dispatch on ``config.json``'s ``type``).

    Examples
    --------
    >>> import tempfile
    >>> d = MeanMelVocoder(MeanMelConfig(km_tag="k", num_units=3)).save(tempfile.mkdtemp())
    >>> type(load_vocoder(d)).__name__
    'MeanMelVocoder'
    """
    config = read_config(directory)
    cls = VOCODER_TYPES.get(config["type"])
    if cls is None:
        raise ValueError(
            f"{directory}: unknown vocoder type {config['type']!r} (known: {sorted(VOCODER_TYPES)})"
        )
    return cls.load(directory, map_location=map_location)


def default_cpu_vocoder_config(km_tag: str, num_units: int, unit_rate: float = 50.0):
    """The vocoder to fit when only a CPU and seconds are available (mean-mel statistics).

    The mean-mel + Griffin-Lim vocoder was clearly more intelligible than a unit HiFi-GAN
    given the same 5-minute CPU budget; with a minute or two more, :class:`ConvMelVocoder` is more
    intelligible still (see ``most_speech/vocoder/README.md``).

    Examples
    --------
    >>> default_cpu_vocoder_config("k", 100).frames_per_unit
    2
    """
    frames_per_unit = 2 if unit_rate >= 50 else 4
    return MeanMelConfig(
        km_tag=km_tag, num_units=num_units, unit_rate=unit_rate, frames_per_unit=frames_per_unit
    )
