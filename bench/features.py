"""Benchmark the audio front-end on CPU (2 threads): HuBERT-base encoder real-time factor, batched vs one at a time,
and k-means unit assignment throughput (K=500, D=768), ours (torch matmul + argmin) vs sklearn's ``predict``.

Run: ``python bench/features.py [--rounds 3]``. Prints medians over interleaved rounds and the ratios.
Random weights: speed does not depend on the values.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from sklearn.cluster import MiniBatchKMeans
from threadpoolctl import threadpool_limits

from most_speech.audio.hubert import HubertEncoder, hubert_base_config
from most_speech.audio.kmeans import KMeansQuantizer


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_encoder(rounds: int, n_utts: int, seed: int = 0) -> None:
    torch.manual_seed(seed)
    enc = HubertEncoder(hubert_base_config(), layer=12)
    rng = np.random.default_rng(seed)
    lengths = [int(s * 16000) for s in rng.uniform(4.0, 8.0, n_utts)]
    wavs = [torch.randn(n) * 0.1 for n in lengths]
    padded = torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True)
    lens = torch.tensor(lengths)
    audio_s = sum(lengths) / 16000
    enc(wavs[0][None])  # warm-up
    batched, single = [], []
    for _ in range(rounds):
        batched.append(_timed(lambda: enc(padded, lens)))
        single.append(_timed(lambda: [enc(w[None]) for w in wavs]))
    tb, ts = statistics.median(batched), statistics.median(single)
    print(f"HuBERT-base encoder, {n_utts} utterances, {audio_s:.1f} s of audio, CPU {torch.get_num_threads()} threads")
    print(f"  batched (padded, masked): {tb:7.2f} s  RTF {tb / audio_s:.3f}")
    print(f"  one at a time           : {ts:7.2f} s  RTF {ts / audio_s:.3f}")
    print(f"  speed-up of batching    : {ts / tb:.2f}x")


def bench_kmeans(rounds: int, frames: int = 20000, k: int = 500, dim: int = 768, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(frames, dim)).astype(np.float32)
    sk = MiniBatchKMeans(n_clusters=k, init="random", n_init=1, max_iter=1, batch_size=4096,
                         random_state=seed).fit(x[:8000])
    ours = KMeansQuantizer(sk.cluster_centers_, "bench", 0)
    xt = torch.from_numpy(x)
    agree = float((ours(xt).numpy() == sk.predict(x)).mean())
    t_ours, t_sk = [], []
    for _ in range(rounds):
        t_ours.append(_timed(lambda: ours(xt)))
        t_sk.append(_timed(lambda: sk.predict(x)))
    fo, fs = frames / statistics.median(t_ours), frames / statistics.median(t_sk)
    print(f"k-means apply, K={k}, D={dim}, {frames} frames (assignments agree on {agree:.4%})")
    print(f"  ours (torch addmm+argmin): {fo:12,.0f} frames/s")
    print(f"  sklearn predict          : {fs:12,.0f} frames/s")
    print(f"  ratio ours/sklearn       : {fo / fs:.2f}x")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--utts", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with threadpool_limits(args.threads), torch.no_grad():
        bench_kmeans(args.rounds)
        bench_encoder(args.rounds, args.utts)


if __name__ == "__main__":
    main()
