"""Ready-to-use interfaces: ``MoSTASR``, ``MoSTTTS``, ``MoSTChat``, each ``.from_pretrained(export_dir)``.

Examples
--------
>>> asr = MoSTASR.from_pretrained("exp/stage1/export")                     # doctest: +SKIP
>>> asr.transcribe("speech.wav")                                           # doctest: +SKIP
'hello world'
>>> tts = MoSTTTS.from_pretrained("exp/stage1/export")                     # doctest: +SKIP
>>> wav = tts.synthesize("Hello world.")                                   # doctest: +SKIP
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Union

import torch
from transformers import AutoModelForCausalLM

from ..audio.frontends import build_encoder
from ..audio.io import load_audio
from ..audio.kmeans import KMeansQuantizer, dedup
from ..data.templates import TaskTemplates, TemplateConfig
from ..decoding.asr import ASRDecoder
from ..decoding.generation import SamplingConfig
from ..decoding.rerank import build_reranker
from ..decoding.spoken_qa import SpokenQADecoder
from ..decoding.tts import TTSDecoder
from ..models import MoSTConfig  # noqa: F401 - registers the "most" model type
from ..text.tokenizer import MoSTTokenizer
from .export import ExportInfo

AudioInput = Union[str, Path, torch.Tensor]


class _Loaded:
    """The pieces of an export folder, loaded once and shared by the interfaces."""

    def __init__(self, directory, device: str = "cpu", load_vocoder_: bool = True):
        d = Path(directory)
        self.dir = d
        self.info = ExportInfo.load(d)
        self.model = AutoModelForCausalLM.from_pretrained(d / "model").to(device).eval()
        self.tokenizer = MoSTTokenizer.from_pretrained(d / "tokenizer")
        cfg = TemplateConfig(**{**self.info.template, "speech_input": self.info.speech_input})
        self.templates = TaskTemplates(self.tokenizer, cfg)
        enc = dict(self.info.encoder)
        if enc.get("model_dir"):
            enc["model_dir"] = str(d / enc["model_dir"])
        self.encoder = build_encoder(enc.pop("kind"), **enc)
        self.kmeans = KMeansQuantizer.load(d / "kmeans.safetensors", device="cpu") if self.info.has_kmeans else None
        self.vocoder = None
        if self.info.has_vocoder and load_vocoder_:
            from ..vocoder import load_vocoder
            self.vocoder = load_vocoder(d / "vocoder")

    def entries(self, audio: Sequence[AudioInput]) -> List[dict]:
        """Manifest-like entries for paths or 16 kHz waveforms, with units when the model takes units."""
        entries = []
        for i, a in enumerate(audio):
            wav = a if isinstance(a, torch.Tensor) else load_audio(a)
            entries.append({"id": f"utt{i}", "wav": wav})
        if self.info.speech_input == "units":
            if self.kmeans is None:
                raise ValueError(f"{self.dir}: the model takes unit input but the export has no kmeans.safetensors")
            for e, feats in zip(entries, self.features(entries)):
                units = self.kmeans(feats)
                if self.templates.config.dedup_input_units:
                    units, _ = dedup(units)
                e["units"] = units.tolist()
        return entries

    @torch.no_grad()
    def features(self, entries: Sequence[dict]) -> List[torch.Tensor]:
        wavs = [e["wav"] for e in entries]
        lengths = torch.tensor([w.shape[0] for w in wavs])
        batch = torch.nn.utils.rnn.pad_sequence([w.float() for w in wavs], batch_first=True)
        feats, flens = self.encoder(batch, lengths)
        return [feats[i, :int(n)] for i, n in enumerate(flens)]


class MoSTASR:
    """Speech recognition with a MoST export. ``transcribe(path_or_wav)`` or a list of them."""

    def __init__(self, loaded: _Loaded, beam_size: int = 1, max_new_tokens: int = 200):
        self.loaded = loaded
        self.decoder = ASRDecoder(loaded.model, loaded.templates, features=loaded.features, beam_size=beam_size,
                                  max_new_tokens=max_new_tokens)

    @classmethod
    def from_pretrained(cls, directory, device: str = "cpu", **kwargs) -> "MoSTASR":
        return cls(_Loaded(directory, device, load_vocoder_=False), **kwargs)

    def transcribe(self, audio: Union[AudioInput, Sequence[AudioInput]]):
        single = isinstance(audio, (str, Path, torch.Tensor))
        entries = self.loaded.entries([audio] if single else list(audio))
        hyps = [self.decoder.decode_batch(entries[i:i + self.decoder.batch_size])
                for i in range(0, len(entries), self.decoder.batch_size)]
        flat = [h for part in hyps for h in part]
        return flat[0] if single else flat


class MoSTTTS:
    """Speech synthesis with a MoST export (needs its vocoder). ``synthesize(text) -> 1-D waveform``.

    ``num_candidates > 1`` decodes best-of-N: N sampled unit sequences per text, the one ``reranker`` scores
    highest is kept (:mod:`most_speech.decoding.rerank`: ``"self"``, the model's own ASR, with
    ``rerank_ctc_weight`` as its joint weight for models with a CTC head; ``"encoder_ctc"``, the speech
    encoder's CTC head; ``"self+encoder_ctc"``, their sum), ranked on Griffin-Lim drafts of
    ``draft_griffin_lim_iters`` iterations if given.
    """

    def __init__(self, loaded: _Loaded, sampling: Optional[SamplingConfig] = None, num_candidates: int = 1,
                 rerank_ctc_weight: float = 0.0, reranker: str = "self",
                 draft_griffin_lim_iters: Optional[int] = None):
        if loaded.vocoder is None:
            raise ValueError(f"{loaded.dir}: the export has no vocoder; TTS needs one")
        self.loaded = loaded
        self.sample_rate = loaded.vocoder.sample_rate
        ranker = build_reranker(reranker, loaded, rerank_ctc_weight) if num_candidates > 1 else None
        self.decoder = TTSDecoder(loaded.model, loaded.templates, loaded.vocoder, km_tag=loaded.info.km_tag,
                                  sampling=sampling, unit_rate=loaded.info.unit_rate, num_candidates=num_candidates,
                                  reranker=ranker, draft_griffin_lim_iters=draft_griffin_lim_iters)

    @classmethod
    def from_pretrained(cls, directory, device: str = "cpu", **kwargs) -> "MoSTTTS":
        return cls(_Loaded(directory, device), **kwargs)

    def synthesize(self, text: Union[str, Sequence[str]]):
        single = isinstance(text, str)
        wavs = self.decoder.synthesize([text] if single else list(text))
        return wavs[0] if single else wavs

    def stream(self, text: str, chunk_units: int = 25):
        """Yield waveform chunks while units are generated."""
        return self.decoder.stream(text, chunk_units)


class MoSTChat:
    """Spoken dialogue: a spoken (or typed) question -> a text or spoken answer."""

    def __init__(self, loaded: _Loaded, max_new_tokens: int = 128):
        self.loaded = loaded
        self.qa = SpokenQADecoder(loaded.model, loaded.templates, features=loaded.features, vocoder=loaded.vocoder,
                                  km_tag=loaded.info.km_tag, max_new_tokens=max_new_tokens)

    @classmethod
    def from_pretrained(cls, directory, device: str = "cpu", **kwargs) -> "MoSTChat":
        return cls(_Loaded(directory, device), **kwargs)

    def chat(self, question: Union[AudioInput, str], speak: bool = False, instruction: Optional[str] = None):
        """Answer one question: audio (path or waveform) or text. ``speak=True`` returns a waveform."""
        if isinstance(question, str) and not Path(question).exists():
            entry = {"id": "q", "messages": [{"role": "user", "content": question}]}
            ex = self.loaded.templates.build("text_instruction", entry, prompt_only=True)
            ids = torch.tensor([ex.input_ids])
            out = self.loaded.model.generate(ids, max_new_tokens=self.qa.max_new_tokens, do_sample=False,
                                             eos_token_id=self.loaded.tokenizer.eos_id)
            answer = out[0, ids.shape[1]:].tolist()
            eos = self.loaded.tokenizer.eos_id
            return self.loaded.tokenizer.decode(answer[:answer.index(eos)] if eos in answer else answer)
        entry = self.loaded.entries([question])[0]
        if instruction:
            entry["instruction"] = instruction
        if speak:
            return self.qa.answer_speech([entry])[entry["id"]]
        return self.qa.answer_text([entry])[entry["id"]]
