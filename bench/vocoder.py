"""Real-time factor (CPU seconds of synthesis per second of audio) of the unit vocoders.

Prints, in one run, for each vocoder our figure and the peer's:

- unit HiFi-GAN (full 50 Hz config, random weights: speed does not depend on training):
  ours = ``UnitHifiganVocoder.synthesize`` on a batch of deduplicated utterances (edge
  padding, duration predictor batched); peer = SpeechBrain's ``UnitHifiganGenerator.inference``
  one utterance at a time, weight norm removed as in SpeechBrain's recipe.
- mean-mel + Griffin-Lim: ours = ``MeanMelVocoder.synthesize`` (pseudo-inverse mel); peer =
  the same mels through torchaudio's ``InverseMelScale`` + ``GriffinLim``.

Median over interleaved rounds. Usage: ``python bench/vocoder.py [--rounds 3] [--utts 4]``.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchaudio

from most_speech.audio.kmeans import dedup
from most_speech.vocoder import MeanMelConfig, MeanMelVocoder, UnitHifiganConfig, UnitHifiganVocoder

TAG = "bench"


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def audio_seconds(wavs, sample_rate=16000):
    return sum(w.shape[-1] for w in wavs) / sample_rate


def make_units(n_utts, frames, num_units, seed=0):
    g = torch.Generator().manual_seed(seed)
    seqs = []
    for _ in range(n_utts):
        runs = torch.randint(0, num_units, (frames // 2,), generator=g)
        seqs.append(runs.repeat_interleave(torch.randint(1, 4, (frames // 2,), generator=g))[:frames])
    return seqs


def hifigan_pair(units):
    cfg = UnitHifiganConfig(km_tag=TAG, num_units=500)
    voc = UnitHifiganVocoder(cfg).eval()
    peer_voc = UnitHifiganVocoder(cfg).eval()  # same weights (deepcopy breaks parametrizations)
    peer_voc.load_state_dict(voc.state_dict())
    peer = peer_voc.generator
    peer.remove_weight_norm()
    runs = [dedup(u)[0] for u in units]

    def ours():
        return voc.synthesize(runs, km_tag=TAG, deduplicated=True)

    def theirs():
        with torch.no_grad():
            return [peer.inference(d.view(1, -1, 1))[0, 0] for d in runs]

    return ours, theirs


def mean_mel_pair(units):
    cfg = MeanMelConfig(km_tag=TAG, num_units=500)
    voc = MeanMelVocoder(cfg).eval()
    voc.mel_means.normal_(-4.0, 2.0)
    inverse = torchaudio.transforms.InverseMelScale(
        cfg.n_fft // 2 + 1, cfg.n_mels, cfg.sample_rate, cfg.f_min, cfg.f_max, driver="gelsd"
    )
    griffin_lim = torchaudio.transforms.GriffinLim(
        cfg.n_fft, n_iter=cfg.griffin_lim_iters, hop_length=cfg.mel_hop, power=1.0, rand_init=False
    )

    def ours():
        return voc.synthesize(units, km_tag=TAG, deduplicated=False)

    def theirs():
        with torch.no_grad():
            return [griffin_lim(inverse(torch.exp(voc.units_to_log_mel(u)).T)) for u in units]

    return ours, theirs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--utts", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=3.0, help="audio per utterance")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    torch.manual_seed(0)
    units = make_units(args.utts, int(args.seconds * 50), 500)
    pairs = {"unit HiFi-GAN": hifigan_pair(units), "mean-mel + Griffin-Lim": mean_mel_pair(units)}
    rtf = {name: {"ours": [], "peer": []} for name in pairs}
    for _ in range(args.rounds):
        for name, (ours, theirs) in pairs.items():
            for who, fn in (("ours", ours), ("peer", theirs)):
                seconds, wavs = timed(fn)
                rtf[name][who].append(seconds / audio_seconds(wavs))
    print(f"CPU, 2 threads, {args.utts} utterances x {args.seconds:.1f} s, median of {args.rounds} rounds")
    print(f"{'vocoder':<24} {'ours RTF':>9} {'peer RTF':>9} {'peer/ours':>10}")
    for name, r in rtf.items():
        ours, peer = statistics.median(r["ours"]), statistics.median(r["peer"])
        print(f"{name:<24} {ours:9.3f} {peer:9.3f} {peer / ours:10.2f}")


if __name__ == "__main__":
    main()
