"""Wall time of the whisper TTS judge: clips shared by worker processes vs one process.

Prints, in one run, ours = ``transcribe_in_processes("whisper", clips, jobs=J)`` (J single-thread worker
processes, what ``most-score intelligibility --jobs J`` and the mini run's stage 10 do) and the peer = one
``WhisperJudge`` in this process with ``cpu_count`` threads (the default before), on clips like the mini run's:
espeak-ng sentences (whisper decodes them greedily) and the same sentences reversed in noise (whisper falls back
to sampling at rising temperatures, as on poor synthetic speech). It also checks that both give the same
transcripts. Median over interleaved rounds. Usage: ``python bench/judge.py [--rounds 3] [--clips 48]``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from most_speech.scoring.judges import WhisperJudge, transcribe_in_processes
from most_speech.scoring.synth import synthesize_many

SENTENCES = ["the old man walked to the river", "a small dog sat near the red house", "she read the letter twice",
             "they found the key under the stone", "my brother plays the piano at night", "the train was late again",
             "open the window before you leave", "we ate bread and cheese for lunch"]


def make_clips(folder: Path, n: int) -> list:
    texts = [SENTENCES[i % len(SENTENCES)] for i in range(n)]
    paths = synthesize_many(texts, [folder / f"{i}.wav" for i in range(n)], progress=False)
    rng = np.random.default_rng(0)
    clips = []
    for i, path in enumerate(paths):
        if i % 2:  # every other clip: reversed speech in noise, which sends whisper into its fallback
            wav, sr = sf.read(path, dtype="float32")
            path = folder / f"{i}_rev.wav"
            sf.write(path, wav[::-1] + 0.05 * rng.standard_normal(len(wav)).astype(np.float32), sr)
        clips.append(str(path))
    return clips


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--clips", type=int, default=48)
    p.add_argument("--jobs", type=int, default=2)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clips = make_clips(Path(tmp), a.clips)
        print(f"{a.clips} clips (half reversed in noise), {os.cpu_count()} cores, {a.rounds} rounds")
        ratios, ours_s, peer_s = [], [], []
        for _ in range(a.rounds):
            start = time.perf_counter()
            ours = transcribe_in_processes("whisper", clips, jobs=a.jobs, chunk_size=2, progress=False)
            ours_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            peer = WhisperJudge(cpu_threads=os.cpu_count() or 1).transcribe(clips, progress=False)
            peer_s.append(time.perf_counter() - start)
            ratios.append(peer_s[-1] / ours_s[-1])
            if ours != peer:
                raise SystemExit(f"transcripts differ:\n{ours}\n{peer}")
    print(f"ours ({a.jobs} worker processes x 1 thread): {statistics.median(ours_s):.1f} s")
    print(f"peer (1 process x {os.cpu_count()} threads):  {statistics.median(peer_s):.1f} s")
    print(f"speed-up (median of per-round ratios): {statistics.median(ratios):.2f}x; transcripts identical")


if __name__ == "__main__":
    main()
