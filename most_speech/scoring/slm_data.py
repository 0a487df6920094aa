"""Building spoken-LM likelihood-pair sets locally: sBLIMP from BLiMP text, sWUGGY from a word list,
s/tStoryCloze from stories, synthesized with local TTS into a ZeroSpeech-like layout.

Layout written by :func:`build_audio_pairs` under ``out_dir``::

    wav/<id>_good.wav  wav/<id>_bad.wav      16 kHz mono (one voice)
    wav/<voice>/<id>_good.wav ...            the same per voice when several voices speak the set
    pairs.csv                                id,type,group,good_path,bad_path,good_text,bad_text,voice
                                             (paths relative to out_dir; one row per pair and voice)

:func:`encode_audio_pairs` turns such a manifest into :class:`~most_speech.scoring.slm.LikelihoodPair` lists with
any ``encode_fn(wav_path) -> list[int]`` (e.g. HuBERT + k-means units mapped to token ids).

Pseudowords (the sWUGGY side) are made by a simple, documented spelling rule (:func:`make_pseudoword`) rather
than WUGGY's syllable-frequency matching: replace one vowel spelling of a real word by another (a final silent ``e`` is
left alone), and, in words of
4+ letters, one single consonant letter by another of the same manner class (stops p b t d k g, fricatives f v s
z, nasals m n, liquids l r). Candidates that are real words (CMUdict from pocketsphinx when present, plus the
shipped list) are rejected. The result keeps the word's length and shape and is pronounceable by espeak-ng's
letter-to-sound rules.

A spelling rule does not keep the spoken length: "such" -> "zeech" trades a short vowel for a long one, and a
summed log-probability favours the shorter item whatever the words are. WUGGY matches its pseudowords to the
words in subsyllabic structure for this reason, so that length cannot decide a pair. With ``match_phonemes``
(:func:`phoneme_matched_pseudowords`) each word gets the first of many spelling candidates whose espeak-ng
pronunciation has as many phonemes as the word's and differs from it in one or two places, each a vowel for a
vowel of the same length class (short; long or diphthong) or a consonant for a consonant. Words without such a
candidate are left out.
"""
from __future__ import annotations

import csv
import io
import logging
import random
import re
import zlib
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Set, Union

from tqdm.auto import tqdm

from most_speech.scoring.io import PathLike, atomic_write_text, read_jsonl
from most_speech.scoring.slm import LikelihoodPair
from most_speech.scoring.synth import DEFAULT_VOICE, synthesize_many

__all__ = ["load_blimp", "load_wordlist", "real_word_lexicon", "make_pseudoword", "same_sound_shape",
           "phoneme_matched_pseudowords", "make_wuggy_pairs", "make_sentence_wuggy_pairs", "load_stories",
           "build_audio_pairs", "read_audio_pairs", "encode_audio_pairs", "MANIFEST_FIELDS"]

log = logging.getLogger(__name__)

MANIFEST_FIELDS = ["id", "type", "group", "good_path", "bad_path", "good_text", "bad_text", "voice"]
_WORDLIST = Path(__file__).with_name("resources") / "words_en.txt"
_VOWEL_SPELLINGS = ["a", "e", "i", "o", "u", "ee", "oo", "ai", "ea", "oa"]
_CONSONANT_CLASSES = ["pbtdkg", "fvsz", "mn", "lr"]
_VOWEL_RE = re.compile(r"[aeiou]+")
_SAFE_ID = re.compile(r"[^A-Za-z0-9_.-]")
_ESPEAK_VOWEL_START = "aeiouAEIOU03V@"   # espeak-ng's ASCII phoneme names of vowels start with one of these


def load_blimp(path: PathLike, paradigms: Optional[Iterable[str]] = None,
               max_per_paradigm: Optional[int] = None) -> List[Dict[str, str]]:
    """Read BLiMP JSONL (``UID``, ``pairID``, ``sentence_good``, ``sentence_bad``) as syntactic text pairs.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "b.jsonl"
    >>> _ = p.write_text('{"UID": "u", "pairID": "0", "sentence_good": "A b.", "sentence_bad": "B a."}\\n')
    >>> load_blimp(p)[0]["id"]
    'u_0'
    """
    wanted = set(paradigms) if paradigms else None
    counts: Dict[str, int] = {}
    out = []
    for i, row in enumerate(read_jsonl(path), 1):
        missing = [k for k in ("UID", "pairID", "sentence_good", "sentence_bad") if k not in row]
        if missing:
            raise ValueError(f"{path}: BLiMP record {i} lacks field(s) {missing}")
        uid = row["UID"]
        if wanted is not None and uid not in wanted:
            continue
        if max_per_paradigm is not None and counts.get(uid, 0) >= max_per_paradigm:
            continue
        counts[uid] = counts.get(uid, 0) + 1
        out.append({"id": f"{uid}_{row['pairID']}", "type": "syntactic", "group": uid,
                    "good_text": row["sentence_good"], "bad_text": row["sentence_bad"]})
    if wanted is not None and set(counts) != wanted:
        raise ValueError(f"{path}: paradigm(s) not found: {sorted(wanted - set(counts))}")
    return out


def load_wordlist(path: Optional[PathLike] = None) -> List[str]:
    """Words, one per line (``#`` comments skipped); default: the list shipped with most_speech.

    Examples
    --------
    >>> len(load_wordlist()) > 100
    True
    """
    lines = Path(path or _WORDLIST).read_text(encoding="utf-8").splitlines()
    words = [ln.strip().lower() for ln in lines if ln.strip() and not ln.startswith("#")]
    return list(dict.fromkeys(words))


def real_word_lexicon(extra: Iterable[str] = ()) -> Set[str]:
    """Known real English words: pocketsphinx's CMUdict (if installed), the shipped list and ``extra``.

    Examples
    --------
    >>> "table" in real_word_lexicon()
    True
    """
    lexicon = set(load_wordlist()) | {w.lower() for w in extra}
    try:
        import pocketsphinx

        cmudict = Path(pocketsphinx.get_model_path()) / "en-us" / "cmudict-en-us.dict"
        with open(cmudict, encoding="utf-8", errors="replace") as f:
            lexicon |= {line.split(maxsplit=1)[0].split("(")[0].lower() for line in f if line.strip()}
    except (ImportError, OSError):
        log.warning("pocketsphinx CMUdict not available; pseudowords are filtered by the shipped list only")
    return lexicon


def _swap_vowel(word: str, rng: random.Random) -> str:
    # a final silent "e" (candle, bridge) is not a vowel nucleus
    groups = [m for m in _VOWEL_RE.finditer(word) if not (m.group(0) == "e" and m.end() == len(word) > 2)]
    if not groups:
        return word
    m = rng.choice(groups)
    choices = [v for v in _VOWEL_SPELLINGS if v != m.group(0)]
    return word[: m.start()] + rng.choice(choices) + word[m.end():]


def _swap_consonant(word: str, rng: random.Random) -> str:
    """Replace one consonant letter that stands between vowels or word edges (not inside a cluster)."""
    def lone(i):
        left = i == 0 or word[i - 1] in "aeiou"
        right = i == len(word) - 1 or word[i + 1] in "aeiou"
        return left and right

    spots = [i for i, ch in enumerate(word) if any(ch in c for c in _CONSONANT_CLASSES) and lone(i)]
    if not spots:
        return word
    i = rng.choice(spots)
    cls = next(c for c in _CONSONANT_CLASSES if word[i] in c)
    return word[:i] + rng.choice([c for c in cls if c != word[i]]) + word[i + 1:]


def make_pseudoword(word: str, lexicon: Set[str], seed: int = 0, tries: int = 50) -> Optional[str]:
    """Derive a pronounceable non-word from ``word`` by the rule in the module docstring.

    Deterministic for a given ``(word, seed)``; returns None when no candidate outside ``lexicon`` is found.

    Examples
    --------
    >>> pw = make_pseudoword("garden", {"garden", "gardon"}, seed=1)
    >>> pw is not None and pw not in {"garden", "gardon"} and len(pw) >= 5
    True
    """
    rng = random.Random(zlib.crc32(f"{seed}:{word}".encode()))
    for _ in range(tries):
        cand = _swap_vowel(word.lower(), rng)
        if len(word) >= 4:
            cand = _swap_consonant(cand, rng)
        if cand != word and cand not in lexicon:
            return cand
    return None


def _vowel_length_class(phoneme: str) -> Optional[str]:
    """``"long"`` for espeak-ng long vowels and diphthongs (``i:``, ``aa``, ``eI``, ``A@``), ``"short"`` for other
    vowels (``a``, ``I``, ``@``, ``I2``, ``@L``), None for consonants."""
    if phoneme[0] not in _ESPEAK_VOWEL_START:
        return None
    diphthong = len(phoneme) > 1 and phoneme[1] in "aeiouIU@"
    return "long" if ":" in phoneme or diphthong else "short"


def same_sound_shape(word_phonemes: Sequence[str], candidate_phonemes: Sequence[str], max_changes: int = 2) -> bool:
    """Whether a candidate pronunciation matches a word's in length and shape (see the module docstring).

    Equal phoneme counts, 1 to ``max_changes`` positions that differ, and at each of them a consonant for a
    consonant or a vowel for a vowel of the same length class.

    Examples
    --------
    >>> same_sound_shape(["s", "V", "tS"], ["z", "V", "tS"]), same_sound_shape(["s", "V", "tS"], ["z", "i:", "tS"])
    (True, False)
    """
    if len(word_phonemes) != len(candidate_phonemes):
        return False
    changes = [(a, b) for a, b in zip(word_phonemes, candidate_phonemes) if a != b]
    return 1 <= len(changes) <= max_changes and all(
        _vowel_length_class(a) == _vowel_length_class(b) for a, b in changes)


def phoneme_matched_pseudowords(words: Sequence[str], lexicon: Optional[Set[str]] = None, seed: int = 0,
                                candidates: int = 120,
                                g2p: Optional[Callable[[List[str]], List[List[str]]]] = None) -> Dict[str, str]:
    """Pseudowords spoken with as many phonemes as their words, so that length cannot decide a pair.

    For each word, up to ``candidates`` spelling variants (:func:`make_pseudoword` with seeds
    ``seed * 1000 + k``) are pronounced by ``g2p`` and the first whose pronunciation has the word's shape
    (:func:`same_sound_shape`) is kept. Words without one are left out (logged).

    Parameters
    ----------
    words : sequence of str
        Real words.
    lexicon : set of str, optional
        Real words no candidate may be (default :func:`real_word_lexicon` of ``words``).
    seed : int
        Selects the candidate stream; the same seed gives the same pseudowords.
    candidates : int
        Spelling variants tried per word.
    g2p : callable, optional
        ``texts -> phoneme lists`` (default :func:`most_speech.text.g2p.espeak_phonemes`, en-us rules: the
        pronunciation espeak-ng voices speak).

    Returns
    -------
    dict
        ``word -> pseudoword`` for the words that got one.

    Examples
    --------
    With a toy g2p that reads every letter as a phoneme (espeak-ng is the default):

    >>> letters = lambda texts: [list(t) for t in texts]
    >>> phoneme_matched_pseudowords(["sack", "river"], lexicon={"sack", "river"}, g2p=letters)
    {'sack': 'vuck', 'river': 'rozer'}
    """
    if g2p is None:
        from most_speech.text.g2p import espeak_phonemes as g2p
    words = list(words)
    lexicon = lexicon if lexicon is not None else real_word_lexicon(words)
    variants = {}
    for w in words:
        found = (make_pseudoword(w, lexicon, seed=seed * 1000 + k) for k in range(candidates))
        variants[w] = list(dict.fromkeys(c for c in found if c is not None))
    spelled = list(dict.fromkeys(words + [c for cs in variants.values() for c in cs]))
    sound = dict(zip(spelled, g2p(spelled)))
    matched = {}
    for w in words:
        match = next((c for c in variants[w] if same_sound_shape(sound[w], sound[c])), None)
        if match is not None:
            matched[w] = match
    if len(matched) < len(words):
        left_out = [w for w in words if w not in matched]
        log.warning("%d of %d words have no phoneme-matched pseudoword and are left out (e.g. %s)",
                    len(left_out), len(words), ", ".join(left_out[:5]))
    return matched


def make_wuggy_pairs(words: Optional[Sequence[str]] = None, seed: int = 0, lexicon: Optional[Set[str]] = None,
                     match_phonemes: bool = False) -> List[Dict[str, str]]:
    """Lexical text pairs ``(word, pseudoword)`` for sWUGGY-style evaluation.

    ``match_phonemes`` takes the pseudowords from :func:`phoneme_matched_pseudowords` (espeak-ng needed);
    otherwise each is the first candidate of :func:`make_pseudoword`.

    Examples
    --------
    >>> pairs = make_wuggy_pairs(["table", "river"], lexicon={"table", "river"})
    >>> [p["good_text"] for p in pairs]
    ['table', 'river']
    """
    words = list(words) if words is not None else load_wordlist()
    lexicon = lexicon if lexicon is not None else real_word_lexicon(words)
    if match_phonemes:
        pseudo = phoneme_matched_pseudowords(words, lexicon, seed=seed)   # logs the words it leaves out
    else:
        pseudo = {w: make_pseudoword(w, lexicon, seed=seed) for w in words}
        for w in (w for w, pw in pseudo.items() if pw is None):
            log.warning("no pseudoword found for %r; skipped", w)
    return [{"id": f"wuggy_{w}", "type": "lexical", "group": "", "good_text": w, "bad_text": pseudo[w]}
            for w in words if pseudo.get(w) is not None]


_EDGE_PUNCT = re.compile(r"^[^\w']+|[^\w']+$")  # leading / trailing punctuation of a whitespace token


def make_sentence_wuggy_pairs(sentences: Sequence[str], words: Optional[Sequence[str]] = None, seed: int = 0,
                              lexicon: Optional[Set[str]] = None, min_letters: int = 4,
                              match_phonemes: bool = False) -> List[Dict[str, str]]:
    """sWUGGY pairs inside sentences: each sentence against itself with one word replaced by its pseudoword.

    A model trained on sentences alone never hears a word spoken on its own, so isolated-word pairs test it
    out of its domain; these pairs keep the context. Each sentence gives at most one pair: among its words of
    at least ``min_letters`` letters that have a pseudoword (:func:`make_wuggy_pairs` of ``words``), one is
    drawn (seeded) and replaced. Sentences without such a word are skipped. Text is lower-cased and split on
    whitespace; punctuation at a word's edges (Common Voice's ``"chair."``) does not hide the word and stays in
    place around its pseudoword. ``match_phonemes`` as in :func:`make_wuggy_pairs`.

    Examples
    --------
    >>> pairs = make_sentence_wuggy_pairs(["the red table", "a cat"], words=["table"], lexicon={"table"})
    >>> len(pairs), pairs[0]["good_text"], pairs[0]["bad_text"].split()[:2]
    (1, 'the red table', ['the', 'red'])
    >>> make_sentence_wuggy_pairs(["The red table."], words=["table"], lexicon={"table"})[0]["bad_text"][-1]
    '.'
    """
    pseudo = {p["good_text"]: p["bad_text"]
              for p in make_wuggy_pairs(words, seed=seed, lexicon=lexicon, match_phonemes=match_phonemes)}
    rng = random.Random(seed)
    pairs = []
    for i, sentence in enumerate(sentences):
        tokens = sentence.lower().split()
        cores = [_EDGE_PUNCT.sub("", w) for w in tokens]
        slots = [k for k, w in enumerate(cores) if w in pseudo and len(w) >= min_letters]
        if not slots:
            continue
        k = rng.choice(slots)
        bad = tokens[:k] + [tokens[k].replace(cores[k], pseudo[cores[k]], 1)] + tokens[k + 1:]
        pairs.append({"id": f"swuggy_sent_{i:05d}", "type": "lexical", "group": "",
                      "good_text": " ".join(tokens), "bad_text": " ".join(bad)})
    return pairs


def load_stories(path: PathLike) -> List[Dict[str, str]]:
    """Read story pairs from JSONL ``{"id", "context", "good_ending", "bad_ending"}`` (StoryCloze layout).

    The spoken items are the whole story read out (context + ending), as in sStoryCloze; ``context`` is kept
    so text-token evaluation (tStoryCloze) can score the ending only.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "s.jsonl"
    >>> _ = p.write_text('{"id": "s1", "context": "Tom was hungry.", "good_ending": "He ate.", '
    ...                  '"bad_ending": "He flew."}\\n')
    >>> load_stories(p)[0]["good_text"]
    'Tom was hungry. He ate.'
    """
    out = []
    for i, row in enumerate(read_jsonl(path), 1):
        missing = [k for k in ("id", "context", "good_ending", "bad_ending") if k not in row]
        if missing:
            raise ValueError(f"{path}: story {i} (id {row.get('id')!r}) lacks field(s) {missing}")
        ctx = row["context"].strip()
        out.append({"id": str(row["id"]), "type": "story", "group": row.get("group", ""), "context": ctx,
                    "good_text": f"{ctx} {row['good_ending'].strip()}",
                    "bad_text": f"{ctx} {row['bad_ending'].strip()}"})
    return out


def build_audio_pairs(text_pairs: Sequence[Dict[str, str]], out_dir: PathLike,
                      voice: Union[str, Sequence[str]] = DEFAULT_VOICE, overwrite: bool = False,
                      progress: bool = True, jobs: int = 1) -> Path:
    """Synthesize both sides of each text pair with the same voice and write ``pairs.csv``.

    Parameters
    ----------
    text_pairs : sequence of dict
        From :func:`load_blimp`, :func:`make_wuggy_pairs` or :func:`load_stories`.
    out_dir : path
        Receives ``wav/`` and ``pairs.csv`` (see the module docstring).
    voice : str or sequence of str
        TTS voice spec (``espeak-ng:en-us``, ``flite:slt``, ...), or several: every pair is then spoken by
        each voice (one manifest row per pair and voice), so accuracy does not hang on one speaker.
    jobs : int
        Sentences synthesized at once (:func:`~most_speech.scoring.synth.synthesize_many`).

    Returns
    -------
    Path
        The manifest ``out_dir/pairs.csv``.

    Examples
    --------
    >>> import tempfile
    >>> m = build_audio_pairs([{"id": "p", "type": "lexical", "group": "", "good_text": "cat",
    ...                         "bad_text": "cot"}], tempfile.mkdtemp(), progress=False)
    >>> read_audio_pairs(m)[0]["good_path"].endswith("p_good.wav")
    True
    """
    out_dir = Path(out_dir)
    voices = [voice] if isinstance(voice, str) else list(voice)
    if not voices or len(set(voices)) != len(voices):
        raise ValueError(f"give one or more distinct voices, not {voices}")
    ids = [p["id"] for p in text_pairs]
    if len(set(ids)) != len(ids):
        raise ValueError("text pairs have duplicate ids")
    rows = []
    for spec in voices:
        folder = "wav" if len(voices) == 1 else f"wav/{_SAFE_ID.sub('_', spec)}"
        texts, paths = [], []
        for p in text_pairs:
            safe = _SAFE_ID.sub("_", p["id"])
            good, bad = f"{folder}/{safe}_good.wav", f"{folder}/{safe}_bad.wav"
            texts += [p["good_text"], p["bad_text"]]
            paths += [out_dir / good, out_dir / bad]
            rows.append({"id": p["id"], "type": p["type"], "group": p.get("group", ""), "good_path": good,
                         "bad_path": bad, "good_text": p["good_text"], "bad_text": p["bad_text"], "voice": spec})
        synthesize_many(texts, paths, voice=spec, overwrite=overwrite, progress=progress, jobs=jobs)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=MANIFEST_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(out_dir / "pairs.csv", buf.getvalue())


def read_audio_pairs(manifest: PathLike) -> List[Dict[str, str]]:
    """Read ``pairs.csv``; audio paths come back resolved against the manifest's folder.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "pairs.csv").write_text("id,type,good_path,bad_path\\np,lexical,a.wav,b.wav\\n")
    >>> read_audio_pairs(d / "pairs.csv")[0]["bad_path"] == str(d / "b.wav")
    True
    """
    manifest = Path(manifest)
    with open(manifest, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    out = []
    for i, row in enumerate(rows, 2):
        missing = [k for k in ("id", "good_path", "bad_path") if not row.get(k)]
        if missing:
            raise ValueError(f"{manifest}:{i}: pair row lacks field(s) {missing}")
        for key in ("good_path", "bad_path"):
            p = Path(row[key])
            row[key] = str(p if p.is_absolute() else manifest.parent / p)
        row.setdefault("type", "lexical")
        row["group"] = row.get("group") or ""
        row["voice"] = row.get("voice") or ""
        out.append(row)
    return out


def encode_audio_pairs(manifest: PathLike, encode_fn: Callable[[str], Sequence[int]],
                       progress: bool = True) -> List[LikelihoodPair]:
    """Turn an audio pair manifest into id-sequence pairs with ``encode_fn(wav_path) -> ids``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "pairs.csv").write_text("id,type,group,good_path,bad_path\\np,syntactic,g,a.wav,bb.wav\\n")
    >>> encode_audio_pairs(d / "pairs.csv", lambda path: [len(Path(path).name)], progress=False)[0].bad
    [6]
    """
    pairs = []
    for row in tqdm(read_audio_pairs(manifest), desc="encoding pairs", disable=not progress):
        good, bad = list(encode_fn(row["good_path"])), list(encode_fn(row["bad_path"]))
        if not good or not bad:
            raise ValueError(f"pair {row['id']!r} (voice {row['voice'] or '-'}): encoder returned an empty sequence")
        pairs.append(LikelihoodPair(row["id"], good, bad, row["type"], row["group"], voice=row["voice"]))
    return pairs
