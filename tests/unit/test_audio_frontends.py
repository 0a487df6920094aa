"""Kaldi fbank/MFCC frontends share the encoder interface; build_encoder switches by name."""
import pytest
import torch
import torchaudio.compliance.kaldi as kaldi
from transformers import HubertModel

from most_speech.audio.frontends import KaldiFrontend, build_encoder
from most_speech.audio.hubert import HubertEncoder, tiny_hubert_config


@pytest.mark.parametrize("kind,dim", [("fbank", 80), ("mfcc", 13)])
def test_kaldi_frontend_batch(kind, dim):
    fe = build_encoder(kind)
    assert isinstance(fe, KaldiFrontend) and fe.dim == dim and fe.frame_rate == 100
    wavs = torch.randn(2, 16000) * 0.1
    feats, lens = fe(wavs, torch.tensor([16000, 7000]))
    assert lens.tolist() == [fe.frames_for(16000), fe.frames_for(7000)] == [98, 42]
    assert feats.shape == (2, 98, dim)
    fn = kaldi.fbank if kind == "fbank" else kaldi.mfcc
    extra = {"num_ceps": 13} if kind == "mfcc" else {}
    ref = fn(wavs[1:2, :7000] * 32768, sample_frequency=16000, dither=0.0, num_mel_bins=80, **extra)
    assert torch.allclose(feats[1, :42], ref, atol=1e-3)
    assert torch.all(feats[1, 42:] == 0)


def test_build_encoder_hubert(tmp_path):
    HubertModel(tiny_hubert_config(25)).save_pretrained(tmp_path)
    enc = build_encoder("hubert", model_dir=tmp_path, layer=1)
    assert isinstance(enc, HubertEncoder) and enc.frame_rate == 25 and enc.layer == 1
    with pytest.raises(ValueError, match="model_dir"):
        build_encoder("hubert")
    with pytest.raises(ValueError, match="unknown encoder 'wavlm'"):
        build_encoder("wavlm")


def test_too_short_input_is_reported():
    with pytest.raises(ValueError, match="waveform 0 has 100 samples"):
        KaldiFrontend("fbank")(torch.zeros(1, 100))
