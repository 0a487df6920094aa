"""Decoding: ASR (greedy / beam), TTS (constrained unit sampling, length limits, streaming), spoken QA."""
import pytest
import torch

from most_speech.data.templates import TaskTemplates, TemplateConfig
from most_speech.decoding.asr import ASRDecoder
from most_speech.decoding.generation import SamplingConfig, UnitOnlyLogitsProcessor, tts_unit_budget
from most_speech.decoding.rerank import EncoderCTCReranker, SummedReranker
from most_speech.decoding.spoken_qa import SpokenQADecoder
from most_speech.decoding.tts import TTSDecoder
from most_speech.models import MoSTConfig, MoSTForCausalLM
from most_speech.text.tokenizer import MoSTTokenizer, train_sentencepiece
from most_speech.vocoder import MeanMelConfig, MeanMelVocoder

NUM_UNITS = 20
FEAT_DIM = 8
SENTENCES = ["the cat sat on the mat", "a dog ran in the park", "transcribe the following speech into text",
             "convert the following text into speech", "hello world how are you"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    sp = train_sentencepiece(SENTENCES * 10, tmp_path_factory.mktemp("sp") / "sp", vocab_size=60)
    tok = MoSTTokenizer.from_sentencepiece(sp, num_units=NUM_UNITS)
    layout = tok.layout
    torch.manual_seed(0)
    cfg = MoSTConfig.tiny(vocab_size=layout.vocab_size, token_layout=layout.to_dict(), bos_token_id=layout.bos_id,
                          eos_token_id=layout.eos_id, pad_token_id=layout.pad_id, audio_feature_dim=FEAT_DIM)
    model = MoSTForCausalLM(cfg).eval()
    vocoder = MeanMelVocoder(MeanMelConfig(km_tag="test-km", num_units=NUM_UNITS))
    return tok, model, vocoder


def unit_entries(n=3):
    g = torch.Generator().manual_seed(5)
    return [{"id": f"u{i}", "units": torch.randint(0, NUM_UNITS, (6 + 3 * i,), generator=g).tolist()}
            for i in range(n)]


def test_asr_from_units_same_with_and_without_cache_and_batched(setup):
    tok, model, _ = setup
    tpl = TaskTemplates(tok, TemplateConfig(speech_input="units"))
    dec = ASRDecoder(model, tpl, max_new_tokens=6, batch_size=3)
    entries = unit_entries()
    batched = dec.transcribe(entries, progress=False)
    dec.batch_size = 1
    assert dec.transcribe(entries, progress=False) == batched
    batch = dec._prompt_batch(entries)
    kw = dict(max_new_tokens=6, do_sample=False, eos_token_id=None, pad_token_id=tok.pad_id)
    a = model.generate(batch.input_ids, attention_mask=batch.attention_mask, use_cache=True, **kw)
    b = model.generate(batch.input_ids, attention_mask=batch.attention_mask, use_cache=False, **kw)
    assert torch.equal(a, b)


def test_score_of_unit_input_is_padding_free_teacher_forcing(setup):
    tok, model, _ = setup
    tpl = TaskTemplates(tok, TemplateConfig(speech_input="units"))
    dec = ASRDecoder(model, tpl)
    entries, texts = unit_entries(2), ["the cat sat", "a dog ran in the park"]
    scores = dec.score(entries, texts)
    for entry, text, score in zip(entries, texts, scores):
        ex = tpl.build("asr", {**entry, "text": text})  # prompt + text + eos, labels on text + eos
        with torch.no_grad():
            logp = model(torch.tensor([ex.input_ids])).logits[0, :-1].log_softmax(-1)
        labelled = [(k - 1, t) for k, t in enumerate(ex.labels) if t != -100]
        assert float(score) == pytest.approx(sum(float(logp[k, t]) for k, t in labelled), abs=1e-3)
    assert dec.score(entries[1:], texts[1:]).tolist() == pytest.approx(scores[1:].tolist(), abs=1e-4)


def test_asr_beam_search_runs_on_the_latent_cache(setup):
    tok, model, _ = setup
    tpl = TaskTemplates(tok, TemplateConfig(speech_input="units"))
    greedy = ASRDecoder(model, tpl, max_new_tokens=5).transcribe(unit_entries(2), progress=False)
    beam1 = ASRDecoder(model, tpl, beam_size=1, max_new_tokens=5).transcribe(unit_entries(2), progress=False)
    beam3 = ASRDecoder(model, tpl, beam_size=3, max_new_tokens=5).transcribe(unit_entries(2), progress=False)
    assert greedy == beam1 and set(beam3) == {"u0", "u1"}


def test_asr_continuous_input_uses_the_feature_source(setup):
    tok, model, _ = setup
    seen = []

    def features(entries):
        seen.extend(e["id"] for e in entries)
        return [torch.randn(4 + i, FEAT_DIM, generator=torch.Generator().manual_seed(i)) for i in range(len(entries))]

    dec = ASRDecoder(model, TaskTemplates(tok), features=features, max_new_tokens=4)
    hyps = dec.transcribe([{"id": "a"}, {"id": "b"}], progress=False)
    assert seen == ["a", "b"] and set(hyps) == {"a", "b"}


def test_unit_processor_forces_well_formed_speech():
    from most_speech.text.token_layout import TokenLayout
    layout = TokenLayout.build(text_vocab_size=10, num_units=4)
    proc = UnitOnlyLogitsProcessor(layout, prompt_length=2, min_units=2, max_units=[3])
    allowed = lambda ids: torch.isfinite(proc(torch.tensor([ids]), torch.zeros(1, layout.vocab_size)))[0]
    u = layout.unit_id
    assert allowed([1, 2]).nonzero().flatten().tolist() == [layout.boa_id]
    after_one = allowed([1, 2, layout.boa_id, u(0)])
    assert after_one[u(3)] and not after_one[layout.eoa_id] and not after_one[5]
    assert allowed([1, 2, layout.boa_id, u(0), u(1)])[layout.eoa_id]
    assert allowed([1, 2, layout.boa_id, u(0), u(1), u(2)]).nonzero().flatten().tolist() == [layout.eoa_id]


def test_tts_units_are_bounded_and_cache_independent(setup):
    tok, model, _ = setup
    tts = TTSDecoder(model, TaskTemplates(tok), sampling=SamplingConfig(temperature=0), max_units_per_token=2)
    texts = ["the cat sat", "hello world how are you"]
    with_cache = tts.generate_units(texts)
    without = tts.generate_units(texts, use_cache=False)
    assert with_cache == without
    for text, units in zip(texts, with_cache):
        n_tokens = len(tok.encode(text, parse_special=False))
        assert 0 < len(units) <= tts_unit_budget(n_tokens, 50.0, 2.0)[1]
        assert all(0 <= u < NUM_UNITS for u in units)


def test_tts_sampling_is_seeded(setup):
    tok, model, _ = setup
    make = lambda: TTSDecoder(model, TaskTemplates(tok), sampling=SamplingConfig(temperature=1.0, seed=3))
    assert make().generate_units(["a dog ran"]) == make().generate_units(["a dog ran"])


@pytest.mark.parametrize("prompt", ["instruction", "bos"])
def test_tts_guidance_follows_the_cfg_formula(setup, prompt):
    tok, model, _ = setup
    tpl, lay, text = TaskTemplates(tok), tok.layout, "a dog ran"
    make = lambda scale: TTSDecoder(model, tpl, sampling=SamplingConfig(temperature=0), guidance_scale=scale,
                                    guidance_prompt=prompt, max_units_per_token=2)
    assert make(1.0).generate_units([text]) == TTSDecoder(
        model, tpl, sampling=SamplingConfig(temperature=0), max_units_per_token=2).generate_units([text])
    cond = tpl.build("tts", {"id": "x", "text": text}, prompt_only=True).input_ids + [lay.boa_id]
    uncond = [lay.bos_id] + (tok.encode(tpl.config.tts_instruction) if prompt == "instruction" else [])
    with torch.no_grad():
        c, u = (model(torch.tensor([ids])).logits[0, -1].log_softmax(-1) for ids in (cond, uncond + [lay.boa_id]))
    allowed = [lay.unit_id(k) for k in range(NUM_UNITS)] + [lay.eoa_id]
    guided = (u + 3.0 * (c - u))[allowed]
    first = allowed[int(guided.argmax())]
    assert first != allowed[int(c[allowed].argmax())]  # with this seed guidance changes the first unit
    units = make(3.0).generate_units([text])[0]
    assert (units[:1] == [first - lay.unit_id(0)]) if first != lay.eoa_id else units == []
    with pytest.raises(ValueError, match="guidance_prompt"):
        TTSDecoder(model, tpl, guidance_prompt="none")


def test_tts_stream_yields_chunks_of_the_same_units(setup):
    tok, model, vocoder = setup
    tts = TTSDecoder(model, TaskTemplates(tok), vocoder=vocoder, km_tag="test-km",
                     sampling=SamplingConfig(temperature=0), max_units_per_token=3)
    units = tts.generate_units(["hello world how are you"])[0]
    chunks = list(tts.stream("hello world how are you", chunk_units=4))
    assert len(chunks) == -(-len(units) // 4)
    full = vocoder.synthesize([units], km_tag="test-km")[0]
    assert sum(c.numel() for c in chunks) == full.numel()
    assert tts.synthesize(["hello world how are you"])[0].numel() == full.numel()


class LongestWins:
    """A stand-in ranker that prefers longer audio; records what it was asked."""

    def __init__(self):
        self.calls = []

    def scores(self, text, wavs):
        self.calls.append((text, [w.numel() for w in wavs]))
        return torch.tensor([float(w.numel()) for w in wavs])


def test_tts_best_of_n_keeps_the_rankers_choice_among_the_samples(setup):
    tok, model, vocoder = setup
    texts = ["a dog ran", "hello world how are you"]
    sampling = SamplingConfig(temperature=1.0, seed=7)
    ranker = LongestWins()
    best = TTSDecoder(model, TaskTemplates(tok), vocoder=vocoder, km_tag="test-km", sampling=sampling,
                      num_candidates=4, reranker=ranker, batch_size=8)
    units, wavs, scores = best.synthesize_with_units(texts)
    # the candidates are the samples of one generation batch holding each text 4 times
    samples = TTSDecoder(model, TaskTemplates(tok), sampling=sampling, batch_size=8).generate_units(
        [t for t in texts for _ in range(4)])
    assert [text for text, _ in ranker.calls] == texts
    for i in range(2):
        cands = samples[4 * i:4 * i + 4]
        lengths = [vocoder.synthesize([c or [0]], km_tag="test-km")[0].numel() if c else 0 for c in cands]
        assert ranker.calls[i][1] == lengths
        assert units[i] == cands[lengths.index(max(lengths))] and wavs[i].numel() == max(lengths) == scores[i]
    assert len(set(map(tuple, samples[:4]))) > 1  # sampling gave the ranker a real choice
    one = TTSDecoder(model, TaskTemplates(tok), vocoder=vocoder, km_tag="test-km", sampling=sampling)
    assert one.synthesize_with_units(texts)[2] == [None, None]
    with pytest.raises(ValueError, match="needs a reranker"):
        TTSDecoder(model, TaskTemplates(tok), num_candidates=2)


class SpellingEncoder:
    """A stand-in CTC encoder that reads one symbol per 40 ms: the waveform's value there (0 is the blank)."""

    class config:
        vocab, targets = ["a", "b", "c"], "chars"

    def frontend(self, wavs, lengths):
        return wavs[:, ::640, None], (lengths + 639) // 640

    def ctc_log_probs(self, frames, lengths):
        symbol = frames[..., 0].round().long().clamp(0, 3)
        return (6.0 * torch.nn.functional.one_hot(symbol, 4)).log_softmax(-1), lengths


def spoken(*symbols):
    """16 kHz audio that SpellingEncoder reads as ``symbols`` (one 40 ms frame each)."""
    return torch.tensor(symbols, dtype=torch.float).repeat_interleave(640)


def test_encoder_ctc_reranker_prefers_the_audio_its_ctc_head_reads_as_the_text():
    ranker = EncoderCTCReranker(SpellingEncoder(), sample_rate=16000)
    # the encoder's training normaliser ("a b c"), symbols it has no output for (the space) left out
    assert ranker.targets("A, b C!").tolist() == [1, 2, 3]
    wavs = [spoken(0, 2, 0, 1, 3, 0, 0), spoken(1, 0, 2, 2, 0, 3, 0), spoken(1, 1, 2, 0), spoken(0, 1), spoken(1)]
    scores = ranker.scores("ABC", wavs)
    # right symbols in the right order > a missing symbol; too few frames to align, or under 0.1 s: -inf
    assert int(scores.argmax()) == 1 and scores[1] > scores[2] > scores[0]
    assert scores[3] == scores[4] == float("-inf")
    with pytest.raises(ValueError, match="no CTC head"):
        EncoderCTCReranker(object(), sample_rate=16000)


def test_best_of_n_ranks_griffin_lim_drafts_and_voices_the_kept_one_in_full(setup):
    tok, model, vocoder = setup
    texts = ["a dog ran", "hello world how are you"]
    sampling = SamplingConfig(temperature=1.0, seed=7)
    full = TTSDecoder(model, TaskTemplates(tok), vocoder=vocoder, km_tag="test-km", sampling=sampling,
                      num_candidates=4, reranker=LongestWins(), batch_size=8)
    ranker = LongestWins()
    draft = TTSDecoder(model, TaskTemplates(tok), vocoder=vocoder, km_tag="test-km", sampling=sampling,
                       num_candidates=4, reranker=SummedReranker([ranker, LongestWins()]), batch_size=8,
                       draft_griffin_lim_iters=2)
    units, wavs, _ = full.synthesize_with_units(texts)
    draft_units, draft_wavs, scores = draft.synthesize_with_units(texts)
    assert draft_units == units and scores == [2.0 * w.numel() for w in wavs]  # the sum of the two rankers
    # the candidates were ranked on 2-iteration audio, the kept one voiced with the vocoder's 32 iterations
    with vocoder.griffin_lim_iterations(2):
        drafts = vocoder.synthesize(units, km_tag="test-km")
    assert vocoder._inverter.griffin_lim.n_iter == 32
    assert all(torch.equal(a, b) for a, b in zip(draft_wavs, wavs))
    assert not torch.equal(drafts[0], wavs[0])
    with pytest.raises(ValueError, match="Griffin-Lim vocoder"):
        TTSDecoder(model, TaskTemplates(tok), vocoder=object(), num_candidates=2, reranker=ranker,
                   draft_griffin_lim_iters=8)


def test_tts_refuses_vocoder_of_another_km_tag(setup):
    tok, model, vocoder = setup
    tts = TTSDecoder(model, TaskTemplates(tok), vocoder=vocoder, km_tag="other-km",
                     sampling=SamplingConfig(temperature=0), max_units_per_token=1)
    with pytest.raises(ValueError, match="other-km"):
        tts.synthesize(["the cat"])


def test_spoken_qa_text_and_speech_answers(setup):
    tok, model, vocoder = setup
    feats = lambda entries: [torch.randn(5, FEAT_DIM) for _ in entries]
    qa = SpokenQADecoder(model, TaskTemplates(tok), features=feats, vocoder=vocoder, km_tag="test-km",
                         max_new_tokens=4, max_units=6)
    entries = [{"id": "q1"}, {"id": "q2"}]
    assert set(qa.answer_text(entries)) == {"q1", "q2"}
    units = qa.answer_units(entries)
    assert all(0 < len(u) <= 6 for u in units.values())
    wavs = qa.answer_speech(entries)
    assert all(w.ndim == 1 and w.numel() > 0 for w in wavs.values())
