"""TTS generation speed on CPU: unit tokens with vs without the KV cache, and the vocoders' real-time factors.

Prints, in one run, units/s and the real-time factor (seconds of compute per second of audio) of unit
generation for a small MoST, at 25 and 50 units per second of audio, with the absorbed-MLA KV cache and
without any cache (every step re-runs the whole prefix); then the real-time factor of each vocoder.
Median over interleaved rounds; the cache speed-up is the ratio of the two in the same round.

    python3 bench/generate.py [--units 200] [--rounds 3]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from most_speech.decoding.generation import UnitOnlyLogitsProcessor
from most_speech.models import MoSTConfig, MoSTForCausalLM
from most_speech.text.token_layout import TokenLayout
from most_speech.vocoder import (ConvMelConfig, ConvMelVocoder, MeanMelConfig, MeanMelVocoder, UnitHifiganConfig,
                                 UnitHifiganVocoder)
from transformers import LogitsProcessorList


def small_model(num_units: int = 500) -> MoSTForCausalLM:
    layout = TokenLayout.build(text_vocab_size=1000, num_units=num_units, pad_to_multiple_of=64)
    cfg = MoSTConfig.tiny(vocab_size=layout.vocab_size, token_layout=layout.to_dict(), hidden_size=384,
                          intermediate_size=1024, moe_intermediate_size=256, num_hidden_layers=6,
                          num_attention_heads=6, num_key_value_heads=6, kv_lora_rank=128, qk_nope_head_dim=32,
                          qk_rope_head_dim=16, v_head_dim=32, n_routed_experts=8, num_experts_per_tok=2,
                          bos_token_id=layout.bos_id, eos_token_id=layout.eos_id, pad_token_id=layout.pad_id,
                          max_position_embeddings=4096)
    torch.manual_seed(0)
    return MoSTForCausalLM(cfg).eval()


def time_generation(model, n_units: int, use_cache: bool) -> float:
    layout = model.config.layout
    prompt = torch.randint(0, layout.text_vocab_size, (1, 24), generator=torch.Generator().manual_seed(0))
    proc = UnitOnlyLogitsProcessor(layout, prompt.shape[1], min_units=n_units)
    t0 = time.perf_counter()
    with torch.no_grad():
        out = model.generate(prompt, max_new_tokens=n_units + 1, min_new_tokens=n_units + 1, do_sample=False,
                             use_cache=use_cache, logits_processor=LogitsProcessorList([proc]), eos_token_id=None)
    elapsed = time.perf_counter() - t0
    assert out.shape[1] == prompt.shape[1] + n_units + 1
    return elapsed


def vocoders(num_units: int = 500):
    mean_mel = MeanMelVocoder(MeanMelConfig(km_tag="bench", num_units=num_units))
    conv_mel = ConvMelVocoder(ConvMelConfig(km_tag="bench", num_units=num_units))
    hifigan = UnitHifiganVocoder(UnitHifiganConfig(km_tag="bench", num_units=num_units))
    return {"mean-mel + Griffin-Lim": mean_mel, "conv-mel + Griffin-Lim": conv_mel,
            "unit HiFi-GAN (base size)": hifigan}


def time_vocoder(vocoder, n_units: int) -> float:
    units = torch.randint(0, vocoder.num_units, (n_units,), generator=torch.Generator().manual_seed(1))
    t0 = time.perf_counter()
    wav = vocoder.synthesize([units], km_tag=vocoder.km_tag, deduplicated=False)[0]
    elapsed = time.perf_counter() - t0
    return elapsed / (wav.numel() / vocoder.sample_rate)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--units", type=int, default=200)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2, help="intra-op threads (use 1 on a busy machine)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    model = small_model()
    n_params = sum(p.numel() for p in model.parameters()) / 1e6
    time_generation(model, 8, True)  # warm-up
    cached, uncached = [], []
    for _ in range(a.rounds):
        cached.append(time_generation(model, a.units, True))
        uncached.append(time_generation(model, a.units, False))
    speedups = [u / c for c, u in zip(cached, uncached)]
    print(f"MoST unit generation, {n_params:.1f} M parameters, {a.units} units, fp32, {a.threads} thread(s), "
          f"median of {a.rounds} interleaved rounds")
    print(f"{'':<18}{'units/s':>10}{'RTF @25 u/s':>14}{'RTF @50 u/s':>14}")
    for name, times in (("with KV cache", cached), ("without cache", uncached)):
        t = statistics.median(times)
        ups = a.units / t
        print(f"{name:<18}{ups:>10.1f}{25 / ups:>14.3f}{50 / ups:>14.3f}")
    print(f"KV-cache speed-up (median of per-round ratios): {statistics.median(speedups):.2f}x\n")
    print(f"{f'vocoder (CPU, {a.threads} thread(s))':<30}{'RTF @50 u/s':>14}")
    for name, voc in vocoders().items():
        rtf = statistics.median(time_vocoder(voc, 250) for _ in range(a.rounds))
        print(f"{name:<30}{rtf:>14.3f}")


if __name__ == "__main__":
    main()
