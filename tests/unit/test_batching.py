"""Tests of token-budget batching and sequence packing."""
import random

import pytest

from most_speech.data.batching import PackedRow, TokenBudgetBatchSampler, pack_examples
from most_speech.data.templates import IGNORE_INDEX, AudioSpan, Example


def _lengths(n=300, seed=0):
    rnd = random.Random(seed)
    return [rnd.randint(5, 200) for _ in range(n)]


@pytest.mark.parametrize("shuffle", [True, False])
def test_budget_including_padding_and_full_coverage(shuffle):
    lengths = _lengths()
    sampler = TokenBudgetBatchSampler(lengths, max_tokens=800, num_buckets=6, shuffle=shuffle, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) * max(lengths[i] for i in b) <= 800
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    assert padded < 1.35 * sum(lengths), "bucketing should keep padding low"


def test_deterministic_and_reshuffled_per_epoch():
    lengths = _lengths()
    a = TokenBudgetBatchSampler(lengths, 600, seed=3)
    b = TokenBudgetBatchSampler(lengths, 600, seed=3)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    a.set_epoch(0)
    assert list(a) == first
    assert list(TokenBudgetBatchSampler(lengths, 600, seed=4)) != first


def test_max_batch_size_and_explicit_buckets():
    lengths = [4] * 50
    batches = list(TokenBudgetBatchSampler(lengths, 1000, max_batch_size=8, shuffle=False))
    assert max(len(b) for b in batches) == 8 and sum(map(len, batches)) == 50
    two = list(TokenBudgetBatchSampler([3, 100, 4, 90], 1000, bucket_boundaries=[10, 200], shuffle=False))
    assert sorted(map(sorted, two)) == [[0, 2], [1, 3]]


def test_oversize_examples_error_or_drop():
    with pytest.raises(ValueError, match=r"'long-one'.*max_tokens=50"):
        TokenBudgetBatchSampler([10, 60], 50, ids=["ok", "long-one"])
    batches = list(TokenBudgetBatchSampler([10, 60, 20], 50, drop_oversize=True))
    assert sorted(i for b in batches for i in b) == [0, 2]
    with pytest.raises(ValueError, match="positive"):
        TokenBudgetBatchSampler([3, 0], 50)


def _ex(uid, n, task="text_lm", span_at=None, frames=None):
    ids = [1] + [10 + k for k in range(n - 1)]
    labels = [IGNORE_INDEX] + ids[1:]
    spans = [AudioSpan(span_at, uid, frames)] if span_at is not None else []
    return Example(uid, task, ids, labels, spans)


def test_pack_examples_capacity_boundaries_and_spans():
    examples = [_ex("a", 6), _ex("b", 3, task="asr", span_at=1, frames=4), _ex("c", 5), _ex("d", 2)]
    rows = pack_examples(examples, max_length=12)
    assert all(isinstance(r, PackedRow) for r in rows)
    assert sorted(m for r in rows for m in r.member_ids) == ["a", "b", "c", "d"]
    by_id = {ex.id: ex for ex in examples}
    for row in rows:
        assert sum(by_id[m].total_length for m in row.member_ids) <= 12
        assert len(row.input_ids) == len(row.labels) == len(row.position_ids) == len(row.document_ids)
        starts = [t for t, p in enumerate(row.position_ids) if p == 0]
        assert len(starts) == len(row.member_ids)
        for t in starts:
            assert row.labels[t] == IGNORE_INDEX, "a label crosses a document boundary"
        for d, (t, m) in enumerate(zip(starts, row.member_ids)):
            assert row.input_ids[t:t + len(by_id[m])] == by_id[m].input_ids
            assert row.document_ids[t] == d
        for span in row.audio_spans:
            doc = row.document_ids[span.position]
            member = by_id[row.member_ids[doc]]
            assert span.position - starts[doc] == member.audio_spans[0].position
    assert pack_examples(examples, 12)[0].member_ids == rows[0].member_ids


def test_pack_too_long_names_example():
    with pytest.raises(ValueError, match="'big'"):
        pack_examples([_ex("big", 20)], max_length=10)
