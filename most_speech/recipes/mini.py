"""Text of the mini corpus's grammar for the mini recipes.

``python -m most_speech.recipes.mini lm-text --num 20000 --out data/lm_text.txt``
    Extra text-LM sentences (the stand-in for RefinedWeb in stage 1): drawn from the grammar of
    :mod:`most_speech.data.mini_corpus`, kept only when they fall in the *training* split's hash bucket, so no
    dev or test sentence is ever seen as text.

``python -m most_speech.recipes.mini words --out data/slm/words.txt [--min-len 4]``
    The grammar's vocabulary (lower case), the word list of the sWUGGY-style pair test
    (``most-score build-swuggy --words``): word vs pseudoword, both spoken by a held-out voice.

``python -m most_speech.recipes.mini dialogues --num 400 --out data/smoltalk_mini.jsonl``
    SmolTalk-format instruction dialogues (``{"messages": [user, assistant]}``) about training-split
    sentences ("how many words are in ...", "what is the last word of ..."), in the mini tokenizer's upper
    case: the stand-in for SmolTalk in a CPU run of ``recipes/SmolTalk`` on the mini stage-1 model.
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import List

from most_speech.data.fileio import atomic_write_text
from most_speech.data.mini_corpus import Grammar, normalize_text, split_of
from most_speech.text.normalize import number_to_words

__all__ = ["instruction_dialogues", "lm_sentences", "vocabulary_words", "main"]


def lm_sentences(num: int, seed: int = 0, normalized: bool = True, grammar: Grammar = None) -> List[str]:
    """``num`` distinct training-split sentences of the mini grammar.

    Examples
    --------
    >>> s = lm_sentences(5, seed=1)
    >>> len(s) == len(set(s)) == 5 and all(split_of(x) == "train" and x == x.upper() for x in s)
    True
    """
    grammar = grammar or Grammar.load()
    rng = random.Random(seed)
    out, seen, tries = [], set(), 0
    while len(out) < num:
        tries += 1
        if tries > 100 * num + 10000:
            raise ValueError(f"the grammar gave only {len(out)} distinct training sentences of {num}")
        text = grammar.sentence(rng)
        key = normalize_text(text)
        if key in seen or split_of(text) != "train":
            continue
        seen.add(key)
        out.append(key if normalized else text)
    return out


def vocabulary_words(min_len: int = 4, grammar: Grammar = None) -> List[str]:
    """Sorted lower-case words of the grammar with at least ``min_len`` letters (no apostrophes).

    Examples
    --------
    >>> words = vocabulary_words()
    >>> len(words) > 100 and all(len(w) >= 4 and w.isalpha() and w.islower() for w in words)
    True
    """
    grammar = grammar or Grammar.load()
    return sorted(w.lower() for w in grammar.vocabulary() if len(w) >= min_len and w.isalpha())


def instruction_dialogues(num: int, seed: int = 0) -> List[dict]:
    """``num`` one-turn SmolTalk-format dialogues whose answer follows from the question's sentence.

    Examples
    --------
    >>> d = instruction_dialogues(2)
    >>> [m["role"] for m in d[0]["messages"]], d[0]["messages"][1]["content"].startswith("THERE ARE")
    (['user', 'assistant'], True)
    """
    rows = []
    for i, sentence in enumerate(lm_sentences(num, seed)):
        words = sentence.split()
        if i % 2 == 0:
            count = number_to_words(len(words)).upper()
            question, answer = f"HOW MANY WORDS ARE IN {sentence}", f"THERE ARE {count} WORDS"
        else:
            question, answer = f"WHAT IS THE LAST WORD OF THIS SENTENCE {sentence}", words[-1]
        rows.append({"messages": [{"role": "user", "content": question},
                                  {"role": "assistant", "content": answer}]})
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m most_speech.recipes.mini", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    lm = sub.add_parser("lm-text", help="training-split sentences of the grammar")
    lm.add_argument("--num", type=int, default=20000)
    lm.add_argument("--seed", type=int, default=0)
    lm.add_argument("--cased", action="store_true", help="keep case and punctuation")
    lm.add_argument("--out", required=True)
    words = sub.add_parser("words", help="the grammar's vocabulary")
    words.add_argument("--min-len", type=int, default=4)
    words.add_argument("--limit", type=int, default=0, help="keep every k-th word so that at most N remain")
    words.add_argument("--out", required=True)
    dialogues = sub.add_parser("dialogues", help="SmolTalk-format instruction dialogues about grammar sentences")
    dialogues.add_argument("--num", type=int, default=400)
    dialogues.add_argument("--seed", type=int, default=0)
    dialogues.add_argument("--out", required=True)
    a = p.parse_args(argv)
    if a.cmd == "dialogues":
        lines = [json.dumps(row) for row in instruction_dialogues(a.num, a.seed)]
    elif a.cmd == "lm-text":
        lines = lm_sentences(a.num, a.seed, normalized=not a.cased)
    else:
        lines = vocabulary_words(a.min_len)
        if a.limit and len(lines) > a.limit:  # an even spread over the alphabet, not just the a-words
            lines = lines[::-(-len(lines) // a.limit)]
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.out, "".join(line + "\n" for line in lines))
    print(f"wrote {len(lines)} lines to {a.out}")


if __name__ == "__main__":
    main()
