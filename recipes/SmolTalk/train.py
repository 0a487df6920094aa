#!/usr/bin/env python3
"""Stage-2 MoST instruction tuning (speech / text instructions + ASR + TTS) on SmolTalk-style manifests.

Usage (from this folder)::

    python train.py hparams/stage2.yaml --init_from=../LibriHeavy/exp/stage1/model
    torchrun --nproc_per_node=8 train.py hparams/stage2.yaml --engine=torch          # DDP
    deepspeed --num_gpus=8 train.py hparams/stage2.yaml                                # DeepSpeed ZeRO-2

The training logic lives in :mod:`most_speech.training.run`; this file only calls it.
"""
import sys

from most_speech.training.run import main

if __name__ == "__main__":
    main(sys.argv[1:])
