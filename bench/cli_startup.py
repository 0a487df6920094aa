"""Start-up time of the command-line tools a recipe calls ~30 times per mini run.

Prints, in one run, ours = ``<tool> --help`` for the tools that need no model (they import only their own
subpackage: ``most_speech`` loads subpackages on first use) and the peer = ``python -c "import most_speech.models"``,
what every tool paid before when ``import most_speech`` registered the model with transformers' Auto classes
(torch + transformers). Median over interleaved rounds. Usage: ``python bench/cli_startup.py [--rounds 5]``.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

TOOLS = {"most-prepare-data": ["most-prepare-data", "--help"], "most-score": ["most-score", "--help"],
         "python -m most_speech.recipes.report": [sys.executable, "-m", "most_speech.recipes.report", "--help"],
         "most-learn-kmeans": ["most-learn-kmeans", "--help"]}
PEER = [sys.executable, "-c", "import most_speech.models"]


def seconds(cmd) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args()
    times = {name: [] for name in TOOLS}
    peer = []
    for _ in range(a.rounds):
        peer.append(seconds(PEER))
        for name, cmd in TOOLS.items():
            times[name].append(seconds(cmd))
    base = statistics.median(peer)
    print(f"peer: import most_speech.models (every tool before): {base:.2f} s")
    for name, ts in times.items():
        print(f"ours: {name:<40} {statistics.median(ts):.2f} s  ({base / statistics.median(ts):.1f}x faster)")


if __name__ == "__main__":
    main()
