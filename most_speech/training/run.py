"""``train.py hparams.yaml [--key=value ...]``: MoST training (stage 1 / stage 2) from a HyperPyYAML file.

Recipes' ``train.py`` files call :func:`main`. Launch:

* one device:      ``python train.py hparams/stage1_small.yaml --device=cuda:0``
* DDP:             ``torchrun --nproc_per_node=8 train.py hparams/stage1.yaml --engine=torch``
* DeepSpeed:       ``deepspeed train.py hparams/stage1.yaml`` (or ``torchrun ... --engine=deepspeed``)

What the yaml provides (see ``recipes/LibriHeavy/hparams/*.yaml``): ``output_folder``, ``seed``,
``tokenizer`` (a :class:`~most_speech.text.tokenizer.MoSTTokenizer`), ``tasks`` /  ``valid_tasks``
(manifest and weight per stream), ``speech_input`` or a ``template_config``
(:class:`~most_speech.data.templates.TemplateConfig`: prompts, deduplication), batching (``max_tokens``, ``steps_per_epoch``,
``number_of_epochs``), the model (``init_from`` a converted MoST checkpoint directory, or ``model_config``
a ``MoSTConfig`` for training from scratch), ``optimizer`` / ``lr_schedule`` callables, ``engine`` and
``deepspeed_config``, checkpointing (``ckpt_interval_steps``, ``keep_checkpoints``) and logging
(``log_interval``, ``use_tensorboard``, ``use_wandb``).

Outputs in ``output_folder``: ``save/`` (checkpoints; a rerun resumes from the newest good one),
``model/`` (final weights as safetensors + config + tokenizer + ``template.json``, the task templates' settings:
prompts, speech input, unit deduplication), ``train_log.txt``, ``log.txt``, ``tb/``,
``bad_items.jsonl`` (with ``skip_bad``).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Dict, Optional

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.distributed import main_process_only
from speechbrain.utils.train_logger import FileTrainLogger

from most_speech.data.collate import Collator
from most_speech.data.templates import TaskTemplates, TemplateConfig, load_template_fields
from most_speech.training.brain import MoSTBrain
from most_speech.training.checkpoints import AtomicCheckpointer, RNGState
from most_speech.training.data import (SPEECH_INPUT_TASKS, BatchList, MixedBatchStream, data_km_tag,
                                       load_training_examples, make_batches, task_specs)
from most_speech.training.features import HubertFeatures, StoreFeatures
from most_speech.training.monitor import TrainingMonitor

logger = logging.getLogger(__name__)

__all__ = ["main", "train", "build_model", "export_model", "most_config_for"]


# ---------------------------------------------------------------------------------------------------- model
def most_config_for(tokenizer, **kwargs):
    """A from-scratch ``MoSTConfig`` whose vocabulary and token layout are the tokenizer's.

    Examples
    --------
    >>> from most_speech.text.token_layout import TokenLayout
    >>> class Tok: layout = TokenLayout.build(text_vocab_size=30, num_units=8)
    >>> cfg = most_config_for(Tok(), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
    ...                       n_routed_experts=4, num_experts_per_tok=1, moe_intermediate_size=16)
    >>> cfg.vocab_size == Tok.layout.vocab_size, cfg.eos_token_id == Tok.layout.eos_id
    (True, True)
    """
    from most_speech.models import MoSTConfig

    layout = tokenizer.layout
    base = dict(vocab_size=layout.vocab_size, token_layout=layout.to_dict(), bos_token_id=layout.bos_id,
                eos_token_id=layout.eos_id, pad_token_id=layout.pad_id)
    return MoSTConfig(**{**base, **kwargs})


def build_model(init_from: Optional[str] = None, config=None, layout=None, dtype=None,
                gradient_checkpointing: bool = False):
    """A converted MoST checkpoint (``init_from``) or a fresh model from ``config``; checks the token layout.

    ``init_from`` is a directory written by ``most-convert-deepseek`` (or a previous run's ``model/``),
    loaded with ``AutoModelForCausalLM.from_pretrained`` (safetensors) after ``import most_speech.models``.
    """
    from transformers import AutoModelForCausalLM

    import most_speech.models  # noqa: F401 - registers the "most" model type with the Auto classes
    from most_speech.models import MoSTForCausalLM

    if (init_from is None) == (config is None):
        raise ValueError("set exactly one of init_from (a converted checkpoint dir) and model_config")
    if init_from is not None:
        if not (Path(init_from) / "config.json").is_file():
            raise FileNotFoundError(f"init_from={init_from!r} is not a model directory (no config.json); convert "
                                    f"DeepSeek-V2 weights with most-convert-deepseek first")
        model = AutoModelForCausalLM.from_pretrained(str(init_from), dtype=dtype or torch.float32)
    else:
        model = MoSTForCausalLM(config)
        if dtype is not None:
            model = model.to(dtype)
    if layout is not None and model.config.layout != layout:
        raise ValueError(f"the model's token layout (vocab_size={model.config.vocab_size}) differs from the "
                         f"tokenizer's (vocab_size={layout.vocab_size}): train with the tokenizer the model "
                         f"was converted for")
    if gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return model


@main_process_only
def export_model(model, tokenizer, folder, template_config: Optional[TemplateConfig] = None) -> Path:
    """Write ``model.save_pretrained`` (safetensors), the tokenizer and ``template.json`` into ``folder``, atomically."""
    folder = Path(folder)
    tmp, old = folder.with_name(f".tmp-{folder.name}"), folder.with_name(f".old-{folder.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save(tmp)
    if template_config is not None:
        template_config.save(tmp)
    if folder.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)
    logger.info("final model written to %s", folder)
    return folder


# ---------------------------------------------------------------------------------------------------- data
def _feature_source(hparams: dict, specs):
    if hparams.get("audio_features_store"):
        return StoreFeatures(hparams["audio_features_store"])
    encoder = hparams.get("audio_encoder")
    if encoder is None:
        return None
    entries: Dict[str, dict] = {}
    for spec in specs:
        if spec.task in SPEECH_INPUT_TASKS:
            with open(spec.manifest, encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        e = json.loads(line)
                        entries[str(e.get("feature_key", e.get("id")))] = e
    return HubertFeatures(encoder, entries, hparams.get("data_root"))


def _examples(hparams: dict, tasks, templates, feature_source, log_name: str):
    specs = task_specs(tasks)
    keys = set(feature_source.keys()) if isinstance(feature_source, StoreFeatures) else None
    return specs, load_training_examples(
        specs, templates, skip_bad=bool(hparams.get("skip_bad", False)),
        bad_items_log=Path(hparams["output_folder"]) / log_name, data_root=hparams.get("data_root"),
        check_audio=bool(hparams.get("check_audio", True)), feature_keys=keys)


def _template_config(hparams: dict) -> TemplateConfig:
    """The yaml's ``template_config``, else the one ``init_from`` was trained with (its ``template.json``: a
    stage 2 keeps stage 1's prompts and unit form), else MoST's defaults; ``speech_input`` from the yaml."""
    if hparams.get("template_config") is not None:
        return hparams["template_config"]
    fields = load_template_fields(hparams["init_from"]) if hparams.get("init_from") else {}
    fields["speech_input"] = hparams.get("speech_input", fields.get("speech_input", "continuous"))
    return TemplateConfig(**fields)


def _templates(hparams: dict, tokenizer) -> TaskTemplates:
    return TaskTemplates(tokenizer, _template_config(hparams))


def build_streams(hparams: dict, tokenizer, feature_source=None):
    """The training :class:`MixedBatchStream` and the validation loader (or None)."""
    templates = _templates(hparams, tokenizer)
    collate = Collator(tokenizer.layout, pad_to_multiple_of=hparams.get("pad_to_multiple_of"))
    specs, train_examples = _examples(hparams, hparams["tasks"], templates, feature_source, "bad_items.jsonl")
    seed = int(hparams.get("seed", 0))
    batches = {name: make_batches(exs, int(hparams["max_tokens"]), seed, hparams.get("max_batch_size"))
               for name, exs in train_examples.items()}
    stream = MixedBatchStream(batches, {s.name: s.weight for s in specs}, collate, seed=seed,
                              steps_per_epoch=int(hparams["steps_per_epoch"]),
                              rank=int(os.environ.get("RANK", 0)), world_size=int(os.environ.get("WORLD_SIZE", 1)),
                              block_size=int(hparams.get("mix_block_size", 100)))
    valid = None
    if hparams.get("valid_tasks"):
        _, valid_examples = _examples(hparams, hparams["valid_tasks"], templates, feature_source,
                                      "bad_valid_items.jsonl")
        valid_batches = [b for name in sorted(valid_examples)
                         for b in make_batches(valid_examples[name], int(hparams["max_tokens"]), 0,
                                               hparams.get("max_batch_size"))]
        valid = torch.utils.data.DataLoader(BatchList(valid_batches, collate), batch_size=None, collate_fn=_identity)
    return stream, valid


def _identity(batch):
    return batch


# ---------------------------------------------------------------------------------------------------- run
def _run_opts(run_opts):
    """SpeechBrain ``RunOptions``; a plain dict counts as options given on the command line."""
    from speechbrain.utils.run_opts import RunOptions

    if run_opts is None:
        return RunOptions()
    return RunOptions.from_dictionary(run_opts) if isinstance(run_opts, dict) else run_opts


def _grad_accumulation(hparams: dict, run_opts) -> int:
    if "grad_accumulation_factor" in run_opts.overridden_args:
        return int(run_opts["grad_accumulation_factor"])
    return int(hparams.get("grad_accumulation_factor") or 1)


def train(hparams: dict, run_opts=None) -> MoSTBrain:
    """Build data, model and trainer from loaded ``hparams``, train (resuming if possible), export the model."""
    run_opts = _run_opts(run_opts)
    tokenizer = hparams["tokenizer"]
    model = build_model(hparams.get("init_from"), hparams.get("model_config"), tokenizer.layout,
                        gradient_checkpointing=bool(hparams.get("gradient_checkpointing", False)))
    specs = task_specs(hparams["tasks"])
    if not specs:
        raise ValueError(f"hparams 'tasks': no stream has a positive weight ({sorted(hparams['tasks'])})")
    all_specs = specs + task_specs(hparams.get("valid_tasks") or {})
    km_tag = data_km_tag(all_specs, expected=model.config.km_tag or hparams.get("km_tag"))
    if km_tag is not None:
        model.config.km_tag = km_tag  # recorded in the exported config: vocoders of another tag are refused
    feature_source = _feature_source(hparams, specs)
    stream, valid_loader = build_streams(hparams, tokenizer, feature_source)
    epochs = int(hparams["number_of_epochs"])
    hparams.setdefault("total_steps", epochs * stream.steps_per_epoch // _grad_accumulation(hparams, run_opts))
    counter = hparams.get("epoch_counter") or sb.utils.epoch_loop.EpochCounter(epochs)
    checkpointer = AtomicCheckpointer(hparams["save_folder"], recoverables={"counter": counter, "rng": RNGState()})
    checkpointer.remove_stale_tmp()
    out = Path(hparams["output_folder"])
    monitor = TrainingMonitor(str(out), model.config.expert_groups_by_mark(), int(hparams.get("log_interval", 10)),
                              train_logger=FileTrainLogger(str(out / "train_log.txt")),
                              use_tensorboard=bool(hparams.get("use_tensorboard", True)),
                              use_wandb=bool(hparams.get("use_wandb", False)), wandb_kwargs=hparams.get("wandb"))
    brain = MoSTBrain(modules={"model": model}, hparams=hparams, run_opts=run_opts, checkpointer=checkpointer,
                      stream=stream, monitor=monitor, feature_source=feature_source)
    train_loader = torch.utils.data.DataLoader(stream, batch_size=None, collate_fn=_identity)
    brain.fit(counter, train_loader, valid_loader)
    logger.info("training done at optimizer step %d; steps per task %s", brain.optimizer_step,
                dict(monitor.task_steps))
    export_model(brain.model, tokenizer, out / "model", _template_config(hparams))
    monitor.close()
    return brain


def _init_distributed(hparams: dict, run_opts: dict) -> None:
    if hparams.get("engine", "torch") == "deepspeed":
        from most_speech.training.engines import init_deepspeed_distributed

        init_deepspeed_distributed(hparams.get("dist_backend"), bool(hparams.get("deepspeed_shm_comm", False)))
    else:
        sb.utils.distributed.ddp_init_group(run_opts)


def _strip_local_rank(argv):
    """The ``deepspeed`` launcher appends ``--local_rank=N``; move it to ``LOCAL_RANK`` (torchrun's way)."""
    out, skip = [], False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg.startswith("--local_rank=") or arg.startswith("--local-rank="):
            os.environ.setdefault("LOCAL_RANK", arg.split("=", 1)[1])
        elif arg in ("--local_rank", "--local-rank") and i + 1 < len(argv):
            os.environ.setdefault("LOCAL_RANK", argv[i + 1])
            skip = True
        else:
            out.append(arg)
    return out


def main(argv=None) -> MoSTBrain:
    """Entry point of the recipes' ``train.py``: ``train.py hparams.yaml [--key=value ...]``."""
    argv = _strip_local_rank(sys.argv[1:] if argv is None else list(argv))
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    with open(hparams_file, encoding="utf-8") as f:
        hparams = load_hyperpyyaml(f, overrides)
    _init_distributed(hparams, run_opts)
    sb.create_experiment_directory(experiment_directory=hparams["output_folder"], hyperparams_to_save=hparams_file,
                                   overrides=overrides)
    return train(hparams, run_opts)


if __name__ == "__main__":
    main()
