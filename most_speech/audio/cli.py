"""Command lines of the audio front-end: dump features, learn k-means, dump units.

* ``most-dump-features --manifest M.jsonl --out DIR --encoder hubert|phonetic|fbank|mfcc [--model-dir D --layer L]
  [--subset-frac F | --max-utts N] [--nj N --rank R] [--device auto]``
* ``most-learn-kmeans --feats DIR --k 500 --out km.safetensors [--max-frames 1000000]``
* ``most-dump-units --manifest M.jsonl --km km.safetensors --encoder hubert --model-dir D --out units.jsonl``
  (or ``--feats DIR`` to quantise dumped features)

Shards: ``--nj N --rank r`` takes every utterance whose index in the sorted id list is ``r`` modulo ``N``; a shard
whose output is complete is skipped, and a shard is written under temporary names until it is complete.
"""
from __future__ import annotations

import argparse
import logging
import random
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from most_speech.audio.io import AudioError, load_audio
from most_speech.audio.kmeans import FEATURE_NORMS, KMeansQuantizer, learn_kmeans, prepare_frames, sample_frames
from most_speech.data.manifest import ManifestError, iter_manifest
from most_speech.audio.store import (FeatureReader, FeatureWriter, UnitWriter, read_meta, shard_complete,
                                     shard_ids, shard_stem, write_meta)

logger = logging.getLogger(__name__)


def read_manifest(path: str | Path, data_root: str | None = None) -> dict[str, dict]:
    """Read a JSONL manifest into ``{id: entry}`` (every entry needs ``audio``), substituting ``{data_root}``.

    Validation (JSON, fields, duplicate ids) is :func:`most_speech.data.manifest.iter_manifest`'s; its
    :class:`~most_speech.data.manifest.ManifestError` names the file, line and id.

    Examples
    --------
    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "m.jsonl"
    >>> _ = p.write_text('{"id": "a", "audio": "{data_root}/a.wav"}\\n')
    >>> read_manifest(p, data_root="/corpus")["a"]["audio"]
    '/corpus/a.wav'
    """
    if not Path(path).is_file():
        raise ManifestError(f"manifest {path} does not exist")
    entries: dict[str, dict] = {}
    for entry in iter_manifest(path, required=("audio",)):
        if "{data_root}" in entry["audio"]:
            if data_root is None:
                raise ManifestError(f"{path}, id {entry['id']!r}: audio path {entry['audio']!r} needs --data-root")
            entry["audio"] = entry["audio"].replace("{data_root}", str(data_root))
        entries[entry["id"]] = entry
    if not entries:
        raise ManifestError(f"manifest {path} has no utterances")
    return entries


def select_subset(ids, frac: float | None = None, max_utts: int | None = None, seed: int = 0) -> list[str]:
    """A seeded random subset of ids, the same in every shard (chosen before sharding).

    Examples
    --------
    >>> select_subset(["a", "b", "c", "d"], max_utts=2, seed=1) == select_subset(["d", "c", "b", "a"], max_utts=2, seed=1)
    True
    """
    ordered = sorted(ids)
    n = len(ordered)
    if frac is not None:
        if not 0 < frac <= 1:
            raise ValueError(f"--subset-frac must be in (0, 1], got {frac}")
        n = max(1, round(frac * n))
    if max_utts is not None:
        n = min(n, max_utts)
    if n >= len(ordered):
        return ordered
    return sorted(random.Random(seed).sample(ordered, n))


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _build(args):
    from most_speech.audio.frontends import MODEL_DIR_ENCODERS, build_encoder

    if args.encoder in MODEL_DIR_ENCODERS:
        if not args.model_dir:
            raise ValueError(f"--encoder {args.encoder} needs --model-dir ({MODEL_DIR_ENCODERS[args.encoder]})")
        extra = {"chunk_seconds": args.chunk_seconds} if args.encoder == "hubert" else {}
        enc = build_encoder(args.encoder, model_dir=args.model_dir, layer=args.layer, **extra)
        name = args.encoder_name or Path(args.model_dir).name
        layer = enc.layer
    else:
        enc = build_encoder(args.encoder)
        name, layer = args.encoder_name or args.encoder, None
    return enc.to(_device(args.device)), name, layer


def _add_encoder_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifest", help="JSONL manifest (id, audio, start?, duration?)")
    p.add_argument("--data-root", help="substituted for {data_root} in audio paths")
    p.add_argument("--encoder", default="hubert", choices=["hubert", "phonetic", "fbank", "mfcc"])
    p.add_argument("--model-dir", help="converted HuBERT directory (most-convert-hubert), or a phonetic encoder "
                                       "(most-train-phonetic-encoder)")
    p.add_argument("--layer", type=int, help="encoder layer (default: HuBERT's last; the phonetic encoder's own)")
    p.add_argument("--encoder-name", help="name used in km_tag / meta (default: model dir name or encoder kind)")
    p.add_argument("--chunk-seconds", type=float, default=60.0, help="encode longer recordings in windows")
    p.add_argument("--batch-size", type=int, default=8, help="utterances per encoder batch")
    p.add_argument("--nj", type=int, default=1)
    p.add_argument("--rank", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")


def _encode_stream(enc, entries: dict, ids: list[str], batch_size: int, desc: str):
    """Yield ``(id, features [T, D] tensor)`` for ``ids``, batching the encoder; errors name the utterance."""
    for s in tqdm(range(0, len(ids), batch_size), desc=desc, unit="batch"):
        batch = ids[s: s + batch_size]
        wavs = []
        for utt in batch:
            e = entries[utt]
            try:
                dur = None if e.get("duration") is None else float(e["duration"])
                wavs.append(load_audio(e["audio"], 16000, float(e.get("start") or 0.0), dur))
            except (AudioError, TypeError, ValueError) as exc:
                raise AudioError(f"utterance {utt!r}: {exc}") from exc
        try:
            feats, lens = enc(wavs)
        except ValueError as exc:
            raise ValueError(f"utterances {batch}: {exc}") from exc
        for j, utt in enumerate(batch):
            yield utt, feats[j, : lens[j]].cpu()


def dump_features_main(argv=None) -> int:
    """``most-dump-features``: encoder features of a manifest into a sharded ark/scp store."""
    p = argparse.ArgumentParser(prog="most-dump-features", description="Dump encoder features by utterance id.")
    _add_encoder_args(p)
    p.add_argument("--out", required=True, help="feature store directory")
    p.add_argument("--subset-frac", type=float, help="random fraction of utterances (e.g. for k-means)")
    p.add_argument("--max-utts", type=int, help="at most this many utterances")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    _setup_logging()
    try:
        if not args.manifest:
            raise ValueError("--manifest is required")
        entries = read_manifest(args.manifest, args.data_root)
        ids = select_subset(entries, args.subset_frac, args.max_utts, args.seed)
        mine = shard_ids(ids, args.nj, args.rank)
        stem = Path(args.out) / shard_stem("feats", args.nj, args.rank)
        if shard_complete(stem, "feats"):
            logger.info("shard %s already complete: skipping", stem)
            return 0
        enc, name, layer = _build(args)
        write_meta(args.out, {"encoder": args.encoder, "encoder_name": name, "layer": layer, "dim": enc.dim,
                              "frame_rate": enc.frame_rate})
        logger.info("dumping %d of %d utterances to %s", len(mine), len(ids), stem)
        with FeatureWriter(stem) as writer:
            for utt, feats in _encode_stream(enc, entries, mine, args.batch_size, "features"):
                writer.write(utt, feats.numpy())
    except (ValueError, FileNotFoundError) as exc:
        p.exit(1, f"most-dump-features: error: {exc}\n")
    return 0


def learn_kmeans_main(argv=None) -> int:
    """``most-learn-kmeans``: MiniBatchKMeans on a random subset of dumped frames."""
    p = argparse.ArgumentParser(prog="most-learn-kmeans", description="Learn k-means units from dumped features.")
    p.add_argument("--feats", required=True, help="feature store directory (most-dump-features --out)")
    p.add_argument("--k", type=int, default=500)
    p.add_argument("--out", required=True, help="k-means model (.safetensors)")
    p.add_argument("--max-frames", type=int, default=1_000_000,
                   help="frames (stacked frames with --frame-stack) sampled for fitting")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-init", type=int, default=20)
    p.add_argument("--max-iter", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=10000)
    p.add_argument("--encoder-name", help="name in km_tag (default: from the store's meta.json)")
    p.add_argument("--layer", type=int, help="layer in km_tag (default: from the store's meta.json)")
    p.add_argument("--feature-norm", choices=FEATURE_NORMS, default="none",
                   help="per-utterance mean/variance normalisation before clustering (raw filterbanks)")
    p.add_argument("--frame-stack", type=int, default=1,
                   help="cluster S consecutive frames stacked: one unit per S frames (unit rate = frame rate / S)")
    args = p.parse_args(argv)
    _setup_logging()
    try:
        reader = FeatureReader(args.feats)
        meta = read_meta(args.feats)
        name = args.encoder_name or meta.get("encoder_name") or "unknown"
        layer = args.layer if args.layer is not None else meta.get("layer")
        stack = args.frame_stack
        total = sum(-(-reader.num_frames(u) // stack) for u in reader)
        frames = sample_frames((prepare_frames(reader[u], args.feature_norm, stack)
                                for u in tqdm(reader, desc="reading", unit="utt")),
                               args.max_frames, total, args.seed)
        km = learn_kmeans(frames, args.k, name, layer, seed=args.seed, batch_size=args.batch_size,
                          max_iter=args.max_iter, n_init=args.n_init, feature_norm=args.feature_norm,
                          frame_stack=stack)
        km.save(args.out)
    except (ValueError, FileNotFoundError) as exc:
        p.exit(1, f"most-learn-kmeans: error: {exc}\n")
    print(km.km_tag)
    return 0


def dump_units_main(argv=None) -> int:
    """``most-dump-units``: k-means units by utterance id (JSONL + km_tag header), from audio or dumped features."""
    p = argparse.ArgumentParser(prog="most-dump-units", description="Dump k-means units by utterance id.")
    _add_encoder_args(p)
    p.add_argument("--km", required=True, help="k-means model (.safetensors from most-learn-kmeans)")
    p.add_argument("--feats", help="quantise this feature store instead of encoding the manifest's audio")
    p.add_argument("--out", required=True, help="units JSONL (shards: units.R-of-N.jsonl next to it)")
    args = p.parse_args(argv)
    _setup_logging()
    try:
        km = KMeansQuantizer.load(args.km, device=_device(args.device))
        out = Path(args.out)
        if args.nj > 1:
            out = out.with_name(f"{shard_stem(out.stem, args.nj, args.rank)}{out.suffix}")
        if out.is_file():
            logger.info("%s already complete: skipping", out)
            return 0
        if args.feats:
            reader = FeatureReader(args.feats)
            mine = shard_ids(reader, args.nj, args.rank)
            stream = ((u, torch.from_numpy(reader[u])) for u in tqdm(mine, desc="units", unit="utt"))
        else:
            if not args.manifest:
                raise ValueError("give --manifest (with an encoder) or --feats")
            from most_speech.audio.frontends import MODEL_DIR_ENCODERS

            if args.layer is None and args.encoder in MODEL_DIR_ENCODERS:
                args.layer = km.layer
            if args.layer is not None and km.layer is not None and args.layer != km.layer:
                raise ValueError(f"--layer {args.layer} but k-means {km.km_tag} was learnt on layer {km.layer}")
            entries = read_manifest(args.manifest, args.data_root)
            mine = shard_ids(entries, args.nj, args.rank)
            enc, name, _ = _build(args)
            if km.encoder not in ("unknown", name):
                logger.warning("encoder %s differs from the k-means model's %s (%s)", name, km.encoder, km.km_tag)
            stream = _encode_stream(enc, entries, mine, args.batch_size, "units")
        with UnitWriter(out, km.km_tag) as writer:
            for utt, feats in stream:
                writer.write(utt, km(feats).cpu().numpy())
    except (ValueError, FileNotFoundError) as exc:
        p.exit(1, f"most-dump-units: error: {exc}\n")
    return 0


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
