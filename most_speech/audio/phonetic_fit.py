"""Train a :class:`~most_speech.audio.phonetic.PhoneticEncoder` with CTC (``most-train-phonetic-encoder``).

Input is what recipe stage 3 already wrote: 80-d filterbank frames in a feature store, keyed by utterance id,
and the training manifest's transcripts, as characters or as espeak-ng phonemes (``--targets phonemes``,
:mod:`most_speech.text.g2p`: English spelling is not what the frames should encode). Training frames are
augmented the way the encoder must generalise (unseen voices): a random vocal-tract-length stretch of the mel
axis (:class:`~most_speech.training.augment.FrequencyScale`) and SpecAugment time and frequency masks
(SpeechBrain's ``SpectrogramDrop``). At the end the dev split's greedy CTC symbol (character or phoneme) and
word error rates go to ``valid.json``; the directory (weights, config, logs) is written under a temporary name
and renamed, so an interrupted run never leaves a half-written encoder behind.

    most-train-phonetic-encoder --feats dump/feats/fbank --train data/small.jsonl --valid data/dev.jsonl \\
        --out exp/phonetic_encoder --steps 800 --targets phonemes
"""
from __future__ import annotations

import argparse
import logging
import math
import random
import re
import shutil
import time
from pathlib import Path

import jiwer
import torch
from tqdm import tqdm

from most_speech.audio.phonetic import PhoneticEncoder, PhoneticEncoderConfig
from most_speech.data.fileio import atomic_write_json
from most_speech.data.manifest import iter_manifest
from most_speech.text.normalize import normalize_english

logger = logging.getLogger(__name__)


def normalize_transcript(text: str) -> str:
    """The CTC target form: the shared English normaliser (numbers spelled out), then letters (of any script)
    and apostrophes.

    Examples
    --------
    >>> normalize_transcript("The Farmer's  dog, 3 times!")
    "the farmer's dog three times"
    >>> normalize_transcript("L'été à Köln")
    "l'été à köln"
    """
    return " ".join(re.sub(r"[^\w']+|[\d_]+", " ", normalize_english(text)).split())


def load_transcripts(manifest, feature_keys) -> dict[str, str]:
    """``{id: normalised text}`` of a manifest's utterances that have frames in the store."""
    keys = set(feature_keys)
    out, missing = {}, []
    for entry in iter_manifest(manifest, required=("text",)):
        if entry["id"] not in keys:
            missing.append(entry["id"])
            continue
        text = normalize_transcript(entry["text"])
        if text:
            out[entry["id"]] = text
    if missing:
        logger.warning("%s: %d utterances have no frames in the feature store (e.g. %r); skipped",
                       manifest, len(missing), missing[0])
    if not out:
        raise ValueError(f"{manifest}: no utterance with both a transcript and stored frames")
    return out


def target_symbols(texts: dict[str, str], targets: str = "chars", voice: str = "en-us") -> dict[str, list[str]]:
    """CTC target symbols of normalised transcripts: their characters, or the phonemes of espeak-ng ``voice``
    (``|`` between words).

    Utterances without a symbol (espeak-ng finds nothing to say) are left out.

    Examples
    --------
    >>> target_symbols({"u1": "a cat"})
    {'u1': ['a', ' ', 'c', 'a', 't']}
    """
    if targets == "chars":
        return {k: list(t) for k, t in texts.items() if t}
    if targets != "phonemes":
        raise ValueError(f"targets must be 'chars' or 'phonemes', not {targets!r}")
    from most_speech.text.g2p import espeak_phonemes

    keys = list(texts)
    return {k: p for k, p in zip(keys, espeak_phonemes([texts[k] for k in keys], voice=voice)) if p}


def symbol_words(symbols: list[str], targets: str) -> list[str]:
    """Words of a symbol sequence (spelled, or phonemes joined), for a word error rate."""
    if targets == "chars":
        return "".join(symbols).split()
    return [w.strip() for w in " ".join(symbols).split("|") if w.strip()]


def length_batches(lengths: dict[str, int], batch_frames: int, rng: random.Random) -> list[list[str]]:
    """Shuffled batches of similar-length utterances holding at most ``batch_frames`` padded frames."""
    ids = sorted(lengths, key=lambda k: (lengths[k], k))
    batches, cur = [], []
    for k in ids:
        if cur and (len(cur) + 1) * lengths[k] > batch_frames:
            batches.append(cur)
            cur = []
        cur.append(k)
    if cur:
        batches.append(cur)
    rng.shuffle(batches)
    return batches


def build_augment(freq_scale: float):
    """VTLP stretch + SpecAugment masks on ``[B, T, 80]`` raw filterbank frames (SpeechBrain ``Augmenter``)."""
    from speechbrain.augment.augmenter import Augmenter
    from speechbrain.augment.freq_domain import SpectrogramDrop

    from most_speech.training.augment import FrequencyScale

    return Augmenter(min_augmentations=3, max_augmentations=3, augmentations=[
        FrequencyScale(1.0 - freq_scale, 1.0 + freq_scale),
        SpectrogramDrop(drop_length_low=5, drop_length_high=20, drop_count_low=1, drop_count_high=3,
                        replace="mean", dim=1),
        SpectrogramDrop(drop_length_low=3, drop_length_high=10, drop_count_low=1, drop_count_high=2,
                        replace="mean", dim=2)])


def _pad(mats):
    lengths = torch.tensor([m.shape[0] for m in mats], dtype=torch.long)
    return torch.nn.utils.rnn.pad_sequence(mats, batch_first=True), lengths


def evaluate(model: PhoneticEncoder, feats: dict, symbols: dict, batch_frames: int) -> dict:
    """Greedy CTC symbol error rate (``cer`` or ``per``, %) and word error rate (``wer``) over ``symbols``."""
    model.eval()
    targets = model.config.targets
    refs, hyps = [], []
    lengths = {k: feats[k].shape[0] for k in symbols}
    with torch.no_grad():
        for batch in length_batches(lengths, batch_frames, random.Random(0)):
            fbank, lens = _pad([feats[k] for k in batch])
            hyps += model.greedy_symbols(fbank, lens)
            refs += [symbols[k] for k in batch]
    # jiwer scores word lists; symbols (characters or phonemes) are its "words" for the symbol error rate
    as_words = {"chars": lambda s: " ".join("_" if c == " " else c for c in s), "phonemes": " ".join}[targets]
    ser = jiwer.wer([as_words(r) for r in refs], [as_words(h) or "<empty>" for h in hyps])
    wer = jiwer.wer([" ".join(symbol_words(r, targets)) for r in refs],
                    [" ".join(symbol_words(h, targets)) or "<empty>" for h in hyps])
    return {"utterances": len(refs), "cer" if targets == "chars" else "per": 100 * ser, "wer": 100 * wer}


def fit_phonetic_encoder(feats_dir, train_manifest, out_dir, valid_manifest=None, *, steps: int = 1200,
                         batch_frames: int = 12000, learning_rate: float = 2e-3, warmup_steps: int = 100,
                         freq_scale: float = 0.12, augment: bool = True, seed: int = 0, targets: str = "chars",
                         espeak_voice: str = "en-us", **config) -> dict:
    """Train a phonetic encoder on stored filterbank frames and write it to ``out_dir``.

    Parameters
    ----------
    feats_dir : path
        Feature store of 80-d Kaldi filterbank frames (``most-dump-features --encoder fbank``).
    train_manifest, valid_manifest : path
        JSONL manifests (``id``, ``text``); the valid split is only scored.
    out_dir : path
        Written atomically (a ``.tmp`` sibling renamed at the end); must not exist yet.
    steps, batch_frames, learning_rate, warmup_steps
        AdamW with linear warmup and cosine decay to 5 %, batches of at most ``batch_frames`` padded frames.
    freq_scale : float
        VTLP stretch range ``1 +- freq_scale``.
    augment : bool
        Apply the VTLP stretch and SpecAugment masks to training batches.
    targets : {"chars", "phonemes"}
        CTC targets: the transcripts' characters, or their espeak-ng phonemes (needs ``espeak-ng``).
    espeak_voice : str
        espeak-ng voice whose pronunciation rules give the phonemes (the corpus's language: ``en-us``, ``de``...).
    **config
        :class:`~most_speech.audio.phonetic.PhoneticEncoderConfig` fields (``hidden_size``, ``layer`` ...).

    Returns
    -------
    dict
        The summary also written to ``valid.json`` (dev CER or PER, WER, steps, seconds).

    Examples
    --------
    >>> fit_phonetic_encoder("dump/feats/fbank", "data/small.jsonl", "exp/phonetic",
    ...                      "data/dev.jsonl", steps=1200)                    # doctest: +SKIP
    """
    out_dir = Path(out_dir)
    if (out_dir / "model.safetensors").exists():
        raise FileExistsError(f"{out_dir} already holds a phonetic encoder; remove it to retrain")
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    log_file = logging.FileHandler(tmp / "train_log.txt")
    log_file.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logger.addHandler(log_file)
    try:
        torch.manual_seed(seed)
        feats, train, valid = _load_data(feats_dir, train_manifest, valid_manifest)
        train, valid = (target_symbols(texts, targets, espeak_voice) for texts in (train, valid))
        vocab = sorted({s for symbols in train.values() for s in symbols})
        model = PhoneticEncoder(PhoneticEncoderConfig(vocab=vocab, num_mel_bins=_feature_dim(feats, feats_dir),
                                                      targets=targets, **config))
        logger.info("phonetic encoder: %d parameters, %d symbols, %d train / %d dev utterances",
                    sum(p.numel() for p in model.parameters()), len(vocab), len(train), len(valid))
        start = time.time()
        _train(model, feats, train, steps=steps, batch_frames=batch_frames, learning_rate=learning_rate,
               warmup_steps=warmup_steps, augmenter=build_augment(freq_scale) if augment else None,
               rng=random.Random(seed))
        summary = {"steps": steps, "targets": targets, "seconds": round(time.time() - start, 1),
                   "train_utterances": len(train)}
        if valid:
            summary["valid"] = scores = evaluate(model, feats, valid, batch_frames)
            logger.info("dev: %s (greedy CTC, %d utterances)", ", ".join(
                f"{k.upper()} {v:.2f} %" for k, v in scores.items() if k != "utterances"), scores["utterances"])
        model.eval().save_pretrained(tmp)
        atomic_write_json(tmp / "valid.json", summary)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # nothing half-written survives a failed or interrupted run
        raise
    finally:
        logger.removeHandler(log_file)
        log_file.close()
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return summary


def _load_data(feats_dir, train_manifest, valid_manifest):
    """``(frames by id, train transcripts, dev transcripts)``; frames are held in memory (minutes of speech)."""
    from most_speech.audio.store import FeatureReader

    reader = FeatureReader(feats_dir)
    train = load_transcripts(train_manifest, reader.keys())
    valid = load_transcripts(valid_manifest, reader.keys()) if valid_manifest else {}
    feats = {k: torch.as_tensor(reader[k], dtype=torch.float32) for k in (*train, *valid)}
    return feats, train, valid


def _feature_dim(feats: dict, feats_dir) -> int:
    dims = {m.shape[1] for m in feats.values()}
    if len(dims) != 1:
        raise ValueError(f"{feats_dir}: frames of dimensions {sorted(dims)}; expected one filterbank size")
    return dims.pop()


def _train(model, feats, symbols, *, steps, batch_frames, learning_rate, warmup_steps, augmenter, rng) -> None:
    """CTC training: AdamW, linear warmup then cosine decay to 5 %, gradient norm clipped at 1."""
    vocab = model.config.vocab
    index = {s: i + 1 for i, s in enumerate(vocab)}
    targets = {k: torch.tensor([index[s] for s in t]) for k, t in symbols.items()}
    lengths = {k: feats[k].shape[0] for k in targets}
    opt = torch.optim.AdamW(model.parameters(), lr=learning_rate, betas=(0.9, 0.98), weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup_steps) * (
        0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))))
    batches = []
    model.train()
    for step in tqdm(range(1, steps + 1), desc="phonetic encoder", unit="step"):
        if not batches:
            batches = length_batches(lengths, batch_frames, rng)
        batch = batches.pop()
        fbank, lens = _pad([feats[k] for k in batch])
        if augmenter is not None:
            fbank, _ = augmenter(fbank, lens.float() / fbank.shape[1])
        log_probs, out_lens = model.ctc_log_probs(fbank, lens)
        tgt, tgt_lens = _pad([targets[k] for k in batch])
        loss = torch.nn.functional.ctc_loss(log_probs.transpose(0, 1), tgt, out_lens, tgt_lens, blank=0,
                                            zero_infinity=True)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 50 == 0 or step == steps:
            logger.info("step %d: ctc loss %.3f, lr %.2e", step, loss.item(), sched.get_last_lr()[0])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="most-train-phonetic-encoder", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--feats", required=True, help="feature store of 80-d fbank frames (most-dump-features)")
    p.add_argument("--train", required=True, help="training manifest (id, text)")
    p.add_argument("--valid", help="dev manifest, scored at the end (greedy CTC CER / WER)")
    p.add_argument("--out", required=True, help="output directory (config.json, model.safetensors, logs)")
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--batch-frames", type=int, default=12000, help="padded fbank frames per batch")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--freq-scale", type=float, default=0.12, help="VTLP stretch range 1 +- this")
    p.add_argument("--no-augment", action="store_true", help="no VTLP stretch or SpecAugment masks")
    p.add_argument("--hidden-size", type=int, default=192)
    p.add_argument("--num-layers", type=int, default=3)
    p.add_argument("--frame-stack", type=int, default=4, help="fbank frames per output frame (4: 25 Hz)")
    p.add_argument("--layer", type=int, default=2, help="hidden state the encoder returns (0..num-layers)")
    p.add_argument("--targets", choices=("chars", "phonemes"), default="chars",
                   help="CTC targets: characters, or espeak-ng phonemes of the transcripts")
    p.add_argument("--espeak-voice", default="en-us",
                   help="espeak-ng voice (language) of the phoneme targets: en-us, en, de, fr ...")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    summary = fit_phonetic_encoder(
        args.feats, args.train, args.out, args.valid, steps=args.steps, batch_frames=args.batch_frames,
        learning_rate=args.lr, freq_scale=args.freq_scale, augment=not args.no_augment, seed=args.seed,
        targets=args.targets, espeak_voice=args.espeak_voice,
        hidden_size=args.hidden_size, num_layers=args.num_layers, frame_stack=args.frame_stack, layer=args.layer)
    print(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
