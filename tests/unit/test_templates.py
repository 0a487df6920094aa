"""Tests of the task templates: layout of ids, labels, audio spans and error messages."""
import pytest

from most_speech.data.templates import (ASR_INSTRUCTION, IGNORE_INDEX, TTS_INSTRUCTION, Example, ExampleError,
                                        TaskTemplates, TemplateConfig, dedup_units, validate_example)
from most_speech.text.tokenizer import MoSTTokenizer, train_sentencepiece

LINES = ["transcribe the following speech into text", "convert the following text into speech",
         "hello world", "what is the capital of france", "paris is the capital", "user assistant"]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    sp = train_sentencepiece(LINES * 10, tmp_path_factory.mktemp("sp") / "sp", vocab_size=80)
    return MoSTTokenizer.from_sentencepiece(sp, num_units=16)


def _prompt_len(ex):
    return next(t for t, lab in enumerate(ex.labels) if lab != IGNORE_INDEX)


def test_asr_continuous(tok):
    tpl = TaskTemplates(tok)
    lay = tok.layout
    ex = tpl.build("asr", {"id": "u1", "text": "hello world", "num_frames": 30})
    instr = tok.encode(ASR_INSTRUCTION)
    assert ex.input_ids[:1 + len(instr)] == [lay.bos_id] + instr
    p = ex.audio_spans[0].position
    assert p == 1 + len(instr) and ex.input_ids[p:p + 2] == [lay.bow_id, lay.eow_id]
    assert ex.audio_spans[0].key == "u1" and ex.audio_spans[0].num_frames == 30
    answer = tok.encode("hello world")
    assert ex.input_ids[p + 2:] == answer + [lay.eos_id]
    assert _prompt_len(ex) == p + 2
    assert ex.labels[p + 2:] == answer + [lay.eos_id]
    assert ex.total_length == len(ex.input_ids) + 30
    assert tok.decode([i for i in ex.labels if i != IGNORE_INDEX]) == "hello world"


def test_asr_units_input_and_feature_key(tok):
    lay = tok.layout
    tpl = TaskTemplates(tok, TemplateConfig(speech_input="units"))
    ex = tpl.build("asr", {"id": "u2", "text": "hello", "units": [1, 1, 2]})
    assert ex.audio_spans == []
    assert lay.boa_id in ex.input_ids
    start = ex.input_ids.index(lay.boa_id)
    assert ex.input_ids[start:start + 5] == [lay.boa_id, *tok.units_to_ids([1, 1, 2]), lay.eoa_id]
    cont = TaskTemplates(tok).build("asr", {"id": "u3", "text": "hello", "feature_key": "f/3"})
    assert cont.audio_spans[0].key == "f/3" and cont.audio_spans[0].num_frames is None
    est = TaskTemplates(tok, TemplateConfig(frame_rate=25)).build("asr", {"id": "u4", "text": "hello",
                                                                          "duration": 2.13})
    assert est.audio_spans[0].num_frames == 53 and est.total_length == len(est.input_ids) + 53


def test_tts_dedups_target_units_and_labels(tok):
    lay = tok.layout
    ex = TaskTemplates(tok).build("tts", {"id": "t1", "text": "hello world", "units": [4, 4, 4, 9, 9, 4]})
    prompt = [lay.bos_id] + tok.encode(TTS_INSTRUCTION) + tok.encode("hello world")
    target = [lay.boa_id, *tok.units_to_ids([4, 9, 4]), lay.eoa_id, lay.eos_id]
    assert ex.input_ids == prompt + target
    assert ex.labels == [IGNORE_INDEX] * len(prompt) + target
    raw = TaskTemplates(tok, TemplateConfig(dedup_target_units=False)).build(
        "tts", {"id": "t1", "text": "hello", "units": [4, 4]})
    assert raw.input_ids.count(lay.unit_id(4)) == 2


def test_custom_instruction(tok):
    tpl = TaskTemplates(tok, TemplateConfig(tts_instruction="hello"))
    ex = tpl.build("tts", {"id": "t", "text": "world", "units": [1]})
    assert ex.input_ids[1:1 + len(tok.encode("hello"))] == tok.encode("hello")


def test_text_lm(tok):
    ex = TaskTemplates(tok).build("text_lm", {"id": "l1", "text": "paris is the capital"})
    body = tok.encode("paris is the capital")
    assert ex.input_ids == [tok.bos_id] + body + [tok.eos_id]
    assert ex.labels == [IGNORE_INDEX] + body + [tok.eos_id]


def test_speech_lm_is_the_sequence_the_pair_scorer_scores(tok):
    lay = tok.layout
    ex = TaskTemplates(tok).build("speech_lm", {"id": "s1", "units": [3, 3, 7, 7, 3]})
    spoken = [lay.boa_id, *tok.units_to_ids([3, 7, 3]), lay.eoa_id]
    # most-decode slm-pairs scores bos + boa, deduplicated units, eoa: training must see that sequence
    assert ex.input_ids == [lay.bos_id] + spoken + [lay.eos_id]
    assert ex.labels == [IGNORE_INDEX] + spoken + [lay.eos_id]
    assert ex.audio_spans == []
    assert TaskTemplates(tok).build("speech_lm", {"id": "s1", "units": [3]}, prompt_only=True).input_ids == \
        [lay.bos_id]


def test_speech_instruction_outputs(tok):
    lay = tok.layout
    tpl = TaskTemplates(tok)
    entry = {"id": "q1", "answer": "paris", "answer_units": [2, 2, 3], "num_frames": 12}
    text_ex = tpl.build("speech_instruction", entry)
    assert text_ex.input_ids[-1] == lay.eos_id and lay.boa_id not in text_ex.input_ids
    both = tpl.speech_instruction(entry, output="text_units")
    tail = [lay.boa_id, *tok.units_to_ids([2, 3]), lay.eoa_id, lay.eos_id]
    assert both.input_ids[-len(tail):] == tail and both.labels[-len(tail):] == tail
    units_only = tpl.speech_instruction({**entry, "output": "units"})
    p = units_only.audio_spans[0].position
    assert units_only.input_ids[p + 2:] == tail
    with pytest.raises(ExampleError, match="'q1'.*output"):
        tpl.speech_instruction(entry, output="video")


def test_text_instruction_labels_only_assistant(tok):
    tpl = TaskTemplates(tok)
    msgs = [{"role": "system", "content": "hello"}, {"role": "user", "content": "what is the capital"},
            {"role": "assistant", "content": "paris"}, {"role": "user", "content": "hello world"},
            {"role": "assistant", "content": "paris is the capital"}]
    ex = tpl.build("text_instruction", {"id": "d1", "messages": msgs})
    labelled = [lab for lab in ex.labels if lab != IGNORE_INDEX]
    assert labelled == tok.encode("paris") + [tok.eos_id] + tok.encode("paris is the capital") + [tok.eos_id]
    assert ex.input_ids.count(tok.eos_id) == 2
    prompt = tpl.build("text_instruction", {"id": "d1", "messages": msgs}, prompt_only=True)
    assert prompt.input_ids[-len(tok.encode("\n\nAssistant: ")):] == tok.encode("\n\nAssistant: ")
    assert all(lab == IGNORE_INDEX for lab in prompt.labels)
    with pytest.raises(ExampleError, match="'d2'.*assistant"):
        tpl.build("text_instruction", {"id": "d2", "messages": msgs[:2]})


def test_prompt_only_for_decoding(tok):
    tpl = TaskTemplates(tok)
    full = tpl.build("asr", {"id": "u", "text": "hello world"})
    prompt = tpl.build("asr", {"id": "u"}, prompt_only=True)
    assert full.input_ids[:len(prompt)] == prompt.input_ids
    assert prompt.input_ids[-1] == tok.layout.eow_id


@pytest.mark.parametrize("task, entry, match", [
    ("asr", {"id": "e1", "text": "   "}, "'e1'.*'text'"),
    ("tts", {"id": "e2", "text": "hello"}, "'e2'.*units"),
    ("tts", {"id": "e3", "text": "hello", "units": [1, 16]}, "'e3'.*unit 16"),
    ("text_lm", {"id": "e4"}, "'e4'"),
    ("speech_lm", {"id": "e6", "units": []}, "'e6'.*units"),
    ("text_instruction", {"id": "e5", "messages": [{"role": "user", "content": ""}]}, "'e5'.*empty"),
])
def test_errors_name_the_entry(tok, task, entry, match):
    with pytest.raises(ExampleError, match=match):
        TaskTemplates(tok).build(task, entry)


def test_unknown_task_and_bad_config(tok):
    with pytest.raises(ValueError, match="unknown task"):
        TaskTemplates(tok).build("ocr", {"id": "x"})
    with pytest.raises(ValueError, match="speech_input"):
        TemplateConfig(speech_input="video")


def test_validate_example_catches_bad_examples(tok):
    lay = tok.layout
    good = TaskTemplates(tok).build("asr", {"id": "g", "text": "hello"})
    assert validate_example(good, lay) is good
    bad_id = Example("b1", "text_lm", [lay.bos_id, lay.vocab_size], [IGNORE_INDEX, lay.vocab_size])
    with pytest.raises(ExampleError, match="'b1'.*outside"):
        validate_example(bad_id, lay)
    with pytest.raises(ExampleError, match="'b2'.*labels"):
        validate_example(Example("b2", "text_lm", [1, 2], [2]), lay)
    with pytest.raises(ExampleError, match="'b3'.*differs"):
        validate_example(Example("b3", "text_lm", [1, 5], [IGNORE_INDEX, 6]), lay)
    moved = Example(good.id, good.task, good.input_ids, good.labels, [good.audio_spans[0].__class__(0, "g")])
    with pytest.raises(ExampleError, match="bow, eow"):
        validate_example(moved, lay)


def test_dedup_units():
    assert dedup_units([]) == []
    assert dedup_units([1, 1, 2, 2, 2, 1, 3, 3]) == [1, 2, 1, 3]
