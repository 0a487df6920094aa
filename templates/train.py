#!/usr/bin/env python3
"""Stage-1 MoST training on this recipe's task manifests (``python train.py hparams/<file>.yaml --key=value``).

The training logic lives in :mod:`most_speech.training.run`; this file only calls it.
"""
import sys

from most_speech.training.run import main

if __name__ == "__main__":
    main(sys.argv[1:])
