"""GAN training of the unit HiFi-GAN as a ``speechbrain.Brain`` with two optimizers.

Follows SpeechBrain's ``recipes/LJSpeech/TTS/vocoder/hifigan_discrete`` recipe: each batch
first updates the discriminator (MPD + MSD) on a detached fake, then the generator on
45 x mel L1 + feature matching + adversarial + duration MSE (SpeechBrain's
``GeneratorLoss`` / ``DiscriminatorLoss``). Additions: an optional mel-only warm-up
(``adversarial_start_step``), wall-clock / CPU-time budgets, and step-based
checkpoints through ``ckpt_interval_steps``.
"""
from __future__ import annotations

import logging
import time

import speechbrain as sb
import torch

logger = logging.getLogger(__name__)


def _floats(losses: dict) -> dict:
    """Loss dict -> plain floats (SpeechBrain's losses mix tensors and int zeros)."""
    return {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in losses.items()}


class VocoderBrain(sb.Brain):
    """Trains ``modules.generator`` (a :class:`UnitHifiganVocoder`) against ``modules.discriminator``.

    Required hparams: ``generator_loss``, ``discriminator_loss``, ``opt_class_generator``,
    ``opt_class_discriminator``; optional ``adversarial_start_step`` (0),
    ``max_train_minutes`` (wall clock, None), ``max_cpu_minutes`` (this process's CPU
    time over all threads, None: fairer on a shared machine), ``epoch_counter``.

    Examples
    --------
    >>> brain = VocoderBrain(  # doctest: +SKIP
    ...     modules={"generator": vocoder, "discriminator": ScaledHifiganDiscriminator()},
    ...     hparams=hparams, checkpointer=hparams["checkpointer"])
    >>> brain.fit(hparams["epoch_counter"], SegmentDataset(...),  # doctest: +SKIP
    ...           train_loader_kwargs={"batch_size": 16, "collate_fn": collate_segments})
    """

    def on_fit_start(self):
        self.last_loss_stats = {}
        self._fit_start_time = time.time()
        self._fit_start_cpu = time.process_time()
        super().on_fit_start()

    def init_optimizers(self):
        """Two optimizers (generator, discriminator), both checkpointed."""
        self.optimizer_g = self.hparams.opt_class_generator(self.modules.generator.parameters())
        self.optimizer_d = self.hparams.opt_class_discriminator(
            self.modules.discriminator.parameters()
        )
        self.optimizers_dict = {"optimizer_g": self.optimizer_g, "optimizer_d": self.optimizer_d}
        if self.checkpointer is not None:
            self.checkpointer.add_recoverable("optimizer_g", self.optimizer_g)
            self.checkpointer.add_recoverable("optimizer_d", self.optimizer_d)

    @property
    def adversarial(self) -> bool:
        """False during the mel-only warm-up."""
        return self.optimizer_step >= getattr(self.hparams, "adversarial_start_step", 0)

    def compute_forward(self, batch, stage):
        units, wav = (t.to(self.device) for t in batch)
        fake, (log_dur_pred, log_dur) = self.modules.generator(units)
        return fake[:, :, : wav.shape[-1]], log_dur_pred, log_dur

    def _generator_losses(self, fake, real, log_dur_pred, log_dur, stage):
        if self.adversarial:
            scores_fake, feats_fake = self.modules.discriminator(fake)
            with torch.no_grad():
                _, feats_real = self.modules.discriminator(real)
        else:
            scores_fake = feats_fake = feats_real = None
        return self.hparams.generator_loss(
            stage, fake, real, scores_fake, feats_fake, feats_real, log_dur_pred, log_dur
        )

    def _discriminator_losses(self, fake, real):
        scores_fake, _ = self.modules.discriminator(fake.detach())
        scores_real, _ = self.modules.discriminator(real)
        return self.hparams.discriminator_loss(scores_fake, scores_real)

    def fit_batch(self, batch):
        """Discriminator step on the detached fake, then generator step."""
        _, real = (t.to(self.device) for t in batch)
        fake, log_dur_pred, log_dur = self.compute_forward(batch, sb.Stage.TRAIN)
        losses = {}
        if self.adversarial:
            losses.update(self._discriminator_losses(fake, real))
            self.optimizer_d.zero_grad()
            losses["D_loss"].backward()
            self.optimizer_d.step()
        losses.update(self._generator_losses(fake, real, log_dur_pred, log_dur, sb.Stage.TRAIN))
        self.optimizer_g.zero_grad()
        losses["G_loss"].backward()
        self.optimizer_g.step()
        self.optimizer_step += 1
        self.last_loss_stats[sb.Stage.TRAIN] = _floats(losses)
        interval = getattr(self.hparams, "log_interval_steps", 0)
        if interval and self.optimizer_step % interval == 0:
            stats = self.last_loss_stats[sb.Stage.TRAIN]
            logger.info("step %d: %s", self.optimizer_step,
                        ", ".join(f"{k} {v:.4f}" for k, v in sorted(stats.items())))
        self._check_time_budget()
        return losses["G_loss"].detach().cpu()

    def _check_time_budget(self):
        wall = getattr(self.hparams, "max_train_minutes", None)
        cpu = getattr(self.hparams, "max_cpu_minutes", None)
        wall_over = wall and time.time() - self._fit_start_time > 60 * wall
        cpu_over = cpu and time.process_time() - self._fit_start_cpu > 60 * cpu
        if wall_over or cpu_over:
            logger.info("time budget reached at step %d (%.1f CPU min, %.1f wall min)",
                        self.optimizer_step, (time.process_time() - self._fit_start_cpu) / 60,
                        (time.time() - self._fit_start_time) / 60)
            self.optimizer_step_limit = self.optimizer_step  # makes Brain.fit stop

    def evaluate_batch(self, batch, stage):
        fake, log_dur_pred, log_dur = self.compute_forward(batch, stage)
        _, real = (t.to(self.device) for t in batch)
        losses = self._generator_losses(fake, real, log_dur_pred, log_dur, stage)
        self.last_loss_stats[stage] = _floats(losses)
        return losses["G_loss"].detach().cpu()

    def on_stage_end(self, stage, stage_loss, epoch):
        if stage == sb.Stage.TRAIN:
            self.train_loss = stage_loss
            return
        stats = {"G_loss": stage_loss}
        if stage == sb.Stage.VALID:
            logger.info("epoch %s step %d: train G %.4f, valid G %.4f",
                        epoch, self.optimizer_step, self.train_loss, stage_loss)
            if hasattr(self.hparams, "train_logger"):
                self.hparams.train_logger.log_stats(
                    {"epoch": epoch, "step": self.optimizer_step},
                    train_stats={"G_loss": self.train_loss}, valid_stats=stats,
                )
            if self.checkpointer is not None:
                self.checkpointer.save_and_keep_only(
                    meta={"G_loss": stage_loss, "step": self.optimizer_step},
                    num_to_keep=getattr(self.hparams, "keep_checkpoints", 2),
                )
