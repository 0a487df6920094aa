"""Inference interfaces and CLIs on a tiny export folder (fbank / MFCC front ends, mean-mel vocoder)."""
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from most_speech.audio.kmeans import KMeansQuantizer
from most_speech.audio.phonetic import PhoneticEncoder, PhoneticEncoderConfig
from most_speech.inference.cli import export_main, synthesize_main, transcribe_main
from most_speech.inference.export import ExportInfo, export_model
from most_speech.decoding.generation import SamplingConfig
from most_speech.inference.interfaces import MoSTASR, MoSTChat, MoSTTTS
from most_speech.models import MoSTConfig, MoSTForCausalLM
from most_speech.text.tokenizer import MoSTTokenizer, train_sentencepiece
from most_speech.vocoder import MeanMelConfig, MeanMelVocoder

NUM_UNITS = 16


def tiny_phonetic_encoder(out_dir):
    """A random character-CTC phonetic encoder (hidden 16), saved to ``out_dir``."""
    torch.manual_seed(0)
    cfg = PhoneticEncoderConfig(vocab=list("abcdefghijklmnopqrstuvwxyz' "), hidden_size=16, num_layers=1,
                                num_heads=2, ffn_size=32, layer=1)
    PhoneticEncoder(cfg).save_pretrained(out_dir)
    return out_dir


def tiny_export(tmp_path, speech_input="continuous", phonetic=False):
    sp = train_sentencepiece(["the cat sat on the mat", "hello there my friend"] * 10, tmp_path / "sp",
                             vocab_size=40)
    tok = MoSTTokenizer.from_sentencepiece(sp, num_units=NUM_UNITS)
    lay = tok.layout
    feat_dim = (16 if phonetic else 80) if speech_input == "continuous" else None
    torch.manual_seed(0)
    model = MoSTForCausalLM(MoSTConfig.tiny(vocab_size=lay.vocab_size, token_layout=lay.to_dict(),
                                            bos_token_id=lay.bos_id, eos_token_id=lay.eos_id,
                                            pad_token_id=lay.pad_id, audio_feature_dim=feat_dim))
    kmeans = None
    encoder = {"kind": "fbank"} if speech_input == "continuous" else {"kind": "mfcc"}
    encoder_dir = None
    if phonetic:
        encoder, encoder_dir = {"kind": "phonetic"}, tiny_phonetic_encoder(tmp_path / "phonetic")
    if speech_input == "units":
        kmeans = KMeansQuantizer(torch.randn(NUM_UNITS, 13), encoder="mfcc", layer=None)
    km_tag = kmeans.km_tag if kmeans is not None else "mfcc-km16-test"
    vocoder = MeanMelVocoder(MeanMelConfig(km_tag=km_tag, num_units=NUM_UNITS))
    info = ExportInfo(speech_input=speech_input, km_tag=km_tag, encoder=encoder)
    return export_model(tmp_path / "export", model, tok, info=info, vocoder=vocoder, kmeans=kmeans,
                        encoder_dir=encoder_dir)


def write_wav(path, seconds=1.0, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(t.size)).astype("float32"),
             16000)
    return str(path)


@pytest.mark.parametrize("speech_input", ["continuous", "units"])
def test_asr_interface_transcribes_files_and_waveforms(tmp_path, speech_input):
    export = tiny_export(tmp_path, speech_input)
    asr = MoSTASR.from_pretrained(export, max_new_tokens=4)
    a, b = write_wav(tmp_path / "a.wav"), write_wav(tmp_path / "b.wav", 0.5, 1)
    hyps = asr.transcribe([a, b])
    assert len(hyps) == 2 and all(isinstance(h, str) for h in hyps)
    assert asr.transcribe(a) == hyps[0]


def test_tts_and_chat_interfaces(tmp_path):
    export = tiny_export(tmp_path)
    tts = MoSTTTS.from_pretrained(export)
    wav = tts.synthesize("hello there")
    assert wav.ndim == 1 and wav.numel() > 0 and tts.sample_rate == 16000
    best = MoSTTTS.from_pretrained(export, sampling=SamplingConfig(temperature=1.0, seed=2), num_candidates=3)
    units, wavs, scores = best.decoder.synthesize_with_units(["hello there"])
    # the ranker is the export's own model in its ASR role; the reported score is the kept audio's
    assert best.decoder.reranker.asr.model is best.loaded.model
    assert scores[0] == float(best.decoder.reranker.scores("hello there", wavs).max())
    chat = MoSTChat.from_pretrained(export, max_new_tokens=3)
    assert isinstance(chat.chat("hello there"), str)
    spoken = chat.chat(write_wav(tmp_path / "q.wav"), speak=True)
    assert spoken.ndim == 1


def test_tts_interface_ranks_with_the_speech_encoders_ctc_head(tmp_path):
    export = tiny_export(tmp_path, phonetic=True)
    best = MoSTTTS.from_pretrained(export, sampling=SamplingConfig(temperature=1.0, seed=2), num_candidates=3,
                                   reranker="encoder_ctc")
    units, wavs, scores = best.decoder.synthesize_with_units(["hello there"])
    assert best.decoder.reranker.encoder is best.loaded.encoder
    # the kept audio's score (scored alone here, padded in a batch of 3 there)
    assert scores[0] == pytest.approx(float(best.decoder.reranker.scores("hello there", wavs)[0]), rel=1e-5)
    assert scores[0] > float("-inf")
    drafted = MoSTTTS(best.loaded, num_candidates=3, reranker="encoder_ctc", draft_griffin_lim_iters=4)
    assert drafted.decoder.draft_griffin_lim_iters == 4  # drafts only rank candidates: none with one sample
    assert MoSTTTS(best.loaded, draft_griffin_lim_iters=4).decoder.draft_griffin_lim_iters is None
    with pytest.raises(ValueError, match="no CTC head"):  # a filterbank front end has nothing to rank with
        MoSTTTS.from_pretrained(tiny_export(tmp_path / "fbank"), num_candidates=2, reranker="encoder_ctc")


def test_clis(tmp_path, capsys):
    export = tiny_export(tmp_path)
    wav = write_wav(tmp_path / "a.wav")
    transcribe_main([str(export), wav, "--jsonl", "--max-new-tokens", "3"])
    line = json.loads(capsys.readouterr().out.strip())
    assert line["audio"] == wav and isinstance(line["text"], str)
    synthesize_main([str(export), "the cat", "-o", str(tmp_path / "out.wav"), "--seed", "1"])
    data, sr = sf.read(tmp_path / "out.wav")
    assert sr == 16000 and len(data) > 0
    synthesize_main([str(export), "the cat", "-o", str(tmp_path / "best.wav"), "--seed", "1", "--candidates", "3",
                     "--draft-griffin-lim-iters", "4"])
    assert sf.read(tmp_path / "best.wav")[1] == 16000


def test_missing_export_manifest_is_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a most_speech export"):
        MoSTASR.from_pretrained(tmp_path)


def test_export_cli_bundles_a_trained_model(tmp_path):
    export = tiny_export(tmp_path, "units")
    trained = tmp_path / "exp_model"
    MoSTForCausalLM.from_pretrained(export / "model").save_pretrained(trained)
    MoSTTokenizer.from_pretrained(export / "tokenizer").save(trained)
    export_main([str(trained), str(tmp_path / "bundle"), "--speech-input", "units", "--encoder", "mfcc",
                 "--kmeans", str(export / "kmeans.safetensors"), "--vocoder", str(export / "vocoder")])
    asr = MoSTASR.from_pretrained(tmp_path / "bundle", max_new_tokens=2)
    assert isinstance(asr.transcribe(write_wav(tmp_path / "a.wav")), str)
    other = MeanMelVocoder(MeanMelConfig(km_tag="another-tag", num_units=NUM_UNITS)).save(tmp_path / "voc2")
    with pytest.raises(SystemExit):
        export_main([str(trained), str(tmp_path / "bundle2"), "--kmeans", str(export / "kmeans.safetensors"),
                     "--vocoder", str(other)])


def test_export_cli_bundles_a_phonetic_encoder(tmp_path):
    from most_speech.audio.phonetic import PhoneticEncoder, PhoneticEncoderConfig

    export = tiny_export(tmp_path, "units")
    trained = tmp_path / "exp_model"
    model = MoSTForCausalLM.from_pretrained(export / "model")
    model.config.audio_feature_dim = 32
    MoSTForCausalLM(model.config).save_pretrained(trained)
    MoSTTokenizer.from_pretrained(export / "tokenizer").save(trained)
    PhoneticEncoder(PhoneticEncoderConfig(vocab=list("ab "), hidden_size=32, num_heads=2, ffn_size=64,
                                          num_layers=2, layer=1)).save_pretrained(tmp_path / "pe")
    export_main([str(trained), str(tmp_path / "bundle"), "--encoder", "phonetic", "--encoder-dir",
                 str(tmp_path / "pe"), "--vocoder", str(export / "vocoder")])
    info = json.loads((tmp_path / "bundle" / "most.json").read_text())
    assert info["encoder"] == {"kind": "phonetic", "model_dir": "encoder"}
    assert (tmp_path / "bundle" / "encoder" / "model.safetensors").is_file()
    asr = MoSTASR.from_pretrained(tmp_path / "bundle", max_new_tokens=2)
    assert asr.loaded.encoder.dim == 32
    assert isinstance(asr.transcribe(write_wav(tmp_path / "a.wav")), str)


def test_export_cli_starts_from_the_models_trained_template(tmp_path):
    export = tiny_export(tmp_path, "units")
    trained = tmp_path / "exp_model"
    MoSTForCausalLM.from_pretrained(export / "model").save_pretrained(trained)
    MoSTTokenizer.from_pretrained(export / "tokenizer").save(trained)
    (trained / "template.json").write_text(json.dumps({"speech_input": "units", "dedup_target_units": False,
                                                       "dedup_input_units": True, "tts_instruction": "Speak:"}))
    common = ["--encoder", "mfcc", "--kmeans", str(export / "kmeans.safetensors"), "--vocoder", str(export / "vocoder")]
    export_main([str(trained), str(tmp_path / "bundle"), *common])   # no --speech-input: the trained one
    info = json.loads((tmp_path / "bundle" / "most.json").read_text())
    assert info["speech_input"] == "units"
    assert info["template"] == {"dedup_target_units": False, "dedup_input_units": True, "tts_instruction": "Speak:"}
    tts = MoSTTTS.from_pretrained(tmp_path / "bundle")
    assert tts.loaded.templates.config.dedup_target_units is False
    assert tts.loaded.templates.config.tts_instruction == "Speak:"
    # --template overrides a field; a --speech-input the model was not trained with is refused
    export_main([str(trained), str(tmp_path / "b2"), *common, "--template", '{"tts_instruction": "Say:"}'])
    assert json.loads((tmp_path / "b2" / "most.json").read_text())["template"]["tts_instruction"] == "Say:"
    with pytest.raises(SystemExit):
        export_main([str(trained), str(tmp_path / "b3"), *common, "--speech-input", "continuous"])
    assert not (tmp_path / "b3").exists()
