"""The TTS intelligibility manifest with the corpus's own recordings beside the synthesized ones.

``python -m most_speech.recipes.tts_eval --synth exp/decode/tts_test/synth.jsonl --manifest data/test.jsonl
--data-root CORPUS --clips-dir exp/decode/tts_test/real --out exp/decode/tts_test/intelligibility.jsonl``

``most-score intelligibility`` scores a ``real_audio`` next to each synthesized file, which gives the judge's
own WER on real speech of the same sentences (the floor the TTS WER should be read against). LibriHeavy-style
manifests point into long recordings (``start`` / ``duration``), so the real segments are cut out to 16 kHz wav
clips first (:func:`most_speech.decoding.tts.cut_real_clip`).

``most-decode tts --data-root CORPUS`` now writes ``real_audio`` into ``synth.jsonl`` itself (the recipes score
that file directly); this module adds it to a ``synth.jsonl`` decoded without the test manifest's audio, or
pairs synthesized audio with another manifest's recordings.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Optional

from tqdm import tqdm

from most_speech.data.manifest import read_manifest, relocate, write_manifest
from most_speech.decoding.tts import cut_real_clip

logger = logging.getLogger(__name__)

__all__ = ["intelligibility_manifest", "main"]


def intelligibility_manifest(synth_jsonl, manifest, clips_dir, out, data_root: Optional[str] = None) -> Path:
    """Write ``out``: one ``{"id", "text", "audio", "real_audio"}`` line per synthesized utterance.

    Utterances of ``synth_jsonl`` that are not in ``manifest`` are an error naming the id.
    """
    entries = read_manifest(manifest, required=("id", "audio"))
    clips_dir = Path(clips_dir)
    rows = []
    with open(synth_jsonl, encoding="utf-8") as f:
        synth = [json.loads(line) for line in f if line.strip()]
    for row in tqdm(synth, desc="real clips", unit="utt"):
        if row["id"] not in entries:
            raise KeyError(f"{synth_jsonl}: utterance {row['id']!r} is not in {manifest}")
        entry = relocate(entries[row["id"]], data_root) if data_root else entries[row["id"]]
        clip = clips_dir / f"{row['id'].replace('/', '_')}.wav"
        if not clip.is_file():
            cut_real_clip(entry["audio"], clip, entry.get("start", 0.0), entry.get("duration"))
        rows.append({"id": row["id"], "text": row["text"], "audio": row["audio"], "real_audio": str(clip.resolve())})
    return write_manifest(rows, out)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m most_speech.recipes.tts_eval", description=__doc__.split("\n")[0])
    p.add_argument("--synth", required=True, help="synth.jsonl of most-decode tts")
    p.add_argument("--manifest", required=True, help="the test manifest the texts came from")
    p.add_argument("--data-root", help="replaces {data_root} in the manifest's audio paths")
    p.add_argument("--clips-dir", required=True, help="where the real segments are written")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    print(f"wrote {intelligibility_manifest(a.synth, a.manifest, a.clips_dir, a.out, a.data_root)}")


if __name__ == "__main__":
    main()
