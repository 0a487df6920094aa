"""Voicing cost of best-of-N TTS: 8 candidates on Griffin-Lim drafts against 4 at full quality.

Prints, in one run, ours = what the mini run does since session 24 (8 candidates voiced with 8 Griffin-Lim
iterations for ranking, the kept one again with the vocoder's 32) and the peer = session 23's best of 4 (4
candidates voiced with 32 iterations), both with the mini run's conv-mel vocoder (random weights: the cost does
not depend on them) on random 25 Hz unit sequences of the mini test sentences' lengths (2-4 s). Generation and
ranking are left out (they scale with N in both). Medians over interleaved rounds.
Usage: ``python bench/best_of_n.py [--rounds 3] [--sentences 16]``.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from most_speech.vocoder.conv_mel import ConvMelConfig, ConvMelVocoder


def voice(vocoder, candidates, draft_iters=None):
    """Voice every candidate (with ``draft_iters`` Griffin-Lim iterations if given), then the first again."""
    if draft_iters:
        with vocoder.griffin_lim_iterations(draft_iters):
            vocoder.synthesize(candidates, km_tag="bench", deduplicated=False)
        vocoder.synthesize(candidates[:1], km_tag="bench", deduplicated=False)
    else:
        vocoder.synthesize(candidates, km_tag="bench", deduplicated=False)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--sentences", type=int, default=16)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    vocoder = ConvMelVocoder(ConvMelConfig(km_tag="bench", num_units=64, unit_rate=25, frames_per_unit=8,
                                           channels=192, layers=4, griffin_lim_iters=32)).eval()
    g = torch.Generator().manual_seed(1)
    lengths = torch.randint(50, 100, (args.sentences,), generator=g).tolist()
    sentences = [[torch.randint(0, 64, (n,), generator=g) for _ in range(8)] for n in lengths]
    times = {"ours": [], "peer": []}
    for _ in range(args.rounds):
        t = time.perf_counter()
        for cands in sentences:
            voice(vocoder, cands, draft_iters=8)
        times["ours"].append(time.perf_counter() - t)
        t = time.perf_counter()
        for cands in sentences:
            voice(vocoder, cands[:4])
        times["peer"].append(time.perf_counter() - t)
    ours, peer = statistics.median(times["ours"]), statistics.median(times["peer"])
    ratio = statistics.median(o / p for o, p in zip(times["ours"], times["peer"]))
    print(f"{args.sentences} sentences, median of {args.rounds} rounds")
    print(f"ours: best of 8 on 8-iteration drafts + the kept one at 32   {ours:.2f} s")
    print(f"peer: best of 4 at 32 iterations                            {peer:.2f} s")
    print(f"ours / peer (median of per-round ratios): {ratio:.2f}x the voicing time for twice the candidates")


if __name__ == "__main__":
    main()
