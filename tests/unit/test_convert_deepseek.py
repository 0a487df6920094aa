"""most-convert-deepseek on tiny checkpoints in both DeepSeek-V2 layouts (transformers' and the original names)."""
import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

import most_speech.models  # noqa: F401
from most_speech.models.convert_deepseek import convert_deepseek, main
from most_speech.text.token_layout import TokenLayout

from test_modeling import YARN, parity_layout, tiny_deepseek


def per_expert_state(model):
    """The state dict with routed experts one tensor per expert (DeepSeek's original names)."""
    out = {}
    for k, v in model.state_dict().items():
        if k.endswith("experts.gate_up_proj"):
            base, inter = k[: -len("gate_up_proj")], v.shape[1] // 2
            for i in range(v.shape[0]):
                out[f"{base}{i}.gate_proj.weight"] = v[i, :inter].clone()
                out[f"{base}{i}.up_proj.weight"] = v[i, inter:].clone()
        elif k.endswith("experts.down_proj"):
            base = k[: -len("down_proj")]
            for i in range(v.shape[0]):
                out[f"{base}{i}.down_proj.weight"] = v[i].clone()
        else:
            out[k] = v.clone()
    return out


def write_original_checkpoint(model, cfg, path):
    """Write a checkpoint as DeepSeek's remote-code release lays it out: per-expert names, two shards, index."""
    path.mkdir()
    state = per_expert_state(model)
    keys = sorted(state)
    half = len(keys) // 2
    weight_map = {}
    for n, part in enumerate((keys[:half], keys[half:]), 1):
        fname = f"model-0000{n}-of-00002.safetensors"
        save_file({k: state[k].contiguous() for k in part}, str(path / fname), metadata={"format": "pt"})
        weight_map.update({k: fname for k in part})
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    original = dict(cfg, model_type="deepseek_v2", architectures=["DeepseekV2ForCausalLM"], aux_loss_alpha=0.001,
                    seq_aux=True, moe_layer_freq=1, scoring_func="softmax", topk_method="greedy", n_group=1,
                    topk_group=1, norm_topk_prob=False, ep_size=1, torch_dtype="float32",
                    auto_map={"AutoConfig": "configuration_deepseek.DeepseekV2Config"})
    (path / "config.json").write_text(json.dumps(original))
    return state


def compare_logits(ref, most_dir):
    ours = AutoModelForCausalLM.from_pretrained(most_dir).eval()
    ids = torch.randint(0, 300, (2, 30), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        return (ours(ids).logits[..., :300] - ref(ids).logits).abs().max().item()


def test_original_remote_code_layout_converts_with_parity(tmp_path):
    ref, cfg = tiny_deepseek(rope_scaling=YARN)
    write_original_checkpoint(ref, cfg, tmp_path / "orig")
    convert_deepseek(tmp_path / "orig", tmp_path / "most", layout=parity_layout(), use_modality_aware_routing=False)
    assert compare_logits(ref, tmp_path / "most") <= 1e-4


def test_fused_in_memory_layout_converts_with_parity(tmp_path):
    ref, cfg = tiny_deepseek()
    (tmp_path / "fused").mkdir()
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(tmp_path / "fused/model.safetensors"))
    (tmp_path / "fused/config.json").write_text(json.dumps(dict(cfg, model_type="deepseek_v2")))
    convert_deepseek(tmp_path / "fused", tmp_path / "most", layout=parity_layout(), use_modality_aware_routing=False)
    assert compare_logits(ref, tmp_path / "most") <= 1e-4


def test_inherited_weights_bit_exact_and_unit_rows_added(tmp_path):
    ref, cfg = tiny_deepseek()
    src_state = write_original_checkpoint(ref, cfg, tmp_path / "orig")
    layout = TokenLayout.build(text_vocab_size=300, num_units=20, bos_id=0, eos_id=1)
    main([str(tmp_path / "orig"), str(tmp_path / "most"), "--layout", str(layout.save(tmp_path / "layout.json"))])
    out = load_file(str(tmp_path / "most/model.safetensors"))
    assert set(out) == set(src_state)
    for name, tensor in src_state.items():
        if name in ("model.embed_tokens.weight", "lm_head.weight"):
            assert out[name].shape == (layout.vocab_size, 64)
            assert torch.equal(out[name][:300], tensor)
            assert torch.isfinite(out[name][300:]).all() and out[name][300:].abs().sum() > 0
        else:
            assert torch.equal(out[name], tensor), name
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "most")
    assert model.config.use_modality_aware_routing
    assert model.config.modality_expert_groups == {"text": [0, 1, 2, 3], "audio": [4, 5, 6, 7]}
    assert TokenLayout.load(tmp_path / "most").to_dict() == layout.to_dict()
    assert model.model.modality_table.tolist() == layout.modality_table()
    inv_freq = model.model.rotary_emb.inv_freq
    assert torch.isfinite(inv_freq).all() and inv_freq[0] == 1.0
    units = torch.tensor([[layout.unit_id(3), layout.boa_id, 5]])
    assert model(units).logits.shape == (1, 3, layout.vocab_size)


def test_failed_conversion_leaves_nothing_and_existing_dst_is_kept(tmp_path):
    ref, cfg = tiny_deepseek()
    ref.save_pretrained(tmp_path / "ds")
    small = TokenLayout.build(text_vocab_size=100, num_units=4, bos_id=0, eos_id=1)
    with pytest.raises(ValueError, match="may only add rows"):
        convert_deepseek(tmp_path / "ds", tmp_path / "most", layout=small)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    (tmp_path / "most").mkdir()
    with pytest.raises(FileExistsError):
        convert_deepseek(tmp_path / "ds", tmp_path / "most", layout=parity_layout())
