"""``most-score``: command line of the scoring suites.

Subcommands::

    most-score wer --ref REF --hyp HYP --out DIR [--unit word|char] [--strict]
    most-score intelligibility --manifest M.jsonl --judge whisper [--judge pocketsphinx] [--jobs N] --out DIR
    most-score slm --pairs PAIRS.jsonl --model HF_DIR --out DIR [--normalize] [--bos-id N]
    most-score build-sblimp --blimp blimp.jsonl --out DIR [--max-per-paradigm N] [--voice SPEC [SPEC ...]]
    most-score build-swuggy --out DIR [--words FILE] [--sentences FILE ...] [--match-phonemes]
                        [--voice SPEC [SPEC ...]]
    most-score build-storycloze --stories S.jsonl --out DIR [--voice SPEC [SPEC ...]]
    most-score build-qa --questions test.json --out DIR [--limit N] [--voice SPEC]
    most-score qa --questions Q --pred P --out DIR [--limit N]   (text answers)
    most-score qa --questions Q --answer-audio A --judge whisper --out DIR   (spoken answers)

Every score uses :func:`most_speech.text.normalize.normalize_text`. Transcript files (``--ref``, ``--hyp``,
``--pred``) are JSONL ``{"id","text"}``, Kaldi ``text`` or sclite ``.trn``; utterances are joined by id.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import List, Optional

__all__ = ["main", "build_parser"]

log = logging.getLogger("most_speech.scoring")


def _cmd_wer(args) -> dict:
    from most_speech.scoring.report import format_result, write_report
    from most_speech.scoring.wer import score_files

    score = score_files(args.ref, args.hyp, unit=args.unit, strict=args.strict)
    write_report(score, args.out, n_worst=args.n_worst)
    print(format_result(score).split("\n\n")[0])
    return score.summary()


def _cmd_intelligibility(args) -> dict:
    from most_speech.scoring.intelligibility import (evaluate_intelligibility, format_table, load_items,
                                                     write_intelligibility_report)

    items = load_items(args.manifest, data_root=args.data_root)
    results = [evaluate_intelligibility(items, judge, jobs=args.jobs) for judge in args.judge or ["whisper"]]
    write_intelligibility_report(results, args.out)
    print(format_table(results))
    return {"rows": [row for r in results for row in r.rows()]}


def _cmd_slm(args) -> dict:
    from transformers import AutoModelForCausalLM

    import most_speech.models  # noqa: F401 - registers the "most" model type
    from most_speech.scoring.slm import evaluate_pairs, make_score_fn, read_pairs

    pairs = read_pairs(args.pairs)
    model = AutoModelForCausalLM.from_pretrained(args.model).to(args.device).eval()
    score_fn = make_score_fn(model, batch_size=args.batch_size, normalize=args.normalize, pad_id=args.pad_id,
                             bos_id=args.bos_id, progress=True)
    summary = evaluate_pairs(pairs, score_fn).summary()
    _write_json(Path(args.out) / "summary.json", summary)
    print(f"accuracy {summary['accuracy']:.2f}% (95% CI {summary['ci95'][0]:.2f}-{summary['ci95'][1]:.2f}) "
          f"over {summary['n_pairs']} pairs; length baseline (shorter item wins) {summary['length_baseline']:.2f}%, "
          f"sign test against it p = {summary['vs_length_baseline']['p']:.3g}; "
          f"{summary['equal_length']['n_pairs']} pairs of equal length: {summary['equal_length']['accuracy']}%")
    if len(summary["per_voice"]) > 1:
        print("per voice: " + ", ".join(f"{v} {r['accuracy']:.2f}%" for v, r in summary["per_voice"].items()))
    return summary


def _build(args, text_pairs) -> dict:
    from most_speech.scoring.slm_data import build_audio_pairs

    manifest = build_audio_pairs(text_pairs, args.out, voice=args.voice, overwrite=args.overwrite,
                                 jobs=args.jobs)
    print(f"{len(text_pairs)} pairs -> {manifest}")
    return {"manifest": str(manifest), "n_pairs": len(text_pairs)}


def _cmd_build_sblimp(args) -> dict:
    from most_speech.scoring.slm_data import load_blimp

    return _build(args, load_blimp(args.blimp, args.paradigm, args.max_per_paradigm))


def _cmd_build_swuggy(args) -> dict:
    from most_speech.scoring.slm_data import load_wordlist, make_sentence_wuggy_pairs, make_wuggy_pairs

    words = load_wordlist(args.words)
    if not args.sentences:
        return _build(args, make_wuggy_pairs(words, seed=args.seed, match_phonemes=args.match_phonemes))
    sentences = [text for path in args.sentences for text in _read_sentences(path)]
    pairs = make_sentence_wuggy_pairs(sentences, words, seed=args.seed, match_phonemes=args.match_phonemes)
    if not pairs:
        raise ValueError(f"{' '.join(args.sentences)}: no sentence holds a word of the word list with a pseudoword")
    return _build(args, pairs)


def _read_sentences(path) -> List[str]:
    """Sentences of a manifest (JSONL with ``id`` and ``text``) or of a text file (one per line)."""
    from most_speech.scoring.io import read_transcripts

    if not str(path).endswith(".jsonl"):
        return [ln.strip() for ln in Path(path).read_text(encoding="utf-8").splitlines() if ln.strip()]
    texts = read_transcripts(path, fmt="jsonl")
    empty = [utt for utt, text in texts.items() if not text.strip()]
    if empty:
        raise ValueError(f"{path}: entries with an empty 'text' field: {empty[:5]}")
    return list(texts.values())


def _cmd_build_storycloze(args) -> dict:
    from most_speech.scoring.slm_data import load_stories

    return _build(args, load_stories(args.stories))


def _cmd_build_qa(args) -> dict:
    from most_speech.scoring.qa import build_spoken_questions, load_questions

    items = load_questions(args.questions, limit=args.limit)
    manifest = build_spoken_questions(items, args.out, voice=args.voice, overwrite=args.overwrite,
                                      jobs=args.jobs)
    print(f"{len(items)} spoken questions -> {manifest}")
    return {"manifest": str(manifest), "n_questions": len(items)}


def _cmd_qa(args) -> dict:
    from most_speech.scoring.io import read_transcripts
    from most_speech.scoring.qa import load_questions, score_qa, transcribe_answers, write_qa_report

    items = load_questions(args.questions, limit=args.limit or None)
    if args.pred:
        outputs = read_transcripts(args.pred)
    else:
        audio = read_transcripts(args.answer_audio, text_key="audio")
        base = Path(args.answer_audio).parent
        audio = {k: str(v if Path(v).is_absolute() else base / v) for k, v in audio.items()}
        outputs = transcribe_answers(audio, judge=args.judge)
    result = score_qa(items, outputs)
    write_qa_report(result, items, args.out)
    summary = result.summary()
    print(f"accuracy {summary['accuracy']:.2f}% (95% CI {summary['ci95'][0]:.2f}-{summary['ci95'][1]:.2f}) "
          f"over {summary['n_questions']} questions")
    return summary


def _write_json(path: Path, obj) -> None:
    from most_speech.scoring.io import atomic_write_json

    atomic_write_json(path, obj)


def _add_voice(p, several: bool = False) -> None:
    if several:
        p.add_argument("--voice", nargs="+", default=["espeak-ng:en-us"], metavar="SPEC",
                       help="TTS voice spec(s) (espeak-ng:VOICE or flite:VOICE); several: every pair by each voice")
    else:
        p.add_argument("--voice", default="espeak-ng:en-us", help="TTS voice spec (espeak-ng:VOICE or flite:VOICE)")
    p.add_argument("--overwrite", action="store_true", help="re-synthesize existing wav files")
    p.add_argument("--jobs", type=int, default=1, help="sentences synthesized at once (same files)")


def build_parser() -> argparse.ArgumentParser:
    """The ``most-score`` argument parser (one subparser per scorer / builder)."""
    parser = argparse.ArgumentParser(prog="most-score", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("wer", help="WER/CER of hypotheses against references, joined by id")
    p.add_argument("--ref", required=True)
    p.add_argument("--hyp", required=True)
    p.add_argument("--out", required=True, help="report folder (summary.json, result.txt, worst.md, *.trn)")
    p.add_argument("--unit", choices=["word", "char"], default="word")
    p.add_argument("--strict", action="store_true", help="fail when ids do not match")
    p.add_argument("--n-worst", type=int, default=20)
    p.set_defaults(func=_cmd_wer)

    p = sub.add_parser("intelligibility", help="TTS intelligibility with ASR judges")
    p.add_argument("--manifest", required=True, help='JSONL {"id","text","audio"[,"real_audio"]} '
                   '(synth.jsonl of most-decode tts)')
    p.add_argument("--judge", action="append", help="whisper[:DIR] | pocketsphinx | ctc:DIR (repeatable)")
    p.add_argument("--data-root", default=None, help="replaces {data_root} in audio paths")
    p.add_argument("--jobs", type=int, default=1, help="worker processes sharing the clips (same transcripts)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_cmd_intelligibility)

    p = sub.add_parser("slm", help="likelihood-pair accuracy of a causal LM")
    p.add_argument("--pairs", required=True, help='JSONL {"id","good":[ids],"bad":[ids],"type","group"}')
    p.add_argument("--model", required=True, help="Hugging Face causal LM directory")
    p.add_argument("--out", required=True)
    p.add_argument("--normalize", action="store_true", help="length-normalised log-probabilities")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--pad-id", type=int, default=0)
    p.add_argument("--bos-id", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_cmd_slm)

    p = sub.add_parser("build-sblimp", help="synthesize BLiMP pairs (sBLIMP-style)")
    p.add_argument("--blimp", required=True)
    p.add_argument("--paradigm", action="append", help="BLiMP UID to keep (repeatable; default all)")
    p.add_argument("--max-per-paradigm", type=int, default=None)
    p.add_argument("--out", required=True)
    _add_voice(p, several=True)
    p.set_defaults(func=_cmd_build_sblimp)

    p = sub.add_parser("build-swuggy", help="synthesize word / pseudoword pairs (sWUGGY-style)")
    p.add_argument("--words", default=None, help="word list (default: the shipped list)")
    p.add_argument("--sentences", nargs="+", default=None,
                   help="pairs inside sentences instead of single words: manifests (.jsonl, field text) or files "
                        "of one sentence per line, pooled in order; one word of each sentence is replaced by its "
                        "pseudoword")
    p.add_argument("--match-phonemes", action="store_true",
                   help="only pseudowords whose espeak-ng pronunciation has as many phonemes as the word's, one or "
                        "two of them changed within their class, so that length cannot decide a pair")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    _add_voice(p, several=True)
    p.set_defaults(func=_cmd_build_swuggy)

    p = sub.add_parser("build-storycloze", help="synthesize story pairs (sStoryCloze-style)")
    p.add_argument("--stories", required=True, help='JSONL {"id","context","good_ending","bad_ending"}')
    p.add_argument("--out", required=True)
    _add_voice(p, several=True)
    p.set_defaults(func=_cmd_build_storycloze)

    p = sub.add_parser("build-qa", help="synthesize spoken questions (WebQuestions format)")
    p.add_argument("--questions", required=True)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--out", required=True)
    _add_voice(p)
    p.set_defaults(func=_cmd_build_qa)

    p = sub.add_parser("qa", help="spoken-QA accuracy (gold answer contained in the output)")
    p.add_argument("--questions", required=True)
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--pred", help="text answers: JSONL {id,text}, Kaldi text or .trn")
    group.add_argument("--answer-audio", help='spoken answers: JSONL {"id","audio"}')
    p.add_argument("--judge", default="whisper", help="ASR judge for spoken answers")
    p.add_argument("--limit", type=int, default=0, help="score the first N questions only (0: all)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_cmd_qa)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``most-score``; returns the exit status.

    Examples
    --------
    >>> main(["wer", "--ref", "ref.jsonl", "--hyp", "hyp.jsonl", "--out", "exp/score"])  # doctest: +SKIP
    %WER 4.20 [ ... ]
    0
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        args.func(args)
    except (FileNotFoundError, ValueError) as e:
        log.error("%s", e)
        print(f"most-score {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
