"""Training-step throughput of the tiny MoST config on CPU: tokens/s and peak memory at several batch sizes.

Our figure: one optimizer step of ``MoSTBrain.fit_batch`` (forward with aux loss and routing counts,
backward, clip, AdamW, schedule, stream bookkeeping). Peer figure: the same model's bare PyTorch step
(``loss.backward(); clip; opt.step()``) on the same batches, i.e. the trainer's overhead. Rounds are
interleaved and the median is reported; peak memory is the process's max RSS growth during each batch size
(``resource.getrusage``, Linux KiB).

    python bench/train_step.py [--batch-sizes 4 8 16] [--seq-len 64] [--rounds 5] [--steps 5]
"""
from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time

import torch


def _batch(layout, batch_size, seq_len, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, layout.text_vocab_size, (batch_size, seq_len), generator=g)
    ids[:, seq_len // 2:] = torch.randint(layout.unit_offset, layout.unit_offset + layout.num_units,
                                          (batch_size, seq_len - seq_len // 2), generator=g)
    return {"input_ids": ids, "labels": ids.clone(), "attention_mask": torch.ones_like(ids),
            "audio_spans": [[] for _ in range(batch_size)], "tasks": ["tts"] * batch_size}


def _brain(model, folder):
    from most_speech.training.brain import MoSTBrain
    from most_speech.training.monitor import TrainingMonitor
    from most_speech.training.optim import build_adamw, build_schedule

    hparams = {"optimizer": lambda m: build_adamw(m, lr=1e-3), "total_steps": 10 ** 6,
               "lr_schedule": lambda o, total_steps: build_schedule(o, total_steps, 10), "noprogressbar": True}
    monitor = TrainingMonitor(folder, model.config.expert_groups_by_mark(), log_interval=10 ** 9,
                              use_tensorboard=False)
    brain = MoSTBrain({"model": model}, hparams, run_opts={"device": "cpu"}, monitor=monitor)
    brain.init_optimizers()
    brain.modules.train()
    return brain


def _ours(brain, batch):
    brain.step += 1
    brain.fit_batch(batch)


def _peer(model, opt, batch):
    loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)


def _timed(fn, steps):
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - t0) / steps


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    import logging

    logging.disable(logging.WARNING)
    from most_speech.models import MoSTConfig, MoSTForCausalLM

    config = MoSTConfig.tiny()
    layout = config.layout
    print(f"tiny MoST ({sum(p.numel() for p in MoSTForCausalLM(config).parameters()) / 1e3:.0f}k params), "
          f"seq_len {args.seq_len}, CPU threads {torch.get_num_threads()}, median of {args.rounds} rounds x "
          f"{args.steps} steps")
    print(f"{'batch':>6} {'tokens':>7} {'ours tok/s':>11} {'peer tok/s':>11} {'ours/peer':>10} {'peak RSS +MiB':>14}")
    with tempfile.TemporaryDirectory() as folder:
        for bs in args.batch_sizes:
            torch.manual_seed(0)
            ours_model, peer_model = MoSTForCausalLM(config), MoSTForCausalLM(config)
            peer_model.load_state_dict(ours_model.state_dict())
            brain = _brain(ours_model, folder)
            peer_opt = torch.optim.AdamW(peer_model.parameters(), lr=1e-3, betas=(0.9, 0.95))
            batch = _batch(layout, bs, args.seq_len, seed=bs)
            rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            _ours(brain, batch), _peer(peer_model, peer_opt, batch)  # warm-up
            ours, peer = [], []
            for _ in range(args.rounds):
                ours.append(_timed(lambda: _ours(brain, batch), args.steps))
                peer.append(_timed(lambda: _peer(peer_model, peer_opt, batch), args.steps))
            peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
            tokens = bs * args.seq_len
            o, p = tokens / statistics.median(ours), tokens / statistics.median(peer)
            print(f"{bs:>6} {tokens:>7} {o:>11.0f} {p:>11.0f} {o / p:>10.2f} {peak:>14.1f}")


if __name__ == "__main__":
    main()
