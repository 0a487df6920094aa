"""The common vocoder interface: km_tag-checked synthesis and safetensors + JSON export.

Every vocoder is an ``nn.Module`` whose whole state is its ``state_dict`` (saved as
``model.safetensors``) plus a JSON-serialisable config (saved as ``config.json`` with the
vocoder ``type``, ``km_tag``, ``num_units``, ``unit_rate`` and ``sample_rate``).
:func:`most_speech.vocoder.load_vocoder` reads ``type`` to pick the class.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from most_speech.vocoder.units import coerce_batch

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
REQUIRED_KEYS = ("type", "km_tag", "num_units", "unit_rate", "sample_rate")


def _atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then move the result over ``path`` in one step."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_config(directory) -> dict:
    """Read and validate a saved vocoder's ``config.json``.

    Examples
    --------
    >>> import tempfile, json, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "config.json").write_text(json.dumps({"type": "mean_mel", "km_tag": "k",
    ...     "num_units": 4, "unit_rate": 50, "sample_rate": 16000}))
    >>> read_config(d)["km_tag"]
    'k'
    """
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no vocoder config (is {directory} a saved vocoder?)")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: invalid JSON ({err})") from err
    missing = [k for k in REQUIRED_KEYS if k not in config]
    if missing:
        raise ValueError(f"{path}: missing field(s) {missing}")
    return config


class UnitVocoder(torch.nn.Module, ABC):
    """Base class: discrete units (of one k-means model) -> 16 kHz waveform.

    Subclasses set ``self.config`` (a dict with at least :data:`REQUIRED_KEYS` but
    ``type``) and implement :meth:`_synthesize_tensors`.

    Examples
    --------
    >>> from most_speech.vocoder import MeanMelVocoder, MeanMelConfig
    >>> voc = MeanMelVocoder(MeanMelConfig(km_tag="k", num_units=8, griffin_lim_iters=2))
    >>> [w.shape[0] for w in voc.synthesize([[1, 2, 3]], km_tag="k", deduplicated=False)]
    [960]
    """

    vocoder_type: str = ""

    @property
    def km_tag(self) -> str:
        return self.config["km_tag"]

    @property
    def num_units(self) -> int:
        return int(self.config["num_units"])

    @property
    def sample_rate(self) -> int:
        return int(self.config["sample_rate"])

    @property
    def unit_rate(self) -> float:
        return float(self.config["unit_rate"])

    @property
    def hop_length(self) -> int:
        """Samples per unit frame (320 for 50 Hz units at 16 kHz)."""
        return int(round(self.sample_rate / self.unit_rate))

    @torch.no_grad()
    def synthesize(self, units, km_tag: str | None = None, deduplicated: bool = True):
        """Turn unit sequences into waveforms.

        Parameters
        ----------
        units : list
            Unit sequences: lists/1-D tensors of ints, or unit-file records
            ``{"id", "units", "km_tag"}``. A single record/sequence is accepted too.
        km_tag : str, optional
            Tag of the k-means model of bare sequences; must equal the vocoder's.
        deduplicated : bool
            ``True``: runs were collapsed and durations are predicted; ``False``: units
            are at the frame rate and each gives ``hop_length`` samples.

        Returns
        -------
        list of torch.Tensor
            One 1-D float waveform per input, at ``sample_rate``.
        """
        batch = coerce_batch(units, km_tag, self.km_tag, self.num_units)
        was_training = self.training
        self.eval()
        try:
            return self._synthesize_tensors(batch, deduplicated)
        finally:
            self.train(was_training)

    @abstractmethod
    def _synthesize_tensors(self, units: list[torch.Tensor], deduplicated: bool):
        """Synthesize checked int64 unit tensors (CPU) into 1-D waveforms."""

    def save(self, directory) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``directory`` (atomically).

        Examples
        --------
        >>> import tempfile
        >>> from most_speech.vocoder import MeanMelVocoder, MeanMelConfig, load_vocoder
        >>> d = MeanMelVocoder(MeanMelConfig(km_tag="k", num_units=8)).save(tempfile.mkdtemp())
        >>> load_vocoder(d).km_tag
        'k'
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        config = {"type": self.vocoder_type, **self.config}
        _atomic_write(directory / WEIGHTS_NAME, lambda p: save_file(state, p))
        _atomic_write(
            directory / CONFIG_NAME,
            lambda p: Path(p).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n"),
        )
        logger.info("saved %s vocoder (km_tag=%s) to %s", self.vocoder_type, self.km_tag, directory)
        return directory

    @classmethod
    def from_config(cls, config: dict) -> "UnitVocoder":
        """Build an untrained vocoder from a saved config dict."""
        raise NotImplementedError

    @classmethod
    def load(cls, directory, map_location: str = "cpu") -> "UnitVocoder":
        """Load a vocoder saved by :meth:`save` (weights through safetensors only)."""
        config = read_config(directory)
        if config["type"] != cls.vocoder_type:
            raise ValueError(
                f"{directory}: saved vocoder type {config['type']!r} is not {cls.vocoder_type!r}"
            )
        model = cls.from_config({k: v for k, v in config.items() if k != "type"})
        weights = Path(directory) / WEIGHTS_NAME
        if not weights.is_file():
            raise FileNotFoundError(f"{weights}: missing vocoder weights")
        state = load_file(str(weights), device=map_location)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"{weights}: weights do not match the config (missing {missing[:5]}, "
                f"unexpected {unexpected[:5]})"
            )
        return model.eval()
