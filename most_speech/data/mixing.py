"""Task mixing: draw examples from several task streams with configured weights, reproducibly and resumably.

Which stream draw ``i`` comes from is a pure function of ``(seed, i)``: draws are grouped into blocks of
``block_size``; block ``b`` holds exactly as many draws of each stream as the largest-remainder apportionment
of ``(b + 1) * block_size * weight`` minus that of ``b * block_size * weight`` (so at every block boundary
the running count of every stream is within one draw of ``i * weight``), in an order shuffled by
``(seed, b)``. The sampler is exact in
expectation and far tighter than independent draws (whose proportions wander by ``sqrt(w(1-w)/n)``).

Each stream cycles its own dataset: its ``c``-th draw is item ``perm_p[c % len]`` where ``p = c // len`` is the
pass and ``perm_p`` a permutation seeded by ``(seed, stream name, p)``. The whole state is therefore the
draw counter (plus per-stream counts, kept for reporting); :meth:`TaskMixture.state_dict` saves it and
:meth:`TaskMixture.load_state_dict` resumes the identical sequence.

Seeds are combined with :func:`zlib.crc32` of the stream name (Python's ``hash`` of a string changes between
runs).

Using it
--------
* As a ``torch.utils.data.IterableDataset`` (``DataLoader(mixture, batch_size=None or n, collate_fn=...)``).
  With ``num_workers > 0`` each worker yields draws ``i`` with ``i % num_workers == worker_id``; the
  DataLoader interleaves workers in order, so the sequence is unchanged (the state saved from the main
  process object is then that of the start of the epoch: resume with ``num_workers=0`` for exactness).
* As a SpeechBrain checkpointable: the class is registered with ``register_checkpoint_hooks``; add it to a
  ``Checkpointer``'s ``recoverables`` and it saves / restores its position with the checkpoint.
* :meth:`TaskMixture.keys` gives the ``(task, index)`` sequence alone (a sampler over map-style data).
"""
from __future__ import annotations

import json
import logging
import math
import zlib
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from speechbrain.utils.checkpoints import mark_as_loader, mark_as_saver, register_checkpoint_hooks

from most_speech.data.fileio import atomic_write_text

logger = logging.getLogger(__name__)


def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng([int(k) & 0xFFFFFFFF for k in keys])


def _apportion(total: int, weights: np.ndarray) -> np.ndarray:
    """Largest-remainder integer split of ``total`` proportional to ``weights`` (ties to the lower index)."""
    exact = weights * total
    floor = np.floor(exact).astype(np.int64)
    short = total - int(floor.sum())
    if short > 0:
        order = np.lexsort((np.arange(len(weights)), -(exact - floor)))
        floor[order[:short]] += 1
    return floor


class TaskMixture(torch.utils.data.IterableDataset):
    """Weighted, seeded, resumable mixture of task streams.

    Parameters
    ----------
    datasets : mapping of str to sequence
        Stream name -> map-style dataset (anything with ``len`` and ``[]``).
    weights : mapping of str to float
        Stream name -> weight (normalised to sum to 1; every dataset needs a positive weight).
    seed : int
        Seed of the stream order and of every per-pass shuffle.
    block_size : int
        Draws per apportioned block (smaller = tighter proportions, less random order).
    transforms : mapping of str to callable, optional
        Applied to the item of that stream before it is yielded (for instance a task template).
    num_draws : int, optional
        Length of one iteration (an "epoch"); ``None`` iterates forever.

    Examples
    --------
    >>> mix = TaskMixture({"asr": list("abcd"), "tts": list("wxyz")}, {"asr": 0.5, "tts": 0.5}, seed=1,
    ...                   block_size=2, num_draws=4)
    >>> first = [task for task, _ in mix]
    >>> sorted(first)
    ['asr', 'asr', 'tts', 'tts']
    >>> state = mix.state_dict(); state["position"]
    4
    >>> mix.draws(4, 2) == mix.draws(4, 2)
    True
    """

    def __init__(self, datasets: Mapping[str, Sequence], weights: Mapping[str, float], seed: int = 0,
                 block_size: int = 100, transforms: Optional[Mapping[str, Callable]] = None,
                 num_draws: Optional[int] = None):
        super().__init__()
        names = list(datasets)
        missing = [n for n in names if n not in weights]
        extra = [n for n in weights if n not in datasets]
        if missing or extra:
            raise ValueError(f"weights and datasets disagree: no weight for {missing}, no dataset for {extra}")
        w = np.array([float(weights[n]) for n in names])
        if not len(w) or (w <= 0).any() or not np.isfinite(w).all():
            raise ValueError(f"every stream needs a positive finite weight, got {dict(weights)}")
        empty = [n for n in names if len(datasets[n]) == 0]
        if empty:
            raise ValueError(f"empty task streams: {empty}")
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self.names = names
        self.datasets = dict(datasets)
        self.weights = w / w.sum()
        self.seed = int(seed)
        self.block_size = int(block_size)
        self.transforms = dict(transforms or {})
        self.num_draws = num_draws
        self._position = 0
        self._block_cache: Tuple[int, List[int]] = (-1, [])
        self._perm_cache: Dict[Tuple[int, int], np.ndarray] = {}

    # ------------------------------------------------------------------ the deterministic sequence
    def _cumulative(self, block: int) -> np.ndarray:
        return _apportion(block * self.block_size, self.weights)

    def _block(self, block: int) -> List[int]:
        if self._block_cache[0] != block:
            quota = self._cumulative(block + 1) - self._cumulative(block)
            order = np.repeat(np.arange(len(self.names)), quota)
            _rng(self.seed, 0x6D6978, block).shuffle(order)
            self._block_cache = (block, order.tolist())
        return self._block_cache[1]

    def stream_of(self, i: int) -> int:
        """Index (into :attr:`names`) of the stream that draw ``i`` comes from."""
        return self._block(i // self.block_size)[i % self.block_size]

    def count_before(self, stream: int, i: int) -> int:
        """How many of the draws ``0..i-1`` came from ``stream``."""
        block, offset = divmod(i, self.block_size)
        done = int(self._cumulative(block)[stream])
        return done + sum(1 for s in self._block(block)[:offset] if s == stream) if offset else done

    def _item_index(self, stream: int, count: int) -> int:
        n = len(self.datasets[self.names[stream]])
        epoch, pos = divmod(count, n)
        key = (stream, epoch)
        if key not in self._perm_cache:
            if len(self._perm_cache) > 4 * len(self.names):
                self._perm_cache.clear()
            name_key = zlib.crc32(self.names[stream].encode())
            self._perm_cache[key] = _rng(self.seed, name_key, epoch).permutation(n)
        return int(self._perm_cache[key][pos])

    def draws(self, start: int, count: int) -> List[Tuple[str, int]]:
        """``(task, item_index)`` of draws ``start .. start+count-1`` (no state change)."""
        out = []
        counts = {}
        for i in range(start, start + count):
            s = self.stream_of(i)
            if s not in counts:
                counts[s] = self.count_before(s, i)
            out.append((self.names[s], self._item_index(s, counts[s])))
            counts[s] += 1
        return out

    # ------------------------------------------------------------------ iteration
    def keys(self) -> Iterator[Tuple[str, int]]:
        """Yield ``(task, item_index)`` from the current position on, advancing it."""
        counts = {s: self.count_before(s, self._position) for s in range(len(self.names))}
        stop = None if self.num_draws is None else self._position + self.num_draws
        worker = torch.utils.data.get_worker_info()
        wid, nworkers = (worker.id, worker.num_workers) if worker is not None else (0, 1)
        while stop is None or self._position < stop:
            i = self._position
            s = self.stream_of(i)
            index = self._item_index(s, counts[s])
            counts[s] += 1
            self._position += 1
            if i % nworkers == wid:
                yield self.names[s], index

    def __iter__(self) -> Iterator[Tuple[str, object]]:
        """Yield ``(task, item)`` (item passed through the stream's transform when one is set)."""
        for task, index in self.keys():
            item = self.datasets[task][index]
            fn = self.transforms.get(task)
            yield task, (fn(item) if fn is not None else item)

    def __len__(self) -> int:
        if self.num_draws is None:
            raise TypeError("an endless TaskMixture (num_draws=None) has no length")
        return self.num_draws

    # ------------------------------------------------------------------ state
    @property
    def position(self) -> int:
        """Number of draws made so far."""
        return self._position

    def counts(self) -> Dict[str, int]:
        """Draws per stream so far."""
        return {n: self.count_before(s, self._position) for s, n in enumerate(self.names)}

    def state_dict(self) -> dict:
        """Position plus what must match on resume (seed, weights, block size, stream sizes)."""
        return {"position": self._position, "seed": self.seed, "block_size": self.block_size,
                "weights": dict(zip(self.names, self.weights.tolist())),
                "sizes": {n: len(self.datasets[n]) for n in self.names}, "counts": self.counts()}

    def load_state_dict(self, state: Mapping) -> None:
        """Resume at ``state["position"]``; refuse a state made with another seed / weights / data sizes."""
        mine = self.state_dict()
        for key in ("seed", "block_size", "sizes"):
            if state.get(key) != mine[key]:
                raise ValueError(f"TaskMixture state mismatch for {key!r}: saved {state.get(key)!r}, "
                                 f"this mixture has {mine[key]!r}")
        saved_w = state.get("weights", {})
        if set(saved_w) != set(mine["weights"]) or any(
                not math.isclose(saved_w[n], mine["weights"][n], rel_tol=1e-9) for n in saved_w):
            raise ValueError(f"TaskMixture state mismatch for 'weights': saved {saved_w}, "
                             f"this mixture has {mine['weights']}")
        position = state.get("position")
        if not isinstance(position, int) or position < 0:
            raise ValueError(f"TaskMixture state: bad position {position!r}")
        self._position = position

    @mark_as_saver
    def _save(self, path) -> None:
        atomic_write_text(path, json.dumps(self.state_dict(), indent=2))

    @mark_as_loader
    def _load(self, path, end_of_epoch=False) -> None:
        del end_of_epoch  # the position already says where the stream is
        with open(path, encoding="utf-8") as f:
            self.load_state_dict(json.load(f))
        logger.info("TaskMixture resumed at draw %d", self._position)


register_checkpoint_hooks(TaskMixture)
