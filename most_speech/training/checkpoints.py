"""Crash-safe checkpoints on top of SpeechBrain's :class:`~speechbrain.utils.checkpoints.Checkpointer`.

SpeechBrain 1.1.2 writes ``CKPT.yaml`` *first* and the recoverables after it, straight into the final
``CKPT+...`` folder, so a process killed while saving leaves a folder that looks complete (it has the
``CKPT.yaml`` marker) but holds missing or truncated files; ``recover_if_possible`` then crashes on it.
:class:`AtomicCheckpointer` fixes that without changing the on-disk layout:

* every recoverable is written into a hidden ``.tmp-CKPT+...`` folder, then ``CKPT.yaml`` is written last
  with the size and SHA-256 of every file, and the folder is renamed into place (``os.replace``), so a
  ``CKPT+...`` folder is either complete or absent;
* on recovery every candidate is verified against its recorded checksums (this also catches a file damaged
  after the fact) and loaded; a checkpoint that fails either step is logged and skipped in favour of the
  previous good one.

Our own weights are written as safetensors (:func:`save_module_safetensors`); optimizer / scheduler state
dicts with ``torch.save`` and read back with ``torch.load(weights_only=True)``; the RNG state as JSON
(:class:`RNGState`). Nothing here unpickles arbitrary objects.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import yaml
from safetensors.torch import load_model, save_model
from speechbrain.utils.checkpoints import (CKPT_PREFIX, METAFNAME, PARAMFILE_EXT, Checkpoint, Checkpointer,
                                           get_default_hook, DEFAULT_SAVE_HOOKS, mark_as_loader, mark_as_saver,
                                           register_checkpoint_hooks)
from speechbrain.utils.distributed import ddp_barrier, ddp_broadcast, if_main_process

logger = logging.getLogger(__name__)

TMP_PREFIX = ".tmp-"
CHECKSUM_KEY = "files_sha256"


class CheckpointError(RuntimeError):
    """A checkpoint folder is incomplete or damaged; the message names the folder and file."""


def _sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _file_digests(folder: Path) -> dict:
    """``relative path -> [size, sha256]`` of every file below ``folder`` except the meta file."""
    out = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel != METAFNAME:
            out[rel] = [path.stat().st_size, _sha256(path)]
    return out


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())


def verify_checkpoint(path) -> None:
    """Raise :class:`CheckpointError` unless every file recorded in ``CKPT.yaml`` is present and intact.

    Examples
    --------
    >>> import tempfile
    >>> ckpt = AtomicCheckpointer(tempfile.mkdtemp()).save_checkpoint(meta={"step": 1})
    >>> verify_checkpoint(ckpt.path)
    """
    path = Path(path)
    try:
        meta = yaml.safe_load((path / METAFNAME).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        raise CheckpointError(f"checkpoint {path}: unreadable {METAFNAME}: {err}") from err
    recorded = meta.get(CHECKSUM_KEY)
    if not isinstance(recorded, dict):
        raise CheckpointError(f"checkpoint {path}: {METAFNAME} has no {CHECKSUM_KEY!r} (not written by "
                              f"AtomicCheckpointer, or written by an interrupted save)")
    for rel, (size, digest) in recorded.items():
        f = path / rel
        if not f.is_file():
            raise CheckpointError(f"checkpoint {path}: file {rel!r} is missing")
        if f.stat().st_size != size:
            raise CheckpointError(f"checkpoint {path}: file {rel!r} has {f.stat().st_size} bytes, "
                                  f"expected {size} (truncated?)")
        if _sha256(f) != digest:
            raise CheckpointError(f"checkpoint {path}: file {rel!r} fails its SHA-256 check (corrupt)")


class AtomicCheckpointer(Checkpointer):
    """A :class:`Checkpointer` whose checkpoints appear atomically and are verified before loading.

    Same constructor and API as SpeechBrain's; ``recover_if_possible`` falls back to older checkpoints
    when the newest is damaged.

    Examples
    --------
    >>> import tempfile
    >>> ckpter = AtomicCheckpointer(tempfile.mkdtemp(), recoverables={"rng": RNGState()})
    >>> ckpt = ckpter.save_checkpoint(meta={"step": 3})
    >>> ckpter.recover_if_possible().meta["step"]
    3
    """

    def save_checkpoint(self, meta={}, end_of_epoch=True, name=None, verbosity=logging.INFO):
        final = tmp = None
        if if_main_process():
            final = self._new_checkpoint_dirpath() if name is None else self._custom_checkpoint_dirpath(name)
            tmp = final.with_name(TMP_PREFIX + final.name)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        final, tmp = ddp_broadcast((final, tmp), src=0)
        paramfiles = {}
        for rec_name, obj in self.recoverables.items():
            savepath = tmp / f"{rec_name}{PARAMFILE_EXT}"
            paramfiles[rec_name] = final / savepath.name
            hook = self.custom_save_hooks.get(rec_name) or get_default_hook(obj, DEFAULT_SAVE_HOOKS)
            if hook is None:
                raise RuntimeError(f"don't know how to save recoverable {rec_name!r} ({type(obj).__name__})")
            hook(obj, savepath)
        ddp_barrier()
        if not if_main_process():
            return None
        full_meta = {"unixtime": time.time(), "end-of-epoch": end_of_epoch, **meta,
                     CHECKSUM_KEY: _file_digests(tmp)}
        with open(tmp / METAFNAME, "w", encoding="utf-8") as f:
            f.write("# yamllint disable\n" + yaml.dump(full_meta))
        _fsync_tree(tmp)
        os.replace(tmp, final)
        logger.log(verbosity, "Saved an %s checkpoint in %s", "end-of-epoch" if end_of_epoch else "intra-epoch",
                   final)
        return Checkpoint(final, full_meta, paramfiles)

    def recover_if_possible(self, importance_key=None, max_key=None, min_key=None, ckpt_predicate=None):
        """Load the best checkpoint that verifies and loads; skip (and log) damaged ones."""
        candidates = self.find_checkpoints(importance_key=importance_key, max_key=max_key, min_key=min_key,
                                           ckpt_predicate=ckpt_predicate)
        for ckpt in candidates:
            try:
                verify_checkpoint(ckpt.path)
                self.load_checkpoint(ckpt)
                return ckpt
            except Exception as err:  # noqa: BLE001 - any failure means: try the previous checkpoint
                logger.warning("skipping damaged checkpoint %s: %s", ckpt.path, err)
        if candidates:
            raise CheckpointError(f"no usable checkpoint in {self.checkpoints_dir}: all {len(candidates)} "
                                  f"candidates are damaged (see the warnings above)")
        logger.info("no checkpoint in %s yet; starting fresh", self.checkpoints_dir)
        return None

    def remove_stale_tmp(self) -> None:
        """Delete leftovers of interrupted saves (hidden ``.tmp-CKPT+...`` folders)."""
        if if_main_process():
            for p in self.checkpoints_dir.glob(f"{TMP_PREFIX}{CKPT_PREFIX}*"):
                shutil.rmtree(p, ignore_errors=True)


# ----------------------------------------------------------------------------------------------- save hooks
def save_module_safetensors(module: torch.nn.Module, path) -> None:
    """Checkpoint save hook: ``module``'s weights as safetensors (shared tensors handled by safetensors)."""
    if if_main_process():
        save_model(getattr(module, "module", module), str(path))


def load_module_safetensors(module: torch.nn.Module, path, end_of_epoch=False) -> None:
    """Checkpoint load hook matching :func:`save_module_safetensors` (strict)."""
    del end_of_epoch
    missing, unexpected = load_model(getattr(module, "module", module), str(path), strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not match the model (missing {sorted(missing)[:5]}, "
                              f"unexpected {sorted(unexpected)[:5]})")


def save_state_dict(obj, path) -> None:
    """Checkpoint save hook for objects with ``state_dict`` (optimizers, schedulers)."""
    if if_main_process():
        torch.save(obj.state_dict(), path)


def load_state_dict(obj, path, end_of_epoch=False) -> None:
    """Checkpoint load hook: ``torch.load(weights_only=True)`` then ``obj.load_state_dict``."""
    del end_of_epoch
    obj.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))


@register_checkpoint_hooks
class RNGState:
    """Recoverable holding Python, NumPy and torch (CPU and CUDA) random states, saved as JSON.

    Examples
    --------
    >>> import tempfile, os
    >>> rng, path = RNGState(), os.path.join(tempfile.mkdtemp(), "rng.ckpt")
    >>> rng._save(path); a = torch.rand(1)
    >>> rng._load(path); bool(torch.rand(1) == a)
    True
    """

    @mark_as_saver
    def _save(self, path) -> None:
        np_state = np.random.get_state()
        state = {"python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
                 "numpy": [np_state[0], np_state[1].tolist(), *[float(x) if isinstance(x, float) else int(x)
                                                                for x in np_state[2:]]],
                 "torch": torch.get_rng_state().tolist(),
                 "cuda": [s.tolist() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else []}
        tmp = f"{path}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(state, f)
        os.replace(tmp, path)

    @mark_as_loader
    def _load(self, path, end_of_epoch=False) -> None:
        del end_of_epoch
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
        torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
        if state.get("cuda") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def add_torch_recoverables(checkpointer: Checkpointer, model, optimizer=None, scheduler=None) -> None:
    """Register model (safetensors), optimizer and scheduler (weights-only torch files) with their hooks."""
    checkpointer.add_recoverable("model", model, custom_load_hook=load_module_safetensors,
                                 custom_save_hook=save_module_safetensors)
    for name, obj in (("optimizer", optimizer), ("scheduler", scheduler)):
        if obj is not None:
            checkpointer.add_recoverable(name, obj, custom_load_hook=load_state_dict,
                                         custom_save_hook=save_state_dict)


def latest_checkpoint(checkpoints_dir, predicate: Optional[Callable] = None) -> Optional[Checkpoint]:
    """The newest verified checkpoint in ``checkpoints_dir`` (or ``None``); does not load anything."""
    for ckpt in AtomicCheckpointer(checkpoints_dir).find_checkpoints(ckpt_predicate=predicate):
        try:
            verify_checkpoint(ckpt.path)
            return ckpt
        except CheckpointError as err:
            logger.warning("skipping damaged checkpoint %s: %s", ckpt.path, err)
    return None
