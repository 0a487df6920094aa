"""``most-train-vocoder hparams.yaml --key=value``: train a unit vocoder and export it.

The hparams file (HyperPyYAML) picks the vocoder with ``vocoder_type``:

- ``unit_hifigan`` (default): GAN training with :class:`VocoderBrain`, SpeechBrain
  crash-safe ``AtomicCheckpointer`` checkpoints every ``ckpt_interval_steps`` steps (a rerun resumes from
  the latest), then export to ``export_folder``.
- ``mean_mel``: :func:`fit_mean_mel_vocoder` (statistics only, seconds to minutes on CPU).
- ``conv_mel``: :func:`fit_conv_mel_vocoder` (a small unit -> mel network, ``number_of_steps`` AdamW steps;
  a few CPU minutes).

All read ``train_manifest`` (``{"id", "audio", "start"?, "duration"?}``) and
``train_units`` (``{"id", "units", "km_tag"}``, or ``most-dump-units`` output whose tag is in the
``<name>.km_tag`` header beside it), joined by id. See
``most_speech/vocoder/hparams/`` for complete files.
"""
from __future__ import annotations

import dataclasses
import logging
import sys

import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml

from most_speech.vocoder.brain import VocoderBrain
from most_speech.vocoder.data import SegmentDataset, collate_segments, join_manifest_units
from most_speech.vocoder.fit import fit_conv_mel_vocoder, fit_mean_mel_vocoder

logger = logging.getLogger(__name__)

__all__ = ["fit_conv_mel_vocoder", "fit_mean_mel_vocoder", "main", "train_unit_hifigan"]


def _segments(hparams, manifest_key, units_key, vocoder, seed):
    utterances, _ = join_manifest_units(
        hparams[manifest_key], hparams[units_key], hparams.get("data_root"), km_tag=vocoder.km_tag
    )
    return SegmentDataset(
        utterances, vocoder.sample_rate, vocoder.hop_length, hparams["segment_frames"], seed=seed
    )


def train_unit_hifigan(hparams: dict, run_opts: dict | None = None):
    """Train (or resume) the unit HiFi-GAN described by loaded ``hparams`` and export it.

    Returns
    -------
    VocoderBrain
        The brain after training (``brain.modules.generator`` is the vocoder).

    Examples
    --------
    >>> from hyperpyyaml import load_hyperpyyaml
    >>> from most_speech.vocoder import HPARAMS_DIR
    >>> with open(HPARAMS_DIR / "tiny.yaml") as f:  # doctest: +SKIP
    ...     hparams = load_hyperpyyaml(f, {"output_folder": "exp", "km_tag": "k",
    ...         "train_manifest": "m.jsonl", "train_units": "u.jsonl"})
    >>> train_unit_hifigan(hparams).optimizer_step  # doctest: +SKIP
    2
    """
    vocoder = hparams["generator"]
    train_set = _segments(hparams, "train_manifest", "train_units", vocoder, hparams.get("seed"))
    valid_set = None
    if hparams.get("valid_manifest"):
        valid_set = _segments(hparams, "valid_manifest", "valid_units", vocoder, 0)
    brain = VocoderBrain(
        modules={"generator": vocoder, "discriminator": hparams["discriminator"]},
        hparams=hparams,
        run_opts=run_opts or {},
        checkpointer=hparams["checkpointer"],
    )
    loader = {"batch_size": hparams["batch_size"], "shuffle": True, "collate_fn": collate_segments,
              "num_workers": hparams.get("num_workers", 0)}
    brain.fit(
        hparams["epoch_counter"], train_set, valid_set,
        train_loader_kwargs=loader,
        valid_loader_kwargs={**loader, "shuffle": False},
    )
    hparams["checkpointer"].save_and_keep_only(
        meta={"step": brain.optimizer_step}, num_to_keep=hparams.get("keep_checkpoints", 2)
    )
    vocoder.save(hparams["export_folder"])
    logger.info("trained %d steps; vocoder exported to %s", brain.optimizer_step, hparams["export_folder"])
    return brain


def main(argv=None):
    """Console entry point: ``most-train-vocoder hparams.yaml [--key=value ...]``.

    Examples
    --------
    >>> main(["hparams/tiny.yaml", "--output_folder=exp", "--km_tag=k",  # doctest: +SKIP
    ...       "--train_manifest=m.jsonl", "--train_units=u.jsonl"])
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    # SpeechBrain 1.1.2 parses --optimizer_step_limit (typed Optional[int]) as a string
    if isinstance(getattr(run_opts, "optimizer_step_limit", None), str):
        run_opts = dataclasses.replace(
            run_opts, optimizer_step_limit=int(run_opts.optimizer_step_limit)
        )
    with open(hparams_file, encoding="utf-8") as f:
        hparams = load_hyperpyyaml(f, overrides)
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
        save_env_desc=hparams.get("save_env_desc", True),  # runs `pip freeze`: slow
    )
    kind = hparams.get("vocoder_type", "unit_hifigan")
    if kind == "mean_mel":
        fit_mean_mel_vocoder(
            hparams["train_manifest"], hparams["train_units"], hparams["export_folder"],
            config=hparams.get("vocoder_config"), data_root=hparams.get("data_root"),
        )
    elif kind == "conv_mel":
        fit_conv_mel_vocoder(
            hparams["train_manifest"], hparams["train_units"], hparams["export_folder"],
            config=hparams.get("vocoder_config"), data_root=hparams.get("data_root"),
            steps=hparams["number_of_steps"], batch_size=hparams["batch_size"],
            segment_frames=hparams["segment_frames"], learning_rate=hparams["learning_rate"],
            seed=hparams.get("seed", 0), max_utterances=hparams.get("max_utterances"),
        )
    elif kind == "unit_hifigan":
        train_unit_hifigan(hparams, run_opts)
    else:
        raise ValueError(f"{hparams_file}: unknown vocoder_type {kind!r} (unit_hifigan, mean_mel or conv_mel)")


if __name__ == "__main__":
    main()
