"""Training data: task manifests -> validated examples -> token-budget batches -> a resumable task mix.

Up-front validation (:func:`load_task_examples`)
    Every line of every task manifest is checked *before the first step*: JSON and manifest fields
    (:func:`~most_speech.data.manifest.validate_entry`), duplicate ids, empty text / out-of-range unit ids and
    every other template error (:class:`~most_speech.data.templates.ExampleError`), and, for entries with an
    ``audio`` field, that the file exists and decodes (header read) — or, with a feature store, that the
    utterance is in it. Each problem is a :class:`BadItem` naming file, line, id and reason. Without
    ``skip_bad`` the first problems raise :class:`DataError`; with it, bad items are appended to a JSONL log
    and skipped.

Batches and mixing (:class:`MixedBatchStream`)
    Each task's examples are grouped by :class:`~most_speech.data.batching.TokenBudgetBatchSampler`; the
    task mixture (:class:`~most_speech.data.mixing.TaskMixture`) then draws *batches*: every step trains on
    one task, so the per-task step counts follow the configured weights exactly (block apportionment), and
    the loss per task is the step's loss. Under DDP rank ``r`` of ``W`` trains draw ``step * W + r``, so the
    ranks never share a batch and the whole state is one counter. The stream is a SpeechBrain
    checkpointable; its position is committed by the trainer after each batch it trained on.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import torch
from speechbrain.utils.checkpoints import mark_as_loader, mark_as_saver, register_checkpoint_hooks
from tqdm import tqdm

from most_speech.data.batching import TokenBudgetBatchSampler
from most_speech.data.fileio import atomic_write_text, open_text
from most_speech.data.manifest import ManifestError, relocate, validate_entry
from most_speech.data.mixing import TaskMixture
from most_speech.data.templates import Example, ExampleError, TaskTemplates

logger = logging.getLogger(__name__)

SPEECH_INPUT_TASKS = ("asr", "speech_instruction")


class DataError(ValueError):
    """The training data has bad items (and ``skip_bad`` is off); the message names them."""


@dataclass
class BadItem:
    """One unusable manifest line."""

    file: str
    line: int
    id: Optional[str]
    task: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}, line {self.line}, id {self.id!r} ({self.task}): {self.reason}"


@dataclass
class TaskSpec:
    """One stream of the mix: a manifest turned into examples of ``task``.

    Parameters
    ----------
    name : str
        Stream name (logging key), e.g. ``asr`` or ``asr_cv``.
    task : str
        Template task (``asr``, ``tts``, ``text_lm``, ``speech_instruction``, ``text_instruction``).
    manifest : str
        JSON Lines manifest.
    weight : float
        Mixing weight (share of training steps).
    """

    name: str
    task: str
    manifest: str
    weight: float = 1.0


def task_specs(tasks: Mapping[str, Mapping]) -> List[TaskSpec]:
    """Parse the ``tasks`` hparam: ``{name: {manifest, weight, task (default: name)}}``.

    A stream of weight 0 is switched off (left out, its manifest not read), so a yaml can hold optional
    streams that a ``--<name>_weight=...`` override turns on.

    Examples
    --------
    >>> task_specs({"asr": {"manifest": "a.jsonl", "weight": 0.4}, "speech_lm": {"manifest": "s", "weight": 0}})
    [TaskSpec(name='asr', task='asr', manifest='a.jsonl', weight=0.4)]
    """
    out = []
    for name, spec in tasks.items():
        if not isinstance(spec, Mapping) or "manifest" not in spec:
            raise ValueError(f"tasks[{name!r}] needs at least a 'manifest' (got {spec!r})")
        unknown = set(spec) - {"manifest", "weight", "task"}
        if unknown:
            raise ValueError(f"tasks[{name!r}]: unknown keys {sorted(unknown)}")
        weight = float(spec.get("weight", 1.0))
        if not weight >= 0:
            raise ValueError(f"tasks[{name!r}]: weight must be >= 0, got {weight}")
        if weight > 0:
            out.append(TaskSpec(name, str(spec.get("task", name)), str(spec["manifest"]), weight))
    return out


UNIT_FIELDS = ("units", "question_units", "answer_units")


def data_km_tag(specs: Sequence[TaskSpec], expected: Optional[str] = None) -> Optional[str]:
    """The one ``km_tag`` of every manifest entry that carries units (None when no entry has units).

    Entries with units but no ``km_tag``, or two different tags, raise :class:`DataError` naming the file,
    line and id; a tag other than ``expected`` (the model's) raises ``KmTagMismatch``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "tts.jsonl"
    >>> _ = p.write_text('{"id": "a", "text": "hi", "units": [1, 2], "km_tag": "mfcc-km8-0a1b2c3d"}\\n')
    >>> data_km_tag([TaskSpec("tts", "tts", str(p))])
    'mfcc-km8-0a1b2c3d'
    """
    from most_speech.audio.kmeans import check_km_tag

    seen: Dict[str, str] = {}
    for spec in specs:
        for lineno, raw in _read_lines(spec.manifest):
            try:
                entry = json.loads(raw)
            except json.JSONDecodeError:
                continue  # reported with its line by the item validation
            if not isinstance(entry, dict) or not any(k in entry for k in UNIT_FIELDS):
                continue
            where = f"{spec.manifest}, line {lineno}, id {entry.get('id')!r}"
            tag = entry.get("km_tag")
            if not tag:
                raise DataError(f"{where}: entry has units but no km_tag (which k-means model made them?)")
            if seen and tag not in seen:
                first = next(iter(seen))
                raise DataError(f"{where}: km_tag {tag!r} differs from {first!r} ({seen[first]}); one model's unit "
                                f"tokens stand for one k-means model")
            seen.setdefault(tag, where)
    tag = next(iter(seen), None)
    if tag is not None and expected is not None:
        check_km_tag(expected, tag, "model")
    return tag


# ------------------------------------------------------------------------------------------------ validation
def _check_audio(entry: dict, data_root: Optional[str], feature_keys) -> Optional[str]:
    """Reason why the entry's audio is unusable, or None."""
    if feature_keys is not None:
        key = str(entry.get("feature_key", entry["id"]))
        return None if key in feature_keys else f"no features for key {key!r} in the feature store"
    from most_speech.audio.io import audio_info

    path = relocate(entry, data_root)["audio"] if data_root else entry["audio"]
    if "{data_root}" in path:
        return f"audio path {path!r} has a {{data_root}} placeholder but no data_root is set"
    if not os.path.isfile(path):
        return f"audio file {path!r} does not exist"
    try:
        frames, _ = audio_info(path)
    except Exception as err:  # noqa: BLE001 - any decoder failure makes the item unusable
        return f"audio file {path!r} is unreadable: {err}"
    return None if frames > 0 else f"audio file {path!r} is empty"


def _read_lines(path: str) -> Iterator[Tuple[int, str]]:
    try:
        with open_text(path) as f:
            for lineno, raw in enumerate(f, start=1):
                if raw.strip():
                    yield lineno, raw
    except OSError as err:
        raise DataError(f"cannot read manifest {path}: {err}") from err


def load_task_examples(spec: TaskSpec, templates: TaskTemplates, data_root: Optional[str] = None,
                       check_audio: bool = True, feature_keys=None) -> Tuple[List[Example], List[BadItem]]:
    """Validate every line of ``spec.manifest`` and build its examples.

    Returns
    -------
    examples : list of Example
        The usable ones, in file order.
    bad : list of BadItem
        Everything else, each with file, line, id and reason.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from most_speech.text.tokenizer import MoSTTokenizer, train_sentencepiece
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> sp = train_sentencepiece(["a cat sat on a mat"] * 20, d / "sp", vocab_size=20)
    >>> tpl = TaskTemplates(MoSTTokenizer.from_sentencepiece(sp, num_units=5))
    >>> _ = (d / "m.jsonl").write_text('{"id": "u1", "text": "a cat"}\\n{"id": "u2", "text": " "}\\n')
    >>> ok, bad = load_task_examples(TaskSpec("text_lm", "text_lm", str(d / "m.jsonl")), tpl)
    >>> [e.id for e in ok], [b.id for b in bad]
    (['u1'], ['u2'])
    """
    examples: List[Example] = []
    bad: List[BadItem] = []
    seen: Dict[str, int] = {}
    audio_needed = check_audio and spec.task in SPEECH_INPUT_TASKS and templates.config.speech_input == "continuous"
    for lineno, raw in _read_lines(spec.manifest):
        uid = None
        try:
            entry = json.loads(raw)
            uid = entry.get("id") if isinstance(entry, dict) else None
            validate_entry(entry, spec.manifest, lineno)
        except (json.JSONDecodeError, ManifestError) as err:
            bad.append(BadItem(spec.manifest, lineno, uid, spec.name, f"invalid entry: {err}"))
            continue
        if uid in seen:
            bad.append(BadItem(spec.manifest, lineno, uid, spec.name, f"duplicate id (first on line {seen[uid]})"))
            continue
        seen[uid] = lineno
        if audio_needed:
            if "audio" not in entry and feature_keys is None:
                reason = "no 'audio' field (continuous speech input needs the audio)"
            else:
                reason = _check_audio(entry, data_root, feature_keys)
            if reason:
                bad.append(BadItem(spec.manifest, lineno, uid, spec.name, reason))
                continue
        try:
            examples.append(templates.build(spec.task, entry))
        except (ExampleError, ValueError) as err:
            bad.append(BadItem(spec.manifest, lineno, uid, spec.name, str(err)))
    return examples, bad


def log_bad_items(bad: Sequence[BadItem], path) -> None:
    """Write the bad items as JSON Lines (atomically, replacing any previous log)."""
    atomic_write_text(path, "".join(json.dumps(asdict(b), ensure_ascii=False) + "\n" for b in bad))


def load_training_examples(specs: Sequence[TaskSpec], templates: TaskTemplates, skip_bad: bool = False,
                           bad_items_log=None, data_root: Optional[str] = None, check_audio: bool = True,
                           feature_keys=None) -> Dict[str, List[Example]]:
    """Validate all task manifests up front; raise :class:`DataError` on bad items unless ``skip_bad``.

    Returns ``{stream name: examples}``; with ``skip_bad`` the bad items go to ``bad_items_log`` (JSONL).
    """
    out, all_bad = {}, []
    for spec in tqdm(specs, desc="validating task manifests", disable=len(specs) < 2):
        examples, bad = load_task_examples(spec, templates, data_root, check_audio, feature_keys)
        out[spec.name] = examples
        all_bad += bad
        logger.info("task %s: %d examples from %s (%d bad)", spec.name, len(examples), spec.manifest, len(bad))
    if bad_items_log is not None and (all_bad or Path(bad_items_log).exists()):
        log_bad_items(all_bad, bad_items_log)
    if all_bad and not skip_bad:
        listing = "\n  ".join(str(b) for b in all_bad[:10])
        more = f"\n  ... and {len(all_bad) - 10} more" if len(all_bad) > 10 else ""
        raise DataError(f"{len(all_bad)} bad training items (set skip_bad: True to log and skip them"
                        f"{'; listed in ' + str(bad_items_log) if bad_items_log else ''}):\n  {listing}{more}")
    for b in all_bad:
        logger.warning("skipping bad item: %s", b)
    empty = [name for name, exs in out.items() if not exs]
    if empty:
        raise DataError(f"task streams without any usable example: {empty}")
    return out


# ------------------------------------------------------------------------------------------------ batching
def make_batches(examples: Sequence[Example], max_tokens: int, seed: int = 0, max_batch_size: Optional[int] = None,
                 num_buckets: int = 10) -> List[List[Example]]:
    """Group examples into token-budget batches (padding included), shuffled by ``seed``.

    Examples
    --------
    >>> exs = [Example(f"e{i}", "text_lm", [1] * n, [-100] + [1] * (n - 1)) for i, n in enumerate([3, 4, 5, 6])]
    >>> batches = make_batches(exs, max_tokens=10)
    >>> sorted(e.id for b in batches for e in b), all(len(b) * max(len(e) for e in b) <= 10 for b in batches)
    (['e0', 'e1', 'e2', 'e3'], True)
    """
    sampler = TokenBudgetBatchSampler([ex.total_length for ex in examples], max_tokens, num_buckets=num_buckets,
                                      shuffle=True, seed=seed, max_batch_size=max_batch_size,
                                      ids=[ex.id for ex in examples])
    return [[examples[i] for i in batch] for batch in sampler.batches()]


class MixedBatchStream(torch.utils.data.IterableDataset):
    """Endless, seeded, resumable stream of collated single-task batches mixed by task weights.

    Parameters
    ----------
    batches : mapping of str to list of list of Example
        Stream name -> its batches.
    weights : mapping of str to float
        Share of training steps per stream.
    collate : callable
        ``list of Example -> batch dict``.
    seed : int
    steps_per_epoch : int
        Batches per epoch on each rank (an epoch is a fixed number of steps; streams cycle).
    rank, world_size : int
        DDP rank and world size (rank ``r`` trains draws ``step * world_size + r``).
    block_size : int
        Mixture apportionment block (draws).

    Examples
    --------
    >>> from most_speech.data.templates import Example
    >>> ex = lambda i, t: Example(f"{t}{i}", t, [1, 2], [-100, 2])
    >>> stream = MixedBatchStream({"a": [[ex(0, "a")]], "b": [[ex(0, "b")]]}, {"a": 0.5, "b": 0.5},
    ...                           collate=lambda b: b, steps_per_epoch=4, block_size=4)
    >>> stream.set_epoch(1)
    >>> sorted(b[0].task for b in stream)
    ['a', 'a', 'b', 'b']
    """

    def __init__(self, batches: Mapping[str, List[List[Example]]], weights: Mapping[str, float], collate: Callable,
                 seed: int = 0, steps_per_epoch: int = 1000, rank: int = 0, world_size: int = 1,
                 block_size: int = 100):
        super().__init__()
        if steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
        self.mixture = TaskMixture(batches, weights, seed=seed, block_size=block_size)
        self.batches = dict(batches)
        self.collate = collate
        self.steps_per_epoch = int(steps_per_epoch)
        self.rank, self.world_size = int(rank), int(world_size)
        self.step = 0  # batches trained by each rank (committed by the trainer)
        self.epoch = 1

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch to iterate (1-based, as SpeechBrain's epoch counter)."""
        self.epoch = int(epoch)

    def task_of(self, step: int) -> str:
        """Stream name of this rank's batch at ``step``."""
        return self.mixture.draws(step * self.world_size + self.rank, 1)[0][0]

    def __iter__(self):
        stop = self.epoch * self.steps_per_epoch
        step = self.step
        while step < stop:
            name, index = self.mixture.draws(step * self.world_size + self.rank, 1)[0]
            yield self.collate(self.batches[name][index])
            step += 1

    def __len__(self) -> int:
        return self.steps_per_epoch

    def commit(self, steps: int = 1) -> None:
        """Record that ``steps`` more batches were trained on (called by the trainer after each batch)."""
        self.step += steps

    def counts(self, steps: Optional[int] = None) -> Dict[str, int]:
        """Batches per stream that this rank trains in its first ``steps`` steps (default: so far)."""
        steps = self.step if steps is None else steps
        counts = dict.fromkeys(self.mixture.names, 0)
        for name, _ in (self.mixture.draws(s * self.world_size + self.rank, 1)[0] for s in range(steps)):
            counts[name] += 1
        return counts

    def state_dict(self) -> dict:
        mix = self.mixture.state_dict()
        return {"step": self.step, "world_size": self.world_size, "steps_per_epoch": self.steps_per_epoch,
                "mixture": {k: mix[k] for k in ("seed", "block_size", "weights", "sizes")}}

    def load_state_dict(self, state: Mapping) -> None:
        """Resume at the saved step; refuse a state from another mix, data set or world size."""
        mine = self.state_dict()
        for key in ("world_size", "steps_per_epoch"):
            if state.get(key) != mine[key]:
                raise ValueError(f"MixedBatchStream state mismatch for {key!r}: saved {state.get(key)!r}, "
                                 f"now {mine[key]!r}")
        self.mixture.load_state_dict({**state["mixture"], "position": int(state["step"]) * self.world_size})
        self.step = int(state["step"])

    @mark_as_saver
    def _save(self, path) -> None:
        atomic_write_text(path, json.dumps(self.state_dict(), indent=2))

    @mark_as_loader
    def _load(self, path, end_of_epoch=False) -> None:
        del end_of_epoch
        with open(path, encoding="utf-8") as f:
            self.load_state_dict(json.load(f))
        logger.info("training stream resumed at step %d", self.step)


register_checkpoint_hooks(MixedBatchStream)


class BatchList(torch.utils.data.Dataset):
    """Map-style dataset of pre-grouped batches, collated on access (validation)."""

    def __init__(self, batches: Sequence[List[Example]], collate: Callable):
        self.batches, self.collate = list(batches), collate

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int):
        return self.collate(self.batches[i])
