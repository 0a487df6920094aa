"""``most-decode``: the recipes' decoding stage on an export folder.

Subcommands::

    most-decode asr  EXPORT --manifest test.jsonl --out exp/decode/asr_test/hyp.jsonl [--beam-size 4] [--ctc-weight 0.3]
    most-decode tts  EXPORT --manifest test.jsonl --out-dir exp/decode/tts_test [--temperature 0.8] [--candidates 4]
    most-decode slm-pairs EXPORT --pairs pairs.csv --out pairs.jsonl      (audio pairs -> unit-token pairs)
    most-decode qa   EXPORT --manifest questions.jsonl --out answers.jsonl [--speak --out-dir DIR]
    most-decode resynth EXPORT --manifest test.jsonl --units dump/units/all.jsonl --out-dir DIR

``resynth`` voices each utterance's own k-means units (deduplicated or not, as the TTS targets are) with the export's
vocoder: judged like ``tts`` output, it is the ceiling the vocoder and unit inventory put on TTS.

Manifests are JSONL with ``id`` and ``audio`` (``{data_root}`` replaced by ``--data-root``; other relative
paths are taken from the manifest's own folder, as ``most-score build-qa`` writes them), ``start`` /
``duration`` for segments, ``text`` for TTS. Outputs are written atomically; ``tts`` writes one wav per id,
``units.jsonl`` and ``synth.jsonl`` (``id``, ``audio``, ``text`` and, where the manifest has the recording,
``real_audio``: ready for ``most-score intelligibility``, which also scores the judge on the real audio).
"""
from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path
from typing import List, Optional

import torch
from tqdm import tqdm

from ..audio.io import load_audio, save_audio
from ..data.fileio import atomic_write_json, write_jsonl
from ..data.manifest import DATA_ROOT, iter_manifest
from .generation import SamplingConfig, chunks

log = logging.getLogger("most_speech.decoding")


def audio_path(audio: str, manifest_dir: Path, data_root: Optional[str] = None) -> str:
    """Where a manifest's ``audio`` lies: ``{data_root}`` replaced, other relative paths under ``manifest_dir``.

    Absolute paths are kept; a relative ``data_root`` is taken from the working directory. Without
    ``data_root`` a ``{data_root}`` path is returned unchanged.

    Examples
    --------
    >>> audio_path("wav/q1.wav", Path("/data/spoken_qa"))
    '/data/spoken_qa/wav/q1.wav'
    >>> audio_path("{data_root}/a.flac", Path("/data"), "/corpus"), audio_path("/x/a.wav", Path("/data"))
    ('/corpus/a.flac', '/x/a.wav')
    """
    if data_root is not None:
        audio = audio.replace(DATA_ROOT, str(Path(data_root).absolute()))
    if DATA_ROOT in audio:
        return audio
    path = Path(audio)
    return str(path if path.is_absolute() else manifest_dir / path)


def _entries(args, required=("audio",)) -> List[dict]:
    """The manifest's rows (``--limit`` first), audio paths resolved by :func:`audio_path`.

    When ``audio`` is required, a ``{data_root}`` path without ``--data-root`` is an error naming the row.
    """
    rows = list(iter_manifest(args.manifest, required=required))
    if args.limit:
        rows = rows[:args.limit]
    manifest_dir = Path(args.manifest).absolute().parent
    for row in rows:
        if "audio" not in row:
            continue
        row["audio"] = audio_path(row["audio"], manifest_dir, args.data_root)
        if "audio" in required and DATA_ROOT in row["audio"]:
            raise SystemExit(f"{args.manifest}: utterance {row['id']!r}: audio {row['audio']!r} uses "
                             f"{DATA_ROOT}; pass --data-root")
    return rows


def _with_wavs(loaded, rows: List[dict]) -> List[dict]:
    """Load each row's audio (segment-aware) and add units when the model takes unit input."""
    wavs = [load_audio(r["audio"], start=float(r.get("start", 0.0)), duration=r.get("duration")) for r in rows]
    entries = loaded.entries(wavs)
    for row, entry in zip(rows, entries):
        entry.update({k: v for k, v in row.items() if k not in entry})
        entry["id"] = row["id"]
    return entries


def _cmd_asr(args, loaded):
    from .asr import ASRDecoder
    dec = ASRDecoder(loaded.model, loaded.templates, features=loaded.features, beam_size=args.beam_size,
                     max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, ctc_weight=args.ctc_weight)
    out = []
    for part in tqdm(chunks(_entries(args), args.batch_size), desc="asr", unit="batch"):
        entries = _with_wavs(loaded, part)
        out += [{"id": e["id"], "text": h} for e, h in zip(entries, dec.decode_batch(entries))]
    write_jsonl(args.out, out)
    settings = {"beam_size": args.beam_size, "ctc_weight": args.ctc_weight}  # how the hypotheses were made
    atomic_write_json(Path(args.out).parent / "decoding.json", settings)
    print(f"wrote {len(out)} hypotheses to {args.out}")


def _file_id(utt_id: str) -> str:
    return utt_id.replace("/", "_")


def _real_audio_paths(rows: List[dict], clips_dir: Path, manifest) -> dict:
    """``{id: real recording}`` for the judge's real-audio WER: the file itself, or its segment cut to a clip.

    Rows without audio are left out; so are ``{data_root}`` paths without ``--data-root`` (with a warning).
    """
    from .tts import cut_real_clip
    real, unresolved = {}, []
    for row in rows:
        if "audio" not in row:
            continue
        if DATA_ROOT in row["audio"]:
            unresolved.append(row["id"])
        elif "start" in row or "duration" in row:
            clip = clips_dir / f"{_file_id(row['id'])}.wav"
            real[row["id"]] = str(cut_real_clip(row["audio"], clip, row.get("start", 0.0), row.get("duration")))
        else:
            real[row["id"]] = str(Path(row["audio"]).resolve())
    if unresolved:
        log.warning("%s: %d utterances (e.g. %r) have %s audio and no --data-root was given: synth.jsonl has "
                    "no real_audio for them", manifest, len(unresolved), unresolved[0], DATA_ROOT)
    return real


def _cmd_tts(args, loaded):
    from .tts import TTSDecoder
    if loaded.vocoder is None:
        raise SystemExit(f"{args.export}: the export has no vocoder")
    sampling = SamplingConfig(args.temperature, args.top_k, args.top_p, args.seed)
    try:
        dec = TTSDecoder(loaded.model, loaded.templates, loaded.vocoder, km_tag=loaded.info.km_tag,
                         sampling=sampling, unit_rate=loaded.info.unit_rate,
                         batch_size=args.batch_size * args.candidates, guidance_scale=args.guidance_scale,
                         guidance_prompt=args.guidance_prompt, num_candidates=args.candidates,
                         reranker=_reranker(args, loaded), draft_griffin_lim_iters=args.draft_griffin_lim_iters or None)
    except ValueError as err:  # a draft Griffin-Lim count for a vocoder without Griffin-Lim
        raise SystemExit(f"{args.export}: {err}") from None
    out_dir = Path(args.out_dir)
    (out_dir / "wav").mkdir(parents=True, exist_ok=True)
    rows = _entries(args, required=("text",))
    real = _real_audio_paths(rows, out_dir / "real", args.manifest)  # before generating: bad paths fail early
    units_rows, synth_rows = [], []
    for part in tqdm(chunks(rows, args.batch_size), desc="tts", unit="batch"):
        units, wavs, scores = dec.synthesize_with_units([r["text"] for r in part])
        for row, u, wav, score in zip(part, units, wavs, scores):
            path = out_dir / "wav" / f"{_file_id(row['id'])}.wav"
            save_audio(path, wav, loaded.vocoder.sample_rate)
            units_rows.append({"id": row["id"], "units": u, "km_tag": loaded.info.km_tag,
                               **({"rerank_score": score if math.isfinite(score) else None}
                                  if score is not None else {})})
            synth_rows.append({"id": row["id"], "audio": str(path.resolve()), "text": row["text"],
                               **({"real_audio": real[row["id"]]} if row["id"] in real else {})})
    write_jsonl(out_dir / "units.jsonl", units_rows)
    write_jsonl(out_dir / "synth.jsonl", synth_rows)
    atomic_write_json(out_dir / "decoding.json", {
        "temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p, "seed": args.seed,
        "guidance_scale": args.guidance_scale, "candidates": args.candidates,
        "reranker": args.reranker if args.candidates > 1 else None,
        "rerank_ctc_weight": args.rerank_ctc_weight if args.candidates > 1 and "self" in args.reranker else None,
        "draft_griffin_lim_iters": dec.draft_griffin_lim_iters})
    print(f"wrote {len(synth_rows)} utterances to {out_dir}")


def _reranker(args, loaded):
    """The best-of-N ranker of ``--candidates`` / ``--reranker`` (None for one candidate)."""
    if args.candidates == 1:
        return None
    from .rerank import build_reranker
    try:
        return build_reranker(args.reranker, loaded, args.rerank_ctc_weight)
    except ValueError as err:  # a CTC weight the model has no head for, an encoder without a CTC head
        raise SystemExit(f"{args.export}: --reranker {args.reranker}: {err}") from None


def _cmd_resynth(args, loaded):
    from ..vocoder.data import read_unit_file
    from ..audio.kmeans import dedup
    if loaded.vocoder is None:
        raise SystemExit(f"{args.export}: the export has no vocoder")
    units, _ = read_unit_file(args.units, km_tag=loaded.info.km_tag)
    out_dir = Path(args.out_dir)
    (out_dir / "wav").mkdir(parents=True, exist_ok=True)
    rows = _entries(args, required=("text",))
    missing = [r["id"] for r in rows if r["id"] not in units]
    if missing:
        raise SystemExit(f"{args.units}: no units for {len(missing)} utterances of {args.manifest} "
                         f"(e.g. {missing[0]!r})")
    synth_rows = []
    deduplicated = loaded.templates.config.dedup_target_units  # voiced in the form the model's TTS targets take
    for part in tqdm(chunks(rows, args.batch_size), desc="resynth", unit="batch"):
        seqs = [dedup(units[r["id"]])[0].tolist() if deduplicated else list(units[r["id"]]) for r in part]
        wavs = loaded.vocoder.synthesize(seqs, km_tag=loaded.info.km_tag, deduplicated=deduplicated)
        for row, wav in zip(part, wavs):
            path = out_dir / "wav" / f"{_file_id(row['id'])}.wav"
            save_audio(path, wav, loaded.vocoder.sample_rate)
            synth_rows.append({"id": row["id"], "audio": str(path.resolve()), "text": row["text"]})
    write_jsonl(out_dir / "synth.jsonl", synth_rows)
    print(f"wrote {len(synth_rows)} resynthesized utterances to {out_dir}")


def _cmd_slm_pairs(args, loaded):
    from ..scoring.slm import write_pairs
    from ..scoring.slm_data import encode_audio_pairs
    if loaded.kmeans is None:
        raise SystemExit(f"{args.export}: spoken-LM pairs need the export's k-means (kmeans.safetensors)")
    tok, lay = loaded.tokenizer, loaded.tokenizer.layout
    from ..audio.kmeans import dedup

    def encode(path):
        feats = loaded.features([{"wav": load_audio(path)}])[0]
        units = loaded.kmeans(feats)
        if loaded.templates.config.dedup_target_units:  # the form speech_lm / TTS targets were trained in
            units, _ = dedup(units)
        return [lay.boa_id] + tok.units_to_ids(units.tolist()) + [lay.eoa_id]

    pairs = encode_audio_pairs(args.pairs, encode)
    write_pairs(args.out, pairs)
    print(f"wrote {len(pairs)} unit-token pairs to {args.out}")


def _cmd_qa(args, loaded):
    from .spoken_qa import SpokenQADecoder
    qa = SpokenQADecoder(loaded.model, loaded.templates, features=loaded.features, vocoder=loaded.vocoder,
                         km_tag=loaded.info.km_tag, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    out = []
    for part in tqdm(chunks(_entries(args), args.batch_size), desc="qa", unit="batch"):
        entries = _with_wavs(loaded, part)
        if args.speak:
            out_dir = Path(args.out_dir or Path(args.out).parent / "answers")
            out_dir.mkdir(parents=True, exist_ok=True)
            for qid, wav in qa.answer_speech(entries).items():
                path = out_dir / f"{_file_id(qid)}.wav"
                save_audio(path, wav, loaded.vocoder.sample_rate)
                out.append({"id": qid, "audio": str(path.resolve())})
        else:
            out += [{"id": k, "text": v} for k, v in qa.answer_text(entries).items()]
    write_jsonl(args.out, out)
    print(f"wrote {len(out)} answers to {args.out}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="most-decode", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp, manifest=True):
        sp.add_argument("export", help="export folder (most.json, model/, tokenizer/, ...)")
        if manifest:
            sp.add_argument("--manifest", required=True)
            sp.add_argument("--data-root")
            sp.add_argument("--limit", type=int, default=0, help="decode only the first N entries")
        sp.add_argument("--batch-size", type=int, default=8)
        sp.add_argument("--device", default="cpu")

    asr = sub.add_parser("asr", help="speech -> text")
    common(asr)
    asr.add_argument("--out", required=True)
    asr.add_argument("--beam-size", type=int, default=1)
    asr.add_argument("--ctc-weight", type=float, default=0.0,
                     help="0: LM decoding; 1: CTC greedy; between: joint CTC/attention rescoring of the N-best "
                          "(models trained with a CTC head)")
    asr.add_argument("--max-new-tokens", type=int, default=200)
    tts = sub.add_parser("tts", help="text -> units -> waveform")
    common(tts)
    tts.add_argument("--out-dir", required=True)
    tts.add_argument("--temperature", type=float, default=0.8)
    tts.add_argument("--top-k", type=int, default=50)
    tts.add_argument("--top-p", type=float, default=0.95)
    tts.add_argument("--seed", type=int, default=0)
    tts.add_argument("--guidance-scale", type=float, default=1.0,
                     help="classifier-free guidance towards the text (1: off)")
    tts.add_argument("--guidance-prompt", choices=("instruction", "bos"), default="instruction",
                     help="unconditional prompt of the guidance: the TTS instruction without text, or BOS alone")
    tts.add_argument("--candidates", type=int, default=1,
                     help="best-of-N: sample N unit sequences per text, keep the one --reranker scores highest "
                          "(log P(text | audio))")
    tts.add_argument("--reranker", choices=("self", "encoder_ctc", "self+encoder_ctc"),  # rerank.RERANKERS
                     default="self",
                     help="best-of-N ranker: the model's own ASR, the speech encoder's CTC head (an encoder "
                          "trained with one, e.g. the phonetic encoder), or the sum of their log-likelihoods")
    tts.add_argument("--draft-griffin-lim-iters", type=int, default=0,
                     help="best-of-N with a Griffin-Lim vocoder: voice the candidates for ranking with this many "
                          "iterations, the kept one with the vocoder's own (0: all with the vocoder's own)")
    tts.add_argument("--rerank-ctc-weight", type=float, default=0.0,
                     help="reranker self: CTC weight of its score (models with a CTC head; as --ctc-weight of asr)")
    pairs = sub.add_parser("slm-pairs", help="audio likelihood pairs -> unit-token pairs")
    common(pairs, manifest=False)
    pairs.add_argument("--pairs", required=True, help="pairs.csv from most-score build-*")
    pairs.add_argument("--out", required=True)
    qa = sub.add_parser("qa", help="spoken questions -> text (or spoken, --speak) answers")
    common(qa)
    qa.add_argument("--out", required=True)
    qa.add_argument("--speak", action="store_true")
    qa.add_argument("--out-dir")
    qa.add_argument("--max-new-tokens", type=int, default=64)
    resynth = sub.add_parser("resynth", help="real units -> waveform (the vocoder's ceiling for TTS)")
    common(resynth)
    resynth.add_argument("--units", required=True, help="units JSONL (most-dump-units) covering the manifest")
    resynth.add_argument("--out-dir", required=True)
    return p


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from ..inference.interfaces import _Loaded
    with torch.no_grad():  # a context, not set_grad_enabled: main() is also called from Python
        loaded = _Loaded(args.export, args.device)
        {"asr": _cmd_asr, "tts": _cmd_tts, "slm-pairs": _cmd_slm_pairs, "qa": _cmd_qa,
         "resynth": _cmd_resynth}[args.cmd](args, loaded)


if __name__ == "__main__":
    main()
