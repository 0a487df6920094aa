"""Frozen HuBERT encoder: frame rates, layer semantics, exact batching, chunking, frozen-ness."""
import copy
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from transformers import HubertModel

from most_speech.audio.hubert import (HubertEncoder, hubert_base_config, mhubert_25hz_config,
                                      tiny_hubert_config)

REF_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "hubert_reference"


@pytest.fixture(scope="module")
def tiny_models():
    torch.manual_seed(0)
    return {fr: HubertModel(tiny_hubert_config(fr)).eval() for fr in (50, 25)}


@pytest.mark.parametrize("fr", [50, 25])
def test_frame_rate_is_measured(tiny_models, fr):
    enc = HubertEncoder(copy.deepcopy(tiny_models[fr]), layer=1)
    feats, lens = enc(torch.randn(1, 4 * 16000))
    # 4 s of audio: frames/s measured from the output itself (one frame less for the receptive field)
    assert lens.item() == feats.shape[1] == 4 * fr - 1
    assert enc.frame_rate == fr and enc.stride == 16000 // fr
    assert enc.frames_for(4 * 16000) == 4 * fr - 1


def test_real_size_configs():
    assert HubertEncoder.__name__  # configs only: no weights built
    base, m25 = hubert_base_config(), mhubert_25hz_config()
    prod = lambda xs: int(np.prod(list(xs)))  # noqa: E731
    assert prod(base.conv_stride) == 320 and prod(m25.conv_stride) == 640
    assert base.hidden_size == m25.hidden_size == 768 and base.num_hidden_layers == 12


@pytest.mark.parametrize("layer", [0, 2, 3])
def test_layer_matches_output_hidden_states(tiny_models, layer):
    model = tiny_models[50]
    wav = torch.randn(1, 12000)
    with torch.no_grad():
        ref = model(wav, output_hidden_states=True).hidden_states[layer]
    feats, _ = HubertEncoder(copy.deepcopy(model), layer=layer)(wav)
    assert torch.allclose(feats, ref, atol=1e-5)


def test_batched_with_padding_equals_one_by_one(tiny_models):
    enc = HubertEncoder(copy.deepcopy(tiny_models[50]), layer=2)
    lengths = [16000, 9100, 4321]
    wavs = [torch.randn(n) for n in lengths]
    padded = nn.utils.rnn.pad_sequence(wavs, batch_first=True)
    feats, lens = enc(padded, torch.tensor(lengths))
    assert lens.tolist() == [enc.frames_for(n) for n in lengths]
    for i, w in enumerate(wavs):
        alone, _ = enc(w[None])
        assert torch.allclose(feats[i, : lens[i]], alone[0], atol=1e-5)
        assert torch.all(feats[i, lens[i]:] == 0)


def test_chunk_boundaries_are_seamless():
    # 0 transformer layers + small positional conv: every frame sees < 0.05 s, so windows with context equal
    # one pass exactly; a misaligned window would shift frames and fail.
    torch.manual_seed(1)
    model = HubertModel(tiny_hubert_config(50, feat_extract_norm="layer", num_conv_pos_embeddings=4)).eval()
    whole = HubertEncoder(copy.deepcopy(model), layer=0, chunk_seconds=None)
    chunked = HubertEncoder(copy.deepcopy(model), layer=0, chunk_seconds=0.5, context_seconds=0.1)
    wav = torch.randn(1, 37123)
    a, la = whole(wav)
    b, lb = chunked(wav)
    assert la.item() == lb.item() == whole.frames_for(37123)
    assert torch.allclose(a, b, atol=1e-5)


def test_long_utterance_in_batch_is_chunked(tiny_models):
    enc = HubertEncoder(copy.deepcopy(tiny_models[25]), layer=3, chunk_seconds=1.0, context_seconds=0.2)
    feats, lens = enc([torch.randn(40000), torch.randn(8000)])
    assert lens.tolist() == [enc.frames_for(40000), enc.frames_for(8000)]
    assert torch.isfinite(feats).all()


def test_frozen_and_always_eval(tiny_models):
    enc = HubertEncoder(copy.deepcopy(tiny_models[50]), layer=3)
    parent = nn.Sequential(enc, nn.Linear(32, 4))
    parent.train()
    assert not enc.training and not any(m.training for m in enc.modules())
    wav = torch.randn(1, 8000)
    f1, _ = enc(wav)
    f2, _ = enc(wav)
    assert torch.equal(f1, f2)  # dropout off
    assert not f1.requires_grad and not any(p.requires_grad for p in enc.parameters())
    parent[1](f1).sum().backward()  # the features still feed a trainable projection


def test_from_pretrained_and_errors(tmp_path, tiny_models):
    tiny_models[25].save_pretrained(tmp_path)
    enc = HubertEncoder.from_pretrained(tmp_path, layer=2)
    assert enc.dim == 32 and enc.frame_rate == 25 and len(enc.model.encoder.layers) == 2
    with pytest.raises(ValueError, match="layer"):
        HubertEncoder.from_pretrained(tmp_path, layer=9)
    with pytest.raises(ValueError, match="fewer than one HuBERT frame"):
        enc(torch.randn(1, 100))
    with pytest.raises(FileNotFoundError, match="config.json"):
        HubertEncoder.from_pretrained(tmp_path / "nope")


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("MOST_HUBERT_BASE_DIR"), reason="set MOST_HUBERT_BASE_DIR to converted "
                    "hubert_base_ls960 weights (most-convert-hubert hubert_base_ls960.pt DIR)")
def test_reference_features_and_units():
    """fairseq's own layer-9 features (and km500 units when MOST_HUBERT_KM500 names the .bin) for one utterance."""
    from most_speech.audio.io import load_audio
    from most_speech.audio.kmeans import KMeansQuantizer

    enc = HubertEncoder.from_pretrained(os.environ["MOST_HUBERT_BASE_DIR"], layer=9)
    wav = load_audio(REF_DIR / "6313-76958-0021.flac")
    feats, lens = enc(wav[None])
    ref = torch.from_numpy(np.load(REF_DIR / "sample.base.L9.npy"))
    assert lens.item() == ref.shape[0] == int((REF_DIR / "sample.base.L9.len").read_text())
    assert (feats[0] - ref).abs().max().item() < 1e-2
    assert torch.nn.functional.cosine_similarity(feats[0], ref, dim=-1).min().item() > 0.999
    km_path = os.environ.get("MOST_HUBERT_KM500")
    if km_path:
        km = KMeansQuantizer.from_fairseq(km_path, encoder="hubert_base", layer=9)
        units = km(feats[0])
        want = torch.tensor([int(u) for u in (REF_DIR / "sample.base.L9.km500.km").read_text().split()])
        assert (units == want).float().mean().item() > 0.99
