#!/usr/bin/env python3
"""Stage-1 MoST training (ASR + TTS + text LM) on LibriHeavy-style manifests.

Usage (from this folder)::

    python train.py hparams/stage1_small.yaml --data_folder=data --tokenizer_dir=data/tokenizer
    torchrun --nproc_per_node=8 train.py hparams/stage1.yaml --engine=torch          # DDP
    deepspeed --num_gpus=8 train.py hparams/stage1.yaml                                # DeepSpeed ZeRO-2

The training logic lives in :mod:`most_speech.training.run`; this file only calls it.
"""
import sys

from most_speech.training.run import main

if __name__ == "__main__":
    main(sys.argv[1:])
