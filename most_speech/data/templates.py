"""Task templates: turn manifest entries into training examples (``input_ids``, ``labels``, audio spans).

Every example is ``bos + instruction + input + response + eos``. Labels are ``-100`` (:data:`IGNORE_INDEX`) on
the prompt (bos, instruction, input) and on padding; the response and its final real EOS id are labelled.
The causal shift is the model's job: ``labels[t]`` is the target for the token at position ``t``.

Tasks (:data:`TASKS`)
---------------------
``asr``                  speech -> text (instruction "Transcribe the following speech into text.")
``tts``                  text -> units (instruction "Convert the following text into speech."); the target
                         units are run-length deduplicated by default
``text_lm``              plain text, all labelled
``speech_lm``            speech units alone (``boa, units, eoa``), all labelled: a speech continuation LM, as
                         GSLM / TWIST / SpiritLM train; the one task that teaches ``p(units)`` without text,
                         which spoken-LM pair tests (sWUGGY-style) measure
``speech_instruction``   speech question -> text answer (``output="text"``), unit answer (``"units"``) or
                         both (``"text_units"``)
``text_instruction``     dialogue ``messages`` (system / user / assistant); only assistant turns (each ending
                         in EOS) are labelled

Speech input contract
---------------------
Discrete (``speech_input="units"``): ``boa, [Hu..]..., eoa`` in the ids, from the entry's ``units``.

Continuous (``speech_input="continuous"``, the MoST default): the ids hold the begin-audio-wave marker
immediately followed by the end marker, ``... bow, eow ...``, and the example records an
:class:`AudioSpan` ``(position, key, num_frames)`` where ``position`` is the index of ``bow``. The model
encodes the audio named by ``key`` (the utterance id, or the entry's ``feature_key``) and inserts its
``num_frames`` projected frames *between* ``input_ids[position]`` (bow) and ``input_ids[position + 1]`` (eow),
giving the inserted frames label ``-100``. ``num_frames`` is the entry's ``num_frames`` field, else an estimate
``floor(duration * frame_rate)`` when :attr:`TemplateConfig.frame_rate` is set (for batching budgets; the model
uses the encoder's real frame count), else ``None`` (batching then counts only the ids).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from most_speech.text.token_layout import TokenLayout

IGNORE_INDEX = -100
ASR_INSTRUCTION = "Transcribe the following speech into text."
TTS_INSTRUCTION = "Convert the following text into speech."


class ExampleError(ValueError):
    """An entry or example is unusable; the message names the utterance id."""


@dataclass
class AudioSpan:
    """Where continuous audio frames go: between ``input_ids[position]`` (bow) and the following eow.

    ``transcript`` holds the text token ids of what is said when the example knows it (ASR): the target of
    the model's optional CTC loss on the spliced frames (``MoSTConfig.audio_ctc_weight``).

    Examples
    --------
    >>> AudioSpan(position=5, key="ls-1-2-3", num_frames=120)
    AudioSpan(position=5, key='ls-1-2-3', num_frames=120, transcript=None)
    """

    position: int
    key: str
    num_frames: Optional[int] = None
    transcript: Optional[Tuple[int, ...]] = None


@dataclass
class UnitSpan:
    """A TTS response's unit tokens, ``input_ids[position:position + length]``, and the text they speak.

    ``transcript`` (text token ids) is the target of the model's optional CTC loss on the hidden states of
    those unit tokens (``MoSTConfig.unit_ctc_weight``): it makes each generated unit's state say which part
    of the text it voices.

    Examples
    --------
    >>> UnitSpan(position=9, length=40, transcript=(17, 23))
    UnitSpan(position=9, length=40, transcript=(17, 23))
    """

    position: int
    length: int
    transcript: Tuple[int, ...]


@dataclass
class Example:
    """One training example.

    Examples
    --------
    >>> ex = Example("u1", "text_lm", [1, 5, 2], [-100, 5, 2])
    >>> len(ex), ex.total_length
    (3, 3)
    """

    id: str
    task: str
    input_ids: List[int]
    labels: List[int]
    audio_spans: List[AudioSpan] = field(default_factory=list)
    unit_spans: List[UnitSpan] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def total_length(self) -> int:
        """Positions after the model splices continuous frames in (ids + known frame counts)."""
        return len(self.input_ids) + sum(s.num_frames or 0 for s in self.audio_spans)

    def to_dict(self) -> dict:
        return asdict(self)


def dedup_units(units: Sequence[int]) -> List[int]:
    """Run-length deduplicate a unit sequence.

    Examples
    --------
    >>> dedup_units([5, 5, 5, 2, 2, 5])
    [5, 2, 5]
    """
    out: List[int] = []
    for u in units:
        if not out or out[-1] != u:
            out.append(int(u))
    return out


def validate_example(example: Example, layout: TokenLayout) -> Example:
    """Check ids against the layout, labels against ids, and audio spans against bow/eow.

    Raises :class:`ExampleError` naming the example id.

    Examples
    --------
    >>> from most_speech.text.token_layout import deepseek_layout
    >>> validate_example(Example("a", "text_lm", [100000, 5], [-100, 5]), deepseek_layout()).id
    'a'
    """
    where = f"example {example.id!r} ({example.task})"
    ids, labels = example.input_ids, example.labels
    if not ids:
        raise ExampleError(f"{where}: empty input_ids")
    if len(ids) != len(labels):
        raise ExampleError(f"{where}: {len(ids)} input_ids but {len(labels)} labels")
    bad = [i for i in ids if not 0 <= i < layout.vocab_size]
    if bad:
        raise ExampleError(f"{where}: token ids {bad[:5]} outside [0, {layout.vocab_size})")
    if all(lab == IGNORE_INDEX for lab in labels):
        raise ExampleError(f"{where}: no labelled token")
    for t, (i, lab) in enumerate(zip(ids, labels)):
        if lab != IGNORE_INDEX and lab != i:
            raise ExampleError(f"{where}: label {lab} at position {t} differs from its input id {i}")
    for span in example.audio_spans:
        p = span.position
        if not (0 <= p < len(ids) - 1 and ids[p] == layout.bow_id and ids[p + 1] == layout.eow_id):
            raise ExampleError(f"{where}: audio span {span} does not point at an adjacent bow, eow pair")
        if span.num_frames is not None and span.num_frames <= 0:
            raise ExampleError(f"{where}: audio span {span.key!r} has num_frames={span.num_frames}")
    return example


#: file in a trained model folder with the :class:`TemplateConfig` fields it was trained with (training writes it;
#: ``most-export`` starts from it, so decoding builds prompts and unit sequences the way training did)
TEMPLATE_FILE = "template.json"


@dataclass
class TemplateConfig:
    """Prompts and choices of the task templates (MoST's defaults).

    Parameters
    ----------
    asr_instruction, tts_instruction : str
        MoST's prompts.
    speech_instruction : str or None
        Optional text placed before a spoken question (none by default).
    speech_input : {"continuous", "units"}
        How input speech is represented.
    dedup_target_units, dedup_input_units : bool
        Run-length deduplicate units in targets (default yes) / in the input (default no).
    frame_rate : float, optional
        Encoder frames per second (25 for mHuBERT-25Hz, 50 for HuBERT-base), used to estimate
        ``AudioSpan.num_frames`` from ``duration`` when the entry has no ``num_frames``.
    system_suffix, user_prefix, assistant_prefix : str
        Dialogue rendering of ``text_instruction``: ``system + system_suffix``, ``user_prefix + user``,
        ``assistant_prefix`` then the labelled assistant text and EOS.
    """

    asr_instruction: str = ASR_INSTRUCTION
    tts_instruction: str = TTS_INSTRUCTION
    speech_instruction: Optional[str] = None
    speech_input: str = "continuous"
    dedup_target_units: bool = True
    dedup_input_units: bool = False
    frame_rate: Optional[float] = None
    system_suffix: str = "\n\n"
    user_prefix: str = "User: "
    assistant_prefix: str = "\n\nAssistant: "

    def __post_init__(self):
        if self.speech_input not in ("continuous", "units"):
            raise ValueError(f"speech_input must be 'continuous' or 'units', got {self.speech_input!r}")

    def save(self, folder) -> Path:
        """Write the fields to ``folder/template.json`` (training does, beside the model)."""
        path = Path(folder) / TEMPLATE_FILE
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path


def load_template_fields(folder) -> dict:
    """The :class:`TemplateConfig` fields a model in ``folder`` was trained with (``{}`` without ``template.json``).

    Examples
    --------
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> load_template_fields(d), TemplateConfig(dedup_target_units=False).save(d).name
    ({}, 'template.json')
    >>> load_template_fields(d)["dedup_target_units"]
    False
    """
    path = Path(folder) / TEMPLATE_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


class TaskTemplates:
    """Build :class:`Example` objects for every task from manifest entries.

    Parameters
    ----------
    tokenizer : MoSTTokenizer
        Supplies ``encode`` and the :class:`TokenLayout`.
    config : TemplateConfig, optional

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from most_speech.text.tokenizer import MoSTTokenizer, train_sentencepiece
    >>> sp = train_sentencepiece(["hello world", "transcribe speech into text"] * 20,
    ...                          pathlib.Path(tempfile.mkdtemp()) / "sp", vocab_size=40)
    >>> tpl = TaskTemplates(MoSTTokenizer.from_sentencepiece(sp, num_units=10))
    >>> ex = tpl.build("asr", {"id": "u1", "text": "hello world", "num_frames": 50})
    >>> ex.audio_spans, ex.labels[-1] == tpl.layout.eos_id  # doctest: +ELLIPSIS
    ([AudioSpan(position=..., key='u1', num_frames=50, transcript=(...))], True)
    >>> tpl.tokenizer.decode(list(ex.audio_spans[0].transcript))
    'hello world'

    >>> tpl.build("tts", {"id": "u1", "text": "hello", "units": [3, 3, 4]}).input_ids[-5:-1] == \\
    ...     [tpl.layout.boa_id, tpl.layout.unit_id(3), tpl.layout.unit_id(4), tpl.layout.eoa_id]
    True
    """

    def __init__(self, tokenizer, config: Optional[TemplateConfig] = None):
        self.tokenizer = tokenizer
        self.layout: TokenLayout = tokenizer.layout
        self.config = config or TemplateConfig()
        self._builders: Dict[str, Callable[[dict], Example]] = {
            "asr": self.asr, "tts": self.tts, "text_lm": self.text_lm, "speech_lm": self.speech_lm,
            "speech_instruction": self.speech_instruction, "text_instruction": self.text_instruction}

    # ------------------------------------------------------------------ pieces
    def _text(self, entry: dict, key: str) -> str:
        text = entry.get(key)
        if not isinstance(text, str) or not text.strip():
            raise ExampleError(f"entry {entry.get('id')!r}: field {key!r} is missing or empty")
        return text

    def _encode(self, text: Optional[str]) -> List[int]:
        return self.tokenizer.encode(text, parse_special=False) if text else []

    def _units(self, entry: dict, key: str, dedup: bool) -> List[int]:
        units = entry.get(key)
        if not isinstance(units, (list, tuple)) or len(units) == 0:
            raise ExampleError(f"entry {entry.get('id')!r}: field {key!r} (units) is missing or empty")
        units = dedup_units(units) if dedup else [int(u) for u in units]
        try:
            return self.tokenizer.units_to_ids(units, add_markers=True)
        except ValueError as err:
            raise ExampleError(f"entry {entry.get('id')!r}: field {key!r}: {err} "
                               f"(the layout has {self.layout.num_units} units)") from None

    def _speech_input(self, entry: dict, prefix: List[int], units_key: str = "units"
                      ) -> Tuple[List[int], List[AudioSpan]]:
        """Ids for the input speech appended after ``prefix``, plus the audio span (continuous input)."""
        if self.config.speech_input == "units":
            return self._units(entry, units_key, self.config.dedup_input_units), []
        frames = entry.get("num_frames")
        if frames is None and self.config.frame_rate and entry.get("duration") is not None:
            frames = max(1, int(float(entry["duration"]) * self.config.frame_rate))
        span = AudioSpan(len(prefix), str(entry.get("feature_key", entry["id"])),
                         None if frames is None else int(frames))
        return [self.layout.bow_id, self.layout.eow_id], [span]

    def _example(self, entry: dict, task: str, prompt: List[int], response: List[int],
                 spans: Sequence[AudioSpan] = (), prompt_only: bool = False) -> Example:
        if prompt_only:
            return Example(entry["id"], task, list(prompt), [IGNORE_INDEX] * len(prompt), list(spans))
        ids = prompt + response + [self.layout.eos_id]
        labels = [IGNORE_INDEX] * len(prompt) + response + [self.layout.eos_id]
        return Example(entry["id"], task, ids, labels, list(spans))

    # ------------------------------------------------------------------ tasks
    def asr(self, entry: dict, prompt_only: bool = False) -> Example:
        """Speech (continuous or units) -> ``entry["text"]``."""
        prompt = [self.layout.bos_id] + self._encode(self.config.asr_instruction)
        speech, spans = self._speech_input(entry, prompt)
        response = [] if prompt_only else self._encode(self._text(entry, "text"))
        spans = [replace(s, transcript=tuple(response)) if response else s for s in spans]
        return self._example(entry, "asr", prompt + speech, response, spans, prompt_only)

    def tts(self, entry: dict, prompt_only: bool = False) -> Example:
        """``entry["text"]`` -> ``boa, units, eoa`` (deduplicated by default)."""
        text = self._encode(self._text(entry, "text"))
        prompt = [self.layout.bos_id] + self._encode(self.config.tts_instruction) + text
        response = [] if prompt_only else self._units(entry, "units", self.config.dedup_target_units)
        example = self._example(entry, "tts", prompt, response, (), prompt_only)
        if response:  # boa, units, eoa: the units start one after the prompt
            example.unit_spans = [UnitSpan(len(prompt) + 1, len(response) - 2, tuple(text))]
        return example

    def text_lm(self, entry: dict, prompt_only: bool = False) -> Example:
        """Plain text; every token but BOS is labelled."""
        response = [] if prompt_only else self._encode(self._text(entry, "text"))
        return self._example(entry, "text_lm", [self.layout.bos_id], response, (), prompt_only)

    def speech_lm(self, entry: dict, prompt_only: bool = False) -> Example:
        """``boa, units, eoa`` of ``entry["units"]`` (deduplicated as TTS targets); all but BOS labelled.

        The labelled span is what :mod:`most_speech.scoring.slm` scores for a spoken-LM pair.
        """
        response = [] if prompt_only else self._units(entry, "units", self.config.dedup_target_units)
        return self._example(entry, "speech_lm", [self.layout.bos_id], response, (), prompt_only)

    def speech_instruction(self, entry: dict, output: Optional[str] = None, prompt_only: bool = False
                           ) -> Example:
        """Spoken question -> answer.

        The question is the entry's audio (continuous, keyed by id) or ``question_units``; the answer is
        ``answer`` (text), ``answer_units`` (speech units) or both, chosen by ``output`` (``"text"``,
        ``"units"``, ``"text_units"``; default: the entry's ``output`` field, else ``"text"``).
        """
        output = output or entry.get("output", "text")
        if output not in ("text", "units", "text_units"):
            raise ExampleError(f"entry {entry.get('id')!r}: output must be text, units or text_units, "
                               f"got {output!r}")
        prompt = [self.layout.bos_id] + self._encode(entry.get("instruction", self.config.speech_instruction))
        speech, spans = self._speech_input(entry, prompt, units_key="question_units")
        response: List[int] = []
        if not prompt_only and output in ("text", "text_units"):
            response += self._encode(self._text(entry, "answer"))
        if not prompt_only and output in ("units", "text_units"):
            response += self._units(entry, "answer_units", self.config.dedup_target_units)
        return self._example(entry, "speech_instruction", prompt + speech, response, spans, prompt_only)

    def text_instruction(self, entry: dict, prompt_only: bool = False) -> Example:
        """Dialogue ``messages``; assistant turns are labelled, each ending in EOS.

        With ``prompt_only`` the last assistant turn is dropped and the prompt ends in the assistant prefix.
        """
        messages = entry.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ExampleError(f"entry {entry.get('id')!r}: field 'messages' is missing or empty")
        if prompt_only and messages[-1].get("role") == "assistant":
            messages = messages[:-1]
        cfg, eos = self.config, self.layout.eos_id
        ids, labels = [self.layout.bos_id], [IGNORE_INDEX]
        for k, msg in enumerate(messages):
            role, content = msg.get("role"), msg.get("content")
            if not isinstance(content, str) or not content.strip():
                raise ExampleError(f"entry {entry.get('id')!r}: messages[{k}] has empty content")
            if role == "assistant":
                head, body = self._encode(cfg.assistant_prefix), self._encode(content) + [eos]
                ids += head + body
                labels += [IGNORE_INDEX] * len(head) + body
            elif role in ("user", "system"):
                text = cfg.user_prefix + content if role == "user" else content + cfg.system_suffix
                piece = self._encode(text)
                ids += piece
                labels += [IGNORE_INDEX] * len(piece)
            else:
                raise ExampleError(f"entry {entry.get('id')!r}: messages[{k}] has unknown role {role!r}")
        if prompt_only:
            head = self._encode(cfg.assistant_prefix)
            return Example(entry["id"], "text_instruction", ids + head, [IGNORE_INDEX] * (len(ids) + len(head)))
        if messages[-1].get("role") != "assistant":
            raise ExampleError(f"entry {entry.get('id')!r}: dialogue must end with an assistant turn")
        return Example(entry["id"], "text_instruction", ids, labels)

    # ------------------------------------------------------------------ dispatch
    @property
    def tasks(self) -> List[str]:
        return list(self._builders)

    def build(self, task: str, entry: dict, prompt_only: bool = False) -> Example:
        """Build the example of ``task`` for ``entry`` (the prompt alone with ``prompt_only``, for decoding)."""
        if task not in self._builders:
            raise ValueError(f"unknown task {task!r}; known: {self.tasks}")
        if "id" not in entry:
            raise ExampleError(f"{task}: entry without 'id': {str(entry)[:80]}")
        example = self._builders[task](entry, prompt_only=prompt_only)
        if not prompt_only:
            validate_example(example, self.layout)
        return example

    def transform(self, task: str) -> Callable[[dict], Example]:
        """A one-argument callable ``entry -> Example`` for ``task`` (for datasets and the mixer)."""
        if task not in self._builders:
            raise ValueError(f"unknown task {task!r}; known: {self.tasks}")
        return lambda entry: self.build(task, entry)


TASKS = ("asr", "tts", "text_lm", "speech_lm", "speech_instruction", "text_instruction")
