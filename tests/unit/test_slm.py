"""Spoken-LM likelihood pairs: log-probabilities, accuracy with Wilson CI, pair-set builders, CLI."""
import csv
import json
import math
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import soundfile as sf
import torch

from most_speech.scoring.cli import main
from most_speech.scoring.slm import (LikelihoodPair, evaluate_pairs, make_score_fn, read_pairs, sequence_logprob,
                                     sign_test, wilson_interval, write_pairs)
from most_speech.scoring.slm_data import (build_audio_pairs, encode_audio_pairs, load_blimp, load_stories,
                                          load_wordlist, make_pseudoword, make_sentence_wuggy_pairs,
                                          make_wuggy_pairs, phoneme_matched_pseudowords, read_audio_pairs,
                                          real_word_lexicon, same_sound_shape)
from most_speech.text.g2p import espeak_phonemes

SHARED = Path(os.environ.get("MOST_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
BLIMP = SHARED / "blimp_subset" / "blimp_first100.jsonl"


class FixedLM(torch.nn.Module):
    """Next-token distribution independent of context: softmax(bias); bias[i] set per test."""

    def __init__(self, bias):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.as_tensor(bias, dtype=torch.float))

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=self.bias.expand(*input_ids.shape, -1))


def _tiny_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=12, n_layer=1, n_head=2, n_embd=16, n_positions=32, bos_token_id=0,
                     eos_token_id=0)
    return GPT2LMHeadModel(cfg).eval()


def test_logprob_of_uniform_lm_by_hand():
    lm = FixedLM([0.0] * 4)  # uniform over 4 tokens: every scored token costs log 4
    ids = torch.tensor([[1, 2, 3, 0, 1], [2, 2, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    total = sequence_logprob(lm, ids, mask, prompt_lengths=[2, 0])
    # row 0: tokens at positions 2, 3, 4 scored (prompt 2) -> 3 tokens; row 1: position 1 only
    assert total.tolist() == pytest.approx([-3 * math.log(4), -math.log(4)])
    mean = sequence_logprob(lm, ids, mask, prompt_lengths=[2, 0], normalize=True)
    assert mean.tolist() == pytest.approx([-math.log(4), -math.log(4)])


def test_logprob_matches_token_by_token_sum_and_ignores_padding():
    lm = _tiny_gpt2()
    seqs, prompts = [[1, 5, 7, 2, 9], [3, 4], [8, 8, 8, 1]], [0, 1, 2]
    expected = []
    for s, p in zip(seqs, prompts):
        with torch.no_grad():
            logp = torch.log_softmax(lm(torch.tensor([s])).logits[0], -1)
        expected.append(sum(logp[t - 1, s[t]].item() for t in range(max(1, p), len(s))))
    fn = make_score_fn(lm, batch_size=2, pad_id=11)
    assert fn(seqs, prompt_lengths=prompts) == pytest.approx(expected, abs=1e-4)
    norm = make_score_fn(lm, batch_size=3, normalize=True)(seqs, prompt_lengths=prompts)
    counts = [4, 1, 2]
    assert norm == pytest.approx([e / c for e, c in zip(expected, counts)], abs=1e-4)


def test_bos_makes_first_token_scored():
    lm = FixedLM([math.log(0.5), math.log(0.25), math.log(0.25)])
    # with BOS 0 prepended: p(2) * p(1) = 0.25 * 0.25
    assert make_score_fn(lm, bos_id=0)([[2, 1]]) == pytest.approx([2 * math.log(0.25)])
    with pytest.raises(ValueError, match="at least 2 tokens"):
        make_score_fn(lm)([[2]])


def test_pair_accuracy_ties_types_and_groups():
    pairs = [
        LikelihoodPair("w1", [1, 1], [1, 2], "lexical"),                # good wins
        LikelihoodPair("w2", [2, 2], [1, 1], "lexical"),                # bad wins
        LikelihoodPair("s1", [1, 2], [2, 1], "syntactic", group="g"),    # tie -> 1/2
        LikelihoodPair("s2", [1], [3], "syntactic", group="g"),          # good wins
    ]
    res = evaluate_pairs(pairs, lambda seqs: [-float(sum(s)) for s in seqs])
    assert res.score == 2.5 and res.accuracy == pytest.approx(2.5 / 4)
    assert res.per_type["lexical"]["accuracy"] == 50.0 and res.per_type["syntactic"]["accuracy"] == 75.0
    assert res.per_group == {"g": {"n": 2, "accuracy": 75.0, "ci95": res.per_group["g"]["ci95"]}}
    assert res.pair_scores["w2"] == (-4.0, -2.0)
    assert res.ci == pytest.approx(wilson_interval(2.5, 4))
    assert res.length_baseline == 0.5  # every pair has equal lengths: ties
    assert res.summary()["length_baseline"] == 50.0


def test_pairs_spoken_by_several_voices_pool_and_break_down_per_voice():
    # the same two word pairs, each spoken by two voices: one id, two renditions
    pairs = [LikelihoodPair("w1", [1], [2], voice="flite:awb"), LikelihoodPair("w2", [3], [2], voice="flite:awb"),
             LikelihoodPair("w1", [1], [2], voice="espeak-ng:en-us+m6"),
             LikelihoodPair("w2", [1], [2], voice="espeak-ng:en-us+m6")]
    res = evaluate_pairs(pairs, lambda seqs: [-float(sum(s)) for s in seqs])
    assert res.n == 4 and res.accuracy == 0.75
    assert res.per_voice["flite:awb"]["accuracy"] == 50.0 and res.per_voice["espeak-ng:en-us+m6"]["accuracy"] == 100.0
    assert res.pair_scores["flite:awb/w2"] == (-3.0, -2.0) and res.summary()["per_voice"] == res.per_voice
    with pytest.raises(ValueError, match="duplicate pair ids.*flite:awb/w1"):
        evaluate_pairs(pairs + pairs[:1], lambda seqs: [0.0] * len(seqs))


def test_length_baseline_prefers_the_shorter_item():
    pairs = [LikelihoodPair("a", [1], [1, 1]), LikelihoodPair("b", [1, 1, 1], [1, 1]),
             LikelihoodPair("c", [1, 2], [2, 1]), LikelihoodPair("d", [5], [5, 5, 5])]
    # a per-token log-probability of -1: the summed score is the length baseline itself
    res = evaluate_pairs(pairs, lambda seqs: [-float(len(s)) for s in seqs])
    assert res.length_baseline == pytest.approx((1 + 0 + 0.5 + 1) / 4) == res.accuracy
    assert res.vs_length == (0, 0) and res.length_p == 1.0
    # a model that prefers the longer item wins exactly where the baseline loses
    longer = evaluate_pairs(pairs, lambda seqs: [float(len(s)) for s in seqs])
    assert longer.vs_length == (1, 2) and longer.summary()["vs_length_baseline"] == {
        "model_only": 1, "baseline_only": 2, "p": 1.0}
    # only pair c has two items of one length: the length effect cannot decide it
    assert longer.equal_length == (0.5, 1) and longer.summary()["equal_length"] == {
        "n_pairs": 1, "accuracy": 50.0, "ci95": [round(100 * x, 2) for x in wilson_interval(0.5, 1)]}
    unequal = evaluate_pairs(pairs[:2], lambda seqs: [float(len(s)) for s in seqs])
    assert unequal.summary()["equal_length"] == {"n_pairs": 0, "accuracy": None, "ci95": None}


def test_sign_test_matches_the_binomial_tail():
    assert sign_test(9, 1) == pytest.approx(2 * 11 / 1024)
    assert sign_test(1, 9) == sign_test(9, 1) and sign_test(0, 0) == 1.0 and sign_test(4, 4) == 1.0


def test_story_pairs_pass_prompt_lengths():
    seen = {}

    def score_fn(seqs, prompt_lengths=None):
        seen["prompts"] = prompt_lengths
        return [float(s[-1]) for s in seqs]

    pairs = [LikelihoodPair("st", [9], [1], "story", prompt=[4, 4, 4])]
    assert evaluate_pairs(pairs, score_fn).accuracy == 1.0
    assert seen["prompts"] == [3, 3]


def test_score_fn_output_count_checked():
    with pytest.raises(RuntimeError, match="returned 1 scores for 2"):
        evaluate_pairs([LikelihoodPair("a", [1], [2])], lambda seqs: [0.0])
    with pytest.raises(ValueError, match="no likelihood pairs"):
        evaluate_pairs([], lambda seqs: [])


def test_wilson_interval():
    from scipy.stats import binomtest

    lo, hi = wilson_interval(8, 10)
    # by hand: p=0.8, z^2=3.8415, centre=(0.8+0.19207)/1.38415=0.71674, half=1.95996*sqrt(0.016+0.0096)/1.38415
    assert (lo, hi) == pytest.approx((0.71674 - 0.22654, 0.71674 + 0.22654), abs=1e-4)
    for k, n in [(0, 5), (3, 7), (50, 50), (412, 1000)]:
        ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert wilson_interval(k, n) == pytest.approx((ci.low, ci.high), abs=1e-6)
    assert all(math.isnan(x) for x in wilson_interval(0, 0))
    with pytest.raises(ValueError):
        wilson_interval(6, 5)


def test_pairs_jsonl_roundtrip_and_errors(tmp_path):
    pairs = [LikelihoodPair("a", [1, 2], [2, 1], "syntactic", "g"), LikelihoodPair("b", [3], [4], prompt=[5]),
             LikelihoodPair("a", [1], [2], voice="flite:awb")]
    back = read_pairs(write_pairs(tmp_path / "p.jsonl", pairs))
    assert back == pairs
    (tmp_path / "bad.jsonl").write_text('{"id": "x", "good": [1]}\n')
    with pytest.raises(ValueError, match=r"id 'x'.*\['bad'\]"):
        read_pairs(tmp_path / "bad.jsonl")
    (tmp_path / "empty.jsonl").write_text('{"id": "x", "good": [], "bad": [1]}\n')
    with pytest.raises(ValueError, match="'x' has an empty"):
        read_pairs(tmp_path / "empty.jsonl")


def test_pseudoword_rule():
    lexicon = real_word_lexicon()
    words = load_wordlist()
    assert len(words) >= 150 and len(set(words)) == len(words)
    for w in words[:60]:
        pw = make_pseudoword(w, lexicon)
        if pw is None:
            continue
        assert pw != w and pw not in lexicon and pw.isalpha()
        assert abs(len(pw) - len(w)) <= 1  # one vowel spelling may grow or shrink by a letter
        assert pw == make_pseudoword(w, lexicon)  # deterministic
    by_seed = [[make_pseudoword(w, lexicon, seed=s) for w in words[:20]] for s in (1, 2)]
    assert by_seed[0] != by_seed[1]  # the seed changes the draw
    pairs = make_wuggy_pairs(words, lexicon=lexicon)
    assert len(pairs) >= 0.9 * len(words) and all(p["type"] == "lexical" for p in pairs)


def test_sentence_wuggy_pairs_replace_one_long_word_per_sentence():
    words = ["garden", "window", "cat"]
    lexicon = real_word_lexicon(words)
    sentences = ["The CAT sat in the garden", "a cat by the window of the garden", "no such word", "the cat"]
    pairs = make_sentence_wuggy_pairs(sentences, words, lexicon=lexicon)
    assert [p["id"] for p in pairs] == ["swuggy_sent_00000", "swuggy_sent_00001"]  # the others: nothing to swap
    assert pairs[0]["good_text"] == "the cat sat in the garden"
    assert pairs[0]["bad_text"] == f"the cat sat in the {make_pseudoword('garden', lexicon)}"
    changed = [(g, b) for g, b in zip(pairs[1]["good_text"].split(), pairs[1]["bad_text"].split()) if g != b]
    assert len(changed) == 1 and changed[0][0] in {"window", "garden"}  # "cat" is under min_letters
    assert changed[0][1] == make_pseudoword(changed[0][0], lexicon)
    assert pairs == make_sentence_wuggy_pairs(sentences, words, lexicon=lexicon)  # seeded
    drawn = {make_sentence_wuggy_pairs(sentences, words, seed=s, lexicon=lexicon)[1]["bad_text"] for s in range(8)}
    assert len(drawn) > 1  # the seed draws the slot (and the pseudoword)


def test_sentence_wuggy_pairs_see_words_through_punctuation():
    words = ["garden", "window"]
    lexicon = real_word_lexicon(words)
    sentences = ["Sam sat in the garden.", "\"Window,\" he said!"]  # Common Voice text: cased and punctuated
    pairs = make_sentence_wuggy_pairs(sentences, words, lexicon=lexicon)
    assert len(pairs) == 2
    assert pairs[0]["good_text"] == "sam sat in the garden."
    assert pairs[0]["bad_text"] == f"sam sat in the {make_pseudoword('garden', lexicon)}."
    assert pairs[1]["bad_text"] == f"\"{make_pseudoword('window', lexicon)},\" he said!"


def test_same_sound_shape():
    such = ["s", "V", "tS"]
    assert same_sound_shape(such, ["z", "V", "tS"]) and same_sound_shape(such, ["z", "I", "tS"])
    assert not same_sound_shape(such, such)                      # no change is no pseudoword
    assert not same_sound_shape(such, ["z", "i:", "tS"])         # short vowel for a long one
    assert not same_sound_shape(such, ["z", "aI", "tS"])         # ... or a diphthong
    assert same_sound_shape(["b", "i:", "tS"], ["b", "oU", "tS"])  # long for long
    assert same_sound_shape(such, ["s", "V", "t"])               # any consonant for a consonant
    assert not same_sound_shape(such, ["s", "V", "tS", "t"]) and not same_sound_shape(such, ["s", "V"])
    assert not same_sound_shape(such, ["s", "t", "tS"])          # consonant for vowel
    assert not same_sound_shape(such, ["z", "I", "dZ"])          # three changes
    assert same_sound_shape(such, ["z", "I", "dZ"], max_changes=3)


def test_phoneme_matched_pseudowords_keep_the_spoken_length():
    words = load_wordlist()[:60]
    lexicon = real_word_lexicon(words)
    matched = phoneme_matched_pseudowords(words, lexicon)
    assert len(matched) >= 0.7 * len(words)
    sound = dict(zip(words + list(matched.values()), espeak_phonemes(words + list(matched.values()))))
    for w, pw in matched.items():
        assert pw not in lexicon and same_sound_shape(sound[w], sound[pw]), (w, pw)
    # the spelling rule alone often changes the spoken length; matching is what removes that
    plain = {w: make_pseudoword(w, lexicon) for w in words}
    plain_sound = dict(zip(plain.values(), espeak_phonemes(list(plain.values()))))
    assert sum(len(plain_sound[pw]) != len(sound[w]) for w, pw in plain.items()) >= 5
    assert phoneme_matched_pseudowords(words, lexicon) == matched                  # deterministic
    assert phoneme_matched_pseudowords(words, lexicon, seed=1) != matched          # the seed redraws
    pairs = make_wuggy_pairs(words, lexicon=lexicon, match_phonemes=True)
    assert {p["good_text"]: p["bad_text"] for p in pairs} == matched


def test_cli_build_swuggy_in_sentences_from_a_manifest(tmp_path, capsys):
    (tmp_path / "words.txt").write_text("garden\nwindow\n")
    manifest = tmp_path / "test.jsonl"
    manifest.write_text('{"id": "u1", "text": "OPEN THE WINDOW"}\n{"id": "u2", "text": "SIT DOWN"}\n')
    assert main(["build-swuggy", "--words", str(tmp_path / "words.txt"), "--sentences", str(manifest),
                 "--out", str(tmp_path / "s")]) == 0
    rows = read_audio_pairs(tmp_path / "s" / "pairs.csv")
    assert [(r["id"], r["good_text"]) for r in rows] == [("swuggy_sent_00000", "open the window")]
    assert rows[0]["bad_text"].startswith("open the ") and rows[0]["bad_text"] != "open the window"
    assert all(Path(r[k]).is_file() for r in rows for k in ("good_path", "bad_path"))
    # sentences synthesized two at a time: the same files
    assert main(["build-swuggy", "--words", str(tmp_path / "words.txt"), "--sentences", str(manifest),
                 "--jobs", "2", "--out", str(tmp_path / "s2")]) == 0
    assert [Path(r[k].replace(str(tmp_path / "s2"), str(tmp_path / "s"))).read_bytes() for r in rows
            for k in ("good_path", "bad_path")] == \
        [Path(r[k]).read_bytes() for r in read_audio_pairs(tmp_path / "s2" / "pairs.csv")
         for k in ("good_path", "bad_path")]
    # several manifests are pooled in order (ids number the pooled sentences); --match-phonemes keeps the length
    (tmp_path / "dev.txt").write_text("the garden gate\n")
    assert main(["build-swuggy", "--words", str(tmp_path / "words.txt"), "--sentences", str(manifest),
                 str(tmp_path / "dev.txt"), "--match-phonemes", "--out", str(tmp_path / "m")]) == 0
    rows = read_audio_pairs(tmp_path / "m" / "pairs.csv")
    assert [(r["id"], r["good_text"]) for r in rows] == [("swuggy_sent_00000", "open the window"),
                                                         ("swuggy_sent_00002", "the garden gate")]
    matched = phoneme_matched_pseudowords(["garden", "window"], real_word_lexicon(["garden", "window"]))
    assert rows[1]["bad_text"] == f"the {matched['garden']} gate"
    capsys.readouterr()
    for name, text, error in [("bad.jsonl", '{"id": "u1", "text": "OPEN THE WINDOW"}\n{"id": "u2"}\n', "u2"),
                              ("empty.jsonl", '{"id": "u1", "text": "OPEN THE WINDOW"}\n{"id": "u3", "text": " "}\n',
                               "empty 'text' field: ['u3']"),
                              ("none.txt", "sit down\n", "no sentence")]:
        (tmp_path / name).write_text(text)
        assert main(["build-swuggy", "--words", str(tmp_path / "words.txt"), "--sentences", str(tmp_path / name),
                     "--out", str(tmp_path / "b")]) == 2
        assert error in capsys.readouterr().err and not (tmp_path / "b").exists()


def test_pseudoword_gives_up_when_everything_is_a_word():
    lexicon = {"ab"} | {v + "b" for v in ["a", "e", "i", "o", "u", "ee", "oo", "ai", "ea", "oa"]}
    assert make_pseudoword("ab", lexicon) is None


@pytest.mark.skipif(not BLIMP.is_file(), reason="shared/data/blimp_subset absent")
def test_build_sblimp_pairs_with_espeak(tmp_path):
    text_pairs = load_blimp(BLIMP, paradigms=["adjunct_island", "anaphor_gender_agreement"], max_per_paradigm=1)
    assert [p["id"] for p in text_pairs] == ["adjunct_island_0", "anaphor_gender_agreement_0"]
    assert text_pairs[0]["good_text"] == "Who should Derek hug after shocking Richard?"
    manifest = build_audio_pairs(text_pairs, tmp_path, progress=False)
    rows = read_audio_pairs(manifest)
    assert [r["group"] for r in rows] == ["adjunct_island", "anaphor_gender_agreement"]
    with open(manifest, newline="") as f:
        assert next(csv.reader(f)) == ["id", "type", "group", "good_path", "bad_path", "good_text", "bad_text",
                                       "voice"]
    for r in rows:
        for key in ("good_path", "bad_path"):
            info = sf.info(r[key])
            assert info.samplerate == 16000 and info.channels == 1 and info.duration > 1.0
    # the encoder is pluggable: here "units" = one id per 0.1 s of audio
    pairs = encode_audio_pairs(manifest, lambda p: [1] * int(sf.info(p).duration * 10), progress=False)
    assert pairs[0].type == "syntactic" and len(pairs[0].good) >= 10
    mtime = Path(rows[0]["good_path"]).stat().st_mtime_ns
    build_audio_pairs(text_pairs, tmp_path, progress=False)  # rerun keeps finished audio
    assert Path(rows[0]["good_path"]).stat().st_mtime_ns == mtime
    with pytest.raises(ValueError, match="paradigm.*nope"):
        load_blimp(BLIMP, paradigms=["nope"])


def test_stories(tmp_path):
    (tmp_path / "s.jsonl").write_text(json.dumps({"id": "s1", "context": "Ann was thirsty.",
                                                  "good_ending": "She drank water.",
                                                  "bad_ending": "She sold her car."}) + "\n")
    story = load_stories(tmp_path / "s.jsonl")[0]
    assert story["type"] == "story" and story["bad_text"] == "Ann was thirsty. She sold her car."
    (tmp_path / "bad.jsonl").write_text('{"id": "s2", "context": "x"}\n')
    with pytest.raises(ValueError, match="s2"):
        load_stories(tmp_path / "bad.jsonl")


def test_cli_slm_and_build_swuggy(tmp_path, capsys):
    lm = _tiny_gpt2()
    lm.save_pretrained(tmp_path / "lm")
    pairs = [LikelihoodPair(f"p{i}", [1, 2, 3 + i], [3 + i, 2, 1], "syntactic") for i in range(4)]
    write_pairs(tmp_path / "pairs.jsonl", pairs)
    assert main(["slm", "--pairs", str(tmp_path / "pairs.jsonl"), "--model", str(tmp_path / "lm"),
                 "--out", str(tmp_path / "o"), "--bos-id", "0"]) == 0
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    expected = evaluate_pairs(pairs, make_score_fn(lm, bos_id=0)).summary()
    assert summary["accuracy"] == expected["accuracy"] and summary["n_pairs"] == 4
    assert "per voice" not in capsys.readouterr().out
    for i, p in enumerate(pairs):
        p.voice = "flite:awb" if i % 2 else "espeak-ng:en-us"
    write_pairs(tmp_path / "voiced.jsonl", pairs)
    assert main(["slm", "--pairs", str(tmp_path / "voiced.jsonl"), "--model", str(tmp_path / "lm"),
                 "--out", str(tmp_path / "o2"), "--bos-id", "0"]) == 0
    voiced = json.loads((tmp_path / "o2" / "summary.json").read_text())
    assert voiced["accuracy"] == summary["accuracy"] and set(voiced["per_voice"]) == {"flite:awb", "espeak-ng:en-us"}
    assert "per voice: espeak-ng:en-us" in capsys.readouterr().out
    (tmp_path / "words.txt").write_text("# test\ngarden\nwindow\n")
    assert main(["build-swuggy", "--words", str(tmp_path / "words.txt"), "--out", str(tmp_path / "w")]) == 0
    rows = read_audio_pairs(tmp_path / "w" / "pairs.csv")
    assert [r["good_text"] for r in rows] == ["garden", "window"] and all(Path(r["bad_path"]).is_file() for r in rows)
    assert {r["voice"] for r in rows} == {"espeak-ng:en-us"}
    # several voices: every pair once per voice, each voice's audio in its own folder
    assert main(["build-swuggy", "--words", str(tmp_path / "words.txt"), "--out", str(tmp_path / "v"),
                 "--voice", "espeak-ng:en-us", "flite:awb"]) == 0
    rows = read_audio_pairs(tmp_path / "v" / "pairs.csv")
    assert [(r["id"], r["voice"]) for r in rows] == [
        ("wuggy_garden", "espeak-ng:en-us"), ("wuggy_window", "espeak-ng:en-us"),
        ("wuggy_garden", "flite:awb"), ("wuggy_window", "flite:awb")]
    assert Path(rows[2]["good_path"]).parent.name == "flite_awb" and Path(rows[2]["good_path"]).is_file()
    assert sf.read(rows[0]["good_path"])[0].shape != sf.read(rows[2]["good_path"])[0].shape  # two voices
    encoded = encode_audio_pairs(tmp_path / "v" / "pairs.csv", lambda path: [1, 2], progress=False)
    assert [p.key for p in encoded][2] == "flite:awb/wuggy_garden"
    with pytest.raises(ValueError, match="distinct voices"):
        build_audio_pairs(make_wuggy_pairs(["garden"]), tmp_path / "x", voice=["flite:awb", "flite:awb"])
