"""``MoSTBrain``: SpeechBrain's ``Brain`` for MoST language-model training (stage 1 and stage 2).

SpeechBrain runs the epochs, tqdm progress, intra-epoch (``ckpt_interval_steps``) and end-of-epoch
checkpoints and DDP wrapping; this subclass adds:

* an engine (:mod:`most_speech.training.engines`) for backward / step, so DeepSpeed works as well as
  single-device and DDP training;
* the mixed single-task batch stream (:class:`~most_speech.training.data.MixedBatchStream`), whose position
  is committed after each trained batch and checkpointed;
* per-task train and validation losses, aux loss, learning rate, tokens/s and expert balance per modality
  (:class:`~most_speech.training.monitor.TrainingMonitor`);
* continuous audio features for the batch's audio spans (:mod:`most_speech.training.features`), augmented in
  training by ``feature_augment`` when the hparams give one (e.g. a SpeechBrain ``Augmenter`` of
  ``SpectrogramDrop`` and ``Warping``: SpecAugment on the frames before the projector).

Required hparams: ``optimizer`` (callable ``model -> optimizer``), ``lr_schedule`` (callable
``(optimizer, total_steps) -> scheduler`` or None), ``total_steps``; optional ``engine`` ("torch" /
"deepspeed"), ``deepspeed_config``, ``max_grad_norm``, ``log_interval``, ``keep_checkpoints``,
``keep_intra_epoch_checkpoints``, ``feature_augment`` (callable ``(features [S, N, D], relative lengths [S])
-> (features, lengths)``, applied to training batches only).
"""
from __future__ import annotations

import contextlib
import logging
from collections import defaultdict
from typing import Dict

import speechbrain as sb
import torch
from speechbrain.core import INTRA_EPOCH_CKPT_FLAG

from most_speech.training.engines import DeepSpeedEngine, TorchEngine, load_deepspeed_config
from most_speech.training.features import batch_audio_features, batch_unit_spans

logger = logging.getLogger(__name__)

_MODEL_KEYS = ("input_ids", "attention_mask", "labels")
_AUX_LOSSES = ("ctc_loss", "unit_ctc_loss", "tts_alignment_loss")  # logged on their own when the batch had them


class MoSTBrain(sb.Brain):
    """Trains ``modules["model"]`` (a ``MoSTForCausalLM``) on a :class:`MixedBatchStream`.

    Parameters
    ----------
    modules : dict
        ``{"model": MoSTForCausalLM}``.
    hparams : dict
        See the module docstring.
    run_opts : dict
        SpeechBrain run options (``device``, ``precision``, ``grad_accumulation_factor``, ``max_grad_norm``,
        ``ckpt_interval_steps``, ``optimizer_step_limit`` ...).
    checkpointer : AtomicCheckpointer, optional
    stream : MixedBatchStream
        The training stream (registered as the ``sampler`` recoverable).
    monitor : TrainingMonitor, optional
    feature_source : callable, optional
        Keys -> encoder frames, for continuous audio input.
    """

    def __init__(self, modules, hparams, run_opts=None, checkpointer=None, stream=None, monitor=None,
                 feature_source=None):
        super().__init__(modules=modules, hparams=hparams, run_opts=run_opts, checkpointer=checkpointer)
        if isinstance(self.optimizer_step_limit, str):  # SpeechBrain 1.1.2's CLI parser leaves it a string
            self.optimizer_step_limit = int(self.optimizer_step_limit)
        self.engine_kind = str(getattr(self.hparams, "engine", "torch"))
        if self.engine_kind not in ("torch", "deepspeed"):
            raise ValueError(f"engine must be 'torch' or 'deepspeed', got {self.engine_kind!r}")
        if self.engine_kind == "deepspeed":
            # DeepSpeed owns mixed precision (bf16 section of its config): no autocast around it.
            self.training_ctx = contextlib.nullcontext()
            self.evaluation_ctx = contextlib.nullcontext()
        self.stream = stream
        self.monitor = monitor
        self.feature_source = feature_source
        self.engine = None
        self.valid_stats: Dict[str, float] = {}
        self._has_valid = False
        if checkpointer is not None and stream is not None:
            checkpointer.add_recoverable("sampler", stream)

    # ------------------------------------------------------------------ set-up
    @property
    def model(self) -> torch.nn.Module:
        """The bare model (no DDP / DeepSpeed wrapper)."""
        return self.engine.module if self.engine is not None else self.modules["model"]

    def _wrap_distributed(self):
        if self.engine_kind == "deepspeed":
            return  # DeepSpeed does its own data parallelism
        super()._wrap_distributed()

    def init_optimizers(self):
        """Build optimizer, LR schedule and the engine, and register them with the checkpointer."""
        raw = self.modules["model"]
        raw = getattr(raw, "module", raw)
        optimizer = self.hparams.optimizer(raw)
        schedule = getattr(self.hparams, "lr_schedule", None)
        scheduler = schedule(optimizer, total_steps=int(self.hparams.total_steps)) if schedule else None
        if self.engine_kind == "deepspeed":
            config = load_deepspeed_config(self.hparams.deepspeed_config, self.grad_accumulation_factor,
                                           self.max_grad_norm, getattr(self.hparams, "deepspeed_precision", None))
            self.engine = DeepSpeedEngine(raw, optimizer, scheduler, config,
                                          dist_backend=getattr(self.hparams, "dist_backend", None),
                                          shm_comm=bool(getattr(self.hparams, "deepspeed_shm_comm", False)))
            self.optimizers_dict = None
        else:
            self.engine = TorchEngine(self.modules["model"], optimizer, scheduler, self.max_grad_norm, self.scaler)
            self.optimizer = optimizer
            self.optimizers_dict = {"optimizer": optimizer}
        if self.checkpointer is not None:
            self.engine.register(self.checkpointer)

    def zero_grad(self, set_to_none=False):
        if self.engine is not None:
            self.engine.zero_grad()

    def fit(self, epoch_counter, train_set, valid_set=None, **kwargs):
        self._has_valid = valid_set is not None
        return super().fit(epoch_counter, train_set, valid_set, **kwargs)

    # ------------------------------------------------------------------ forward / loss
    def _model_inputs(self, batch, stage=sb.Stage.TRAIN) -> dict:
        inputs = {k: batch[k].to(self.device) for k in _MODEL_KEYS}
        audio = batch_audio_features(batch.get("audio_spans") or [], self.feature_source)
        if audio is not None:
            audio = {k: v.to(self.device) for k, v in audio.items()}
            if stage == sb.Stage.TRAIN:
                audio["audio_features"] = self._augment(audio["audio_features"], audio["audio_feature_lengths"])
            inputs.update(audio)
        # validation scores lm_loss alone: the unit-side CTC and the TTS alignment prior are training losses only
        spans = batch.get("unit_spans") or []
        if stage == sb.Stage.TRAIN and any(spans) and self.model.config.reads_unit_spans():
            units = batch_unit_spans(spans)
            if units is not None:
                inputs["unit_spans"] = units
        return inputs

    def _augment(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``feature_augment`` on the padded frames; it may not change their number (the spliced positions
        and CTC lengths are fixed by then)."""
        augment = getattr(self.hparams, "feature_augment", None)
        if augment is None or feats.shape[0] == 0:
            return feats
        out, _ = augment(feats, lengths.float() / feats.shape[1])
        if out.shape != feats.shape:
            raise ValueError(f"feature_augment changed the feature shape {tuple(feats.shape)} -> "
                             f"{tuple(out.shape)}; use augmentations that keep it (no concat_original)")
        return out

    def compute_forward(self, batch, stage):
        forward = self.engine.model if self.engine is not None else self.modules["model"]
        return forward(**self._model_inputs(batch, stage))

    def compute_objectives(self, predictions, batch, stage):
        return predictions.loss if stage == sb.Stage.TRAIN else predictions.lm_loss

    @staticmethod
    def _task(batch) -> str:
        tasks = set(batch["tasks"])
        return tasks.pop() if len(tasks) == 1 else "mixed"

    @staticmethod
    def _tokens(batch) -> int:
        frames = sum(s.num_frames or 0 for row in batch.get("audio_spans") or [] for s in row)
        return int(batch["attention_mask"].sum()) + frames

    # ------------------------------------------------------------------ training step
    def fit_batch(self, batch):
        """One micro-batch: forward, backward, optimizer step at accumulation boundaries, bookkeeping."""
        internal = self.engine.accumulates_internally
        boundary = self.engine.at_boundary() if internal else self.step % self.grad_accumulation_factor == 0
        with self.no_sync(not boundary):
            with self.training_ctx:
                out = self.compute_forward(batch, sb.Stage.TRAIN)
                loss = self.compute_objectives(out, batch, sb.Stage.TRAIN)
            self.check_loss_isfinite(loss)
            self.engine.backward(loss if internal else loss / self.grad_accumulation_factor)
        grad_norm = self.engine.step() if (internal or boundary) else None
        if boundary:
            self.optimizer_step += 1
        self._after_batch(batch, out, loss, boundary, grad_norm)
        return loss.detach().cpu()

    def _after_batch(self, batch, out, loss, boundary, grad_norm) -> None:
        if self.stream is not None:
            self.stream.commit()
        if self.monitor is None:
            return
        aux_losses = {name: float(out[name].detach()) for name in _AUX_LOSSES if out.get(name) is not None}
        self.monitor.record_batch(self._task(batch), float(loss.detach()), float(out.lm_loss.detach()),
                                  float(out.aux_loss.detach()), self._tokens(batch), out.routing_counts, aux_losses)
        if boundary and self.optimizer_step % self.monitor.log_interval == 0:
            extra = {"grad_norm": grad_norm} if grad_norm is not None else {}
            stats = self.monitor.flush(self.optimizer_step, self.engine.lr(), extra)
            logger.info("step %d: %s", self.optimizer_step,
                        ", ".join(f"{k}={v:.4g}" for k, v in stats.items()))

    # ------------------------------------------------------------------ validation
    def on_stage_start(self, stage, epoch=None):
        if stage == sb.Stage.TRAIN and self.stream is not None:
            self.stream.set_epoch(epoch)
        if stage != sb.Stage.TRAIN:
            self._valid_sums = defaultdict(float)
            self._valid_tokens = defaultdict(int)

    @torch.no_grad()
    def evaluate_batch(self, batch, stage):
        with self.evaluation_ctx:
            out = self.compute_forward(batch, stage)
        labelled = int((batch["labels"][:, 1:] != -100).sum())
        task = self._task(batch)
        self._valid_sums[task] += float(out.lm_loss) * labelled
        self._valid_tokens[task] += labelled
        return out.lm_loss.detach().cpu()

    def on_stage_end(self, stage, stage_loss, epoch=None):
        if stage == sb.Stage.TRAIN:
            self.train_loss = stage_loss
            if not self._has_valid:
                self._save_epoch_checkpoint(epoch, {"train_loss": stage_loss})
            return
        stats = {f"loss/{t}": self._valid_sums[t] / max(self._valid_tokens[t], 1) for t in sorted(self._valid_sums)}
        total = sum(self._valid_tokens.values())
        stats["loss"] = sum(self._valid_sums.values()) / max(total, 1)
        self.valid_stats = stats
        logger.info("epoch %s %s: %s", epoch, stage.name.lower(), ", ".join(f"{k}={v:.4f}" for k, v in stats.items()))
        if self.monitor is not None:
            self.monitor.write(stats, self.optimizer_step, prefix=stage.name.lower())
        if stage == sb.Stage.VALID:
            self._save_epoch_checkpoint(epoch, {"valid_loss": stats["loss"], "train_loss": self.train_loss})

    # ------------------------------------------------------------------ checkpoints
    def _save_epoch_checkpoint(self, epoch, meta: dict) -> None:
        if self.checkpointer is None:
            return
        meta = {**meta, "epoch": epoch, "step": self.optimizer_step}
        finished = self.stream is None or self.stream.step >= epoch * self.stream.steps_per_epoch
        if not finished:  # the step limit stopped this epoch early: resume inside it
            meta[INTRA_EPOCH_CKPT_FLAG] = True
        self.checkpointer.save_and_keep_only(meta=meta, end_of_epoch=finished, importance_keys=[],
                                             num_to_keep=int(getattr(self.hparams, "keep_checkpoints", 2)))

    def _save_intra_epoch_ckpt(self):
        """Intra-epoch checkpoint keeping the last ``keep_intra_epoch_checkpoints`` (default 2), so a damaged
        newest one still leaves a good predecessor."""
        self.checkpointer.save_and_keep_only(
            end_of_epoch=False, importance_keys=[], num_to_keep=int(getattr(self.hparams, "keep_intra_epoch_checkpoints", 2)),
            ckpt_predicate=lambda c: INTRA_EPOCH_CKPT_FLAG in c.meta,
            meta={INTRA_EPOCH_CKPT_FLAG: True, "step": self.optimizer_step}, verbosity=logging.DEBUG)
