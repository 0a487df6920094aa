"""Tests of collation to padded tensors, with validation against the token layout."""
import pytest
import torch

from most_speech.data.batching import TokenBudgetBatchSampler, pack_examples
from most_speech.data.collate import Collator, collate_examples
from most_speech.data.templates import IGNORE_INDEX, AudioSpan, Example, ExampleError
from most_speech.text.token_layout import TokenLayout

LAYOUT = TokenLayout.build(text_vocab_size=50, num_units=10)


def _ex(uid, body, task="text_lm", spans=()):
    ids = [LAYOUT.bos_id] + body + [LAYOUT.eos_id]
    return Example(uid, task, ids, [IGNORE_INDEX] + body + [LAYOUT.eos_id], list(spans))


def test_padding_labels_masks():
    a, b = _ex("a", [5, 6, 7]), _ex("b", [8])
    batch = Collator(LAYOUT)([a, ("text_lm", b)])
    assert batch["input_ids"].shape == (2, 5) and batch["input_ids"].dtype == torch.long
    assert batch["input_ids"][1].tolist() == b.input_ids + [LAYOUT.pad_id] * 2
    assert batch["labels"][1].tolist() == b.labels + [IGNORE_INDEX] * 2
    assert batch["attention_mask"].tolist() == [[1] * 5, [1, 1, 1, 0, 0]]
    assert batch["position_ids"][0].tolist() == [0, 1, 2, 3, 4]
    assert batch["document_ids"][1].tolist() == [0, 0, 0, -1, -1]
    assert batch["ids"] == ["a", "b"] and batch["tasks"] == ["text_lm", "text_lm"]


def test_pad_to_multiple_and_audio_spans():
    span = AudioSpan(1, "u", 7)
    ex = Example("u", "asr", [LAYOUT.bos_id, LAYOUT.bow_id, LAYOUT.eow_id, 5, LAYOUT.eos_id],
                 [IGNORE_INDEX] * 3 + [5, LAYOUT.eos_id], [span])
    batch = collate_examples([ex], LAYOUT.pad_id, pad_to_multiple_of=8, layout=LAYOUT)
    assert batch["input_ids"].shape == (1, 8)
    assert batch["audio_spans"] == [[span]]


def test_packed_rows_keep_positions_and_documents():
    rows = pack_examples([_ex("a", [5, 6]), _ex("b", [7])], max_length=10)
    batch = collate_examples(rows, LAYOUT.pad_id)
    assert batch["position_ids"][0].tolist() == [0, 1, 2, 3, 0, 1, 2]
    assert batch["document_ids"][0].tolist() == [0, 0, 0, 0, 1, 1, 1]
    assert batch["ids"] == [["a", "b"]]


@pytest.mark.parametrize("example, match", [
    (Example("bad-unit", "tts", [LAYOUT.bos_id, LAYOUT.vocab_size + 3], [IGNORE_INDEX, LAYOUT.vocab_size + 3]),
     "'bad-unit'.*outside"),
    (Example("no-target", "asr", [LAYOUT.bos_id, 5], [IGNORE_INDEX, IGNORE_INDEX]), "'no-target'.*no labelled"),
    (Example("empty", "text_lm", [], []), "'empty'.*empty"),
])
def test_validation_names_the_example(example, match):
    with pytest.raises(ExampleError, match=match):
        Collator(LAYOUT)([_ex("fine", [5]), example])


def test_rejects_non_examples_and_empty_batch():
    with pytest.raises(ExampleError, match="Example"):
        collate_examples([{"input_ids": [1]}], 0)
    with pytest.raises(ValueError, match="empty batch"):
        collate_examples([], 0)


def test_dataloader_with_budget_sampler():
    examples = [_ex(f"e{i}", list(range(5, 5 + i % 9))) for i in range(40)]
    sampler = TokenBudgetBatchSampler([len(e) for e in examples], max_tokens=40, seed=0)
    loader = torch.utils.data.DataLoader(examples, batch_sampler=sampler, collate_fn=Collator(LAYOUT))
    seen = []
    for batch in loader:
        assert batch["input_ids"].numel() <= 40
        seen += batch["ids"]
    assert sorted(seen) == sorted(e.id for e in examples)
