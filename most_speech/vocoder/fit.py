"""Fitting the CPU vocoders from (manifest, units) pairs: mean-mel (statistics) and conv-mel (a few minutes)."""
from __future__ import annotations

import logging
import math
import random
from dataclasses import replace

import torch
from tqdm import tqdm

from most_speech.audio.kmeans import dedup
from most_speech.vocoder.conv_mel import ConvMelConfig, ConvMelVocoder
from most_speech.vocoder.data import aligned_pair, join_manifest_units
from most_speech.vocoder.mean_mel import MeanMelConfig, MeanMelVocoder
from most_speech.vocoder.mel import log_mel, mel_transform

logger = logging.getLogger(__name__)


def _aligned_pairs(utterances, config, desc: str):
    """Yield ``(frame_units, wav)`` per utterance, refusing units outside the config's inventory."""
    for utt in tqdm(utterances, desc=desc, unit="utt"):
        frame_units, wav = aligned_pair(utt, config.sample_rate, config.hop_length)
        if int(frame_units.max()) >= config.num_units:
            raise ValueError(
                f"utterance {utt.id!r}: unit {int(frame_units.max())} >= num_units {config.num_units}"
            )
        yield frame_units, wav


def _utterances_and_config(manifest, units, config, num_units, data_root, max_utterances, default):
    utterances, km_tag = join_manifest_units(manifest, units, data_root)
    if max_utterances is not None and len(utterances) > max_utterances:
        # a seeded random subset in manifest order: manifests sorted by speaker still give many voices
        keep = sorted(random.Random(0).sample(range(len(utterances)), max_utterances))
        utterances = [utterances[i] for i in keep]
    if config is None:
        n = num_units or int(max(int(u.units.max()) for u in utterances)) + 1
        config = default(km_tag, n)
    elif config.km_tag != km_tag:
        raise ValueError(
            f"{units}: units were made with km_tag {km_tag!r} but the vocoder config says "
            f"{config.km_tag!r}"
        )
    return utterances, replace(config)


def fit_mean_mel_vocoder(
    manifest,
    units,
    out_dir=None,
    config: MeanMelConfig | None = None,
    num_units: int | None = None,
    data_root=None,
    max_utterances: int | None = None,
) -> MeanMelVocoder:
    """Estimate per-unit mean log-mel frames and run lengths, then save the vocoder.

    Parameters
    ----------
    manifest : str or Path
        Audio manifest (JSON Lines with ``id``, ``audio``, optional ``start``/``duration``).
    units : str or Path
        Unit file (JSON Lines ``{"id", "units", "km_tag"}``, or ``{"id", "units"}`` with a
        ``<name>.km_tag`` header as ``most-dump-units`` writes), joined to the manifest by id.
    out_dir : str or Path, optional
        Where to save the fitted vocoder (skipped when ``None``).
    config : MeanMelConfig, optional
        Analysis settings; its ``km_tag`` must match the unit file. By default
        :func:`most_speech.vocoder.default_cpu_vocoder_config` with the file's tag.
    num_units : int, optional
        Unit inventory size when ``config`` is not given (default: largest unit + 1).
    data_root : str, optional
        Replaces ``{data_root}`` in manifest audio paths.
    max_utterances : int, optional
        Use at most this many utterances (a seeded random subset).

    Returns
    -------
    MeanMelVocoder

    Examples
    --------
    >>> import json, tempfile, pathlib, numpy as np, soundfile as sf
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> sf.write(d / "a.wav", np.random.randn(3200).astype("float32") * 0.1, 16000)
    >>> _ = (d / "m.jsonl").write_text(json.dumps({"id": "a", "audio": str(d / "a.wav")}) + "\\n")
    >>> _ = (d / "u.jsonl").write_text(json.dumps({"id": "a", "units": [0, 0, 1, 1, 2] * 2,
    ...     "km_tag": "k"}) + "\\n")
    >>> voc = fit_mean_mel_vocoder(d / "m.jsonl", d / "u.jsonl", d / "voc", num_units=4)
    >>> voc.km_tag, voc.num_units
    ('k', 4)
    """
    from most_speech.vocoder import default_cpu_vocoder_config

    utterances, config = _utterances_and_config(manifest, units, config, num_units, data_root, max_utterances,
                                                default_cpu_vocoder_config)
    vocoder = MeanMelVocoder(config)
    for frame_units, wav in _aligned_pairs(utterances, config, "mean-mel stats"):
        vocoder.accumulate(frame_units, wav)
    vocoder.finalize()
    seen = int((vocoder.frame_counts > 0).sum())
    logger.info("mean-mel vocoder: %d utterances, %d/%d units seen", len(utterances), seen, config.num_units)
    if out_dir is not None:
        vocoder.save(out_dir)
    return vocoder


def _conv_mel_batch(examples, frames_per_unit: int, segment_frames: int, generator: torch.Generator):
    """Random crops of ``segment_frames`` unit frames -> padded tensors for :func:`_conv_mel_losses`."""
    units, mels, runs = [], [], []
    for frame_units, mel in examples:
        if len(frame_units) > segment_frames:
            i = int(torch.randint(len(frame_units) - segment_frames + 1, (1,), generator=generator))
            frame_units = frame_units[i:i + segment_frames]
            mel = mel[i * frames_per_unit:(i + segment_frames) * frames_per_unit]
        units.append(frame_units)
        mels.append(mel)
        runs.append(dedup(frame_units))
    pad = torch.nn.utils.rnn.pad_sequence
    return {
        "units": pad(units, batch_first=True),
        "unit_mask": pad([torch.ones(len(u)) for u in units], batch_first=True),
        "mel": pad(mels, batch_first=True),
        "mel_mask": pad([torch.ones(len(m)) for m in mels], batch_first=True),
        "dedup": pad([v for v, _ in runs], batch_first=True),
        "dedup_mask": pad([torch.ones(len(v)) for v, _ in runs], batch_first=True),
        # the first and last runs of a crop are cut by its edges: no duration target for them
        "log_dur": pad([torch.log(c.float()) for _, c in runs], batch_first=True),
        "dur_mask": pad([(torch.arange(len(c)) > 0) & (torch.arange(len(c)) < len(c) - 1) for _, c in runs],
                        batch_first=True).float(),
    }


def _conv_mel_losses(vocoder: ConvMelVocoder, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(L1 on normalised log-mel, MSE on log run length), both over valid positions only."""
    target = (batch["mel"] - vocoder.mel_mean) / vocoder.mel_std
    pred = vocoder.normalized_log_mel(batch["units"], batch["unit_mask"])
    mel_mask = batch["mel_mask"][..., None]
    mel_loss = ((pred - target).abs() * mel_mask).sum() / (mel_mask.sum() * target.shape[-1])
    log_dur = vocoder.log_durations(batch["dedup"], batch["dedup_mask"])
    dur_loss = (((log_dur - batch["log_dur"]) ** 2) * batch["dur_mask"]).sum() / batch["dur_mask"].sum().clamp_min(1)
    return mel_loss, dur_loss


def fit_conv_mel_vocoder(
    manifest,
    units,
    out_dir=None,
    config: ConvMelConfig | None = None,
    num_units: int | None = None,
    data_root=None,
    max_utterances: int | None = None,
    steps: int = 1000,
    batch_size: int = 16,
    segment_frames: int = 200,
    learning_rate: float = 2e-3,
    seed: int = 0,
) -> ConvMelVocoder:
    """Train the conv-mel vocoder (L1 log-mel + log-duration MSE, AdamW, cosine decay) and save it.

    Every (units, audio) pair is analysed once and kept in memory (``n_mels`` x 4 bytes per mel frame:
    about 0.5 GB for 2 hours of speech at 100 units/s); training then draws random crops of
    ``segment_frames`` unit frames. Deterministic for a given ``seed``. The vocoder is written only at
    the end (atomically), so an interrupted fit leaves no partial export; at a few CPU minutes it is
    simply rerun.

    Parameters
    ----------
    manifest, units, out_dir, num_units, data_root, max_utterances
        As in :func:`fit_mean_mel_vocoder`.
    config : ConvMelConfig, optional
        Analysis settings and network sizes; its ``km_tag`` must match the unit file.
    steps, batch_size, segment_frames, learning_rate, seed
        Optimisation: ``steps`` AdamW updates of ``batch_size`` crops, linear warmup over the first 5 %,
        then cosine decay to 10 % of ``learning_rate``.

    Returns
    -------
    ConvMelVocoder

    Examples
    --------
    >>> import json, tempfile, pathlib, numpy as np, soundfile as sf
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> sf.write(d / "a.wav", np.random.randn(3200).astype("float32") * 0.1, 16000)
    >>> _ = (d / "m.jsonl").write_text(json.dumps({"id": "a", "audio": str(d / "a.wav")}) + "\\n")
    >>> _ = (d / "u.jsonl").write_text(json.dumps({"id": "a", "units": [0, 0, 1, 1, 2] * 2,
    ...     "km_tag": "k"}) + "\\n")
    >>> cfg = ConvMelConfig(km_tag="k", num_units=4, channels=16, duration_channels=8)
    >>> voc = fit_conv_mel_vocoder(d / "m.jsonl", d / "u.jsonl", d / "voc", config=cfg, steps=3)
    >>> voc.vocoder_type, (d / "voc" / "model.safetensors").is_file()
    ('conv_mel', True)
    """
    utterances, config = _utterances_and_config(
        manifest, units, config, num_units, data_root, max_utterances,
        lambda tag, n: ConvMelConfig(km_tag=tag, num_units=n),
    )
    k = config.frames_per_unit
    analysis = mel_transform(config)
    examples = []
    for frame_units, wav in _aligned_pairs(utterances, config, "conv-mel analysis"):
        mel = log_mel(wav, config, analysis)
        n = min(len(frame_units), mel.shape[0] // k)
        if n > 0:
            examples.append((frame_units[:n].long(), mel[:n * k]))
    if not examples:
        raise ValueError(f"{manifest}: no utterance is long enough for one unit frame")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        vocoder = ConvMelVocoder(config)
    # per-bin statistics from float64 sums: no second copy of every mel frame in memory
    count = sum(m.shape[0] for _, m in examples)
    total = sum(m.double().sum(0) for _, m in examples)
    squares = sum((m.double() ** 2).sum(0) for _, m in examples)
    mean = total / count
    variance = (squares - count * mean ** 2) / max(1, count - 1)  # unbiased, as Tensor.std
    vocoder.mel_mean.copy_(mean.float())
    vocoder.mel_std.copy_(variance.clamp_min(0).sqrt().float().clamp_min(1e-3))
    optimizer = torch.optim.AdamW(vocoder.parameters(), lr=learning_rate)
    warmup = max(1, steps // 20)

    def schedule(step):
        if step < warmup:
            return (step + 1) / warmup
        return 0.1 + 0.45 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    generator = torch.Generator().manual_seed(seed)
    vocoder.train()
    bar = tqdm(range(steps), desc="conv-mel training", unit="step")
    for step in bar:
        picks = torch.randint(len(examples), (batch_size,), generator=generator).tolist()
        batch = _conv_mel_batch([examples[i] for i in picks], k, segment_frames, generator)
        mel_loss, dur_loss = _conv_mel_losses(vocoder, batch)
        optimizer.zero_grad()
        (mel_loss + dur_loss).backward()
        torch.nn.utils.clip_grad_norm_(vocoder.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        bar.set_postfix(mel_l1=f"{mel_loss.item():.3f}", dur_mse=f"{dur_loss.item():.3f}")
        if (step + 1) % 100 == 0 or step + 1 == steps:
            logger.info("conv-mel step %d/%d: mel L1 %.4f, log-duration MSE %.4f",
                        step + 1, steps, mel_loss.item(), dur_loss.item())
    vocoder.eval()
    logger.info("conv-mel vocoder: %d utterances, %d steps", len(examples), steps)
    if out_dir is not None:
        vocoder.save(out_dir)
    return vocoder
