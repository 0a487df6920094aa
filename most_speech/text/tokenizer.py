"""MoST tokenizer: a text tokenizer (transformers or SentencePiece) plus unit tokens, audio markers and task
specials placed by a :class:`~most_speech.text.token_layout.TokenLayout`.

The text backend only ever produces ids below ``layout.text_vocab_size``; everything above (units ``[Hu{n}]``,
``<|boa|>``/``<|eoa|>`` around unit spans, ``<|bow|>``/``<|eow|>`` around continuous audio, task specials
``<|name|>``) is handled here from the layout, so the same code serves DeepSeek's vocabulary
(:func:`~most_speech.text.token_layout.deepseek_layout`) and a small SentencePiece model a recipe trains.

Saved layout (``save(dir)``)::

    dir/most_tokenizer.json   backend name (+ SentencePiece file name)
    dir/token_layout.json     the layout
    dir/tokenizer.model       (SentencePiece)  or  the transformers tokenizer files (save_pretrained)
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

from most_speech.data.fileio import PathLike, atomic_write_text
from most_speech.text.token_layout import LAYOUT_FILENAME, TokenLayout

logger = logging.getLogger(__name__)

CONFIG_FILENAME = "most_tokenizer.json"
SP_FILENAME = "tokenizer.model"
MARKER_NAMES = ("boa", "eoa", "bow", "eow")
_SPECIAL_RE = re.compile(r"\[Hu(\d+)\]|<\|([A-Za-z0-9_]+)\|>")


def train_sentencepiece(texts: Iterable[str], out_prefix: PathLike, vocab_size: int,
                        model_type: str = "unigram", character_coverage: float = 1.0,
                        **options) -> Path:
    """Train a SentencePiece model on ``texts``; write ``<out_prefix>.model`` and ``.vocab`` atomically.

    The model reserves ``<unk>`` = 0, ``<s>`` = 1, ``</s>`` = 2 (no pad piece; MoST pads with EOS).

    Parameters
    ----------
    texts : iterable of str
        Training sentences.
    out_prefix : path
        Output prefix.
    vocab_size : int
        Number of pieces (the text part of the vocabulary); an upper bound unless
        ``hard_vocab_limit=True`` is passed.
    model_type : {"unigram", "bpe", "char", "word"}
    character_coverage : float
    **options
        Passed to ``sentencepiece.SentencePieceTrainer.train``.

    Returns
    -------
    pathlib.Path
        The ``.model`` file.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> lines = ["the cat sat on the mat", "a dog ran in the park", "speech and text"] * 20
    >>> train_sentencepiece(lines, d / "sp", vocab_size=40).name
    'sp.model'
    """
    import sentencepiece as spm

    out_prefix = Path(out_prefix)
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    # A small corpus may not support the requested size; take what it supports instead of failing.
    options.setdefault("hard_vocab_limit", False)
    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise ValueError("train_sentencepiece: no non-empty training text")
    tmpdir = tempfile.mkdtemp(prefix=".sp_", dir=out_prefix.parent)
    try:
        tmp_prefix = os.path.join(tmpdir, out_prefix.name)
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts), model_prefix=tmp_prefix, vocab_size=vocab_size,
            model_type=model_type, character_coverage=character_coverage, unk_id=0, bos_id=1, eos_id=2,
            pad_id=-1, minloglevel=2, **options)
        for ext in (".vocab", ".model"):
            os.replace(tmp_prefix + ext, str(out_prefix) + ext)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return Path(str(out_prefix) + ".model")


class _SentencePieceBackend:
    name = "sentencepiece"

    def __init__(self, model_file: PathLike):
        import sentencepiece as spm

        self.model_file = Path(model_file)
        self.sp = spm.SentencePieceProcessor(model_file=str(model_file))

    def __len__(self):
        return self.sp.get_piece_size()

    def encode(self, text: str) -> List[int]:
        return self.sp.encode(text)

    def decode(self, ids: List[int]) -> str:
        return self.sp.decode(ids)

    def save(self, directory: Path) -> dict:
        dst = directory / SP_FILENAME
        if self.model_file.resolve() != dst.resolve():
            tmp = dst.with_suffix(".model.tmp")
            shutil.copyfile(self.model_file, tmp)
            os.replace(tmp, dst)
        return {"backend": self.name, "model_file": SP_FILENAME}

    def bos_eos(self):
        bos, eos = self.sp.bos_id(), self.sp.eos_id()
        return (bos if bos >= 0 else None), (eos if eos >= 0 else None)


class _TransformersBackend:
    name = "transformers"

    def __init__(self, tokenizer):
        self.tok = tokenizer

    def __len__(self):
        return len(self.tok)

    def encode(self, text: str) -> List[int]:
        return list(self.tok.encode(text, add_special_tokens=False))

    def decode(self, ids: List[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def save(self, directory: Path) -> dict:
        self.tok.save_pretrained(str(directory))
        return {"backend": self.name}

    def bos_eos(self):
        return self.tok.bos_token_id, self.tok.eos_token_id


class MoSTTokenizer:
    """Text tokenizer + unit tokens + audio markers + task specials, laid out by a :class:`TokenLayout`.

    Build with :meth:`from_sentencepiece`, :meth:`from_transformers` or :meth:`from_pretrained`.

    Parameters
    ----------
    backend : object
        Internal text backend (use the class methods).
    layout : TokenLayout
        Where units, markers and specials live.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> sp = train_sentencepiece(["the cat sat on the mat", "a dog ran"] * 20, d / "sp", vocab_size=30)
    >>> tok = MoSTTokenizer.from_sentencepiece(sp, num_units=10)
    >>> ids = tok.encode("the cat<|boa|>[Hu3][Hu3]<|eoa|>")
    >>> tok.ids_to_units(ids), tok.decode(ids)
    ([3, 3], 'the cat')
    >>> tok.save(d / "tok") and MoSTTokenizer.from_pretrained(d / "tok").layout == tok.layout
    True
    """

    def __init__(self, backend, layout: TokenLayout):
        if len(backend) > layout.text_vocab_size and layout.text_vocab_size < layout.unit_offset:
            logger.debug("text backend has %d ids, layout keeps %d as text", len(backend), layout.text_vocab_size)
        self.backend = backend
        self.layout = layout
        self._name_to_id: Dict[str, int] = {"boa": layout.boa_id, "eoa": layout.eoa_id, "bow": layout.bow_id,
                                            "eow": layout.eow_id, "bos": layout.bos_id, "eos": layout.eos_id,
                                            **layout.special_tokens}
        self._id_to_name = {v: k for k, v in self._name_to_id.items() if k not in ("bos", "eos")}
        self._id_to_name.setdefault(layout.bos_id, "bos")
        self._id_to_name.setdefault(layout.eos_id, "eos")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_sentencepiece(cls, model_file: PathLike, num_units: int = 500,
                           special_tokens: Sequence[str] = (), layout: Optional[TokenLayout] = None,
                           pad_to_multiple_of: int = 1) -> "MoSTTokenizer":
        """Wrap a SentencePiece model; build its layout (``TokenLayout.build``) unless one is given."""
        backend = _SentencePieceBackend(model_file)
        if layout is None:
            bos, eos = backend.bos_eos()
            layout = TokenLayout.build(len(backend), num_units, bos_id=bos, eos_id=eos,
                                       pad_to_multiple_of=pad_to_multiple_of, special_tokens=special_tokens)
        return cls(backend, layout)

    @classmethod
    def from_transformers(cls, tokenizer, layout: Optional[TokenLayout] = None, num_units: int = 500,
                          special_tokens: Sequence[str] = ()) -> "MoSTTokenizer":
        """Wrap a transformers tokenizer (or a directory loadable by ``AutoTokenizer``).

        With ``layout=None`` a layout is built after the tokenizer's own vocabulary, reusing its BOS/EOS
        when it has them; for DeepSeek pass :func:`~most_speech.text.token_layout.deepseek_layout`.
        """
        if isinstance(tokenizer, (str, os.PathLike)):
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(tokenizer), local_files_only=True)
        backend = _TransformersBackend(tokenizer)
        if layout is None:
            bos, eos = backend.bos_eos()
            layout = TokenLayout.build(len(backend), num_units, bos_id=bos, eos_id=eos,
                                       special_tokens=special_tokens)
        return cls(backend, layout)

    @classmethod
    def from_pretrained(cls, directory: PathLike) -> "MoSTTokenizer":
        """Load what :meth:`save` wrote."""
        directory = Path(directory)
        cfg_path = directory / CONFIG_FILENAME
        try:
            cfg = json.loads(cfg_path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"cannot read tokenizer config {cfg_path}: {err}") from err
        layout = TokenLayout.load(directory / LAYOUT_FILENAME)
        if cfg.get("backend") == "sentencepiece":
            return cls(_SentencePieceBackend(directory / cfg.get("model_file", SP_FILENAME)), layout)
        if cfg.get("backend") == "transformers":
            return cls.from_transformers(directory, layout=layout)
        raise ValueError(f"{cfg_path}: unknown tokenizer backend {cfg.get('backend')!r}")

    def save(self, directory: PathLike) -> Path:
        """Write the text tokenizer, ``token_layout.json`` and ``most_tokenizer.json`` into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        cfg = self.backend.save(directory)
        self.layout.save(directory)
        atomic_write_text(directory / CONFIG_FILENAME, json.dumps(cfg, indent=2))
        return directory

    # ------------------------------------------------------------------ properties
    @property
    def vocab_size(self) -> int:
        return self.layout.vocab_size

    @property
    def bos_id(self) -> int:
        return self.layout.bos_id

    @property
    def eos_id(self) -> int:
        return self.layout.eos_id

    @property
    def pad_id(self) -> int:
        return self.layout.pad_id

    def special_id(self, name: str) -> int:
        """Id of a marker (``boa``, ``eoa``, ``bow``, ``eow``, ``bos``, ``eos``) or a layout special token."""
        try:
            return self._name_to_id[name]
        except KeyError:
            raise KeyError(f"unknown special token {name!r}; known: {sorted(self._name_to_id)}") from None

    def token_string(self, token_id: int) -> Optional[str]:
        """``[Hu{n}]`` / ``<|name|>`` for a non-text id, ``None`` for a text id."""
        if self.layout.is_unit(token_id):
            return f"[Hu{token_id - self.layout.unit_offset}]"
        name = self._id_to_name.get(token_id)
        return None if name is None else f"<|{name}|>"

    # ------------------------------------------------------------------ text
    def _encode_text(self, text: str) -> List[int]:
        ids = self.backend.encode(text)
        bad = [i for i in ids if not 0 <= i < self.layout.text_vocab_size]
        if bad:
            raise ValueError(f"text backend produced ids {bad[:5]} outside the text range "
                             f"[0, {self.layout.text_vocab_size}) for {text[:60]!r}")
        return ids

    def encode(self, text: str, add_bos: bool = False, add_eos: bool = False,
               parse_special: bool = True) -> List[int]:
        """Token ids of ``text``.

        With ``parse_special`` the strings ``[Hu{n}]`` and ``<|name|>`` (``boa``, ``eoa``, ``bow``, ``eow``,
        ``bos``, ``eos`` or a layout special) become their ids; other text goes through the text backend.
        """
        ids = [self.bos_id] if add_bos else []
        if not parse_special:
            ids += self._encode_text(text)
        else:
            pos = 0
            for m in _SPECIAL_RE.finditer(text):
                if m.group(2) is not None and m.group(2) not in self._name_to_id:
                    continue
                if m.start() > pos:
                    ids += self._encode_text(text[pos:m.start()])
                ids.append(self.layout.unit_id(int(m.group(1))) if m.group(1) is not None
                           else self._name_to_id[m.group(2)])
                pos = m.end()
            if pos < len(text):
                ids += self._encode_text(text[pos:])
        if add_eos:
            ids.append(self.eos_id)
        return ids

    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
        """Text of ``ids``: text runs through the backend; unit / marker / special ids are dropped
        (``skip_special=True``) or written as ``[Hu{n}]`` / ``<|name|>``."""
        out: List[str] = []
        run: List[int] = []
        for i in (int(x) for x in ids):
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"token id {i} outside the vocabulary [0, {self.vocab_size})")
            if i < self.layout.text_vocab_size and i not in self._id_to_name:
                run.append(i)
                continue
            if run:
                out.append(self.backend.decode(run))
                run = []
            if not skip_special:
                out.append(self.token_string(i) or "")
        if run:
            out.append(self.backend.decode(run))
        return "".join(out)

    # ------------------------------------------------------------------ units
    def units_to_ids(self, units: Sequence[int], add_markers: bool = False) -> List[int]:
        """Unit integers -> unit token ids (wrapped in ``boa`` ... ``eoa`` with ``add_markers``).

        Raises ``ValueError`` for a unit outside ``0..num_units-1``.
        """
        ids = [self.layout.unit_id(int(u)) for u in units]
        return [self.layout.boa_id, *ids, self.layout.eoa_id] if add_markers else ids

    def ids_to_units(self, ids: Sequence[int]) -> List[int]:
        """Units of a (generated) sequence.

        When the sequence holds a ``boa``, the units after the first ``boa`` up to the next ``eoa`` / ``eos``
        (or the end) are returned; otherwise all unit ids up to the first ``eoa`` / ``eos`` (a generation whose
        prompt ended in ``boa``). Non-unit ids inside the span are ignored.
        """
        ids = [int(x) for x in ids]
        if self.layout.boa_id in ids:
            ids = ids[ids.index(self.layout.boa_id) + 1:]
        units = []
        for i in ids:
            if i in (self.layout.eoa_id, self.layout.eos_id):
                break
            if self.layout.is_unit(i):
                units.append(i - self.layout.unit_offset)
        return units

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return (f"MoSTTokenizer(backend={self.backend.name}, text_vocab={self.layout.text_vocab_size}, "
                f"units={self.layout.num_units}, vocab_size={self.vocab_size})")
