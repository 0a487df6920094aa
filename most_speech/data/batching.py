"""Dynamic batching by token budget, and sequence packing.

:class:`TokenBudgetBatchSampler` groups examples of similar length so that every batch holds at most
``max_tokens`` positions *including padding* (``batch_size * longest <= max_tokens``). SpeechBrain's
``DynamicBatchSampler`` bounds the sum of lengths (or a bucket's upper edge times the count), not the padded
size the accelerator actually sees, and it cannot pack; so this small sampler is written here.

:func:`pack_examples` concatenates examples into rows of at most ``max_length`` positions (first-fit
decreasing, deterministic). Each :class:`PackedRow` records per-position ``position_ids`` (restarting at 0 for
every document) and ``document_ids``; the first label of every document is ``-100`` so no target crosses a
boundary, and audio spans are shifted to their place in the row. Position ids count ids only: a model that
splices continuous frames into a packed row recomputes positions per document from ``document_ids``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Iterator, List, Optional, Sequence

import numpy as np
import torch

from most_speech.data.templates import IGNORE_INDEX, AudioSpan, Example

logger = logging.getLogger(__name__)


def _default_boundaries(lengths: np.ndarray, num_buckets: int) -> np.ndarray:
    qs = np.quantile(lengths, np.linspace(0, 1, num_buckets + 1)[1:])
    return np.unique(np.ceil(qs).astype(np.int64))


class TokenBudgetBatchSampler(torch.utils.data.Sampler):
    """Batches of indices whose padded size ``len(batch) * max(length)`` stays within ``max_tokens``.

    Parameters
    ----------
    lengths : sequence of int
        Length of every example (for :class:`Example` use ``example.total_length``).
    max_tokens : int
        Budget per batch, padding included.
    num_buckets : int
        Examples are bucketed by length (quantile boundaries) and batched within their bucket.
    bucket_boundaries : sequence of int, optional
        Explicit upper edges of the buckets (overrides ``num_buckets``).
    shuffle : bool
        Shuffle within buckets and the batch order, seeded by ``(seed, epoch)``; otherwise batches follow
        length order.
    seed : int
    max_batch_size : int, optional
        Cap on examples per batch.
    drop_oversize : bool
        Skip (with a warning) examples longer than ``max_tokens`` instead of raising.
    ids : sequence of str, optional
        Example ids, used in error messages.

    Examples
    --------
    >>> sampler = TokenBudgetBatchSampler([5, 3, 8, 2, 7, 4], max_tokens=16, shuffle=False)
    >>> batches = list(sampler)
    >>> all(len(b) * max([5, 3, 8, 2, 7, 4][i] for i in b) <= 16 for b in batches)
    True
    >>> sorted(i for b in batches for i in b)
    [0, 1, 2, 3, 4, 5]
    """

    def __init__(self, lengths: Sequence[int], max_tokens: int, num_buckets: int = 10,
                 bucket_boundaries: Optional[Sequence[int]] = None, shuffle: bool = True, seed: int = 0,
                 max_batch_size: Optional[int] = None, drop_oversize: bool = False,
                 ids: Optional[Sequence[str]] = None):
        self.lengths = np.asarray(lengths, dtype=np.int64)
        if self.lengths.ndim != 1 or (self.lengths <= 0).any():
            bad = int(np.argmax(self.lengths <= 0)) if self.lengths.ndim == 1 else None
            raise ValueError(f"lengths must be positive integers (example {self._name(ids, bad)})")
        if max_tokens <= 0:
            raise ValueError(f"max_tokens must be positive, got {max_tokens}")
        self.max_tokens = int(max_tokens)
        self.shuffle, self.seed, self.epoch = shuffle, int(seed), 0
        self.max_batch_size = max_batch_size
        oversize = np.flatnonzero(self.lengths > self.max_tokens)
        if len(oversize) and not drop_oversize:
            i = int(oversize[0])
            raise ValueError(f"example {self._name(ids, i)} has length {self.lengths[i]} > max_tokens="
                             f"{self.max_tokens} ({len(oversize)} such examples; drop_oversize=True skips them)")
        if len(oversize):
            logger.warning("TokenBudgetBatchSampler: skipping %d examples longer than %d", len(oversize),
                           self.max_tokens)
        self.usable = np.flatnonzero(self.lengths <= self.max_tokens)
        if bucket_boundaries is None:
            usable_lengths = self.lengths[self.usable] if len(self.usable) else np.array([1])
            bucket_boundaries = _default_boundaries(usable_lengths, max(1, num_buckets))
        self.boundaries = np.asarray(sorted(bucket_boundaries), dtype=np.int64)
        self._batches: Optional[List[List[int]]] = None

    @staticmethod
    def _name(ids, i) -> str:
        if i is None:
            return "?"
        return f"{i} ({ids[i]!r})" if ids is not None else str(i)

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffle of ``epoch`` (call at the start of every epoch)."""
        if epoch != self.epoch:
            self.epoch, self._batches = int(epoch), None

    def batches(self) -> List[List[int]]:
        """All batches of the current epoch (deterministic for ``(seed, epoch)``)."""
        if self._batches is None:
            self._batches = self._make_batches()
        return self._batches

    def _make_batches(self) -> List[List[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(self.usable) if self.shuffle else self.usable[np.argsort(
            self.lengths[self.usable], kind="stable")]
        bucket = np.searchsorted(self.boundaries, self.lengths[order], side="left")
        order = order[np.argsort(bucket, kind="stable")]
        batches: List[List[int]] = []
        current: List[int] = []
        longest, current_bucket = 0, None
        for idx, b in zip(order.tolist(), np.sort(bucket, kind="stable").tolist()):
            length = int(self.lengths[idx])
            full = self.max_batch_size is not None and len(current) >= self.max_batch_size
            if current and (b != current_bucket or full or (len(current) + 1) * max(longest, length)
                            > self.max_tokens):
                batches.append(current)
                current, longest = [], 0
            current.append(idx)
            longest, current_bucket = max(longest, length), b
        if current:
            batches.append(current)
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def __iter__(self) -> Iterator[List[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        return len(self.batches())


@dataclass
class PackedRow(Example):
    """Several examples concatenated into one row.

    ``position_ids`` restart at 0 for every document; ``document_ids`` number the documents 0, 1, ...;
    ``member_ids`` are the ids of the packed examples in order.
    """

    position_ids: List[int] = field(default_factory=list)
    document_ids: List[int] = field(default_factory=list)
    member_ids: List[str] = field(default_factory=list)


def _concat(members: Sequence[Example], row_index: int) -> PackedRow:
    ids, labels, pos, docs, spans, unit_spans = [], [], [], [], [], []
    for d, ex in enumerate(members):
        offset = len(ids)
        ids += ex.input_ids
        labels += [IGNORE_INDEX] + list(ex.labels[1:])
        pos += list(range(len(ex.input_ids)))
        docs += [d] * len(ex.input_ids)
        spans += [replace(s, position=s.position + offset) for s in ex.audio_spans]
        unit_spans += [replace(s, position=s.position + offset) for s in ex.unit_spans]
    tasks = sorted({ex.task for ex in members})
    return PackedRow(id=f"packed-{row_index}", task=tasks[0] if len(tasks) == 1 else "mixed", input_ids=ids,
                     labels=labels, audio_spans=spans, unit_spans=unit_spans, position_ids=pos, document_ids=docs,
                     member_ids=[ex.id for ex in members])


def pack_examples(examples: Sequence[Example], max_length: int,
                  length_fn: Callable[[Example], int] = lambda ex: ex.total_length) -> List[PackedRow]:
    """Pack examples into rows of at most ``max_length`` positions (first-fit decreasing).

    Parameters
    ----------
    examples : sequence of Example
    max_length : int
        Row capacity, measured by ``length_fn`` (default: ids plus known continuous frames).
    length_fn : callable

    Returns
    -------
    list of PackedRow
        Deterministic for a given input order.

    Examples
    --------
    >>> exs = [Example(f"e{i}", "text_lm", [1] + [5] * n, [-100] + [5] * n) for i, n in enumerate([3, 5, 2])]
    >>> rows = pack_examples(exs, max_length=10)
    >>> [r.member_ids for r in rows], rows[0].position_ids
    ([['e1', 'e0'], ['e2']], [0, 1, 2, 3, 4, 5, 0, 1, 2, 3])
    """
    sizes = [int(length_fn(ex)) for ex in examples]
    for ex, size in zip(examples, sizes):
        if size > max_length:
            raise ValueError(f"example {ex.id!r} has length {size} > packing max_length={max_length}")
    order = sorted(range(len(examples)), key=lambda i: (-sizes[i], i))
    rows: List[List[int]] = []
    free: List[int] = []
    for i in order:
        for r, room in enumerate(free):
            if sizes[i] <= room:
                rows[r].append(i)
                free[r] -= sizes[i]
                break
        else:
            rows.append([i])
            free.append(max_length - sizes[i])
    return [_concat([examples[i] for i in row], k) for k, row in enumerate(rows)]


def batch_stream(examples: Iterable, max_tokens: int, buffer_size: int = 256,
                 length_fn: Callable[[Example], int] = lambda ex: ex.total_length,
                 max_batch_size: Optional[int] = None) -> Iterator[list]:
    """Token-budget batches from a stream (e.g. a :class:`~most_speech.data.mixing.TaskMixture`).

    Items are read into a buffer of ``buffer_size``, sorted by length (stable, so the result is
    deterministic for a deterministic stream) and cut into batches whose padded size stays within
    ``max_tokens``. ``(task, example)`` pairs are accepted and kept as they are. A mixture's position counts
    the items pulled into the buffer: a state saved mid-buffer resumes after those items (at most
    ``buffer_size`` examples are skipped), one saved at a flush boundary resumes exactly.

    Examples
    --------
    >>> exs = [Example(f"e{i}", "text_lm", [1] * n, [1] * n) for i, n in enumerate([4, 9, 3, 8, 2])]
    >>> [[e.id for e in b] for b in batch_stream(exs, max_tokens=16, buffer_size=5)]
    [['e4', 'e2', 'e0'], ['e3'], ['e1']]
    """
    def size(item) -> int:
        ex = item[1] if isinstance(item, tuple) else item
        n = int(length_fn(ex))
        if n > max_tokens:
            raise ValueError(f"example {ex.id!r} has length {n} > max_tokens={max_tokens}")
        return n

    def flush(buffer):
        buffer.sort(key=lambda pair: pair[0])
        batch, longest = [], 0
        for n, item in buffer:
            full = max_batch_size is not None and len(batch) >= max_batch_size
            if batch and (full or (len(batch) + 1) * max(longest, n) > max_tokens):
                yield batch
                batch, longest = [], 0
            batch.append(item)
            longest = max(longest, n)
        if batch:
            yield batch

    buffer = []
    for item in examples:
        buffer.append((size(item), item))
        if len(buffer) >= buffer_size:
            yield from flush(buffer)
            buffer = []
    if buffer:
        yield from flush(buffer)
