"""MLA attention: parity with transformers' DeepseekV2Attention, absorbed decode, masks, RoPE/YaRN."""
import pytest
import torch
from transformers import DynamicCache
from transformers.masking_utils import create_causal_mask
from transformers.models.deepseek_v2.modeling_deepseek_v2 import (DeepseekV2Attention, DeepseekV2RMSNorm,
                                                                   DeepseekV2RotaryEmbedding, apply_rotary_emb)

from most_speech.models.configuration import MoSTConfig
from most_speech.models.mla import MLAAttention, MoSTRMSNorm, MoSTRotaryEmbedding, apply_rope

ATOL = 1e-5

YARN = dict(rope_type="yarn", rope_theta=10000.0, factor=40, original_max_position_embeddings=16, beta_fast=32,
            beta_slow=1, mscale=0.707, mscale_all_dim=0.707)
# mscale != mscale_all_dim: the cos/sin multiplier is no longer 1, so it is exercised too.
YARN_SCALED = dict(YARN, mscale=1.0, mscale_all_dim=0.5)

CONFIGS = {
    "default": {},
    "q_lora": dict(q_lora_rank=24),
    "yarn": dict(rope_parameters=YARN, max_position_embeddings=640),
    "yarn_scaled_q_lora": dict(rope_parameters=YARN_SCALED, max_position_embeddings=640, q_lora_rank=24),
}


def make_config(name="default", **extra):
    cfg = MoSTConfig.tiny(**CONFIGS[name], **extra)
    cfg._attn_implementation = "sdpa"
    return cfg


def make_pair(cfg, seed=0):
    """Our attention and transformers' with the same random weights (norm weights randomised too)."""
    torch.manual_seed(seed)
    theirs = DeepseekV2Attention(cfg, layer_idx=0).eval()
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            if "layernorm" in name:
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
    ours = MLAAttention(cfg, layer_idx=0).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return ours, theirs


def positions(batch, length, start=0):
    return torch.arange(start, start + length)[None].expand(batch, -1)


def run_ours(attn, cfg, x, pos, **kw):
    return attn(x, MoSTRotaryEmbedding(cfg)(x, pos), **kw)


def run_theirs(attn, cfg, x, pos, **kw):
    return attn(x, position_embeddings=DeepseekV2RotaryEmbedding(cfg)(x, pos), **kw)[0]


# ---------------------------------------------------------------------------------------------- norm / rope
def test_rmsnorm_matches_deepseek():
    torch.manual_seed(0)
    ours, theirs = MoSTRMSNorm(16, eps=1e-5), DeepseekV2RMSNorm(16, eps=1e-5)
    with torch.no_grad():
        theirs.weight.normal_()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(3, 5, 16) * 4
    torch.testing.assert_close(ours(x), theirs(x), atol=1e-6, rtol=1e-6)
    xb = x.bfloat16()
    assert ours(xb).dtype == theirs(xb).dtype
    torch.testing.assert_close(ours(xb), theirs(xb), atol=0, rtol=0)


@pytest.mark.parametrize("name", ["default", "yarn", "yarn_scaled_q_lora"])
def test_rope_matches_transformers_complex_pairs(name):
    cfg = make_config(name)
    torch.manual_seed(1)
    pos = torch.tensor([[0, 3, 17, 100, 639], [5, 6, 7, 8, 600]])
    q = torch.randn(2, 4, 5, cfg.qk_rope_head_dim)
    k = torch.randn(2, 1, 5, cfg.qk_rope_head_dim)
    freqs_cis = DeepseekV2RotaryEmbedding(cfg)(q, pos)
    cos, sin = MoSTRotaryEmbedding(cfg)(q, pos)
    assert cos.shape == (2, 5, cfg.qk_rope_head_dim // 2) and cos.dtype == torch.float32
    torch.testing.assert_close(cos, freqs_cis.real, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(sin, freqs_cis.imag, atol=1e-6, rtol=1e-6)
    q_ref, k_ref = apply_rotary_emb(q, k, freqs_cis)
    q_ours, k_ours = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    torch.testing.assert_close(q_ours, q_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(k_ours, k_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(q_ours @ k_ours.transpose(-1, -2), q_ref @ k_ref.transpose(-1, -2),
                               atol=1e-4, rtol=1e-5)


def test_rope_is_relative_and_scaled_for_yarn():
    cfg = make_config("yarn_scaled_q_lora")
    rope = MoSTRotaryEmbedding(cfg)
    assert rope.attention_scaling != pytest.approx(1.0)
    torch.manual_seed(2)
    q, k = torch.randn(1, 1, 1, cfg.qk_rope_head_dim), torch.randn(1, 1, 1, cfg.qk_rope_head_dim)

    def score(pq, pk):
        cq, sq = rope(q, torch.tensor([[pq]]))
        ck, sk = rope(k, torch.tensor([[pk]]))
        return (apply_rope(q, cq, sq) * apply_rope(k, ck, sk)).sum()

    torch.testing.assert_close(score(10, 3), score(107, 100), atol=1e-4, rtol=1e-4)
    cq, sq = rope(q, torch.tensor([[0]]))
    torch.testing.assert_close(apply_rope(q, cq, sq), q * rope.attention_scaling)


def test_rope_rejects_dynamic_and_bad_shapes():
    cfg = make_config()
    cfg.rope_parameters = dict(rope_type="dynamic", rope_theta=10000.0, factor=2.0)
    with pytest.raises(ValueError, match="dynamic"):
        MoSTRotaryEmbedding(cfg)
    cos, sin = MoSTRotaryEmbedding(make_config())(torch.zeros(1), positions(1, 3))
    with pytest.raises(ValueError, match="apply_rope"):
        apply_rope(torch.randn(1, 2, 3, 6), cos, sin)


# ---------------------------------------------------------------------------------------------- parity
def test_scaling_matches_transformers():
    for name in CONFIGS:
        ours, theirs = make_pair(make_config(name))
        assert ours.scaling == pytest.approx(theirs.scaling, rel=1e-12)
    assert MLAAttention(make_config("yarn"), 0).scaling > make_config().qk_head_dim ** -0.5


@pytest.mark.parametrize("name", list(CONFIGS))
def test_prefill_matches_transformers(name):
    cfg = make_config(name)
    ours, theirs = make_pair(cfg)
    torch.manual_seed(3)
    x = torch.randn(2, 9, cfg.hidden_size)
    pos = positions(2, 9, start=590 if "yarn" in name else 0)
    with torch.no_grad():
        ref = run_theirs(theirs, cfg, x, pos)
        out = run_ours(ours, cfg, x, pos)
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=ATOL)


@pytest.mark.parametrize("name", ["default", "yarn_scaled_q_lora"])
def test_cache_and_decode_match_transformers(name):
    """Our cache holds exactly transformers' latent + rotated key; our absorbed step equals their expanded one."""
    cfg = make_config(name)
    ours, theirs = make_pair(cfg)
    torch.manual_seed(4)
    x = torch.randn(1, 8, cfg.hidden_size)
    c_ours, c_theirs = DynamicCache(), DynamicCache()
    with torch.no_grad():
        run_ours(ours, cfg, x[:, :6], positions(1, 6), past_key_values=c_ours)
        run_theirs(theirs, cfg, x[:, :6], positions(1, 6), past_key_values=c_theirs)
        for layer_o, layer_t in zip(c_ours.layers, c_theirs.layers):
            torch.testing.assert_close(layer_o.keys, layer_t.keys, atol=ATOL, rtol=ATOL)
            torch.testing.assert_close(layer_o.values, layer_t.values, atol=ATOL, rtol=ATOL)
        for t in (6, 7):
            step_o = run_ours(ours, cfg, x[:, t:t + 1], positions(1, 1, t), past_key_values=c_ours)
            step_t = run_theirs(theirs, cfg, x[:, t:t + 1], positions(1, 1, t), past_key_values=c_theirs)
            torch.testing.assert_close(step_o, step_t, atol=ATOL, rtol=ATOL)
    assert c_ours.layers[0].keys.shape == (1, 1, 8, cfg.kv_lora_rank)


# ---------------------------------------------------------------------------------------------- decode paths
@pytest.mark.parametrize("name", ["default", "yarn_scaled_q_lora"])
def test_stepwise_decode_equals_full_prefill(name):
    cfg = make_config(name)
    ours, _ = make_pair(cfg)
    torch.manual_seed(5)
    x = torch.randn(2, 12, cfg.hidden_size)
    with torch.no_grad():
        full = run_ours(ours, cfg, x, positions(2, 12))
        cache = DynamicCache()
        pieces = [run_ours(ours, cfg, x[:, :4], positions(2, 4), past_key_values=cache)]
        pieces.append(run_ours(ours, cfg, x[:, 4:7], positions(2, 3, 4), past_key_values=cache))  # chunk
        for t in range(7, 12):
            pieces.append(run_ours(ours, cfg, x[:, t:t + 1], positions(2, 1, t), past_key_values=cache))
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=ATOL, rtol=ATOL)


def test_decode_never_expands_the_cache():
    cfg = make_config()
    attn, _ = make_pair(cfg)
    calls = []
    attn.kv_b_proj.register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape))
    x, cache = torch.randn(1, 6, cfg.hidden_size), DynamicCache()
    with torch.no_grad():
        run_ours(attn, cfg, x[:, :5], positions(1, 5), past_key_values=cache)
        assert len(calls) == 1                    # prefill expands its own 5 tokens once
        run_ours(attn, cfg, x[:, 5:], positions(1, 1, 5), past_key_values=cache)
    assert len(calls) == 1                        # the decode step works on the latent cache directly


def _path_inputs(cfg, attn, q_len, k_len, batch=2, seed=6):
    torch.manual_seed(seed)
    h = cfg.num_attention_heads
    q_nope = torch.randn(batch, h, q_len, cfg.qk_nope_head_dim)
    q_pe = torch.randn(batch, h, q_len, cfg.qk_rope_head_dim)
    latent = torch.randn(batch, 1, k_len, cfg.kv_lora_rank)
    k_pe = torch.randn(batch, 1, k_len, cfg.qk_rope_head_dim)
    return q_nope, q_pe, latent, k_pe


@pytest.mark.parametrize("q_len,k_len", [(1, 10), (4, 10), (7, 7)])
def test_absorbed_equals_expanded(q_len, k_len):
    cfg = make_config("yarn")
    attn, _ = make_pair(cfg)
    args = _path_inputs(cfg, attn, q_len, k_len)
    with torch.no_grad():
        torch.testing.assert_close(attn._attend_absorbed(*args, None), attn._attend_expanded(*args, None),
                                   atol=ATOL, rtol=ATOL)
        mask = torch.rand(2, 1, q_len, k_len) > 0.4
        mask[..., 0] = True
        torch.testing.assert_close(attn._attend_absorbed(*args, mask), attn._attend_expanded(*args, mask),
                                   atol=ATOL, rtol=ATOL)


def test_padded_v_equals_unpadded():
    cfg = make_config()
    attn, _ = make_pair(cfg)
    assert cfg.v_head_dim < cfg.qk_head_dim
    for q_len, k_len in [(6, 6), (3, 9)]:
        args = _path_inputs(cfg, attn, q_len, k_len)
        with torch.no_grad():
            attn.pad_v_for_sdpa = True
            padded = attn._attend_expanded(*args, None)
            attn.pad_v_for_sdpa = False
            plain = attn._attend_expanded(*args, None)
        assert padded.shape == plain.shape == (2, cfg.num_attention_heads, q_len, cfg.v_head_dim)
        torch.testing.assert_close(padded, plain, atol=ATOL, rtol=ATOL)


# ---------------------------------------------------------------------------------------------- masks
def _left_padded_mask(lengths, total):
    """[B, 1, total, total] bool: causal and no padding keys; row b is left-padded to `total`."""
    valid = torch.stack([torch.arange(total) >= total - n for n in lengths])            # [B, S]
    causal = torch.ones(total, total, dtype=torch.bool).tril()
    return causal[None, None] & valid[:, None, None, :], valid


def test_left_padded_batch_equals_single_sequences():
    cfg = make_config("q_lora")
    attn, _ = make_pair(cfg)
    torch.manual_seed(7)
    lengths, total = [6, 3], 6
    x = torch.randn(2, total + 1, cfg.hidden_size)
    mask, valid = _left_padded_mask(lengths, total)
    pos = (valid.long().cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        cache = DynamicCache()
        out = run_ours(attn, cfg, x[:, :total], pos, attention_mask=mask, past_key_values=cache)
        step_mask = torch.cat([valid, torch.ones(2, 1, dtype=torch.bool)], -1)[:, None, None, :]
        step = run_ours(attn, cfg, x[:, total:], pos[:, -1:] + 1, attention_mask=step_mask, past_key_values=cache)
        for b, n in enumerate(lengths):
            seq = torch.cat([x[b:b + 1, total - n:total], x[b:b + 1, total:]], dim=1)
            ref = run_ours(attn, cfg, seq, positions(1, n + 1))
            torch.testing.assert_close(out[b, total - n:], ref[0, :n], atol=ATOL, rtol=ATOL)
            torch.testing.assert_close(step[b], ref[0, n:], atol=ATOL, rtol=ATOL)
    assert torch.isfinite(out).all()
    # A padded query row sees no key at all: its attention output is zero, so the layer gives o_proj's bias (0).
    torch.testing.assert_close(out[1, :total - lengths[1]], torch.zeros(total - lengths[1], cfg.hidden_size))


def test_create_causal_mask_padding_matches_transformers():
    """Masks from transformers' create_causal_mask (sdpa, left padding) in prefill and in a cached decode step."""
    cfg = make_config("yarn")
    ours, theirs = make_pair(cfg)
    torch.manual_seed(9)
    x = torch.randn(2, 6, cfg.hidden_size)
    pad = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]])
    pos = (pad.cumsum(-1) - 1).clamp(min=0)
    c_ours, c_theirs = DynamicCache(), DynamicCache()
    outs = []
    with torch.no_grad():
        for sl in (slice(0, 5), slice(5, 6)):
            mask = create_causal_mask(config=cfg, inputs_embeds=x[:, sl], attention_mask=pad[:, :sl.stop],
                                      past_key_values=c_ours, position_ids=pos[:, sl])
            assert mask is not None and mask.dtype == torch.bool
            o = run_ours(ours, cfg, x[:, sl], pos[:, sl], attention_mask=mask, past_key_values=c_ours)
            t = run_theirs(theirs, cfg, x[:, sl], pos[:, sl], attention_mask=mask, past_key_values=c_theirs)
            assert torch.isfinite(o).all()
            outs.append((o, t))
    (o, t), (o_step, t_step) = outs
    real = pad[:, :5].bool()
    torch.testing.assert_close(o[real], t[real], atol=ATOL, rtol=ATOL)
    torch.testing.assert_close(o_step, t_step, atol=ATOL, rtol=ATOL)


def test_bad_mask_shape_names_layer():
    cfg = make_config()
    attn = MLAAttention(cfg, layer_idx=3)
    x = torch.randn(1, 4, cfg.hidden_size)
    with pytest.raises(ValueError, match="layer 3.*attention_mask"):
        run_ours(attn, cfg, x, positions(1, 4), attention_mask=torch.ones(1, 1, 4, 5, dtype=torch.bool))


# ---------------------------------------------------------------------------------------------- training
def test_dropout_only_in_training_and_gradients_flow():
    cfg = make_config(attention_dropout=0.5)
    attn, _ = make_pair(cfg)
    torch.manual_seed(8)
    x = torch.randn(1, 6, cfg.hidden_size)
    pos = positions(1, 6)
    with torch.no_grad():
        a, b = run_ours(attn, cfg, x, pos), run_ours(attn, cfg, x, pos)
    torch.testing.assert_close(a, b)
    attn.train()
    c = run_ours(attn, cfg, x, pos)
    assert not torch.allclose(a, c)
    cache = DynamicCache()
    run_ours(attn, cfg, x[:, :5], pos[:, :5], past_key_values=cache)
    run_ours(attn, cfg, x[:, 5:], pos[:, 5:], past_key_values=cache).pow(2).mean().backward()
    assert attn.kv_b_proj.weight.grad is not None and torch.isfinite(attn.kv_b_proj.weight.grad).all()
    assert attn.kv_b_proj.weight.grad.abs().sum() > 0
