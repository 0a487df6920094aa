"""K-means speech units: learn (sklearn MiniBatchKMeans), apply (torch, batched, GPU when present), tag, import.

A k-means model is identified by its ``km_tag``, ``"{encoder}-L{layer}-km{K}-{fingerprint}"`` where the
fingerprint is the first 8 hex digits of the sha256 of the float32 centroid bytes (and of the input transform,
when there is one). Units, unit LMs and vocoders carry the tag of the model that made them; ``check_km_tag``
refuses mismatches.

A model may own an input transform, applied to each utterance's ``[T, D]`` frames before the nearest-centroid
search: per-utterance mean/variance normalisation and stacking of consecutive frames (``frame_stack``; the unit
rate is the frame rate divided by it). HuBERT units need neither; units of raw filterbanks do (see
:func:`prepare_frames`). The transform is saved with the centroids, so every consumer quantises alike.
"""
from __future__ import annotations

import hashlib
import logging
import os
import pickle
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from most_speech.audio.safe_load import NUMPY_GLOBALS, UnsafePickleError, safe_torch_load

logger = logging.getLogger(__name__)


class KmTagMismatch(ValueError):
    """Units were made by another k-means model than the consumer expects."""


def centroid_fingerprint(centroids) -> str:
    """First 8 hex digits of sha256 over the float32 little-endian centroid bytes.

    Examples
    --------
    >>> centroid_fingerprint(np.zeros((2, 3)))
    '9d908ecf'
    """
    arr = np.ascontiguousarray(_as_numpy(centroids), dtype="<f4")
    return hashlib.sha256(arr.tobytes()).hexdigest()[:8]


def make_km_tag(encoder: str, layer: int | None, centroids, feature_norm: str = "none",
                frame_stack: int = 1) -> str:
    """``"{encoder}-L{layer}-km{K}-{fingerprint}"`` (``-L{layer}`` left out when layer is None).

    A non-default input transform enters the fingerprint (the same centroids applied to other frames are
    other units).

    Examples
    --------
    >>> make_km_tag("hubert_base", 11, np.zeros((500, 4)))
    'hubert_base-L11-km500-668946ba'
    >>> make_km_tag("hubert_base", 11, np.zeros((500, 4)), frame_stack=2) != make_km_tag("hubert_base", 11,
    ...     np.zeros((500, 4)))
    True
    """
    k = _as_numpy(centroids).shape[0]
    layer_part = "" if layer is None else f"-L{layer}"
    fingerprint = centroid_fingerprint(centroids)
    if (feature_norm, frame_stack) != ("none", 1):
        fingerprint = hashlib.sha256(f"{fingerprint}/{feature_norm}/{frame_stack}".encode()).hexdigest()[:8]
    return f"{encoder}{layer_part}-km{k}-{fingerprint}"


FEATURE_NORMS = ("none", "utterance")


def prepare_frames(feats, feature_norm: str = "none", frame_stack: int = 1):
    """One utterance's ``[T, D]`` frames as k-means input: normalised per utterance, then stacked.

    ``"utterance"`` removes each feature's mean and scales it to unit variance over the utterance (speaker and
    channel offsets of filterbanks would otherwise split one sound into several units). ``frame_stack = s``
    concatenates ``s`` consecutive frames (the last frame repeats to fill the last group): ``[ceil(T / s),
    s * D]``, one unit per ``s`` frames. NumPy in, NumPy out; torch in, torch out.

    Examples
    --------
    >>> x = np.arange(10, dtype=np.float32).reshape(5, 2)
    >>> prepare_frames(x, frame_stack=2).tolist()
    [[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0], [8.0, 9.0, 8.0, 9.0]]
    >>> [round(float(v), 3) for v in prepare_frames(x, "utterance")[:, 0]]
    [-1.414, -0.707, 0.0, 0.707, 1.414]
    """
    if feature_norm not in FEATURE_NORMS:
        raise ValueError(f"unknown k-means feature_norm {feature_norm!r}; use one of {FEATURE_NORMS}")
    if frame_stack < 1:
        raise ValueError(f"frame_stack={frame_stack} must be >= 1")
    x = torch.as_tensor(feats)
    is_numpy = isinstance(feats, np.ndarray)
    if x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"expected one utterance's [T, D] frames with T > 0, got shape {tuple(x.shape)}")
    if feature_norm == "utterance":
        xf = x.double()
        x = ((xf - xf.mean(0)) / (xf.std(0, unbiased=False) + 1e-5)).to(torch.float32)
    if frame_stack > 1:
        pad = (-x.shape[0]) % frame_stack
        x = torch.cat([x, x[-1:].expand(pad, -1)]).reshape(-1, frame_stack * x.shape[1])
    return x.numpy() if is_numpy else x


def check_km_tag(expected: str, got: str, what: str = "model") -> None:
    """Raise ``KmTagMismatch`` unless ``got == expected``.

    Parameters
    ----------
    expected : str
        The tag the consumer (``what``: a unit LM, a vocoder...) was built for.
    got : str
        The tag of the units offered to it.

    Examples
    --------
    >>> check_km_tag("a-L1-km2-00000000", "a-L1-km2-00000000", "vocoder")
    >>> check_km_tag("a-L1-km2-00000000", "b-L1-km2-11111111", "vocoder")
    Traceback (most recent call last):
    ...
    most_speech.audio.kmeans.KmTagMismatch: units were made with km_tag b-L1-km2-11111111 but the vocoder expects a-L1-km2-00000000
    """
    if expected != got:
        raise KmTagMismatch(f"units were made with km_tag {got} but the {what} expects {expected}")


class KMeansQuantizer(nn.Module):
    """Nearest-centroid assignment of feature frames to unit ids.

    Parameters
    ----------
    centroids : array-like
        ``[K, D]`` cluster centres.
    encoder : str
        Name of the feature encoder (part of the tag), e.g. ``"hubert_base"``, ``"mhubert_25hz"``.
    layer : int or None
        Encoder layer the features came from.
    feature_norm, frame_stack
        The input transform (:func:`prepare_frames`); with one, inputs must be single utterances ``[T, D]``.

    Examples
    --------
    >>> km = KMeansQuantizer(torch.tensor([[0.0, 0.0], [10.0, 10.0]]), "toy", 1)
    >>> km(torch.tensor([[1.0, 0.5], [9.0, 11.0]])).tolist()
    [0, 1]
    >>> stacked = KMeansQuantizer(torch.tensor([[0.0, 0.0, 0.0, 0.0], [5.0, 5.0, 5.0, 5.0]]), "toy", 1,
    ...                           frame_stack=2)
    >>> stacked(torch.tensor([[0.0, 1.0], [0.0, 0.0], [6.0, 5.0]])).tolist()   # 3 frames -> 2 units
    [0, 1]
    """

    def __init__(self, centroids, encoder: str = "unknown", layer: int | None = None, feature_norm: str = "none",
                 frame_stack: int = 1):
        super().__init__()
        c = torch.as_tensor(_as_numpy(centroids), dtype=torch.float32)
        if c.dim() != 2 or c.shape[0] < 1:
            raise ValueError(f"centroids must be [K, D], got shape {tuple(c.shape)}")
        if feature_norm not in FEATURE_NORMS or frame_stack < 1 or c.shape[1] % frame_stack:
            raise ValueError(f"k-means input transform feature_norm={feature_norm!r} (one of {FEATURE_NORMS}), "
                             f"frame_stack={frame_stack} (>= 1, dividing the centroid width {c.shape[1]})")
        self.register_buffer("centroids", c.contiguous())
        self.register_buffer("centroid_sq_norms", (c * c).sum(dim=1))
        self.encoder, self.layer = encoder, layer
        self.feature_norm, self.frame_stack = feature_norm, int(frame_stack)
        self.km_tag = make_km_tag(encoder, layer, c, feature_norm, self.frame_stack)

    @property
    def k(self) -> int:
        """Number of clusters."""
        return self.centroids.shape[0]

    @property
    def dim(self) -> int:
        """Feature dimension of the input frames (the centroids are ``frame_stack`` times wider)."""
        return self.centroids.shape[1] // self.frame_stack

    @property
    def has_transform(self) -> bool:
        """Whether inputs are normalised or stacked before the search (then one utterance per call)."""
        return (self.feature_norm, self.frame_stack) != ("none", 1)

    @torch.no_grad()
    def forward(self, feats, batch_frames: int = 32768) -> torch.Tensor:
        """Unit ids for ``feats [..., D]`` (any leading shape), as ``long`` on the centroids' device.

        With an input transform, ``feats`` is one utterance ``[T, D]`` and the result has
        ``ceil(T / frame_stack)`` units.
        ``argmin_k ||x - c_k||^2 = argmin_k (||c_k||^2 - 2 x.c_k)``: one matmul per ``batch_frames`` frames.
        """
        x = torch.as_tensor(feats)
        if x.shape[-1] != self.dim:
            raise ValueError(f"features have dimension {x.shape[-1]}, k-means {self.km_tag} expects {self.dim}")
        if self.has_transform:
            if x.dim() != 2:
                raise ValueError(f"k-means {self.km_tag} normalises/stacks per utterance: give one utterance's "
                                 f"[T, D] frames, not shape {tuple(x.shape)}")
            x = prepare_frames(x, self.feature_norm, self.frame_stack)
        lead = x.shape[:-1]
        x = x.reshape(-1, x.shape[-1])
        out = torch.empty(x.shape[0], dtype=torch.long, device=self.centroids.device)
        for s in range(0, x.shape[0], batch_frames):
            xb = x[s: s + batch_frames].to(self.centroids.device, torch.float32)
            dist = torch.addmm(self.centroid_sq_norms, xb, self.centroids.T, alpha=-2.0)
            out[s: s + batch_frames] = dist.argmin(dim=1)
        return out.reshape(lead)

    def save(self, path: str | os.PathLike) -> None:
        """Write centroids as safetensors, tag/encoder/layer in the metadata (atomic)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"km_tag": self.km_tag, "encoder": self.encoder, "layer": "" if self.layer is None else str(self.layer),
                "k": str(self.k), "feature_norm": self.feature_norm, "frame_stack": str(self.frame_stack)}
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.close(fd)
        try:
            save_file({"centroids": self.centroids.detach().cpu().contiguous()}, tmp, metadata=meta)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device | None = "auto") -> "KMeansQuantizer":
        """Read a file written by ``save``; checks that the stored tag matches the centroids.

        ``device="auto"`` puts it on CUDA when available.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"k-means model {path} does not exist")
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if "centroids" not in f.keys():
                raise ValueError(f"{path} is not a k-means model (no 'centroids' tensor)")
            centroids = f.get_tensor("centroids")
        layer = int(meta["layer"]) if meta.get("layer") else None
        km = cls(centroids, meta.get("encoder", "unknown"), layer, meta.get("feature_norm", "none"),
                 int(meta.get("frame_stack", 1)))
        if meta.get("km_tag") and meta["km_tag"] != km.km_tag:
            raise ValueError(f"{path}: stored km_tag {meta['km_tag']} does not match its centroids ({km.km_tag})")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        return km.to(device) if device is not None else km

    @classmethod
    def from_fairseq(cls, path: str | os.PathLike, encoder: str, layer: int | None) -> "KMeansQuantizer":
        """Import a fairseq (joblib ``km.bin``) or Spirit LM (``L11_quantizer_500.pt``) k-means, loaded safely.

        See ``load_foreign_centroids``.
        """
        return cls(load_foreign_centroids(path), encoder, layer)


def learn_kmeans(frames, k: int, encoder: str, layer: int | None, seed: int = 0, batch_size: int = 10000,
                 max_iter: int = 100, n_init: int = 20, max_no_improvement: int = 100, feature_norm: str = "none",
                 frame_stack: int = 1) -> KMeansQuantizer:
    """Fit sklearn ``MiniBatchKMeans`` on ``frames [N, D]`` (fairseq's HuBERT recipe settings by default).

    With an input transform, ``frames`` are already transformed (:func:`prepare_frames` of each utterance,
    then sampled); the transform is recorded in the returned model.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = np.concatenate([rng.normal(m, 0.1, (50, 2)) for m in (0, 5)]).astype(np.float32)
    >>> learn_kmeans(x, 2, "toy", None, n_init=1).k
    2
    """
    from sklearn.cluster import MiniBatchKMeans

    frames = np.ascontiguousarray(frames, dtype=np.float32)
    if frames.ndim != 2 or frames.shape[0] < k:
        raise ValueError(f"need a [N, D] frame matrix with N >= k={k}, got shape {frames.shape}")
    logger.info("learning k-means K=%d on %d frames of dim %d (seed %d)", k, frames.shape[0], frames.shape[1], seed)
    km = MiniBatchKMeans(n_clusters=k, init="k-means++", max_iter=max_iter, batch_size=batch_size, tol=0.0,
                         max_no_improvement=max_no_improvement, n_init=n_init, reassignment_ratio=0.0,
                         random_state=seed, compute_labels=True, verbose=0)
    km.fit(frames)
    logger.info("k-means inertia %.4f total, %.4f per frame", km.inertia_, km.inertia_ / frames.shape[0])
    return KMeansQuantizer(km.cluster_centers_, encoder, layer, feature_norm, frame_stack)


def sample_frames(arrays, max_frames: int | None, total_frames: int | None = None, seed: int = 0) -> np.ndarray:
    """Stack frames from an iterable of ``[T_i, D]`` arrays, keeping about ``max_frames`` chosen at random.

    With ``total_frames`` known each frame is kept with probability ``max_frames / total_frames`` as the
    arrays stream past; otherwise all are stacked and then subsampled.

    Examples
    --------
    >>> sample_frames([np.ones((10, 2)), np.ones((30, 2))], max_frames=20, total_frames=40).shape[1]
    2
    """
    rng = np.random.default_rng(seed)
    keep_p = 1.0 if not max_frames or not total_frames else min(1.0, max_frames / total_frames)
    parts = [a[rng.random(a.shape[0]) < keep_p] if keep_p < 1 else np.asarray(a) for a in arrays]
    if not parts:
        raise ValueError("no feature frames to sample from")
    out = np.concatenate(parts).astype(np.float32, copy=False)
    if max_frames and out.shape[0] > max_frames:
        out = out[np.sort(rng.choice(out.shape[0], max_frames, replace=False))]
    return out


def dedup(units) -> tuple[torch.Tensor, torch.Tensor]:
    """Run-length encode: ``[5, 5, 7, 5] -> ([5, 7, 5], [2, 1, 1])``.

    Examples
    --------
    >>> u, d = dedup([5, 5, 7, 5])
    >>> u.tolist(), d.tolist()
    ([5, 7, 5], [2, 1, 1])
    """
    units = torch.as_tensor(units, dtype=torch.long).reshape(-1)
    uniq, counts = torch.unique_consecutive(units, return_counts=True)
    return uniq, counts


def expand(units, durations) -> torch.Tensor:
    """Inverse of ``dedup``: repeat each unit ``durations`` times.

    Examples
    --------
    >>> expand([5, 7], [2, 3]).tolist()
    [5, 5, 7, 7, 7]
    """
    units = torch.as_tensor(units, dtype=torch.long).reshape(-1)
    durations = torch.as_tensor(durations, dtype=torch.long).reshape(-1)
    if units.shape != durations.shape or bool((durations < 0).any()):
        raise ValueError(f"expand: {units.numel()} units need as many non-negative durations, got {durations.tolist()}")
    return torch.repeat_interleave(units, durations)


# ---- importing foreign (pickled) k-means models ----------------------------------------------------------


class _SklearnKMeansState:
    """Stand-in for a pickled sklearn (MiniBatch)KMeans: records the state dict, runs nothing."""

    def __setstate__(self, state):
        self.__dict__["state"] = state


# (module, name) pairs a k-means pickle may reference; the sklearn classes become the inert stand-in.
_SKLEARN_KMEANS = {("sklearn.cluster._kmeans", "MiniBatchKMeans"), ("sklearn.cluster._kmeans", "KMeans"),
                   ("sklearn.cluster.k_means_", "MiniBatchKMeans"), ("sklearn.cluster.k_means_", "KMeans")}
_NUMPY_OK = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
             ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
             ("numpy._core.multiarray", "scalar"), ("joblib.numpy_pickle", "NumpyArrayWrapper")}


def _restricted_unpickler_class():
    # joblib stores arrays as raw bytes after a NumpyArrayWrapper record; its NumpyUnpickler knows how to read
    # them, so we extend it and replace only the class lookup (and refuse object arrays, which it would read
    # with an unrestricted pickle.load).
    from joblib.numpy_pickle import NumpyArrayWrapper, NumpyUnpickler

    class RestrictedKMeansUnpickler(NumpyUnpickler):
        dispatch = NumpyUnpickler.dispatch.copy()

        def find_class(self, module, name):
            if (module, name) in _SKLEARN_KMEANS:
                return _SklearnKMeansState
            if (module, name) in _NUMPY_OK:
                return super().find_class(module, name)
            raise UnsafePickleError(f"refusing to load k-means model {self.filename}: it holds an object of class "
                                    f"{module}.{name} (only numpy arrays and sklearn KMeans state are allowed)")

        def load_build(self):
            inst, state = self.stack[-2], self.stack[-1]
            if isinstance(inst, NumpyArrayWrapper):
                dtype = state.get("dtype") if isinstance(state, dict) else None
                if not isinstance(dtype, np.dtype) or dtype.hasobject:
                    raise UnsafePickleError(f"refusing to load k-means model {self.filename}: object array")
            NumpyUnpickler.load_build(self)

        dispatch[pickle.BUILD[0]] = load_build

    return RestrictedKMeansUnpickler


def _joblib_load_restricted(path: Path):
    import joblib.numpy_pickle as npk

    unpickler_cls = _restricted_unpickler_class()
    with open(path, "rb") as raw:
        opener = getattr(npk, "_validate_fileobject_and_memmap", None)  # joblib >= 1.5: handles compression
        if opener is None:
            return unpickler_cls(str(path), raw, True).load()
        with opener(raw, str(path), None) as (fobj, _):
            return unpickler_cls(str(path), fobj, True).load()


def load_foreign_centroids(path: str | os.PathLike) -> np.ndarray:
    """Cluster centres ``[K, D]`` from a foreign k-means file, without executing pickled code.

    * Spirit LM quantizer (``torch.save`` of ``{"cluster_centers": ndarray, "n_clusters": K}``): loaded with
      ``torch.load(weights_only=True)`` plus numpy array reconstruction only.
    * fairseq ``learn_kmeans.py`` output (``joblib.dump`` or pickle of an sklearn ``MiniBatchKMeans``): a
      restricted unpickler that allows numpy arrays and turns the sklearn class into an inert stand-in recording
      its ``__setstate__`` dict; only ``cluster_centers_`` is used.

    Examples
    --------
    >>> import tempfile, torch
    >>> p = tempfile.mkdtemp() + "/q.pt"
    >>> torch.save({"cluster_centers": np.eye(3, dtype=np.float32), "n_clusters": 3}, p)
    >>> load_foreign_centroids(p).shape
    (3, 3)
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"k-means model {path} does not exist")
    if zipfile.is_zipfile(path):
        obj = safe_torch_load(path, allowed=NUMPY_GLOBALS, what="k-means model")
        if not isinstance(obj, dict) or "cluster_centers" not in obj:
            raise ValueError(f"{path}: a torch k-means file needs a 'cluster_centers' entry")
        centers = obj["cluster_centers"]
    else:
        try:
            obj = _joblib_load_restricted(path)
        except UnsafePickleError:
            raise
        except Exception as exc:  # noqa: BLE001 - corrupt/foreign formats: name the file
            raise ValueError(f"cannot read k-means model {path}: {exc}") from exc
        state = getattr(obj, "state", None)
        if not isinstance(state, dict) or "cluster_centers_" not in state:
            raise ValueError(f"{path} is not a fitted sklearn KMeans/MiniBatchKMeans (no cluster_centers_)")
        centers = state["cluster_centers_"]
    centers = _as_numpy(centers)
    if centers.ndim != 2 or not np.issubdtype(centers.dtype, np.floating):
        raise ValueError(f"{path}: cluster centres must be a float [K, D] array, got {centers.dtype} {centers.shape}")
    return centers.astype(np.float32)


def _as_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)
