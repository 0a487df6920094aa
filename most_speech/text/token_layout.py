"""Token layout: which token ids are text, unit tokens, audio markers, and which modality each id belongs to.

The layout is data, not code (DESIGN §2): it is written to ``token_layout.json`` next to the tokenizer, and
the model derives its per-token modality marks from it. The DeepSeek-V2 layout is :func:`deepseek_layout`;
a small SentencePiece recipe builds its own with :func:`TokenLayout.build`.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

#: Modality marks carried by every token. New modalities get the next integer.
MODALITY_IDS: Dict[str, int] = {"text": 0, "audio": 1, "image": 2}

LAYOUT_FILENAME = "token_layout.json"


def modality_id(name_or_id) -> int:
    """Map a modality name ("text", "audio", ...) or an integer mark to the integer mark."""
    if isinstance(name_or_id, int):
        return name_or_id
    if isinstance(name_or_id, str) and name_or_id.isdigit():
        return int(name_or_id)
    if name_or_id not in MODALITY_IDS:
        raise ValueError(f"unknown modality {name_or_id!r}; known: {sorted(MODALITY_IDS)}")
    return MODALITY_IDS[name_or_id]


@dataclass
class TokenLayout:
    """Where each kind of token lives in the vocabulary.

    Parameters
    ----------
    vocab_size : int
        Rows of the embedding matrix (all ids are in ``[0, vocab_size)``).
    text_vocab_size : int
        Ids ``[0, text_vocab_size)`` are the text tokenizer's own pieces.
    bos_id, eos_id, pad_id : int
        Begin / end of sentence and padding (MoST pads with EOS).
    unit_offset, num_units : int
        Unit token ``[Hu{n}]`` has id ``unit_offset + n`` for ``n`` in ``0..num_units-1``.
    boa_id, eoa_id : int
        Begin / end of audio, around a span of unit tokens.
    bow_id, eow_id : int
        Begin / end of audio wave, around a span of continuous encoder frames.
    modality_ranges : list of dict
        ``{"start", "end", "modality"}`` half-open ranges; every id in ``[0, vocab_size)`` must be covered
        exactly once. Built by :meth:`build` when not given.
    special_tokens : dict
        Extra named ids (task markers and so on), name -> id.

    Examples
    --------
    >>> layout = deepseek_layout()
    >>> layout.unit_id(0), layout.boa_id, layout.modality_of(100002)
    (100002, 100502, 1)
    """

    vocab_size: int
    text_vocab_size: int
    bos_id: int
    eos_id: int
    pad_id: int
    unit_offset: int
    num_units: int
    boa_id: int
    eoa_id: int
    bow_id: int
    eow_id: int
    modality_ranges: List[dict] = field(default_factory=list)
    special_tokens: Dict[str, int] = field(default_factory=dict)

    def __post_init__(self):
        if not self.modality_ranges:
            self.modality_ranges = self._default_ranges()
        self.validate()

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(cls, text_vocab_size: int, num_units: int, bos_id: Optional[int] = None,
              eos_id: Optional[int] = None, vocab_size: Optional[int] = None,
              pad_to_multiple_of: int = 1, special_tokens: Sequence[str] = ()) -> "TokenLayout":
        """Lay out ``[text | bos eos | units | boa eoa bow eow | specials | free]``.

        When ``bos_id``/``eos_id`` are given they are taken from the text tokenizer (ids below
        ``text_vocab_size``) and no rows are added for them.
        """
        nxt = text_vocab_size
        if bos_id is None:
            bos_id, nxt = nxt, nxt + 1
        if eos_id is None:
            eos_id, nxt = nxt, nxt + 1
        unit_offset = nxt
        nxt += num_units
        boa, eoa, bow, eow = nxt, nxt + 1, nxt + 2, nxt + 3
        nxt += 4
        specials = {}
        for name in special_tokens:
            specials[name] = nxt
            nxt += 1
        needed = nxt
        if vocab_size is None:
            vocab_size = -(-needed // pad_to_multiple_of) * pad_to_multiple_of
        if vocab_size < needed:
            raise ValueError(f"vocab_size={vocab_size} is smaller than the {needed} ids the layout needs")
        return cls(vocab_size=vocab_size, text_vocab_size=text_vocab_size, bos_id=bos_id, eos_id=eos_id,
                   pad_id=eos_id, unit_offset=unit_offset, num_units=num_units, boa_id=boa, eoa_id=eoa,
                   bow_id=bow, eow_id=eow, special_tokens=specials)

    def _default_ranges(self) -> List[dict]:
        """Units and the four audio markers are audio; everything else (text, bos/eos, free rows) is text."""
        a0, a1 = self.unit_offset, self.unit_offset + self.num_units
        markers = sorted([self.boa_id, self.eoa_id, self.bow_id, self.eow_id])
        if markers != list(range(a1, a1 + 4)):
            raise ValueError("default modality ranges need the four audio markers right after the unit tokens; "
                             "pass modality_ranges explicitly for another arrangement")
        ranges = [{"start": 0, "end": a0, "modality": "text"}, {"start": a0, "end": a1 + 4, "modality": "audio"}]
        if a1 + 4 < self.vocab_size:
            ranges.append({"start": a1 + 4, "end": self.vocab_size, "modality": "text"})
        return ranges

    # ------------------------------------------------------------------ queries
    def unit_id(self, unit: int) -> int:
        """Token id of speech unit ``unit`` (``[Hu{unit}]``)."""
        if not 0 <= unit < self.num_units:
            raise ValueError(f"unit {unit} outside 0..{self.num_units - 1}")
        return self.unit_offset + unit

    def is_unit(self, token_id: int) -> bool:
        return self.unit_offset <= token_id < self.unit_offset + self.num_units

    def modality_of(self, token_id: int) -> int:
        """Integer modality mark of one token id."""
        for r in self.modality_ranges:
            if r["start"] <= token_id < r["end"]:
                return modality_id(r["modality"])
        raise ValueError(f"token id {token_id} is outside the token layout (vocab_size={self.vocab_size})")

    def modality_table(self) -> List[int]:
        """Modality mark of every id ``0..vocab_size-1`` (a list the model turns into a lookup tensor)."""
        table = [0] * self.vocab_size
        for r in self.modality_ranges:
            mark = modality_id(r["modality"])
            for i in range(r["start"], r["end"]):
                table[i] = mark
        return table

    def modalities(self) -> List[str]:
        """Names of the modalities present in the layout, in mark order."""
        marks = sorted({modality_id(r["modality"]) for r in self.modality_ranges})
        names = {v: k for k, v in MODALITY_IDS.items()}
        return [names.get(m, str(m)) for m in marks]

    # ------------------------------------------------------------------ checks and I/O
    def validate(self) -> None:
        """Raise ``ValueError`` naming the field when ids overlap, fall outside the vocabulary, or ranges leave gaps."""
        named = {"bos_id": self.bos_id, "eos_id": self.eos_id, "pad_id": self.pad_id, "boa_id": self.boa_id,
                 "eoa_id": self.eoa_id, "bow_id": self.bow_id, "eow_id": self.eow_id,
                 **{f"special_tokens[{k}]": v for k, v in self.special_tokens.items()}}
        for name, value in named.items():
            if not 0 <= value < self.vocab_size:
                raise ValueError(f"token layout: {name}={value} is outside [0, vocab_size={self.vocab_size})")
        if self.unit_offset < 0 or self.unit_offset + self.num_units > self.vocab_size:
            raise ValueError(f"token layout: unit tokens [{self.unit_offset}, {self.unit_offset + self.num_units}) "
                             f"do not fit in vocab_size={self.vocab_size}")
        for name, value in named.items():
            if name != "pad_id" and self.is_unit(value):
                raise ValueError(f"token layout: {name}={value} collides with the unit tokens")
        markers = [self.boa_id, self.eoa_id, self.bow_id, self.eow_id, *self.special_tokens.values()]
        if len(set(markers)) != len(markers):
            raise ValueError(f"token layout: audio markers and special tokens must be distinct, got {markers}")
        pos = 0
        for r in sorted(self.modality_ranges, key=lambda r: r["start"]):
            modality_id(r["modality"])
            if r["start"] != pos or r["end"] <= r["start"]:
                raise ValueError(f"token layout: modality_ranges must tile [0, {self.vocab_size}) without gaps or "
                                 f"overlaps; problem at range {r}")
            pos = r["end"]
        if pos != self.vocab_size:
            raise ValueError(f"token layout: modality_ranges end at {pos}, vocab_size is {self.vocab_size}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TokenLayout":
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"token layout: unknown fields {sorted(unknown)}")
        return cls(**d)

    def save(self, directory_or_file) -> Path:
        """Write ``token_layout.json`` (into a directory, or to the given ``.json`` path)."""
        path = Path(directory_or_file)
        if path.suffix != ".json":
            path = path / LAYOUT_FILENAME
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, directory_or_file) -> "TokenLayout":
        path = Path(directory_or_file)
        if path.is_dir():
            path = path / LAYOUT_FILENAME
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError, TypeError, ValueError) as err:
            raise ValueError(f"cannot read token layout {path}: {err}") from err


def deepseek_layout(num_units: int = 500, vocab_size: int = 102400) -> TokenLayout:
    """The pinned layout of the DeepSeek-based MoST model (DESIGN §2).

    0-99999 BPE; 100000/100001 BOS/EOS (EOS = pad); 100002+n units; 100502/100503 begin/end audio;
    100504/100505 begin/end audio wave; the rest free (text).
    """
    return TokenLayout(vocab_size=vocab_size, text_vocab_size=100000, bos_id=100000, eos_id=100001,
                       pad_id=100001, unit_offset=100002, num_units=num_units, boa_id=100002 + num_units,
                       eoa_id=100003 + num_units, bow_id=100004 + num_units, eow_id=100005 + num_units)
