"""Recipe hparams load; initialisation from a converted checkpoint dir or from scratch; optimizer/schedule."""
from pathlib import Path

import pytest
import torch
from hyperpyyaml import load_hyperpyyaml

from most_speech.models import MoSTConfig, MoSTForCausalLM
from most_speech.training.engines import TorchEngine, load_deepspeed_config
from most_speech.training.optim import build_adamw, build_schedule
from most_speech.training.run import build_model, most_config_for
from most_speech.training.synthetic import make_synthetic_corpus

ROOT = Path(__file__).resolve().parents[2]
SMALL_MODEL = dict(hidden_size=32, intermediate_size=64, moe_intermediate_size=16, num_hidden_layers=2,
                   num_attention_heads=2, num_key_value_heads=2, n_routed_experts=4, num_experts_per_tok=1,
                   first_k_dense_replace=1, kv_lora_rank=16, q_lora_rank=None, qk_nope_head_dim=8,
                   qk_rope_head_dim=8, v_head_dim=8)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """A 'converted' MoST checkpoint dir holding model and tokenizer, as most-convert-deepseek leaves it."""
    d = tmp_path_factory.mktemp("conv")
    paths = make_synthetic_corpus(d / "corpus", num_utterances=4)
    from most_speech.text.tokenizer import MoSTTokenizer

    tok = MoSTTokenizer.from_pretrained(paths["tokenizer_dir"])
    model = MoSTForCausalLM(most_config_for(tok, **SMALL_MODEL))
    model.save_pretrained(str(d / "most_init"))
    tok.save(d / "most_init")
    return d / "most_init", model


def _load(path, overrides):
    with open(path, encoding="utf-8") as f:
        return load_hyperpyyaml(f, overrides)


def test_stage1_small_builds_a_from_scratch_config(converted, tmp_path):
    hp = _load(ROOT / "recipes/LibriHeavy/hparams/stage1_small.yaml",
               {"data_folder": str(tmp_path), "tokenizer_dir": str(converted[0]), "output_folder": str(tmp_path)})
    cfg = hp["model_config"]
    assert isinstance(cfg, MoSTConfig) and cfg.vocab_size == hp["tokenizer"].layout.vocab_size
    assert cfg.modality_expert_groups == {"text": list(range(8)), "audio": list(range(8, 16))}
    assert {t: s["weight"] for t, s in hp["tasks"].items()} == {"asr": 0.4, "tts": 0.4, "text_lm": 0.2}
    opt = hp["optimizer"](torch.nn.Linear(2, 2))
    assert opt.defaults["betas"] == (0.9, 0.95)


@pytest.mark.parametrize("recipe", ["LibriHeavy/hparams/stage1.yaml", "SmolTalk/hparams/stage2.yaml"])
def test_full_size_configs_initialise_from_a_converted_checkpoint(converted, tmp_path, recipe):
    model_dir, reference = converted
    hp = _load(ROOT / "recipes" / recipe, {"data_folder": str(tmp_path), "init_from": str(model_dir),
                                           "tokenizer_dir": str(model_dir), "audio_features_store": "feats",
                                           "output_folder": str(tmp_path)})
    assert hp["engine"] == "deepspeed" and hp["deepspeed_precision"] == "bf16"
    ds = load_deepspeed_config(ROOT / "recipes/LibriHeavy/hparams/deepspeed_zero2.json", 4, hp["max_grad_norm"])
    assert ds["zero_optimization"]["stage"] == 2 and ds["bf16"]["enabled"] and ds["gradient_clipping"] == 1.0
    model = build_model(hp["init_from"], hp["model_config"], hp["tokenizer"].layout)
    for (k, a), b in zip(reference.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), k
    weights = {t: s["weight"] for t, s in hp["tasks"].items()}
    assert abs(sum(weights.values()) - 1.0) < 1e-9


def test_build_model_checks_layout_and_arguments(converted, tmp_path):
    model_dir, _ = converted
    other = MoSTConfig.tiny()
    with pytest.raises(ValueError, match="token layout"):
        build_model(str(model_dir), None, other.layout)
    with pytest.raises(ValueError, match="exactly one"):
        build_model(None, None)
    with pytest.raises(FileNotFoundError, match="most-convert-deepseek"):
        build_model(str(tmp_path), None)


def test_schedule_warmup_then_cosine_floor():
    opt = torch.optim.AdamW(torch.nn.Linear(2, 2).parameters(), lr=1.0)
    sched = build_schedule(opt, total_steps=20, warmup_steps=4, decay="cosine", min_lr_ratio=0.1)
    lrs = []
    for _ in range(20):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[:5] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))
    assert sched.get_last_lr()[0] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="decay"):
        build_schedule(opt, 10, decay="exp")


def test_adamw_excludes_norms_and_biases_from_decay():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.LayerNorm(3))
    decayed, plain = build_adamw(model, lr=1e-3, weight_decay=0.1).param_groups
    assert len(decayed["params"]) == 1 and decayed["params"][0] is model[0].weight
    assert plain["weight_decay"] == 0.0 and len(plain["params"]) == 3


def test_torch_engine_clips_and_skips_non_finite_steps():
    model = torch.nn.Linear(2, 1, bias=False)
    engine = TorchEngine(model, torch.optim.SGD(model.parameters(), lr=1.0), max_grad_norm=0.5)
    before = model.weight.detach().clone()
    engine.backward((model(torch.full((1, 2), 100.0))).sum())
    norm = engine.step()
    assert norm > 0.5 and float(torch.linalg.norm(model.weight.detach() - before)) == pytest.approx(0.5, rel=1e-4)
    before = model.weight.detach().clone()
    engine.backward(model(torch.tensor([[float("inf"), 1.0]])).sum())
    engine.step()
    assert engine.skipped_steps == 1 and torch.equal(model.weight, before)


def test_template_config_comes_from_the_yaml_else_the_initial_model(tmp_path):
    import json

    from most_speech.data.templates import TemplateConfig
    from most_speech.training.run import _template_config

    assert _template_config({"speech_input": "units"}) == TemplateConfig(speech_input="units")
    stage1 = tmp_path / "stage1_model"
    stage1.mkdir()
    (stage1 / "template.json").write_text(json.dumps({"speech_input": "units", "dedup_target_units": False,
                                                      "tts_instruction": "Speak:"}))
    # a stage 2 from it keeps its prompts and unit form; the yaml's speech_input wins
    got = _template_config({"init_from": str(stage1), "speech_input": "continuous"})
    assert got == TemplateConfig(speech_input="continuous", dedup_target_units=False, tts_instruction="Speak:")
    own = TemplateConfig(dedup_target_units=True)
    assert _template_config({"init_from": str(stage1), "template_config": own}) is own
    assert _template_config({"init_from": str(tmp_path)}) == TemplateConfig()   # a converted checkpoint: none saved
