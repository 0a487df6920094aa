"""Benchmark: our MLA attention against transformers' ``DeepseekV2Attention`` (one layer, CPU, fp32).

DeepSeek-V2-Lite attention dims (hidden 2048, 16 heads, kv_lora_rank 512, qk_nope 128, qk_rope 64, v 128, no
q LoRA, YaRN rope). Both modules hold the same weights. Measured, batch 1:

* decode: one new token against a cache of 512 / 2048 tokens (ours: absorbed latent cache; theirs: its
  ``DynamicCache``, re-expanded every step). The cache is cropped back after every step so each call sees
  exactly the stated length.
* prefill: 512 / 2048 tokens, no cache (theirs with ``_attn_implementation = "sdpa"``).

Each figure is the median over interleaved rounds (ours and theirs alternate inside every round) of the mean
time of a few calls. Targets: decode at cache 2048 at least 3x faster than transformers, prefill no slower.
The header prints the machine's load average: on an oversubscribed CPU every multi-threaded op waits for a
descheduled worker thread, which inflates the many small ops of a decode step far more than transformers' few
large ones; ``--threads 1`` shows the ratio without that effect.

Usage::

    python bench/attention.py [--rounds 5] [--threads 2]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from transformers import DeepseekV2Config, DynamicCache
from transformers.models.deepseek_v2.modeling_deepseek_v2 import DeepseekV2Attention, DeepseekV2RotaryEmbedding

from most_speech.models.mla import MLAAttention, MoSTRotaryEmbedding

LITE_ROPE = dict(rope_type="yarn", rope_theta=10000.0, factor=40, original_max_position_embeddings=4096,
                 beta_fast=32, beta_slow=1, mscale=0.707, mscale_all_dim=0.707)
DECODE_TARGET, PREFILL_TARGET = 3.0, 1.0


def lite_config() -> DeepseekV2Config:
    cfg = DeepseekV2Config(hidden_size=2048, num_attention_heads=16, num_key_value_heads=16, kv_lora_rank=512,
                           q_lora_rank=None, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128,
                           max_position_embeddings=163840, rope_parameters=LITE_ROPE, num_hidden_layers=1,
                           num_experts_per_tok=6)
    cfg._attn_implementation = "sdpa"
    return cfg


class Side:
    """One implementation: its module, rotary embedding and call convention."""

    def __init__(self, name, attn, rope, ours: bool):
        self.name, self.attn, self.rope, self.ours = name, attn, rope, ours

    def __call__(self, x, pos, cache=None):
        emb = self.rope(x, pos)
        if self.ours:
            return self.attn(x, emb, past_key_values=cache)
        return self.attn(x, position_embeddings=emb, past_key_values=cache)[0]


def build_sides(cfg):
    torch.manual_seed(0)
    theirs = DeepseekV2Attention(cfg, layer_idx=0).eval()
    ours = MLAAttention(cfg, layer_idx=0).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return (Side("ours", ours, MoSTRotaryEmbedding(cfg), True),
            Side("transformers", theirs, DeepseekV2RotaryEmbedding(cfg), False))


def mean_ms(fn, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) * 1e3 / calls


def decode_case(side, x, length):
    """A callable doing one decode step against a cache of exactly ``length`` tokens, and the step's output."""
    cache = DynamicCache()
    side(x[:, :length], torch.arange(length)[None], cache)
    step_x, step_pos = x[:, length:length + 1], torch.tensor([[length]])
    assert cache.get_seq_length() == length

    def step():
        out = side(step_x, step_pos, cache)
        cache.crop(-1)  # back to exactly `length` tokens
        return out

    return step, step()


def prefill_case(side, x, length):
    pos = torch.arange(length)[None]

    def run():
        return side(x[:, :length], pos)

    return run, run()


def collect_cases(sides, hidden, lengths):
    torch.manual_seed(1)
    x = torch.randn(1, max(lengths) + 1, hidden)
    cases = []
    for kind, make, calls in (("decode", decode_case, 10), ("prefill", prefill_case, 1)):
        for length in lengths:
            fns, outs = zip(*(make(side, x, length) for side in sides))
            err = (outs[0] - outs[1]).abs().max().item()
            cases.append(dict(kind=kind, length=length, fns=fns, calls=calls, max_abs_diff=err))
    return cases


def time_cases(cases, rounds: int):
    for case in cases:
        case["times"] = ([], [])
    for _ in range(rounds):
        for case in cases:
            for i, fn in enumerate(case["fns"]):
                case["times"][i].append(mean_ms(fn, case["calls"]))


def report(cases, rounds, threads) -> bool:
    print(f"MLA attention, one layer, DeepSeek-V2-Lite dims, fp32 CPU, {threads} threads, batch 1, "
          f"median of {rounds} interleaved rounds; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'case':<16}{'ours ms':>10}{'transf. ms':>12}{'speedup':>10}{'target':>9}{'max|diff|':>12}  result")
    ok = True
    for c in cases:
        ours, theirs = (statistics.median(t) for t in c["times"])
        speedup = theirs / ours
        target = {"decode": DECODE_TARGET if c["length"] >= 2048 else None, "prefill": PREFILL_TARGET}[c["kind"]]
        verdict = "-" if target is None else ("PASS" if speedup >= target else "FAIL")
        ok &= verdict != "FAIL"
        name = f"{c['kind']} {'cache ' if c['kind'] == 'decode' else ''}{c['length']}"
        tgt = f">={target:g}x" if target else "-"
        print(f"{name:<16}{ours:>10.2f}{theirs:>12.2f}{speedup:>9.2f}x{tgt:>9}{c['max_abs_diff']:>12.2e}  {verdict}")
    print("targets:", "all met" if ok else "NOT met")
    return ok


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 2048])
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    torch.set_num_threads(args.threads)
    cfg = lite_config()
    with torch.inference_mode():
        cases = collect_cases(build_sides(cfg), cfg.hidden_size, args.lengths)
        time_cases(cases, args.rounds)
    return 0 if report(cases, args.rounds, args.threads) else 1


if __name__ == "__main__":
    raise SystemExit(main())
