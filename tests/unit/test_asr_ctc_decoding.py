"""ASR with the model's CTC head: greedy CTC, exact CTC scores, teacher-forced LM scores, joint rescoring."""
import itertools
import math

import pytest
import torch

from most_speech.data.templates import TaskTemplates
from most_speech.decoding.asr import ASRDecoder
from most_speech.models import MoSTConfig, MoSTForCausalLM
from most_speech.text.tokenizer import MoSTTokenizer, train_sentencepiece

FEAT_DIM = 8
SENTENCES = ["the cat sat on the mat", "a dog ran in the park", "transcribe the following speech into text",
             "hello world how are you"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    sp = train_sentencepiece(SENTENCES * 10, tmp_path_factory.mktemp("sp") / "sp", vocab_size=50)
    tok = MoSTTokenizer.from_sentencepiece(sp, num_units=10)
    layout = tok.layout
    torch.manual_seed(0)
    cfg = MoSTConfig.tiny(vocab_size=layout.vocab_size, token_layout=layout.to_dict(), bos_token_id=layout.bos_id,
                          eos_token_id=layout.eos_id, pad_token_id=layout.pad_id, audio_feature_dim=FEAT_DIM,
                          audio_ctc_weight=0.5)
    model = MoSTForCausalLM(cfg).eval()

    def features(entries):
        return [torch.randn(6 + 2 * i, FEAT_DIM, generator=torch.Generator().manual_seed(i))
                for i in range(len(entries))]

    return tok, model, TaskTemplates(tok), features


def brute_force_ctc(log_probs, target, blank):
    """log of the summed probability of every frame path that collapses to ``target``."""
    total = 0.0
    for path in itertools.product(range(log_probs.shape[1]), repeat=log_probs.shape[0]):
        collapsed = [t for j, t in enumerate(path) if t != blank and (j == 0 or t != path[j - 1])]
        if collapsed == list(target):
            total += math.exp(sum(float(log_probs[f, t]) for f, t in enumerate(path)))
    return math.log(total)


def test_ctc_scores_are_exact_and_refuse_non_text_tokens():
    torch.manual_seed(1)
    log_probs = torch.randn(4, 3).log_softmax(-1)  # 4 frames, classes 0, 1 and blank 2
    cands = [(0,), (0, 1), (1, 1), (), (0, 7)]
    scores = ASRDecoder._ctc_scores(log_probs, 4, cands)
    for cand, score in zip(cands[:4], scores[:4]):
        assert float(score) == pytest.approx(brute_force_ctc(log_probs, cand, blank=2), abs=1e-4)
    assert scores[4] == float("-inf")


def test_ctc_greedy_merges_repeats_and_drops_blanks():
    best = torch.tensor([[1, 1, 3, 1, 2, 2, 3, 0], [2, 3, 3, 2, 0, 0, 0, 0]])
    log_probs = torch.nn.functional.one_hot(best, 4).float().log()
    assert ASRDecoder._ctc_greedy_from(log_probs, torch.tensor([8, 4])) == [[1, 1, 2, 0], [2, 2]]


def test_ctc_weight_one_decodes_the_heads_best_path(setup):
    tok, model, tpl, features = setup
    entries = [{"id": "a"}, {"id": "b"}]
    dec = ASRDecoder(model, tpl, features=features, ctc_weight=1.0)
    batch = dec._prompt_batch(entries)
    log_probs, lengths = model.audio_ctc_log_probs(batch.input_ids, batch.audio_features,
                                                   batch.audio_feature_lengths, batch.attention_mask)
    assert lengths.tolist() == [6, 8] and log_probs.shape[-1] == tok.layout.text_vocab_size + 1
    want = [tok.decode(h) for h in ASRDecoder._ctc_greedy_from(log_probs, lengths)]
    assert dec.decode_batch(entries) == want
    # one utterance alone gives the same path (left padding of the batch does not leak in)
    alone = ASRDecoder(model, tpl, features=lambda e: features(entries)[1:], ctc_weight=1.0)
    assert alone.decode_batch(entries[1:]) == want[1:]


def test_lm_score_of_the_greedy_hypothesis_matches_generation(setup):
    tok, model, tpl, features = setup
    dec = ASRDecoder(model, tpl, features=features, max_new_tokens=5)
    batch = dec._prompt_batch([{"id": "a"}])
    out = model.generate(batch.input_ids, **batch.generate_kwargs(), max_new_tokens=5, do_sample=False,
                         eos_token_id=None, pad_token_id=tok.pad_id, output_scores=True,
                         return_dict_in_generate=True)
    tokens = out.sequences[0].tolist()
    steps = [s[0].float().log_softmax(-1) for s in out.scores]
    # candidate = the first 4 generated tokens; _lm_scores adds eos, scored by the 5th step's distribution
    stepwise = sum(float(steps[k][tokens[k]]) for k in range(4)) + float(steps[4][tok.eos_id])
    score = float(dec._lm_scores(batch, 0, [tuple(tokens[:4])])[0])
    assert score == pytest.approx(stepwise, abs=1e-3)


def test_joint_rescoring_picks_the_best_joint_candidate(setup):
    tok, model, tpl, features = setup
    entries = [{"id": "a"}]
    dec = ASRDecoder(model, tpl, features=features, beam_size=3, max_new_tokens=4, ctc_weight=0.5)
    hyp = dec.decode_batch(entries)[0]
    batch = dec._prompt_batch(entries)
    log_probs, lengths = dec._ctc_log_probs(batch)
    nbest = model.generate(batch.input_ids, **batch.generate_kwargs(), max_new_tokens=4, num_beams=3,
                           num_return_sequences=3, do_sample=False, eos_token_id=tok.eos_id,
                           pad_token_id=tok.pad_id)
    cands = list(dict.fromkeys([tuple(dec._until_eos(r)) for r in nbest.tolist()]
                               + [tuple(ASRDecoder._ctc_greedy_from(log_probs, lengths)[0])]))
    joint = 0.5 * dec._lm_scores(batch, 0, cands) + 0.5 * ASRDecoder._ctc_scores(log_probs[0], int(lengths[0]), cands)
    assert hyp == tok.decode(list(cands[int(joint.argmax())]))


def test_score_is_the_joint_score_of_the_given_text(setup):
    tok, model, tpl, features = setup
    entries, texts = [{"id": "a"}, {"id": "b"}], ["the cat", "a dog"]
    for w in (0.0, 0.5):
        dec = ASRDecoder(model, tpl, features=features, ctc_weight=w)
        batch = dec._prompt_batch(entries)
        log_probs, lengths = dec._ctc_log_probs(batch)
        want = []
        for i, text in enumerate(texts):
            cand = [tuple(tok.encode(text))]
            ctc = ASRDecoder._ctc_scores(log_probs[i], int(lengths[i]), cand)[0]
            lm = dec._lm_scores(batch, i, cand)[0]
            assert torch.isfinite(ctc)
            want.append(lm if w == 0 else (1 - w) * lm + w * ctc)
        assert dec.score(entries, texts).tolist() == pytest.approx(torch.stack(want).tolist(), abs=1e-4)
    with pytest.raises(ValueError, match="2 entries but 1 texts"):
        dec.score(entries, texts[:1])


def test_ctc_decoding_needs_a_ctc_head(setup):
    tok, model, tpl, features = setup
    plain = MoSTForCausalLM(MoSTConfig.from_dict({**model.config.to_dict(), "audio_ctc_weight": 0.0}))
    with pytest.raises(ValueError, match="CTC head"):
        ASRDecoder(plain, tpl, features=features, ctc_weight=0.5)
    with pytest.raises(ValueError, match=r"ctc_weight must be in \[0, 1\]"):
        ASRDecoder(plain, tpl, features=features, ctc_weight=1.5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_decoding_runs_where_the_model_is(setup):
    tok, model, tpl, features = setup
    entries = [{"id": "a"}, {"id": "b"}]
    cpu = ASRDecoder(model, tpl, features=features, beam_size=2, max_new_tokens=4, ctc_weight=0.5)
    want = cpu.decode_batch(entries)
    gpu_model = MoSTForCausalLM(model.config).eval()
    gpu_model.load_state_dict(model.state_dict())
    gpu = ASRDecoder(gpu_model.cuda(), tpl, features=features, beam_size=2, max_new_tokens=4, ctc_weight=0.5)
    assert gpu.decode_batch(entries) == want
