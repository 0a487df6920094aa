"""``most-prepare-data``: corpus preparers, Kaldi interop and manifest filtering from the command line.

Examples
--------
::

    most-prepare-data libriheavy --cuts-dir libriheavy --out data/ --splits small dev test_clean
    most-prepare-data librispeech --corpus-dir LibriSpeech --out data/ --splits test-clean test-other
    most-prepare-data commonvoice --cv-dir cv-corpus-17.0 --lang en --out data/
    most-prepare-data smoltalk --input smoltalk/data/all --out data/
    most-prepare-data kaldi-import --kaldi-dir kaldi/data/train --data-root /corpora --out data/train.jsonl
    most-prepare-data kaldi-export --manifest data/librispeech_test-clean.jsonl --data-root /corpora/LibriSpeech \\
        --out kaldi/test_clean
    most-prepare-data filter --in data/libriheavy_small.jsonl --out data/small_filtered.jsonl \\
        --min-dur 1 --max-dur 30
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import List, Optional

from most_speech.data.fileio import atomic_write_text
from most_speech.data.manifest import ManifestError, filter_entries, iter_manifest, relocate, write_manifest

logger = logging.getLogger("most_speech.data.cli")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="most-prepare-data", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    lh = sub.add_parser("libriheavy", help="LibriHeavy cuts (libriheavy_cuts_<split>.jsonl.gz) -> manifests")
    lh.add_argument("--cuts-dir", required=True)
    lh.add_argument("--out", required=True, help="output folder (libriheavy_<split>.jsonl)")
    lh.add_argument("--splits", nargs="+", default=["small", "dev", "test_clean", "test_other"])
    lh.add_argument("--text-form", choices=["cased", "normalized"], default="cased")
    lh.add_argument("--data-root", help="LibriHeavy working folder; when given, report missing audio files")
    lh.add_argument("--prefix", default="lh")

    ls = sub.add_parser("librispeech", help="LibriSpeech folders -> manifests")
    ls.add_argument("--corpus-dir", required=True, help="the LibriSpeech folder")
    ls.add_argument("--out", required=True)
    ls.add_argument("--splits", nargs="+")
    ls.add_argument("--data-root", help="what {data_root} stands for (default: --corpus-dir)")
    ls.add_argument("--prefix", default="ls")

    cv = sub.add_parser("commonvoice", help="Common Voice <lang>/*.tsv -> manifests")
    cv.add_argument("--cv-dir", required=True, help="folder holding the language folders")
    cv.add_argument("--lang", required=True)
    cv.add_argument("--out", required=True)
    cv.add_argument("--splits", nargs="+", default=["train", "dev", "test"])
    cv.add_argument("--data-root", help="what {data_root} stands for (default: --cv-dir)")
    cv.add_argument("--prefix", default="cv")

    st = sub.add_parser("smoltalk", help="SmolTalk JSONL / parquet -> dialogue manifests")
    st.add_argument("--input", required=True, help="a file or a folder of *.jsonl / *.parquet")
    st.add_argument("--out", required=True)
    st.add_argument("--split", help="split name (default: from the file names)")
    st.add_argument("--skip-invalid", action="store_true")
    st.add_argument("--prefix", default="smoltalk")

    ki = sub.add_parser("kaldi-import", help="Kaldi data dir -> manifest")
    ki.add_argument("--kaldi-dir", required=True)
    ki.add_argument("--data-root", required=True)
    ki.add_argument("--out", required=True, help="output manifest (.jsonl)")
    ki.add_argument("--base-dir", help="folder relative wav.scp paths start from (default: current)")
    ki.add_argument("--on-pipe", choices=["error", "skip"], default="error")
    ki.add_argument("--lang")
    ki.add_argument("--prefix")

    ke = sub.add_parser("kaldi-export", help="manifest -> Kaldi data dir")
    ke.add_argument("--manifest", required=True)
    ke.add_argument("--data-root", required=True)
    ke.add_argument("--out", required=True, help="output Kaldi data folder")

    fl = sub.add_parser("filter", help="filter a manifest by duration / empty text and print the stats")
    fl.add_argument("--in", dest="inp", required=True)
    fl.add_argument("--out", required=True)
    fl.add_argument("--min-dur", type=float)
    fl.add_argument("--max-dur", type=float)
    fl.add_argument("--keep-empty-text", action="store_true")
    fl.add_argument("--stats-json", help="also write the stats as JSON here")
    return p


def _report_missing_audio(paths, data_root: str) -> None:
    for path in paths:
        seen, missing = set(), 0
        for entry in iter_manifest(path):
            audio = relocate(entry, data_root)["audio"]
            if audio not in seen:
                seen.add(audio)
                missing += not Path(audio).exists()
        level = logging.WARNING if missing else logging.INFO
        logger.log(level, "%s: %d of %d audio files missing under %s", path, missing, len(seen), data_root)


def _run(args) -> List[Path]:
    from most_speech.data import preparers

    if args.command == "libriheavy":
        out = preparers.prepare_libriheavy(args.cuts_dir, args.out, args.splits, args.text_form, args.prefix)
        if args.data_root:
            _report_missing_audio(out.values(), args.data_root)
        return list(out.values())
    if args.command == "librispeech":
        return list(preparers.prepare_librispeech(args.corpus_dir, args.out, args.splits, args.data_root,
                                                  args.prefix).values())
    if args.command == "commonvoice":
        return list(preparers.prepare_commonvoice(args.cv_dir, args.lang, args.out, args.splits, args.data_root,
                                                  args.prefix).values())
    if args.command == "smoltalk":
        return list(preparers.prepare_smoltalk(args.input, args.out, args.split, args.prefix,
                                               args.skip_invalid).values())
    if args.command == "kaldi-import":
        entries = preparers.read_kaldi_dir(args.kaldi_dir, args.data_root, args.base_dir, args.on_pipe, args.lang,
                                           args.prefix)
        return [write_manifest(entries, args.out)]
    if args.command == "kaldi-export":
        return [preparers.write_kaldi_dir(iter_manifest(args.manifest), args.out, args.data_root)]
    if args.command == "filter":
        kept, stats = filter_entries(iter_manifest(args.inp), args.min_dur, args.max_dur,
                                     drop_empty_text=not args.keep_empty_text)
        path = write_manifest(kept, args.out)
        print(stats.table())
        if args.stats_json:
            atomic_write_text(args.stats_json, json.dumps(stats.as_dict(), indent=2))
        return [path]
    raise AssertionError(args.command)


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``most-prepare-data``; returns the exit status (0 ok, 1 bad input).

    Examples
    --------
    >>> main(["filter", "--help"])  # doctest: +SKIP
    """
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        written = _run(args)
    except (ManifestError, FileNotFoundError, ValueError) as err:
        print(f"most-prepare-data {args.command}: error: {err}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
