"""Tests of the modality-aware MoE layer (most_speech.models.moe)."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from most_speech.models.configuration import MoSTConfig
from most_speech.models.moe import MAMoE, ModalityAwareRouter, MoSTMLP, RoutedExperts, grouped_linear

pytestmark = pytest.mark.timeout(120)


def tiny(**overrides):
    return MoSTConfig.tiny(**overrides)


# ------------------------------------------------------------------------------------------------ references
def reference_experts(hidden, topk_idx, topk_weight, gate_up_proj, down_proj):
    """Obviously correct: loop over experts with plain matmuls."""
    out = torch.zeros_like(hidden)
    for e in range(gate_up_proj.shape[0]):
        tok, slot = torch.nonzero(topk_idx == e, as_tuple=True)
        if tok.numel() == 0:
            continue
        gate, up = (hidden[tok] @ gate_up_proj[e].T).chunk(2, dim=-1)
        y = (F.silu(gate) * up) @ down_proj[e].T
        out = out.index_add(0, tok, y * topk_weight[tok, slot, None])
    return out


def deepseek_aux_loss(scores, topk_idx, bsz, seq_len, n_experts, k, alpha, seq_aux):
    """Transcription of DeepSeek-V2's MoEGate balance loss (routing over all experts, no padding)."""
    idx = topk_idx.view(bsz, -1)
    if seq_aux:
        per_seq_scores = scores.view(bsz, seq_len, -1)
        ce = torch.zeros(bsz, n_experts).scatter_add_(1, idx, torch.ones(bsz, seq_len * k))
        ce = ce / (seq_len * k / n_experts)
        return (ce * per_seq_scores.mean(dim=1)).sum(dim=1).mean() * alpha
    ce = F.one_hot(idx.view(-1), num_classes=n_experts).float().mean(0)
    return (scores.mean(0) * ce * n_experts).sum() * alpha


def skewed(n, k, num_experts, generator, hot=(0,), cold=(3,)):
    """Random distinct top-k picks where the ``hot`` experts are favoured and the ``cold`` ones never picked."""
    logits = torch.randn(n, num_experts, generator=generator)
    logits[:, list(hot)] += 3.0
    logits[:, list(cold)] = -1e9
    return logits.topk(k, dim=-1).indices


# ------------------------------------------------------------------------------------------------ structure
def test_state_dict_names_match_transformers_deepseek_v2():
    from transformers.models.deepseek_v2.modeling_deepseek_v2 import DeepseekV2Moe

    cfg = tiny(use_modality_aware_routing=False)
    cfg._experts_implementation = "eager"
    ours = {k: v.shape for k, v in MAMoE(cfg).state_dict().items()}
    theirs = {k: v.shape for k, v in DeepseekV2Moe(cfg).state_dict().items()}
    assert ours == theirs


def test_builds_on_meta_device_and_runs_after_materialising():
    with torch.device("meta"):
        moe = MAMoE(tiny())
    moe = moe.to_empty(device="cpu")
    moe.gate.reset_parameters()
    moe.experts.reset_parameters()
    out = moe(torch.randn(1, 4, 64), modality_ids=torch.tensor([[0, 1, 1, 0]]))
    assert out.expert_counts[0, 4:].sum() == 0 and out.expert_counts[1, :4].sum() == 0


def test_no_shared_experts_when_zero():
    moe = MAMoE(tiny(n_shared_experts=0))
    assert not hasattr(moe, "shared_experts")
    assert moe(torch.randn(1, 3, 64)).hidden_states.shape == (1, 3, 64)


# ------------------------------------------------------------------------------------------------ routing
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), method=st.sampled_from(["greedy", "group_limited_greedy"]),
       group_softmax=st.booleans(), k=st.integers(1, 3), contiguous=st.booleans())
def test_tokens_never_leave_their_modality_group(seed, method, group_softmax, k, contiguous):
    g = torch.Generator().manual_seed(seed)
    perm = torch.arange(8) if contiguous else torch.randperm(8, generator=g)
    groups = {"text": perm[:4].tolist(), "audio": perm[4:].tolist()}
    extra = dict(n_group=4, topk_group=2) if method == "group_limited_greedy" else {}
    try:
        cfg = tiny(num_experts_per_tok=k, topk_method=method, group_softmax=group_softmax,
                   modality_expert_groups=groups, **extra)
    except ValueError:  # a group split that cannot reach k experts is rejected by the config
        return
    router = ModalityAwareRouter(cfg)
    with torch.no_grad():
        router.weight.normal_(0, 0.5, generator=g)  # logits std ~4: no softmax underflow to 0
    marks = torch.randint(0, 2, (40,), generator=g)
    idx, weight, scores = router(torch.randn(40, 64, generator=g), marks)
    allowed = torch.zeros(2, 8, dtype=torch.bool)
    allowed[0, groups["text"]] = True
    allowed[1, groups["audio"]] = True
    assert allowed[marks[:, None], idx].all()
    assert (weight > 0).all() and torch.isfinite(weight).all()
    assert idx.dtype == torch.long and weight.dtype == torch.float32 and scores.dtype == torch.float32
    assert all(len(set(row)) == k for row in idx.tolist())


def test_group_softmax_normalises_within_the_group():
    cfg = tiny(group_softmax=True)
    router = ModalityAwareRouter(cfg)
    marks = torch.tensor([0, 1, 1, 0])
    _, _, scores = router(torch.randn(4, 64), marks)
    in_group = torch.stack([scores[marks == 0][:, :4].sum(-1).mean(), scores[marks == 1][:, 4:].sum(-1).mean()])
    torch.testing.assert_close(in_group, torch.ones(2))
    assert (scores[marks == 0][:, 4:] == 0).all() and (scores[marks == 1][:, :4] == 0).all()


def test_global_softmax_weights_are_the_unmasked_probabilities():
    router = ModalityAwareRouter(tiny())
    h = torch.randn(6, 64)
    idx, weight, scores = router(h, torch.tensor([1] * 6))
    full = F.linear(h, router.weight).softmax(-1)
    torch.testing.assert_close(scores, full)
    torch.testing.assert_close(weight, full.gather(1, idx))


def test_norm_topk_prob_and_scaling_follow_deepseek_v2():
    h = torch.randn(5, 64)
    normed = ModalityAwareRouter(tiny(norm_topk_prob=True, routed_scaling_factor=16.0))
    scaled = ModalityAwareRouter(tiny(norm_topk_prob=False, routed_scaling_factor=16.0))
    scaled.load_state_dict(normed.state_dict())
    _, w_norm, _ = normed(h)
    idx, w_scaled, scores = scaled(h)
    torch.testing.assert_close(w_norm.sum(-1), torch.ones(5))
    torch.testing.assert_close(w_scaled, 16.0 * scores.gather(1, idx))


def test_unknown_mark_raises():
    moe = MAMoE(tiny())
    with pytest.raises(ValueError, match=r"unknown modality mark\(s\) \[2\]"):
        moe(torch.randn(1, 3, 64), modality_ids=torch.tensor([[0, 2, 1]]))
    with pytest.raises(ValueError, match=r"\[-1\]"):
        moe(torch.randn(1, 2, 64), modality_ids=torch.tensor([[0, -1]]))
    with pytest.raises(ValueError, match="shape"):
        moe(torch.randn(1, 2, 64), modality_ids=torch.tensor([0, 1]))


def test_no_modality_ids_means_text():
    moe = MAMoE(tiny()).eval()
    x = torch.randn(2, 3, 64)
    out = moe(x)
    torch.testing.assert_close(out.hidden_states, moe(x, modality_ids=torch.zeros(2, 3, dtype=torch.long))
                               .hidden_states)
    assert out.expert_counts[1].sum() == 0 and out.expert_counts[0, 4:].sum() == 0


# ------------------------------------------------------------------------------------------------ experts
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])  # float64: grouped_mm has no kernel -> fallback
@pytest.mark.parametrize("k", [1, 2, 3])
def test_fast_path_matches_reference_forward_and_grads(dtype, k):
    g = torch.Generator().manual_seed(k)
    experts = RoutedExperts(tiny()).to(dtype)
    n = 37
    hidden = torch.randn(n, 64, generator=g, dtype=dtype, requires_grad=True)
    idx = skewed(n, k, 8, g, hot=(0, 5), cold=(3, 6))  # experts 3 and 6 get no tokens
    weight = torch.rand(n, k, generator=g, dtype=dtype).add_(0.1).requires_grad_()
    r = torch.randn(n, 64, generator=g, dtype=dtype)
    params = [hidden, weight, experts.gate_up_proj, experts.down_proj]

    out = experts(hidden, idx, weight)
    grads = torch.autograd.grad((out * r).sum(), params)
    ref = reference_experts(hidden, idx, weight, experts.gate_up_proj, experts.down_proj)
    ref_grads = torch.autograd.grad((ref * r).sum(), params)

    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(out, ref, **tol)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, **tol)
    assert (grads[2][[3, 6]] == 0).all() and (grads[3][[3, 6]] == 0).all()


@pytest.mark.parametrize("k", [1, 3])
def test_cpu_inference_expert_loop_matches_reference_and_the_grouped_pass(monkeypatch, k):
    g = torch.Generator().manual_seed(10 + k)
    experts = RoutedExperts(tiny())
    n = 41
    hidden = torch.randn(n, 64, generator=g)
    idx = skewed(n, k, 8, g, hot=(1,), cold=(2, 7))
    weight = torch.rand(n, k, generator=g).add_(0.1)
    calls = []
    loop = RoutedExperts._experts_one_by_one
    monkeypatch.setattr(RoutedExperts, "_experts_one_by_one", lambda self, *a: calls.append(1) or loop(self, *a))
    monkeypatch.setattr(RoutedExperts, "LOOP_ABOVE_PAIRS", n * k - 1)
    with torch.no_grad():
        looped = experts(hidden, idx, weight)
    assert calls, "no-grad CPU call with more pairs than LOOP_ABOVE_PAIRS must take the expert loop"
    grouped = experts(hidden, idx, weight)  # parameters require grad: the grouped pass
    assert len(calls) == 1
    ref = reference_experts(hidden, idx, weight, experts.gate_up_proj.detach(), experts.down_proj.detach())
    torch.testing.assert_close(looped, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(looped, grouped.detach(), atol=1e-5, rtol=1e-5)


def test_unaligned_sizes_use_the_segment_loop_and_match_reference():
    experts = RoutedExperts(tiny(hidden_size=30, moe_intermediate_size=10, num_attention_heads=2, num_key_value_heads=2))  # 40-byte rows: not 16-aligned
    hidden = torch.randn(9, 30, requires_grad=True)
    idx = torch.randint(0, 8, (9, 1))
    weight = torch.rand(9, 1)
    out = experts(hidden, idx, weight)
    out.sum().backward()
    ref = reference_experts(hidden.detach(), idx, weight, experts.gate_up_proj.detach(), experts.down_proj.detach())
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    assert experts.gate_up_proj.grad is not None


def test_plain_sum_loss_backward_works():
    experts = RoutedExperts(tiny())
    hidden = torch.randn(10, 64, requires_grad=True)
    idx = torch.randint(0, 8, (10, 2))
    experts(hidden, idx, torch.rand(10, 2)).sum().backward()
    assert torch.isfinite(hidden.grad).all() and experts.down_proj.grad.abs().sum() > 0


def test_aligned_fp32_uses_grouped_mm_even_when_first_probed_under_no_grad(monkeypatch):
    from most_speech.models import moe as moe_module

    monkeypatch.setattr(moe_module, "_GROUPED_MM_OK", {})
    with torch.no_grad():
        assert moe_module._probe_grouped_mm(torch.device("cpu"), torch.float32)
    assert not moe_module._probe_grouped_mm(torch.device("cpu"), torch.float64)

    def no_fallback(*args):
        raise AssertionError("segment-loop fallback used on the grouped_mm path")

    monkeypatch.setattr(moe_module._SegmentMM, "apply", no_fallback)
    experts = RoutedExperts(tiny())
    hidden = torch.randn(12, 64, requires_grad=True)
    experts(hidden, torch.randint(0, 8, (12, 2)), torch.rand(12, 2)).pow(2).sum().backward()
    assert hidden.grad is not None


def test_grouped_linear_matches_per_expert_linear():
    w = torch.randn(3, 8, 4)
    x = torch.randn(10, 4)
    offs = torch.tensor([3, 3, 10], dtype=torch.int32)
    y = grouped_linear(x, w, offs)
    torch.testing.assert_close(y, torch.cat([x[:3] @ w[0].T, x[3:] @ w[2].T]))


def test_shared_experts_act_on_every_token():
    moe = MAMoE(tiny()).eval()
    with torch.no_grad():
        moe.experts.down_proj.zero_()
    x = torch.randn(2, 6, 64)
    marks = torch.randint(0, 2, (2, 6))
    torch.testing.assert_close(moe(x, modality_ids=marks).hidden_states, moe.shared_experts(x))


def test_layer_output_is_routed_sum_plus_shared():
    moe = MAMoE(tiny()).eval()
    x = torch.randn(3, 4, 64)
    marks = torch.randint(0, 2, (3, 4))
    flat = x.reshape(-1, 64)
    idx, weight, _ = moe.gate(flat, marks.reshape(-1))
    want = reference_experts(flat, idx, weight, moe.experts.gate_up_proj, moe.experts.down_proj)
    want = want + moe.shared_experts(flat)
    torch.testing.assert_close(moe(x, modality_ids=marks).hidden_states.reshape(-1, 64), want,
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", ["greedy", "group_limited_greedy"])
def test_routing_off_equals_transformers_deepseek_v2(method):
    from transformers.models.deepseek_v2.modeling_deepseek_v2 import DeepseekV2Moe

    extra = dict(n_group=4, topk_group=2) if method == "group_limited_greedy" else {}
    cfg = tiny(use_modality_aware_routing=False, topk_method=method, num_experts_per_tok=3,
               routed_scaling_factor=2.5, **extra)
    cfg._experts_implementation = "eager"
    theirs = DeepseekV2Moe(cfg).eval()
    for p in theirs.parameters():
        torch.nn.init.normal_(p, std=0.3)
    ours = MAMoE(cfg).eval()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 9, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x, modality_ids=torch.randint(0, 2, (2, 9))).hidden_states, theirs(x),
                                   atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------------ balance loss
def aux_config(**overrides):
    kw = dict(hidden_size=4, moe_intermediate_size=4, n_routed_experts=4, num_experts_per_tok=1,
              n_shared_experts=1, modality_expert_groups={"text": [0, 1], "audio": [2, 3]}, aux_loss_alpha=1.0,
              seq_aux=False)
    kw.update(overrides)
    return tiny(**kw)


# Router weight = identity, so the hidden state IS the logit vector; logits log(q) give softmax q exactly.
PROBS = torch.tensor([[0.4, 0.1, 0.3, 0.2],   # text  -> picks expert 0
                      [0.2, 0.5, 0.1, 0.2],   # text  -> picks expert 1
                      [0.6, 0.2, 0.1, 0.1],   # text  -> picks expert 0
                      [0.5, 0.1, 0.1, 0.3]])  # audio -> picks expert 3 (expert 0 is text-only)
MARKS = torch.tensor([0, 0, 0, 1])


def aux_layer(**overrides):
    moe = MAMoE(aux_config(**overrides)).train()
    with torch.no_grad():
        moe.gate.weight.copy_(torch.eye(4))
    return moe


def test_aux_loss_by_hand_batch_level():
    moe = aux_layer()
    out = moe(PROBS.log()[None], modality_ids=MARKS[None])
    assert out.expert_counts.tolist() == [[2, 1, 0, 0], [0, 0, 0, 1]]
    # text: N=3, E_m=2, k=1: f0 = 2/3*2, f1 = 2/3*1; P0 = (.4+.2+.6)/3, P1 = (.1+.5+.2)/3
    text = (2 / 3 * 2) * (1.2 / 3) + (2 / 3 * 1) * (0.8 / 3)
    # audio: N=1: f3 = 2/1*1, f2 = 0; P3 = .3
    audio = 2.0 * 0.3
    assert out.aux_loss.item() == pytest.approx((text + audio) / 2, rel=1e-6)


def test_aux_loss_by_hand_sequence_level_and_padding_is_ignored():
    moe = aux_layer(seq_aux=True)
    x = PROBS.log().view(2, 2, 4)  # sequences [t0 t1] and [t2 t3]
    marks = MARKS.view(2, 2)
    out = moe(x, modality_ids=marks)
    # text: seq0 N=2: f0=f1=2/2*1, P0=(.4+.2)/2, P1=(.1+.5)/2 -> .6 ; seq1 N=1: f0=2, P0=.6 -> 1.2 ; mean .9
    # audio: only seq1: f3=2, P3=.3 -> .6
    assert out.aux_loss.item() == pytest.approx((0.9 + 0.6) / 2, rel=1e-6)

    padded = torch.cat([x, 5 * torch.randn(2, 3, 4)], dim=1)
    pad_marks = torch.cat([marks, torch.tensor([[1, 0, 1], [0, 0, 1]])], dim=1)
    mask = torch.tensor([[True, True, False, False, False], [True, True, False, False, False]])
    out_pad = moe(padded, modality_ids=pad_marks, token_mask=mask)
    assert out_pad.aux_loss.item() == pytest.approx(out.aux_loss.item(), rel=1e-6)
    torch.testing.assert_close(out_pad.hidden_states[:, :2], out.hidden_states)
    assert torch.equal(out_pad.expert_counts, out.expert_counts)


def test_aux_loss_by_hand_group_softmax():
    moe = aux_layer(group_softmax=True)
    out = moe(PROBS.log()[None], modality_ids=MARKS[None])
    # within-group probabilities: t0 (.8,.2), t1 (2/7,5/7), t2 (.75,.25); t3 audio (.25,.75)
    p0 = (0.8 + 2 / 7 + 0.75) / 3
    p1 = (0.2 + 5 / 7 + 0.25) / 3
    text = (2 / 3 * 2) * p0 + (2 / 3 * 1) * p1
    audio = 2.0 * 0.75
    assert out.aux_loss.item() == pytest.approx((text + audio) / 2, rel=1e-6)


@pytest.mark.parametrize("seq_aux", [True, False])
def test_routing_off_aux_loss_equals_deepseek_formula(seq_aux):
    cfg = tiny(use_modality_aware_routing=False, seq_aux=seq_aux, aux_loss_alpha=0.01, num_experts_per_tok=3)
    moe = MAMoE(cfg).train()
    with torch.no_grad():
        moe.gate.weight.normal_(0, 0.5)
    x = torch.randn(3, 7, 64)
    out = moe(x, modality_ids=torch.randint(0, 2, (3, 7)))
    idx, _, scores = moe.gate(x.reshape(-1, 64))
    want = deepseek_aux_loss(scores, idx, 3, 7, 8, 3, 0.01, seq_aux)
    assert out.aux_loss.item() == pytest.approx(want.item(), rel=1e-5)


def test_aux_loss_is_differentiable_wrt_router_and_off_in_eval_or_zero_alpha():
    moe = MAMoE(tiny(aux_loss_alpha=0.1)).train()
    x = torch.randn(2, 5, 64)
    marks = torch.randint(0, 2, (2, 5))
    out = moe(x, modality_ids=marks)
    (grad,) = torch.autograd.grad(out.aux_loss, moe.gate.weight)
    assert grad.abs().sum() > 0
    assert moe.eval()(x, modality_ids=marks).aux_loss.item() == 0.0
    assert MAMoE(tiny(aux_loss_alpha=0.0)).train()(x, modality_ids=marks).aux_loss.item() == 0.0


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(1, 4), routing=st.booleans())
def test_counts_sum_to_k_times_real_tokens_per_mark(seed, k, routing):
    g = torch.Generator().manual_seed(seed)
    moe = MAMoE(tiny(num_experts_per_tok=k, use_modality_aware_routing=routing)).eval()
    marks = torch.randint(0, 2, (3, 6), generator=g)
    mask = torch.rand(3, 6, generator=g) > 0.3
    with torch.no_grad():
        counts = moe(torch.randn(3, 6, 64, generator=g), modality_ids=marks, token_mask=mask).expert_counts
    assert counts.dtype == torch.long and counts.shape == (2, 8)
    for m in range(2):
        assert counts[m].sum().item() == k * int(((marks == m) & mask).sum())
    if routing:
        assert counts[0, 4:].sum() == 0 and counts[1, :4].sum() == 0


def test_all_padding_gives_zero_aux_loss():
    moe = MAMoE(tiny(aux_loss_alpha=0.5)).train()
    out = moe(torch.randn(2, 3, 64), token_mask=torch.zeros(2, 3, dtype=torch.bool))
    assert out.aux_loss.item() == 0.0 and out.expert_counts.sum() == 0


def test_training_step_reaches_all_parameters():
    moe = MAMoE(tiny(aux_loss_alpha=0.01)).train()
    out = moe(torch.randn(2, 8, 64), modality_ids=torch.randint(0, 2, (2, 8)))
    ((out.hidden_states ** 2).mean() + out.aux_loss).backward()
    for name, p in moe.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_mlp_is_swiglu():
    mlp = MoSTMLP(tiny(), intermediate_size=16)
    x = torch.randn(3, 64)
    want = (F.silu(x @ mlp.gate_proj.weight.T) * (x @ mlp.up_proj.weight.T)) @ mlp.down_proj.weight.T
    torch.testing.assert_close(mlp(x), want)


@pytest.mark.gpu
def test_cuda_bf16_matches_reference():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    cfg = tiny(hidden_size=128, moe_intermediate_size=64)
    experts = RoutedExperts(cfg).cuda().to(torch.bfloat16)
    hidden = torch.randn(300, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    idx = skewed(300, 2, 8, torch.Generator().manual_seed(0)).cuda()
    weight = torch.rand(300, 2, device="cuda")
    out = experts(hidden, idx, weight)
    (out.float() * 2).sum().backward()
    ref = reference_experts(hidden.detach().float(), idx, weight, experts.gate_up_proj.detach().float(),
                            experts.down_proj.detach().float())
    assert (out.float() - ref).abs().max() <= 0.05 * ref.abs().max() + 1e-3
    assert math.isfinite(float(experts.gate_up_proj.grad.float().sum()))
