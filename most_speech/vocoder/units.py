"""Unit-sequence handling shared by every vocoder: input coercion, km_tag checks, run-lengths."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from most_speech.audio.kmeans import KmTagMismatch


# One exception type for every km_tag refusal in the project (k-means stores, unit LMs, vocoders).
KmTagMismatchError = KmTagMismatch


def check_km_tag(units_tag: str | None, vocoder_tag: str, where: str = "units") -> None:
    """Refuse units whose k-means tag differs from the vocoder's.

    Parameters
    ----------
    units_tag : str or None
        Tag of the k-means model that produced the units. ``None`` is refused: a
        vocoder is only valid for one k-means model, so the caller must say which.
    vocoder_tag : str
        Tag the vocoder was trained on.
    where : str
        Name of the input (utterance id, file) used in the error message.

    Examples
    --------
    >>> check_km_tag("hubert_km500", "hubert_km500")
    >>> check_km_tag("mfcc_km100", "hubert_km500")
    Traceback (most recent call last):
    ...
    most_speech.audio.kmeans.KmTagMismatch: units: units were made with km_tag 'mfcc_km100' but this vocoder was trained on 'hubert_km500'
    """
    if units_tag is None:
        raise KmTagMismatchError(
            f"{where}: no km_tag given; this vocoder was trained on {vocoder_tag!r} "
            "(pass km_tag=... or a unit record with a 'km_tag' field)"
        )
    if units_tag != vocoder_tag:
        raise KmTagMismatchError(
            f"{where}: units were made with km_tag {units_tag!r} but this vocoder was "
            f"trained on {vocoder_tag!r}"
        )


def _as_long_tensor(units, where: str) -> torch.Tensor:
    t = units if isinstance(units, torch.Tensor) else torch.as_tensor(np.asarray(units))
    if t.dim() != 1:
        raise ValueError(f"{where}: units must be a 1-D sequence, got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError(f"{where}: empty unit sequence")
    if t.is_floating_point() and not torch.equal(t, t.round()):
        raise ValueError(f"{where}: units must be integers")
    return t.long().cpu()


def coerce_units(item, km_tag: str | None, vocoder_tag: str, num_units: int, index: int = 0):
    """Turn one input (record, list or tensor) into a checked 1-D ``LongTensor``.

    Parameters
    ----------
    item : Mapping or sequence of int or torch.Tensor
        Either a unit-file record ``{"id", "units", "km_tag"}`` or a bare sequence.
    km_tag : str or None
        Tag for bare sequences (a record's own ``km_tag`` wins when present).
    vocoder_tag : str
        The vocoder's tag.
    num_units : int
        Vocabulary size; every unit must lie in ``[0, num_units)``.
    index : int
        Position in the batch, used to name the input in errors.

    Returns
    -------
    torch.Tensor
        The units as int64.

    Examples
    --------
    >>> coerce_units({"id": "u1", "units": [3, 3, 1], "km_tag": "k"}, None, "k", 10)
    tensor([3, 3, 1])
    """
    if isinstance(item, Mapping):
        where = f"utterance {item.get('id', index)!r}"
        if "units" not in item:
            raise ValueError(f"{where}: unit record has no 'units' field")
        tag = item.get("km_tag", km_tag)
        units = item["units"]
    else:
        where, tag, units = f"unit sequence #{index}", km_tag, item
    check_km_tag(tag, vocoder_tag, where)
    t = _as_long_tensor(units, where)
    bad = (t < 0) | (t >= num_units)
    if bool(bad.any()):
        raise ValueError(
            f"{where}: unit {int(t[bad][0])} out of range [0, {num_units}) for this vocoder"
        )
    return t


def coerce_batch(items, km_tag: str | None, vocoder_tag: str, num_units: int):
    """Apply :func:`coerce_units` to a batch (a single record is accepted as a batch of one).

    Examples
    --------
    >>> [u.tolist() for u in coerce_batch([[1, 2], [0]], "k", "k", 4)]
    [[1, 2], [0]]
    >>> [u.tolist() for u in coerce_batch([1, 2], "k", "k", 4)]
    [[1, 2]]
    >>> import numpy as np
    >>> [u.tolist() for u in coerce_batch(np.array([[1, 2], [3, 0]]), "k", "k", 4)]
    [[1, 2], [3, 0]]
    """
    if _is_single(items):
        items = [items]
    return [coerce_units(it, km_tag, vocoder_tag, num_units, i) for i, it in enumerate(items)]


def _is_single(items) -> bool:
    """True for one record, one 1-D tensor or one flat list of ints (not a batch)."""
    if isinstance(items, Mapping):
        return True
    if hasattr(items, "ndim"):  # torch.Tensor or numpy array
        return items.ndim == 1
    return isinstance(items, Sequence) and len(items) > 0 and isinstance(items[0], int)
