"""MoSTForCausalLM: parity with transformers' DeepSeek-V2, generation with the cache, losses, routing outputs."""
import pytest
import torch
from transformers import AutoModelForCausalLM, DeepseekV2Config, DeepseekV2ForCausalLM

import most_speech.models  # noqa: F401  (registers the Auto classes)
from most_speech.models import MoSTConfig, MoSTForCausalLM
from most_speech.models.convert_deepseek import convert_deepseek
from most_speech.text.token_layout import TokenLayout

YARN = {"type": "yarn", "factor": 40, "original_max_position_embeddings": 64, "beta_fast": 32, "beta_slow": 1,
        "mscale": 0.707, "mscale_all_dim": 0.707}


def tiny_deepseek(q_lora_rank=None, rope_scaling=None, **kw):
    cfg = dict(vocab_size=300, hidden_size=64, intermediate_size=96, moe_intermediate_size=32, num_hidden_layers=3,
               num_attention_heads=4, num_key_value_heads=4, n_routed_experts=8, n_shared_experts=1,
               num_experts_per_tok=2, first_k_dense_replace=1, kv_lora_rank=32, q_lora_rank=q_lora_rank,
               qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16, max_position_embeddings=2560,
               bos_token_id=0, eos_token_id=1, pad_token_id=1, rope_theta=10000.0)
    if rope_scaling:
        cfg["rope_scaling"] = dict(rope_scaling)
    cfg.update(kw)
    torch.manual_seed(0)
    model = DeepseekV2ForCausalLM(DeepseekV2Config(**cfg)).eval()
    return model, cfg


def parity_layout(vocab=300):
    # Same vocabulary size as the source, so no rows are added; marks only matter with routing on.
    return TokenLayout.build(text_vocab_size=vocab - 24, num_units=16, bos_id=0, eos_id=1, vocab_size=vocab)


@pytest.mark.parametrize("q_lora_rank,rope_scaling", [(None, None), (16, YARN)])
def test_logits_equal_transformers_deepseek_after_conversion(tmp_path, q_lora_rank, rope_scaling):
    ref, _ = tiny_deepseek(q_lora_rank, rope_scaling)
    ref.save_pretrained(tmp_path / "ds")
    convert_deepseek(tmp_path / "ds", tmp_path / "most", layout=parity_layout(), use_modality_aware_routing=False)
    ours = AutoModelForCausalLM.from_pretrained(tmp_path / "most").eval()
    assert isinstance(ours, MoSTForCausalLM)
    ids = torch.randint(0, 300, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        diff = (ours(ids).logits - ref(ids).logits).abs().max().item()
    assert diff <= 1e-4


def test_loading_transformers_weights_directly_matches(tmp_path):
    ref, cfg = tiny_deepseek()
    ours = MoSTForCausalLM(MoSTConfig(**cfg, use_modality_aware_routing=False)).eval()
    missing, unexpected = ours.load_state_dict(ref.state_dict(), strict=False)
    assert not unexpected and all("rotary" in k for k in missing)
    ids = torch.randint(0, 300, (1, 17))
    with torch.no_grad():
        assert torch.allclose(ours(ids).logits, ref(ids).logits, atol=1e-4)


def tiny_most(**kw):
    torch.manual_seed(0)
    return MoSTForCausalLM(MoSTConfig.tiny(**kw)).eval()


def test_generation_with_cache_equals_without():
    model = tiny_most()
    ids = torch.randint(0, 250, (2, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        a = model.generate(ids, max_new_tokens=12, do_sample=False, use_cache=True, eos_token_id=None)
        b = model.generate(ids, max_new_tokens=12, do_sample=False, use_cache=False, eos_token_id=None)
    assert a.shape == (2, 21)
    assert torch.equal(a, b)


def test_left_padded_batch_generates_like_single_sequences():
    model = tiny_most()
    pad = model.config.pad_token_id
    seqs = [torch.randint(2, 250, (n,), generator=torch.Generator().manual_seed(n)) for n in (5, 9)]
    batch = torch.full((2, 9), pad)
    mask = torch.zeros(2, 9, dtype=torch.long)
    for i, s in enumerate(seqs):
        batch[i, 9 - len(s):] = s
        mask[i, 9 - len(s):] = 1
    with torch.no_grad():
        out = model.generate(batch, attention_mask=mask, max_new_tokens=6, do_sample=False, eos_token_id=None)
        for i, s in enumerate(seqs):
            single = model.generate(s[None], max_new_tokens=6, do_sample=False, eos_token_id=None)
            assert torch.equal(out[i, 9:], single[0, len(s):])


def test_loss_is_lm_loss_plus_aux_and_aux_is_reported():
    model = tiny_most(aux_loss_alpha=0.01).train()
    ids = torch.randint(0, 250, (2, 12))
    out = model(ids, labels=ids)
    assert out.aux_loss.item() > 0
    assert torch.allclose(out.loss, out.lm_loss + out.aux_loss)
    out.loss.backward()
    router = model.model.layers[1].mlp.gate.weight
    assert router.grad is not None and router.grad.abs().sum() > 0
    model.eval()
    assert model(ids, labels=ids).aux_loss.item() == 0.0


def test_routing_counts_follow_the_token_layout():
    model = tiny_most()
    layout = model.config.layout
    text = torch.randint(0, layout.text_vocab_size, (1, 6))
    units = torch.tensor([[layout.unit_id(u) for u in range(4)]])
    ids = torch.cat([text, units], 1)
    out = model(ids)
    counts = out.routing_counts[0]  # [marks, experts]
    groups = model.config.modality_expert_groups
    k = model.config.num_experts_per_tok
    assert counts[0].sum() == 6 * k and counts[1].sum() == 4 * k
    assert counts[0, groups["audio"]].sum() == 0 and counts[1, groups["text"]].sum() == 0


def test_token_outside_layout_is_refused():
    model = tiny_most()
    with pytest.raises(ValueError, match="outside the token layout"):
        model(torch.tensor([[1, model.config.vocab_size + 3]]))


def test_save_and_load_roundtrip_safetensors(tmp_path):
    model = tiny_most()
    model.save_pretrained(tmp_path / "m")
    names = {p.name for p in (tmp_path / "m").iterdir()}
    assert "model.safetensors" in names and not any(n.endswith(".bin") for n in names)
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "m").eval()
    ids = torch.randint(0, 250, (1, 8))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, again(ids).logits)
