"""Synthesise a small multi-speaker English corpus offline, in LibriHeavy's and Common Voice's formats.

The corpus lets every recipe run end to end on a laptop: sentences come from a
small grammar shipped in ``mini_corpus_text/grammar.txt`` (a few hundred words,
written for this project), speech from espeak-ng and flite (see
:mod:`most_speech.audio.tts_engines`). Output layout (``<out>`` is the target folder)::

    <out>/download/librilight/<subset>/<spk>/<book>/<file>.flac   16 kHz mono "chapters"
    <out>/libriheavy_cuts_{small,dev,test_clean}.jsonl.gz           lhotse MonoCuts, as LibriHeavy
    <out>/commonvoice/en/clips/*.mp3, {train,dev,test,validated}.tsv, clip_durations.tsv
    <out>/README.md, <out>/stats.json

Design choices
--------------
* A *speaker* is (engine, voice, variant, base rate, base pitch). The speaker table
  is fixed (independent of ``--seed``): 36 training speakers (32 espeak-ng
  accent+variant pairs, flite ``slt`` and ``kal16`` twice each), 7 dev and 7 test
  speakers. Dev and test use espeak-ng variants and a flite voice that training
  never uses (dev: ``rms``, test: ``awb``), so both are held-out-speaker sets; the
  eight espeak-ng accents appear in every split.
* A sentence's split is a function of its normalised text (a hash bucket), so
  train/dev/test sentences are disjoint for every seed and size.
* Everything random (sentences, speaker order, per-utterance rate/pitch, pauses,
  noise) comes from ``--seed``; the same seed gives byte-identical output. Each
  split is planned from its own random stream, so dev and test (sentences, who
  speaks them, how) do not change with ``--num-train``: figures from corpora of
  different training sizes are measured on the same audio.
* Work is done per chapter in a process pool; each chapter's FLAC, clips and a
  small marker file are written atomically, so an interrupted run resumes where it
  stopped and a finished chapter is never synthesised twice.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import gzip
import hashlib
import io
import json
import logging
import multiprocessing
import os
import random
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from most_speech.audio.tts_engines import (SAMPLE_RATE, LocalTTS, TTSEngineError, check_engine,
                                           write_audio_atomic)

logger = logging.getLogger(__name__)

GRAMMAR_PATH = Path(__file__).with_name("mini_corpus_text") / "grammar.txt"
SPLITS = ("train", "dev", "test")
# LibriHeavy's manifest names and the Libri-Light subset folder that holds each split's audio.
CUTS_NAME = {"train": "small", "dev": "dev", "test": "test_clean"}
SUBSET = {"train": "small", "dev": "medium", "test": "medium"}
FORMATS = ("libriheavy", "commonvoice")
CV_HEADER = ("client_id", "path", "sentence_id", "sentence", "sentence_domain", "up_votes",
             "down_votes", "age", "gender", "accents", "variant", "locale", "segment")
PLAN_VERSION = 2  # bump when rendering or planning changes, so old chapters are redone

ACCENTS = {  # espeak-ng voice -> Common Voice style accent label
    "en-us": "United States English", "en-gb": "England English",
    "en-gb-x-rp": "England English (Received Pronunciation)",
    "en-gb-scotland": "Scottish English", "en-gb-x-gbclan": "England English (Lancaster)",
    "en-gb-x-gbcwmd": "England English (West Midlands)", "en-029": "Caribbean English",
    "en-us-nyc": "United States English (New York City)",
}
# espeak-ng variants per split, picked among the ones whisper tiny.en understood best on
# en-us (odd ones such as whisper, robot or demonic voices left out). Disjoint sets.
VARIANTS = {
    "train": ("f1", "f2", "f4", "f5", "steph", "steph3", "Annie", "edward", "iven2", "iven4",
              "john", "m4", "rob", "sandro", "Michael", "klatt3", "marcelo", "travis", "Denis",
              "Gene", "m5", "m8", "max", "zac", "paul", "victor", "Mike", "adam", "caleb", "klatt",
              "m2", "m7"),
    "dev": ("f3", "aunty", "iven3", "gustave", "m3", "norbert"),
    "test": ("steph2", "anika", "edward2", "m6", "quincy", "klatt4"),
}
FEMALE_VARIANTS = {"f1", "f2", "f3", "f4", "f5", "steph", "steph2", "steph3", "Annie", "anika",
                   "aunty"}
FLITE_VOICES = {"train": (("slt", "F"), ("slt", "F"), ("kal16", "M"), ("kal16", "M")),
                "dev": (("rms", "M"),), "test": (("awb", "M"),)}
ACCENT_OFFSET = {"train": 0, "dev": 6, "test": 3}  # spreads dev/test over all eight accents
SPEAKER_SEED = 20240601
# Base rate (words/min) and pitch (0-99) ranges; faster female/accented espeak voices got
# hard to understand above about 180 words/min.
BASE_RATE, BASE_PITCH = (140.0, 178.0), (35.0, 65.0)  # the speaker table does not depend on --seed

LEAD_S, PAD_S, PAUSE_S = 0.5, 0.1, (0.35, 0.9)
NOISE_STD = 3e-4  # about -70 dBFS, so silences are never exact zeros
PEAK = 0.8


# --------------------------------------------------------------------------- text
class Grammar:
    """Random sentences from the section/template grammar in ``mini_corpus_text/grammar.txt``.

    Examples
    --------
    >>> g = Grammar.load()
    >>> g.sentence(random.Random(0))[-1] in ".?"
    True
    """

    _SLOT = re.compile(r"\{(\w+)(?::(\d+))?\}")

    def __init__(self, sections: dict[str, list[str]]):
        if not sections.get("templates"):
            raise ValueError("grammar has no [templates] section")
        self.sections = sections
        for name, items in sections.items():
            for item in items:
                for slot, _ in self._SLOT.findall(item):
                    if slot not in sections:
                        raise ValueError(f"grammar section [{name}] uses unknown slot {{{slot}}}")

    @classmethod
    def load(cls, path: str | os.PathLike = GRAMMAR_PATH) -> "Grammar":
        """Read a grammar file (see the format notes at its top)."""
        sections: dict[str, list[str]] = {}
        current = None
        for num, raw in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("[") and line.endswith("]"):
                current = sections.setdefault(line[1:-1], [])
            elif current is None:
                raise ValueError(f"{path}:{num}: item before any [section]")
            else:
                current.append(line)
        return cls(sections)

    def expand(self, item: str, rng: random.Random, depth: int = 0) -> str:
        """Replace every ``{slot}`` / ``{slot:i}`` in ``item`` by a random choice."""
        if depth > 10:
            raise ValueError(f"grammar recursion too deep at {item!r}")

        def pick(m: re.Match) -> str:
            choice = rng.choice(self.sections[m.group(1)])
            if m.group(2) is not None:
                choice = choice.split("|")[int(m.group(2))]
            return self.expand(choice, rng, depth + 1)

        return self._SLOT.sub(pick, item)

    def sentence(self, rng: random.Random) -> str:
        """One random, cased and punctuated sentence."""
        text = self.expand(rng.choice(self.sections["templates"]), rng)
        text = re.sub(r"\b([Aa]) (?=[aeio]|umbrella)", r"\1n ", text)
        return text[0].upper() + text[1:] if text[0] != '"' else text[0] + text[1].upper() + text[2:]

    def vocabulary(self) -> set[str]:
        """All words the grammar can produce, normalised (upper case)."""
        words = {"AN"}  # sentence() turns "a" into "an" before vowels
        for items in self.sections.values():
            for item in items:
                words.update(normalize_text(self._SLOT.sub(" ", item.replace("|", " "))).split())
        return words


def normalize_text(text: str) -> str:
    """LibriHeavy-style normalised text: upper case, no punctuation except inner apostrophes.

    Examples
    --------
    >>> normalize_text('"Oh dear," said Anna, "the cup is empty."')
    'OH DEAR SAID ANNA THE CUP IS EMPTY'
    """
    text = re.sub(r"[^A-Za-z' ]+", " ", text).upper()
    text = re.sub(r"(?<![A-Z])'|'(?![A-Z])", " ", text)
    return " ".join(text.split())


def split_of(sentence: str) -> str:
    """The split a sentence belongs to: 10 % test, 10 % dev, 80 % train, by a hash of its words.

    Examples
    --------
    >>> split_of("Ben found the key.") == split_of("BEN FOUND THE KEY")
    True
    """
    bucket = int(hashlib.sha1(normalize_text(sentence).encode()).hexdigest(), 16) % 10
    return "test" if bucket == 0 else "dev" if bucket == 1 else "train"


def draw_sentences(grammar: Grammar, counts: dict[str, int], rng: random.Random
                   ) -> dict[str, list[str]]:
    """Draw ``counts[split]`` distinct sentences for each split (disjoint across splits)."""
    out = {s: [] for s in SPLITS}
    seen: set[str] = set()
    budget = 200 * sum(counts.values()) + 10000
    while any(len(out[s]) < counts.get(s, 0) for s in SPLITS):
        budget -= 1
        if budget < 0:
            short = {s: len(out[s]) for s in SPLITS}
            raise ValueError(f"grammar gave too few distinct sentences: {short} of {counts}")
        text = grammar.sentence(rng)
        key = normalize_text(text)
        split = split_of(text)
        if key not in seen and len(out[split]) < counts.get(split, 0):
            seen.add(key)
            out[split].append(text)
    return out


# --------------------------------------------------------------------------- speakers
@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker: engine, voice, variant and its base rate and pitch.

    Examples
    --------
    >>> Speaker("1000", "espeak-ng", "en-gb", "f3", 170.0, 55.0, "F", "dev").spec
    'espeak-ng:en-gb+f3'
    """

    spk_id: str
    engine: str
    voice: str
    variant: str | None
    rate: float
    pitch: float
    gender: str
    split: str

    @property
    def spec(self) -> str:
        """Voice spec for :func:`most_speech.audio.tts_engines.synthesize`."""
        return f"{self.engine}:{self.voice}" + (f"+{self.variant}" if self.variant else "")

    @property
    def accent(self) -> str:
        """Accent label in Common Voice's wording."""
        if self.engine == "flite":
            return "Scottish English" if self.voice == "awb" else "United States English"
        return ACCENTS.get(self.voice, "")


def build_speakers() -> dict[str, list[Speaker]]:
    """The fixed speaker table: split -> speakers (held-out voices for dev and test).

    Examples
    --------
    >>> spk = build_speakers()
    >>> len(spk["train"]), {s.spec for s in spk["train"]} & {s.spec for s in spk["test"]}
    (36, set())
    """
    rng = random.Random(SPEAKER_SEED)
    accents = list(ACCENTS)
    table, num = {}, 1000
    for split in SPLITS:
        rows = []
        for i, variant in enumerate(VARIANTS[split]):
            gender = "F" if variant in FEMALE_VARIANTS else "M"
            accent = accents[(i + ACCENT_OFFSET[split]) % len(accents)]
            rows.append(("espeak-ng", accent, variant, gender))
        rows += [("flite", voice, None, gender) for voice, gender in FLITE_VOICES[split]]
        table[split] = []
        for engine, voice, variant, gender in rows:
            rate, pitch = round(rng.uniform(*BASE_RATE), 1), round(rng.uniform(*BASE_PITCH), 1)
            table[split].append(Speaker(str(num), engine, voice, variant, rate, pitch, gender, split))
            num += 1
    return table


# --------------------------------------------------------------------------- plan
@dataclass(frozen=True)
class UttPlan:
    """One utterance of a chapter: text, its rate and pitch, and the pause after it."""

    text: str
    rate: float
    pitch: float
    pause: float


@dataclass(frozen=True)
class ChapterPlan:
    """One long recording: a speaker reading several utterances with pauses between."""

    split: str
    speaker: Speaker
    book: str
    file: str
    utts: tuple[UttPlan, ...]
    noise_seed: int
    clip_names: tuple[str, ...] = field(default=())

    @property
    def rec_id(self) -> str:
        """Recording id ``<subset>/<spk>/<book>/<file>``, as in LibriHeavy."""
        return f"{SUBSET[self.split]}/{self.speaker.spk_id}/{self.book}/{self.file}"

    @property
    def audio_rel(self) -> str:
        """FLAC path relative to the corpus root."""
        return f"download/librilight/{self.rec_id}.flac"

    def cut_id(self, n: int) -> str:
        """Id of the ``n``-th utterance's cut."""
        return f"{self.rec_id}_{n}"

    def plan_hash(self) -> str:
        """Fingerprint of everything that determines this chapter's audio."""
        blob = json.dumps([PLAN_VERSION, asdict(self)], sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()


def _clip_name(cut_id: str) -> str:
    return f"common_voice_en_{int(hashlib.sha1(cut_id.encode()).hexdigest()[:8], 16)}.mp3"


def make_plan(num_train: int = 2000, num_dev: int = 200, num_test: int = 200, seed: int = 0,
              chapter_size: tuple[int, int] = (10, 20), grammar: Grammar | None = None
              ) -> list[ChapterPlan]:
    """Decide every chapter: split, speaker, sentences, prosody and pauses (no audio yet).

    Examples
    --------
    >>> plan = make_plan(num_train=6, num_dev=2, num_test=2, chapter_size=(2, 3))
    >>> sum(len(c.utts) for c in plan)
    10
    """
    lo, hi = chapter_size
    if not 1 <= lo <= hi:
        raise ValueError(f"chapter_size must be 1 <= min <= max, got {chapter_size}")
    counts = {"train": num_train, "dev": num_dev, "test": num_test}
    if any(n < 0 for n in counts.values()):
        raise ValueError(f"utterance counts must be >= 0, got {counts}")
    # a split's sentences are the first ones of its hash bucket in one stream, whatever the other counts
    sentences = draw_sentences(grammar or Grammar.load(), counts, random.Random(seed))
    speakers = build_speakers()
    plan = []
    for split in SPLITS:
        rng = random.Random(f"{seed}:{split}")  # str seeds hash with SHA-512: stable across processes
        plan += _plan_split(split, sentences[split], speakers[split], (lo, hi), rng)
    names = [n for c in plan for n in c.clip_names]
    if len(set(names)) != len(names):
        raise RuntimeError("clip name collision; change --seed")
    return plan


def _plan_split(split: str, texts: list[str], speakers: list[Speaker], size: tuple[int, int],
                rng: random.Random) -> list[ChapterPlan]:
    order = list(speakers)
    rng.shuffle(order)
    chapters, books, pos = [], {}, 0
    while pos < len(texts):
        spk = order[len(chapters) % len(order)]
        n = min(rng.randint(*size), len(texts) - pos)
        utts = tuple(UttPlan(t, round(spk.rate * rng.uniform(0.9, 1.1), 1),
                             round(min(99.0, max(0.0, spk.pitch + rng.uniform(-5, 5))), 1),
                             round(rng.uniform(*PAUSE_S), 3)) for t in texts[pos:pos + n])
        pos += n
        books[spk.spk_id] = books.get(spk.spk_id, 0) + 1
        book = f"mini_book_{books[spk.spk_id]:03d}"
        file = f"chapter_{books[spk.spk_id]:03d}_{spk.engine.replace('-', '')}"
        ch = ChapterPlan(split, spk, book, file, utts, rng.getrandbits(32))
        clips = tuple(_clip_name(ch.cut_id(i)) for i in range(n))
        chapters.append(ChapterPlan(split, spk, book, file, utts, ch.noise_seed, clips))
    return chapters


# --------------------------------------------------------------------------- rendering
def trim_silence(wav: np.ndarray, threshold: float = 0.01, margin_s: float = 0.03) -> np.ndarray:
    """Cut leading/trailing parts quieter than ``threshold`` x peak (10 ms frames), keep a margin.

    Examples
    --------
    >>> x = np.r_[np.zeros(8000), np.ones(1600), np.zeros(8000)].astype("float32")
    >>> len(trim_silence(x, margin_s=0.0))
    1600
    """
    frame = SAMPLE_RATE // 100
    n = len(wav) // frame
    if n == 0:
        return wav
    energy = np.abs(wav[: n * frame]).reshape(n, frame).max(axis=1)
    loud = np.flatnonzero(energy > threshold * max(float(energy.max()), 1e-9))
    if loud.size == 0:
        return wav
    margin = int(margin_s * SAMPLE_RATE)
    start = max(0, loud[0] * frame - margin)
    end = min(len(wav), (loud[-1] + 1) * frame + margin)
    return wav[start:end]


def _ms(samples: int) -> int:
    """Round a sample count up to whole milliseconds, so cut times are exact to 1 ms."""
    step = SAMPLE_RATE // 1000
    return -(-samples // step) * step


def render_chapter(chapter: ChapterPlan) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Synthesise a chapter; return the waveform and each cut's (start, length) in samples."""
    parts, segments = [np.zeros(_ms(int(LEAD_S * SAMPLE_RATE)), np.float32)], []
    pos, pad = len(parts[0]), int(PAD_S * SAMPLE_RATE)
    spk = chapter.speaker
    for n, utt in enumerate(chapter.utts):
        tts = LocalTTS(spk.engine, spk.voice, spk.variant, rate=utt.rate, pitch=utt.pitch)
        try:
            wav = trim_silence(tts.synthesize(utt.text)[0])
        except TTSEngineError as err:
            raise TTSEngineError(f"utterance {chapter.cut_id(n)} ({utt.text!r}): {err}") from err
        wav = wav * (PEAK / max(float(np.abs(wav).max()), 1e-6))
        wav = np.pad(wav, (0, _ms(len(wav)) - len(wav)))
        segments.append((pos - pad, len(wav) + 2 * pad))
        gap = np.zeros(_ms(int(utt.pause * SAMPLE_RATE)), np.float32)
        parts += [wav.astype(np.float32), gap]
        pos += len(wav) + len(gap)
    parts.append(np.zeros(_ms(int(LEAD_S * SAMPLE_RATE)), np.float32))
    audio = np.concatenate(parts)
    audio += np.random.default_rng(chapter.noise_seed).normal(0, NOISE_STD, len(audio)).astype(
        np.float32)
    return audio, segments


def _marker_path(out_dir: Path, chapter: ChapterPlan) -> Path:
    return out_dir / ".mini_corpus" / "chapters" / (chapter.rec_id.replace("/", "__") + ".json")


def _write_json_atomic(path: Path, obj, indent: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=indent, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def load_done(out_dir: Path, chapter: ChapterPlan, formats: tuple[str, ...]) -> dict | None:
    """The marker of a finished chapter that matches the plan and formats, else ``None``."""
    path = _marker_path(out_dir, chapter)
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if marker.get("plan_hash") != chapter.plan_hash() or not set(formats) <= set(marker["formats"]):
        return None
    files = [out_dir / chapter.audio_rel] if "libriheavy" in formats else []
    if "commonvoice" in formats:
        files += [out_dir / "commonvoice/en/clips" / c for c in chapter.clip_names]
    return marker if all(f.exists() for f in files) else None


def build_chapter(chapter: ChapterPlan, out_dir: str, formats: tuple[str, ...]) -> dict:
    """Synthesise one chapter and write its FLAC, its clips and its marker (all atomic).

    Returns the marker: ``plan_hash``, ``formats``, ``num_samples`` and ``segments``
    (start, length in samples of each cut).
    """
    out = Path(out_dir)
    audio, segments = render_chapter(chapter)
    if "libriheavy" in formats:
        write_audio_atomic(out / chapter.audio_rel, audio, SAMPLE_RATE, "FLAC")
    if "commonvoice" in formats:
        for (start, length), name in zip(segments, chapter.clip_names):
            write_audio_atomic(out / "commonvoice/en/clips" / name, audio[start:start + length],
                               SAMPLE_RATE, "MP3")
    marker = {"plan_hash": chapter.plan_hash(), "formats": sorted(formats),
              "num_samples": len(audio), "segments": [list(s) for s in segments]}
    _write_json_atomic(_marker_path(out, chapter), marker)
    return marker


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def _run_chapters(todo: list[ChapterPlan], out_dir: Path, formats: tuple[str, ...], jobs: int
                  ) -> dict[str, dict]:
    done = {}
    bar = tqdm(total=sum(len(c.utts) for c in todo), unit="utt", desc="synthesising")
    if jobs <= 1:
        for ch in todo:
            done[ch.rec_id] = build_chapter(ch, str(out_dir), formats)
            bar.update(len(ch.utts))
    else:
        ctx = multiprocessing.get_context("spawn")  # torch in workers: never fork a live process
        with cf.ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init_worker) as pool:
            futs = {pool.submit(build_chapter, ch, str(out_dir), formats): ch for ch in todo}
            for fut in cf.as_completed(futs):
                ch = futs[fut]
                try:
                    done[ch.rec_id] = fut.result()
                except Exception as err:
                    raise RuntimeError(f"chapter {ch.rec_id} failed: {err}") from err
                bar.update(len(ch.utts))
    bar.close()
    return done


# --------------------------------------------------------------------------- writers
def cut_records(chapter: ChapterPlan, marker: dict) -> list[dict]:
    """LibriHeavy/lhotse MonoCut dicts for a finished chapter.

    Examples
    --------
    >>> plan = make_plan(2, 0, 0, chapter_size=(2, 2))
    >>> marker = {"num_samples": 64000, "segments": [[8000, 16000], [32000, 16000]]}
    >>> cut_records(plan[0], marker)[1]["start"]
    2.0
    """
    n_samples = marker["num_samples"]
    rec = {"id": chapter.rec_id,
           "sources": [{"type": "file", "channels": [0], "source": chapter.audio_rel}],
           "sampling_rate": SAMPLE_RATE, "num_samples": n_samples,
           "duration": round(n_samples / SAMPLE_RATE, 3), "channel_ids": [0]}
    cuts = []
    for n, ((start, length), utt) in enumerate(zip(marker["segments"], chapter.utts)):
        prev = [u.text for u in chapter.utts[max(0, n - 3):n]]
        dur = round(length / SAMPLE_RATE, 3)
        sup = {"id": chapter.cut_id(n), "recording_id": chapter.rec_id, "start": 0.0,
               "duration": dur, "channel": 0, "language": "English",
               "speaker": chapter.speaker.spk_id,
               "custom": {"texts": [utt.text, normalize_text(utt.text)],
                          "pre_texts": [" ".join(prev), normalize_text(" ".join(prev))],
                          "begin_byte": 0, "end_byte": 0}}
        cuts.append({"id": chapter.cut_id(n), "start": round(start / SAMPLE_RATE, 3),
                     "duration": dur, "channel": 0, "supervisions": [sup], "recording": rec,
                     "type": "MonoCut"})
    return cuts


def _write_bytes_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_libriheavy(out_dir: Path, plan: list[ChapterPlan], markers: dict[str, dict]) -> None:
    """Write ``libriheavy_cuts_{small,dev,test_clean}.jsonl.gz`` (byte-identical per plan)."""
    for split in SPLITS:
        buf = io.BytesIO()
        # mtime=0 and no file name in the header keep the gzip bytes deterministic.
        with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0) as gz:
            for ch in (c for c in plan if c.split == split):
                for cut in cut_records(ch, markers[ch.rec_id]):
                    gz.write((json.dumps(cut, ensure_ascii=False) + "\n").encode("utf-8"))
        _write_bytes_atomic(out_dir / f"libriheavy_cuts_{CUTS_NAME[split]}.jsonl.gz",
                            buf.getvalue())


def cv_rows(chapter: ChapterPlan) -> list[list[str]]:
    """Common Voice TSV rows (columns of ``CV_HEADER``) for one chapter."""
    spk = chapter.speaker
    client = hashlib.sha512(f"most-mini-{spk.spk_id}".encode()).hexdigest()
    gender = {"F": "female_feminine", "M": "male_masculine"}[spk.gender]
    return [[client, clip, hashlib.sha256(u.text.encode()).hexdigest(), u.text, "", "2", "0", "",
             gender, spk.accent, "", "en", ""] for u, clip in zip(chapter.utts, chapter.clip_names)]


def write_commonvoice(out_dir: Path, plan: list[ChapterPlan], markers: dict[str, dict]) -> None:
    """Write Common Voice's ``train/dev/test/validated.tsv`` and ``clip_durations.tsv``."""
    root = out_dir / "commonvoice" / "en"
    tables = {s: [] for s in SPLITS}
    durations = []
    for ch in plan:
        tables[ch.split] += cv_rows(ch)
        for (_, length), clip in zip(markers[ch.rec_id]["segments"], ch.clip_names):
            durations.append(f"{clip}\t{round(1000 * length / SAMPLE_RATE)}")
    tables["validated"] = [r for s in SPLITS for r in tables[s]]
    for name, rows in tables.items():
        lines = ["\t".join(CV_HEADER)] + ["\t".join(r) for r in rows]
        _write_bytes_atomic(root / f"{name}.tsv", ("\n".join(lines) + "\n").encode("utf-8"))
    text = "\n".join(["clip\tduration[ms]"] + durations) + "\n"
    _write_bytes_atomic(root / "clip_durations.tsv", text.encode("utf-8"))


def corpus_stats(plan: list[ChapterPlan], markers: dict[str, dict], seed: int) -> dict:
    """Utterances, hours, speakers and durations per split, plus the speaker table."""
    stats = {"seed": seed, "sample_rate": SAMPLE_RATE, "splits": {}, "speakers": {}}
    for split in SPLITS:
        chs = [c for c in plan if c.split == split]
        durs = [length / SAMPLE_RATE for c in chs for _, length in markers[c.rec_id]["segments"]]
        rec_s = sum(markers[c.rec_id]["num_samples"] for c in chs) / SAMPLE_RATE
        words = {w for c in chs for u in c.utts for w in normalize_text(u.text).split()}
        stats["splits"][split] = {
            "utterances": len(durs), "chapters": len(chs),
            "hours": round(sum(durs) / 3600, 4), "recording_hours": round(rec_s / 3600, 4),
            "speakers": sorted({c.speaker.spk_id for c in chs}), "vocabulary": len(words),
            "duration_s": {k: round(float(f(durs)), 2) if durs else 0.0 for k, f in
                           (("min", np.min), ("mean", np.mean), ("max", np.max))}}
        for c in chs:
            stats["speakers"][c.speaker.spk_id] = {
                k: v for k, v in asdict(c.speaker).items() if k != "spk_id"}
    return stats


def write_readme(out_dir: Path, stats: dict, formats: tuple[str, ...]) -> None:
    """A short human-readable description of the generated corpus."""
    lines = ["# most_speech mini corpus (synthetic)", "",
             "Made by `most-make-mini-corpus` (most_speech.data.mini_corpus) with espeak-ng and "
             "flite from sentences of the project's own grammar "
             f"(seed {stats['seed']}). Formats: {', '.join(formats)}.", "",
             "Dev and test are spoken by held-out voices (espeak-ng variants and a flite voice "
             "that training never uses); sentences are disjoint across splits.", "",
             "| split | utterances | hours | speakers | mean s |", "|---|---|---|---|---|"]
    for split, s in stats["splits"].items():
        lines.append(f"| {split} | {s['utterances']} | {s['hours']:.3f} | {len(s['speakers'])} | "
                     f"{s['duration_s']['mean']} |")
    lines += ["", "Layout: `download/librilight/<subset>/<speaker>/<book>/<file>.flac` with "
              "`libriheavy_cuts_{small,dev,test_clean}.jsonl.gz` (LibriHeavy), "
              "`commonvoice/en/` (Common Voice TSVs and MP3 clips).", "",
              "| speaker | split | voice | gender | base rate (wpm) | base pitch |",
              "|---|---|---|---|---|---|"]
    for spk_id, spk in sorted(stats["speakers"].items()):
        voice = Speaker(spk_id, **spk).spec
        lines.append(f"| {spk_id} | {spk['split']} | `{voice}` | {spk['gender']} | {spk['rate']} | "
                     f"{spk['pitch']} |")
    lines.append("")
    _write_bytes_atomic(out_dir / "README.md", "\n".join(lines).encode("utf-8"))


# --------------------------------------------------------------------------- driver
def make_mini_corpus(out_dir: str | os.PathLike, num_train: int = 2000, num_dev: int = 200,
                     num_test: int = 200, seed: int = 0, jobs: int = 2,
                     formats: tuple[str, ...] = FORMATS, chapter_size: tuple[int, int] = (10, 20)
                     ) -> dict:
    """Synthesise (or finish) the mini corpus in ``out_dir`` and return its statistics.

    Parameters
    ----------
    out_dir : path
        Corpus root; created if needed. Finished chapters found there are kept.
    num_train, num_dev, num_test : int
        Utterances per split.
    seed : int
        Seed of every random choice; the same seed gives identical files.
    jobs : int
        Worker processes for synthesis (1 runs in this process).
    formats : tuple of str
        Any of ``"libriheavy"`` and ``"commonvoice"``.
    chapter_size : (int, int)
        Minimum and maximum utterances per chapter (long recording).

    Returns
    -------
    dict
        The content of ``stats.json``, plus ``"synthesised_chapters"`` (work done this run).

    Examples
    --------
    >>> stats = make_mini_corpus("mini", num_train=20, num_dev=4, num_test=4)  # doctest: +SKIP
    >>> stats["splits"]["train"]["utterances"]  # doctest: +SKIP
    20
    """
    formats = tuple(sorted(set(formats)))
    bad = set(formats) - set(FORMATS)
    if bad or not formats:
        raise ValueError(f"unknown or empty formats {sorted(bad)}; choose from {FORMATS}")
    out = Path(out_dir)
    plan = make_plan(num_train, num_dev, num_test, seed, chapter_size)
    for engine in sorted({c.speaker.engine for c in plan}):
        check_engine(engine)
    markers = {c.rec_id: m for c in plan if (m := load_done(out, c, formats)) is not None}
    todo = [c for c in plan if c.rec_id not in markers]
    logger.info("mini corpus: %d chapters planned, %d already done, %d to synthesise",
                len(plan), len(markers), len(todo))
    t0 = time.perf_counter()
    markers.update(_run_chapters(todo, out, formats, jobs))
    n_utts = sum(len(c.utts) for c in todo)
    if todo:
        logger.info("synthesised %d utterances in %.1f s", n_utts, time.perf_counter() - t0)
    if "libriheavy" in formats:
        write_libriheavy(out, plan, markers)
    if "commonvoice" in formats:
        write_commonvoice(out, plan, markers)
    stats = corpus_stats(plan, markers, seed)
    _write_json_atomic(out / "stats.json", stats, indent=1)
    write_readme(out, stats, formats)
    return {**stats, "synthesised_chapters": len(todo)}


def _pair(text: str) -> tuple[int, int]:
    parts = text.split(",")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"expected MIN,MAX (e.g. 10,20), got {text!r}")
    return int(parts[0]), int(parts[1])


def _formats(text: str) -> tuple[str, ...]:
    items = tuple(f.strip() for f in text.split(",") if f.strip())
    bad = [f for f in items if f not in FORMATS]
    if bad or not items:
        raise argparse.ArgumentTypeError(f"unknown formats {bad}; choose from {','.join(FORMATS)}")
    return items


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of ``most-make-mini-corpus``."""
    p = argparse.ArgumentParser(
        prog="most-make-mini-corpus",
        description="Synthesise a small multi-speaker English corpus with espeak-ng and flite, "
                    "in LibriHeavy (lhotse cuts + FLAC) and Common Voice (TSV + MP3) formats.")
    p.add_argument("out_dir", help="corpus root to create or resume")
    p.add_argument("--num-train", type=int, default=2000, help="training utterances (2000)")
    p.add_argument("--num-dev", type=int, default=200, help="dev utterances (200)")
    p.add_argument("--num-test", type=int, default=200, help="test utterances (200)")
    p.add_argument("--seed", type=int, default=0, help="random seed (0)")
    p.add_argument("--jobs", type=int, default=2, help="worker processes (2)")
    p.add_argument("--formats", type=_formats, default=FORMATS,
                   help="comma list of libriheavy,commonvoice (both)")
    p.add_argument("--chapter-size", type=_pair, default=(10, 20),
                   help="min,max utterances per long recording (10,20)")
    p.add_argument("--log-level", default="INFO", help="logging level (INFO)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point ``most-make-mini-corpus``.

    Examples
    --------
    >>> main(["mini", "--num-train", "20", "--num-dev", "4", "--num-test", "4"])  # doctest: +SKIP
    0
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(message)s")
    try:
        stats = make_mini_corpus(args.out_dir, args.num_train, args.num_dev, args.num_test,
                                 args.seed, args.jobs, args.formats, args.chapter_size)
    except (TTSEngineError, ValueError) as err:
        logger.error("%s", err)
        return 2
    for split, s in stats["splits"].items():
        logger.info("%s: %d utterances, %.3f h, %d speakers", split, s["utterances"], s["hours"],
                    len(s["speakers"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
