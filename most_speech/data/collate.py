"""Collation: a list of :class:`~most_speech.data.templates.Example` (or packed rows) -> padded tensors.

The batch dict holds

``input_ids``       ``[B, T]`` long, right-padded with ``pad_id`` (MoST: EOS)
``labels``          ``[B, T]`` long, ``-100`` on padding
``attention_mask``  ``[B, T]`` long, 1 on real positions
``position_ids``    ``[B, T]`` long, restarting per document in packed rows, 0 on padding
``document_ids``    ``[B, T]`` long, document number inside the row, -1 on padding
``audio_spans``     list (per row) of :class:`AudioSpan` lists (positions index ``input_ids``)
``unit_spans``      list (per row) of :class:`UnitSpan` lists (TTS responses' unit tokens and their text)
``ids`` / ``tasks`` list of example ids (member id lists for packed rows) / task names
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch

from most_speech.data.templates import IGNORE_INDEX, Example, ExampleError, validate_example
from most_speech.text.token_layout import TokenLayout


def _unwrap(item) -> Example:
    """Accept an Example or a ``(task, Example)`` pair as yielded by the task mixture."""
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], Example):
        return item[1]
    if not isinstance(item, Example):
        raise ExampleError(f"collate expects Example objects, got {type(item).__name__}: {str(item)[:80]}")
    return item


def collate_examples(examples: Sequence, pad_id: int, pad_to_multiple_of: Optional[int] = None,
                     layout: Optional[TokenLayout] = None) -> Dict[str, object]:
    """Pad examples into one batch (see the module docstring for the keys).

    Parameters
    ----------
    examples : sequence of Example or (task, Example)
    pad_id : int
        Padding id of ``input_ids`` (labels always pad with -100).
    pad_to_multiple_of : int, optional
        Round the padded length up to a multiple (tensor-core friendly shapes).
    layout : TokenLayout, optional
        When given, every example is validated first (:func:`validate_example`), so an out-of-range unit id
        or an unlabelled example fails here with its id instead of deep inside the model.

    Examples
    --------
    >>> b = collate_examples([Example("a", "text_lm", [1, 5, 2], [-100, 5, 2]),
    ...                       Example("b", "text_lm", [1, 2], [-100, 2])], pad_id=2)
    >>> b["input_ids"].tolist(), b["labels"].tolist(), b["attention_mask"].tolist()
    ([[1, 5, 2], [1, 2, 2]], [[-100, 5, 2], [-100, 2, -100]], [[1, 1, 1], [1, 1, 0]])
    """
    items = [_unwrap(x) for x in examples]
    if not items:
        raise ValueError("collate_examples: empty batch")
    if layout is not None:
        for ex in items:
            validate_example(ex, layout)
    for ex in items:
        if len(ex.input_ids) != len(ex.labels):
            raise ExampleError(f"example {ex.id!r}: {len(ex.input_ids)} input_ids but {len(ex.labels)} labels")
    width = max(len(ex.input_ids) for ex in items)
    if pad_to_multiple_of:
        width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    batch = len(items)
    input_ids = torch.full((batch, width), pad_id, dtype=torch.long)
    labels = torch.full((batch, width), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((batch, width), dtype=torch.long)
    positions = torch.zeros((batch, width), dtype=torch.long)
    documents = torch.full((batch, width), -1, dtype=torch.long)
    for row, ex in enumerate(items):
        n = len(ex.input_ids)
        input_ids[row, :n] = torch.tensor(ex.input_ids, dtype=torch.long)
        labels[row, :n] = torch.tensor(ex.labels, dtype=torch.long)
        attention[row, :n] = 1
        pos = getattr(ex, "position_ids", None) or range(n)
        positions[row, :n] = torch.tensor(list(pos), dtype=torch.long)
        docs = getattr(ex, "document_ids", None) or [0] * n
        documents[row, :n] = torch.tensor(docs, dtype=torch.long)
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention, "position_ids": positions,
            "document_ids": documents, "audio_spans": [list(ex.audio_spans) for ex in items],
            "unit_spans": [list(ex.unit_spans) for ex in items],
            "ids": [getattr(ex, "member_ids", None) or ex.id for ex in items],
            "tasks": [ex.task for ex in items]}


class Collator:
    """A ``collate_fn`` for DataLoaders: validates against the layout, then :func:`collate_examples`.

    Examples
    --------
    >>> from most_speech.text.token_layout import deepseek_layout
    >>> collate = Collator(deepseek_layout(), pad_to_multiple_of=4)
    >>> collate([Example("a", "text_lm", [100000, 5, 100001], [-100, 5, 100001])])["input_ids"].shape
    torch.Size([1, 4])
    """

    def __init__(self, layout: TokenLayout, pad_to_multiple_of: Optional[int] = None, validate: bool = True):
        self.layout = layout
        self.pad_to_multiple_of = pad_to_multiple_of
        self.validate = validate

    def __call__(self, examples: List) -> Dict[str, object]:
        return collate_examples(examples, self.layout.pad_id, self.pad_to_multiple_of,
                                self.layout if self.validate else None)
