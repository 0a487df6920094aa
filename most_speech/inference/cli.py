"""``most-transcribe`` and ``most-synthesize``: command-line front ends of the inference interfaces."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..audio.io import save_audio
from ..decoding.generation import SamplingConfig


def transcribe_main(argv=None) -> None:
    """``most-transcribe EXPORT AUDIO...``: print ``path<TAB>hypothesis`` lines (or JSONL with --jsonl)."""
    p = argparse.ArgumentParser(prog="most-transcribe", description="Transcribe audio files with a MoST export.")
    p.add_argument("export", help="export folder (most.json, model/, tokenizer/, ...)")
    p.add_argument("audio", nargs="+", help="audio files (wav, flac, ogg, mp3)")
    p.add_argument("--beam-size", type=int, default=1)
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--jsonl", action="store_true", help="print one JSON object per file")
    a = p.parse_args(argv)
    from .interfaces import MoSTASR
    asr = MoSTASR.from_pretrained(a.export, beam_size=a.beam_size, max_new_tokens=a.max_new_tokens)
    for path, hyp in zip(a.audio, asr.transcribe(a.audio)):
        print(json.dumps({"audio": path, "text": hyp}) if a.jsonl else f"{path}\t{hyp}")


def synthesize_main(argv=None) -> None:
    """``most-synthesize EXPORT "text" -o out.wav`` (or ``--texts file`` with one sentence per line)."""
    p = argparse.ArgumentParser(prog="most-synthesize", description="Synthesize speech with a MoST export.")
    p.add_argument("export")
    p.add_argument("text", nargs="?", help="the sentence to speak")
    p.add_argument("-o", "--out", default="out.wav", help="output wav (or folder with --texts)")
    p.add_argument("--texts", help="a file with one sentence per line; writes OUT/0000.wav, ...")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=50)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--candidates", type=int, default=1,
                   help="best-of-N: sample N unit sequences, keep the one --reranker scores highest")
    p.add_argument("--reranker", choices=("self", "encoder_ctc", "self+encoder_ctc"), default="self",
                   help="best-of-N ranker: the model's own ASR, the speech encoder's CTC head, or their sum")
    p.add_argument("--rerank-ctc-weight", type=float, default=0.0, help="reranker self: CTC weight of its score")
    p.add_argument("--draft-griffin-lim-iters", type=int, default=0,
                   help="best-of-N with a Griffin-Lim vocoder: rank drafts of this many iterations (0: off)")
    a = p.parse_args(argv)
    if (a.text is None) == (a.texts is None):
        p.error("give either a text or --texts FILE")
    from .interfaces import MoSTTTS
    tts = MoSTTTS.from_pretrained(a.export, sampling=SamplingConfig(a.temperature, a.top_k, a.top_p, a.seed),
                                  num_candidates=a.candidates, rerank_ctc_weight=a.rerank_ctc_weight,
                                  reranker=a.reranker, draft_griffin_lim_iters=a.draft_griffin_lim_iters or None)
    if a.text is not None:
        save_audio(a.out, tts.synthesize(a.text), tts.sample_rate)
        print(a.out)
        return
    texts = [t.strip() for t in Path(a.texts).read_text().splitlines() if t.strip()]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for i, wav in enumerate(tts.synthesize(texts)):
        save_audio(out / f"{i:04d}.wav", wav, tts.sample_rate)
    print(f"wrote {len(texts)} files to {out}", file=sys.stderr)


def _export_template(parser, a) -> tuple[dict, str]:
    """The export's template fields and speech input: the model's ``template.json`` (what training used), then
    ``--template`` over it; ``--speech-input`` must agree with a trained-in one."""
    from ..data.templates import TEMPLATE_FILE, load_template_fields
    template = {**load_template_fields(a.model_dir), **json.loads(a.template)}
    trained = template.pop("speech_input", None)
    if a.speech_input and trained and a.speech_input != trained:
        parser.error(f"--speech-input {a.speech_input}: {Path(a.model_dir) / TEMPLATE_FILE} says the model was "
                     f"trained with speech_input {trained}")
    return template, a.speech_input or trained or "continuous"


def export_main(argv=None) -> None:
    """``most-export MODEL_DIR OUT``: bundle a trained model (``<exp>/model``) with its front end and vocoder."""
    p = argparse.ArgumentParser(prog="most-export", description="Make an inference export folder.")
    p.add_argument("model_dir", help="trained model folder (save_pretrained + tokenizer), e.g. exp/stage1/model")
    p.add_argument("out", help="export folder to create")
    p.add_argument("--tokenizer-dir", help="default: MODEL_DIR")
    p.add_argument("--speech-input", choices=["continuous", "units"],
                   help="default: the model's template.json (written by training), else continuous")
    p.add_argument("--encoder", default="fbank", help="front end kind: hubert, phonetic, fbank or mfcc")
    p.add_argument("--encoder-dir", help="HuBERT or phonetic encoder directory (copied into the export)")
    p.add_argument("--encoder-layer", type=int)
    p.add_argument("--kmeans", help="k-means centroids (kmeans.safetensors) for unit input and spoken-LM pairs")
    p.add_argument("--vocoder", help="saved vocoder folder")
    p.add_argument("--unit-rate", type=float, default=50.0)
    p.add_argument("--template", default="{}",
                   help="TemplateConfig fields as JSON (prompts, dedup, ...) over the model's template.json")
    p.add_argument("--overwrite", action="store_true")
    a = p.parse_args(argv)
    from transformers import AutoModelForCausalLM

    import most_speech.models  # noqa: F401 - registers the "most" model type
    from ..audio.kmeans import KMeansQuantizer
    from ..text.tokenizer import MoSTTokenizer
    from ..vocoder import load_vocoder
    from .export import ExportInfo, export_model

    model = AutoModelForCausalLM.from_pretrained(a.model_dir)
    tokenizer = MoSTTokenizer.from_pretrained(a.tokenizer_dir or a.model_dir)
    kmeans = KMeansQuantizer.load(a.kmeans, device="cpu") if a.kmeans else None
    vocoder = load_vocoder(a.vocoder) if a.vocoder else None
    named = {"model": getattr(model.config, "km_tag", None), "k-means": kmeans and kmeans.km_tag,
             "vocoder": vocoder and vocoder.km_tag}
    tags = {t for t in named.values() if t}
    if len(tags) > 1:
        p.error("the pieces disagree on km_tag: " + ", ".join(f"{k} {v}" for k, v in named.items() if v))
    encoder = {"kind": a.encoder}
    if a.encoder_layer is not None:
        encoder["layer"] = a.encoder_layer
    template, speech_input = _export_template(p, a)
    info = ExportInfo(speech_input=speech_input, km_tag=tags.pop() if tags else None, unit_rate=a.unit_rate,
                      encoder=encoder, template=template)
    out = export_model(a.out, model, tokenizer, info=info, vocoder=vocoder, encoder_dir=a.encoder_dir,
                       kmeans=kmeans, overwrite=a.overwrite)
    print(f"wrote {out}")
