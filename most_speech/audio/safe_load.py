"""Loading foreign pickled checkpoints without running their code.

``torch.load(weights_only=True)`` rebuilds only tensors, plain containers and values, plus the classes listed
with ``torch.serialization.safe_globals``; every other global (a custom class, ``os.system`` in a
``__reduce__``...) makes it stop before anything is called. This module adds a clear error naming the refused
class and the file.
"""
from __future__ import annotations

import os
import pickle
import re

import numpy as np
import torch


class UnsafePickleError(ValueError):
    """A checkpoint holds an object of a class that is not on the allow-list."""


#: numpy pieces needed to rebuild plain numeric arrays and scalars (no object arrays: their elements would
#: need further globals, which stay refused).
_MULTIARRAY = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
NUMPY_GLOBALS = [np.dtype, np.ndarray, _MULTIARRAY._reconstruct, _MULTIARRAY.scalar] + [
    type(np.dtype(t)) for t in (np.float16, np.float32, np.float64, np.int32, np.int64, np.uint8, np.bool_)
] + [  # files written under numpy 1.x name the same functions under numpy.core
    (_MULTIARRAY._reconstruct, "numpy.core.multiarray._reconstruct"),
    (_MULTIARRAY.scalar, "numpy.core.multiarray.scalar"),
]


def safe_torch_load(path: str | os.PathLike, allowed=(), what: str = "checkpoint"):
    """``torch.load`` on CPU that only rebuilds tensors, plain values and the ``allowed`` classes.

    Parameters
    ----------
    path : str or PathLike
    allowed : sequence
        Extra classes / functions the file may reference (e.g. ``argparse.Namespace``).
    what : str
        Word used in error messages ("fairseq checkpoint", "k-means model").

    Raises
    ------
    UnsafePickleError
        The file references any other class; the message names the class and the file.

    Examples
    --------
    >>> import tempfile, torch
    >>> p = tempfile.mkdtemp() + "/x.pt"
    >>> torch.save({"w": torch.ones(2)}, p)
    >>> safe_torch_load(p)["w"].tolist()
    [1.0, 1.0]
    """
    try:
        with torch.serialization.safe_globals(list(allowed)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc)) or re.search(r"global[^\w]+([\w.]+)", str(exc))
        name = found.group(1) if found else "an unknown class"
        raise UnsafePickleError(
            f"refusing to load {what} {path}: it holds an object of class {name}, which is not a tensor, "
            f"plain value or an allowed class ({', '.join(_name(a) for a in allowed) or 'none'})"
        ) from exc


def _name(obj) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"
