"""Every hparams file of the recipes runs (a few optimizer steps, or a vocoder fit) on tiny generated data.

Small configs (mini, ablation_*, stage1_small, tiny) train as they are, only the data paths and the step count
overridden. Full-size configs (stage1, SmolTalk stage2) start from a tiny converted-style checkpoint
(``init_from``) with the engine switched to plain torch, so their data, template and optimisation sections
are exercised without DeepSeek-V2 weights or GPUs.
"""
import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from most_speech.audio.store import FeatureWriter, UnitWriter
from most_speech.recipes.tasks import write_task_manifests
from most_speech.training.run import main as train_main

ROOT = Path(__file__).resolve().parents[2]
HPARAMS = sorted((ROOT / "recipes").glob("*/hparams/*.yaml"))
TRAINING = [p for p in HPARAMS if "vocoder" not in p.name]
KM_TAG = "fbank-km16-smoke"
WORDS = "the red cat sees a big dog near blue house and runs".split()


def _jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """data/{train,dev}.jsonl + tasks/ (all five tasks), an 80-d feature store, units and a tokenizer."""
    d = tmp_path_factory.mktemp("hparams_data")
    rng = np.random.default_rng(0)
    rows = {s: [{"id": f"{s}-{i}", "audio": f"{s}{i}.wav", "duration": 1.0, "text": " ".join(rng.choice(WORDS, 5))}
                for i in range(n)] for s, n in (("train", 16), ("dev", 4))}
    for s in rows:
        _jsonl(d / f"{s}.jsonl", rows[s])
    speech_q = [{"id": f"q-{s}-{i}", "audio": f"q{s}{i}.wav", "question": "what is it", "answer": "a red cat", "output": "text",
                 "num_frames": 6} for s in ("train", "dev") for i in range(4)]
    with UnitWriter(d / "units.jsonl", KM_TAG) as w:
        for r in rows["train"] + rows["dev"]:
            w.write(r["id"], rng.integers(0, 16, 24))
    with FeatureWriter(d / "feats" / "feats.0-of-1") as w:
        for key in [r["id"] for r in rows["train"] + rows["dev"]] + [q["id"] for q in speech_q]:
            w.write(key, rng.standard_normal((25, 80)).astype(np.float32))
    write_task_manifests(d / "tasks", d / "train.jsonl", d / "units.jsonl", d / "tokenizer", d / "dev.jsonl",
                         d / "feats", frame_stack=4, vocab_size=60, num_units=16)
    for s in ("train", "dev"):
        _jsonl(d / "tasks" / f"speech_instruction_{s}.jsonl", [q for q in speech_q if f"-{s}-" in q["id"]])
        _jsonl(d / "tasks" / f"text_instruction_{s}.jsonl", [
            {"id": f"t-{s}-{i}", "messages": [{"role": "user", "content": "name a pet"},
                                              {"role": "assistant", "content": "a cat"}]} for i in range(4)])
    # the tiny config reads <data_folder>/{asr,tts,text_lm}.jsonl with unit input
    for task in ("asr", "tts", "text_lm"):
        (d / f"{task}.jsonl").write_text((d / "tasks" / f"{task}_train.jsonl").read_text())
    return d


@pytest.fixture(scope="module")
def init_dir(data, tmp_path_factory):
    """A tiny MoST checkpoint with the test tokenizer's layout, standing in for converted DeepSeek-V2 weights."""
    from most_speech.models import MoSTForCausalLM
    from most_speech.text.tokenizer import MoSTTokenizer
    from most_speech.training.run import most_config_for

    tok = MoSTTokenizer.from_pretrained(data / "tokenizer")
    cfg = most_config_for(tok, hidden_size=32, intermediate_size=64, moe_intermediate_size=16, num_hidden_layers=2,
                          num_attention_heads=2, num_key_value_heads=2, n_routed_experts=4, n_shared_experts=1,
                          num_experts_per_tok=2, first_k_dense_replace=1, kv_lora_rank=16, q_lora_rank=None,
                          qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8, audio_feature_dim=80)
    out = tmp_path_factory.mktemp("init")
    MoSTForCausalLM(cfg).save_pretrained(str(out), safe_serialization=True)
    tok.save(out)
    return out


def _overrides(path: Path, data: Path, init_dir: Path, out: Path):
    args = [f"--output_folder={out}", f"--data_folder={data}", f"--tokenizer_dir={data / 'tokenizer'}",
            f"--audio_features_store={data / 'feats'}", "--steps_per_epoch=2", "--number_of_epochs=1",
            "--lr_schedule=!name:most_speech.training.optim.build_schedule {warmup_steps: 1}",
            "--ckpt_interval_steps=0", "--log_interval=1", "--use_tensorboard=False", "--max_tokens=1024",
            "--device=cpu", "--noprogressbar"]
    text = path.read_text()
    if "init_from: !PLACEHOLDER" in text:  # full size: tiny weights, plain torch engine
        args += [f"--init_from={init_dir}", "--engine=torch", "--gradient_checkpointing=False",
                 "--grad_accumulation_factor=1"]
        args = [a for a in args if not a.startswith("--tokenizer_dir")] + (
            [f"--tokenizer_dir={data / 'tokenizer'}"] if "tokenizer_dir: !PLACEHOLDER" in text else [])
    if re.search(r"^feature_dim:", text, re.M):  # the test store's frames are 80-d
        args.append("--feature_dim=80")
    if "audio_features_store" not in text:
        args = [a for a in args if not a.startswith("--audio_features_store")]
    return args


@pytest.mark.parametrize("path", TRAINING, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_training_hparams_run_a_few_steps(path, data, init_dir, tmp_path):
    torch.manual_seed(0)
    brain = train_main([str(path), *_overrides(path, data, init_dir, tmp_path / "exp")])
    assert brain.optimizer_step == 2
    steps = dict(brain.monitor.task_steps)
    assert sum(steps.values()) == 2 and set(steps) <= set(brain.hparams.tasks)
    assert (tmp_path / "exp" / "model" / "model.safetensors").is_file()


def test_mini_speech_lm_stream_is_switched_by_its_weight(data, init_dir, tmp_path):
    path = next(p for p in TRAINING if p.name == "mini.yaml")
    weights = ["--asr_weight=0", "--tts_weight=0", "--text_lm_weight=0", "--speech_lm_weight=1"]
    brain = train_main([str(path), *_overrides(path, data, init_dir, tmp_path / "exp"), *weights])
    assert dict(brain.monitor.task_steps) == {"speech_lm": 2}


def test_mini_trains_the_tts_alignment_prior_and_the_unit_ctc_on_tts_batches(data, init_dir, tmp_path):
    path = next(p for p in TRAINING if p.name == "mini.yaml")
    weights = ["--asr_weight=0", "--tts_weight=1", "--text_lm_weight=0", "--speech_lm_weight=0",
               "--tts_alignment_weight=1.0"]
    brain = train_main([str(path), *_overrides(path, data, init_dir, tmp_path / "exp"), *weights])
    assert dict(brain.monitor.task_steps) == {"tts": 2}
    assert [layer.self_attn.record_heads for layer in brain.modules["model"].model.layers] == [0, 1, 1, 1]
    log = (tmp_path / "exp" / "train_log.txt").read_text()
    prior = [float(v) for v in re.findall(r"train tts_alignment_loss: ([0-9.e+-]+)", log)]
    assert len(prior) == 2 and all(0.0 < v < 1.0 for v in prior)
    assert len(re.findall(r"train unit_ctc_loss: ", log)) == 2


def test_mini_logs_the_audio_ctc_loss_of_asr_batches(data, init_dir, tmp_path):
    path = next(p for p in TRAINING if p.name == "mini.yaml")
    weights = ["--asr_weight=1", "--tts_weight=0", "--text_lm_weight=0", "--speech_lm_weight=0"]
    brain = train_main([str(path), *_overrides(path, data, init_dir, tmp_path / "exp"), *weights])
    assert dict(brain.monitor.task_steps) == {"asr": 2}
    log = (tmp_path / "exp" / "train_log.txt").read_text()
    assert len(re.findall(r"train ctc_loss: ", log)) == 2 and "unit_ctc_loss" not in log


VOCODER_HPARAMS = {"vocoder_mean_mel.yaml": [], "vocoder_conv_mel.yaml": ["--number_of_steps=3", "--batch_size=2"]}


def test_every_vocoder_hparams_file_is_fitted_below():
    assert {p.name for p in HPARAMS if "vocoder" in p.name} == set(VOCODER_HPARAMS)


@pytest.mark.parametrize("name", sorted(VOCODER_HPARAMS))
def test_vocoder_hparams_fit(tmp_path, name):
    from most_speech.vocoder import load_vocoder
    from most_speech.vocoder.train import main as vocoder_main

    rng = np.random.default_rng(1)
    rows, units = [], []
    for i in range(3):
        sf.write(tmp_path / f"u{i}.wav", (0.1 * rng.standard_normal(16000)).astype(np.float32), 16000)
        rows.append({"id": f"u{i}", "audio": str(tmp_path / f"u{i}.wav"), "duration": 1.0})
        units.append({"id": f"u{i}", "units": rng.integers(0, 8, 100).tolist(), "km_tag": KM_TAG})
    _jsonl(tmp_path / "m.jsonl", rows)
    _jsonl(tmp_path / "units.jsonl", units)
    vocoder_main([str(ROOT / "recipes" / "LibriHeavy" / "hparams" / name),
                  f"--output_folder={tmp_path / 'voc'}", f"--train_manifest={tmp_path / 'm.jsonl'}",
                  f"--train_units={tmp_path / 'units.jsonl'}", f"--km_tag={KM_TAG}", "--num_units=8",
                  "--unit_rate=100", "--save_env_desc=False", *VOCODER_HPARAMS[name]])
    voc = load_vocoder(tmp_path / "voc" / "vocoder")
    assert voc.km_tag == KM_TAG
    wav = voc.synthesize([[1, 2, 3, 4, 5]], km_tag=KM_TAG)[0]
    assert wav.ndim == 1 and wav.shape[0] > 0 and torch.isfinite(torch.as_tensor(wav)).all()


def _plain_yaml(path: Path) -> dict:
    """An hparams file as plain data, every HyperPyYAML tag (``!ref``, ``!new:`` ...) kept as (tag, value)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def tagged(loader, suffix, node):
        if isinstance(node, yaml.MappingNode):
            return suffix, loader.construct_mapping(node, deep=True)
        if isinstance(node, yaml.SequenceNode):
            return suffix, loader.construct_sequence(node, deep=True)
        return suffix, loader.construct_scalar(node)

    Loader.add_multi_constructor("!", tagged)
    return yaml.load(path.read_text(), Loader)


# what an ablation variant may change (its MoE layout) or set on its own (its fixed mix, no speech_lm stream)
ABLATION_MODEL_KEYS = {"n_shared_experts", "num_experts_per_tok", "first_k_dense_replace", "use_modality_aware_routing"}
ABLATION_OWN_KEYS = {"tasks", "valid_tasks"}


@pytest.mark.parametrize("variant", ["dense", "moe", "mamoe", "mamoe_noshared"])
def test_ablation_variants_are_the_mini_model_but_for_the_moe_layout(variant):
    hparams = ROOT / "recipes" / "LibriHeavy" / "hparams"
    mini = _plain_yaml(hparams / "mini.yaml")
    ablation = _plain_yaml(hparams / f"ablation_{variant}.yaml")
    (_, mini_model), (_, model) = mini.pop("model_config"), ablation.pop("model_config")

    def common(cfg):
        return {k: v for k, v in cfg.items() if k not in ABLATION_MODEL_KEYS}

    assert common(model) == common(mini_model)
    shared = {k: v for k, v in ablation.items() if k not in ABLATION_OWN_KEYS}
    assert shared == {k: mini[k] for k in shared}, "ablation settings drifted from mini.yaml"
    assert ablation["tasks"].keys() == {"asr", "tts", "text_lm"}


def test_commonvoice_mini_pins_keys_that_mini_yaml_has():
    """CommonVoice's --mini trains LibriHeavy's mini.yaml with earlier-model keys added to --train_args: each
    must still be a top-level key there (a renamed key would be added beside it and change nothing)."""
    run_sh = (ROOT / "recipes" / "CommonVoice" / "run.sh").read_text()
    pinned = re.search(r"for kv in (.*?); do", run_sh, re.S).group(1).replace("\\\n", " ").split()
    mini = _plain_yaml(ROOT / "recipes" / "LibriHeavy" / "hparams" / "mini.yaml")
    keys = [kv[2:].split("=")[0] for kv in pinned]
    assert {"hidden_size", "asr_weight", "tts_weight", "dedup_target_units"} <= set(keys)
    assert [k for k in keys if k not in mini] == []
