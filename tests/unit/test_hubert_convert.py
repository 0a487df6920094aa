"""fairseq -> transformers HuBERT conversion: parity, config mapping and restricted unpickling."""
import argparse
import os
import re

import pytest
import torch
import torch.nn.functional as F
from transformers import HubertConfig, HubertModel

from most_speech.audio.safe_load import UnsafePickleError
from most_speech.models.convert_hubert import (ConversionError, convert_fairseq_hubert, main,
                                               parse_conv_layers)

CONV_SPEC = "[(16,10,5)] + [(16,3,2)] * 2 + [(16,2,2)]"


def _fairseq_model_cfg(layer_norm_first=False, extractor_mode="default", conv_bias=False):
    return dict(encoder_layers=2, encoder_embed_dim=32, encoder_ffn_embed_dim=48, encoder_attention_heads=4,
                conv_feature_layers=CONV_SPEC, extractor_mode=extractor_mode, layer_norm_first=layer_norm_first,
                conv_pos=8, conv_pos_groups=4, conv_bias=conv_bias, activation_fn="gelu")


def _hf_model(model_cfg):
    conv = parse_conv_layers(model_cfg["conv_feature_layers"])
    torch.manual_seed(0)
    cfg = HubertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
        conv_dim=[c[0] for c in conv], conv_kernel=[c[1] for c in conv], conv_stride=[c[2] for c in conv],
        conv_bias=model_cfg["conv_bias"], feat_extract_norm="group" if model_cfg["extractor_mode"] == "default"
        else "layer", do_stable_layer_norm=model_cfg["layer_norm_first"], num_conv_pos_embeddings=8,
        num_conv_pos_embedding_groups=4)
    model = HubertModel(cfg).eval()
    with torch.no_grad():  # make norms and biases non-trivial so a wrong mapping shows
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model


def _to_fairseq_names(hf_state, layer_norm_mode):
    """Inverse of the converter's mapping, written independently as fairseq names its parameters."""
    layer_map = {"attention.q_proj": "self_attn.q_proj", "attention.k_proj": "self_attn.k_proj",
                 "attention.v_proj": "self_attn.v_proj", "attention.out_proj": "self_attn.out_proj",
                 "layer_norm": "self_attn_layer_norm", "feed_forward.intermediate_dense": "fc1",
                 "feed_forward.output_dense": "fc2", "final_layer_norm": "final_layer_norm"}
    out = {}
    for k, v in hf_state.items():
        if k == "masked_spec_embed":
            name = "mask_emb"
        elif k.startswith("feature_projection.layer_norm."):
            name = "layer_norm." + k.rsplit(".", 1)[1]
        elif k.startswith("feature_projection.projection."):
            name = "post_extract_proj." + k.rsplit(".", 1)[1]
        elif k.startswith("encoder.pos_conv_embed.conv."):
            name = {"bias": "encoder.pos_conv.0.bias", "parametrizations.weight.original0": "encoder.pos_conv.0.weight_g",
                    "parametrizations.weight.original1": "encoder.pos_conv.0.weight_v"}[k[len("encoder.pos_conv_embed.conv."):]]
        elif (m := re.fullmatch(r"feature_extractor\.conv_layers\.(\d+)\.(conv|layer_norm)\.(weight|bias)", k)):
            part = "0" if m.group(2) == "conv" else ("2.1" if layer_norm_mode else "2")
            name = f"feature_extractor.conv_layers.{m.group(1)}.{part}.{m.group(3)}"
        elif (m := re.fullmatch(r"encoder\.layers\.(\d+)\.(.+)\.(weight|bias)", k)):
            name = f"encoder.layers.{m.group(1)}.{layer_map[m.group(2)]}.{m.group(3)}"
        else:
            name = k  # encoder.layer_norm.*
        out[name] = v.clone()
    out["label_embs_concat"] = torch.randn(10, 8)  # pre-training heads the converter must drop
    out["final_proj.weight"] = torch.randn(8, 32)
    out["final_proj.bias"] = torch.randn(8)
    return out


def _fairseq_forward(sd, cfg, wav, layers):
    """What fairseq's HubertModel.extract_features computes (post-LN, 'default' extractor), written out."""
    x = wav[None, None]
    for i, (dim, _, stride) in enumerate(parse_conv_layers(cfg["conv_feature_layers"])):
        x = F.conv1d(x, sd[f"feature_extractor.conv_layers.{i}.0.weight"], stride=stride)
        if i == 0:
            x = F.group_norm(x, dim, sd["feature_extractor.conv_layers.0.2.weight"],
                             sd["feature_extractor.conv_layers.0.2.bias"])
        x = F.gelu(x)
    x = x.transpose(1, 2)
    x = F.layer_norm(x, x.shape[-1:], sd["layer_norm.weight"], sd["layer_norm.bias"])
    x = F.linear(x, sd["post_extract_proj.weight"], sd["post_extract_proj.bias"])
    w = torch._weight_norm(sd["encoder.pos_conv.0.weight_v"], sd["encoder.pos_conv.0.weight_g"], 2)
    pos = F.conv1d(x.transpose(1, 2), w, sd["encoder.pos_conv.0.bias"], padding=cfg["conv_pos"] // 2,
                   groups=cfg["conv_pos_groups"])[..., :-1]  # even kernel: SamePad drops one frame
    x = x + F.gelu(pos).transpose(1, 2)
    x = F.layer_norm(x, x.shape[-1:], sd["encoder.layer_norm.weight"], sd["encoder.layer_norm.bias"])
    heads = cfg["encoder_attention_heads"]
    for n in range(layers):
        p = lambda name: (sd[f"encoder.layers.{n}.{name}.weight"], sd[f"encoder.layers.{n}.{name}.bias"])  # noqa
        split = lambda t: t.view(1, -1, heads, t.shape[-1] // heads).transpose(1, 2)  # noqa
        q, k, v = (split(F.linear(x, *p(f"self_attn.{c}_proj"))) for c in "qkv")
        att = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, -1) @ v
        x = x + F.linear(att.transpose(1, 2).reshape(x.shape), *p("self_attn.out_proj"))
        x = F.layer_norm(x, x.shape[-1:], *p("self_attn_layer_norm"))
        x = x + F.linear(F.gelu(F.linear(x, *p("fc1"))), *p("fc2"))
        x = F.layer_norm(x, x.shape[-1:], *p("final_layer_norm"))
    return x[0]


@pytest.mark.parametrize("style", ["cfg", "args"])
def test_converter_parity(tmp_path, style):
    if style == "cfg":  # hydra-era fairseq: nested dicts, post-LN, GroupNorm extractor (HuBERT-base layout)
        mcfg = _fairseq_model_cfg()
        ckpt = {"cfg": {"model": mcfg, "task": {"normalize": False, "sample_rate": 16000}}}
    else:  # older fairseq: one argparse.Namespace; pre-LN, LayerNorm extractor, conv bias (HuBERT-large layout)
        mcfg = _fairseq_model_cfg(layer_norm_first=True, extractor_mode="layer_norm", conv_bias=True)
        ckpt = {"args": argparse.Namespace(**mcfg, normalize=True, sample_rate=16000)}
    ref = _hf_model(mcfg)
    fairseq_sd = _to_fairseq_names(ref.state_dict(), mcfg["extractor_mode"] == "layer_norm")
    ckpt.update(model=fairseq_sd, optimizer_history=[{"lr": [0.1]}], extra_state={"epoch": 3})
    torch.save(ckpt, tmp_path / "ckpt.pt")

    out = convert_fairseq_hubert(tmp_path / "ckpt.pt", tmp_path / "hf")
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    converted = HubertModel.from_pretrained(out).eval()
    wav = torch.randn(1, 4000)
    with torch.no_grad():
        want, got = ref(wav).last_hidden_state, converted(wav).last_hidden_state
    assert got.shape == want.shape
    assert (got - want).abs().max().item() <= 1e-4
    assert '"do_normalize": ' + ("true" if style == "args" else "false") in (out / "preprocessor_config.json").read_text()
    if style == "cfg":  # independent check of fairseq's post-LN semantics
        with torch.no_grad():
            fs = _fairseq_forward(fairseq_sd, mcfg, wav[0], layers=2)
        assert (fs - got[0]).abs().max().item() <= 1e-4


class _Custom:
    def __init__(self):
        self.x = 1


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("payload", ["custom", "evil"])
def test_refuses_foreign_objects(tmp_path, payload):
    marker = tmp_path / "pwned"
    obj = _Custom() if payload == "custom" else _Evil(marker)
    torch.save({"cfg": {"model": {}, "task": {}}, "model": {}, "extra_state": obj}, tmp_path / "bad.pt")
    with pytest.raises(UnsafePickleError) as err:
        convert_fairseq_hubert(tmp_path / "bad.pt", tmp_path / "out")
    assert ("_Custom" if payload == "custom" else "system") in str(err.value)
    assert "bad.pt" in str(err.value)
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_parse_conv_layers_is_not_eval():
    assert parse_conv_layers("[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2")[-1] == (512, 2, 2)
    assert len(parse_conv_layers("[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 3")) == 8
    with pytest.raises(ConversionError):
        parse_conv_layers("__import__('os').system('true')")


def test_cli_reports_missing_weights(tmp_path, capsys):
    mcfg = _fairseq_model_cfg()
    sd = _to_fairseq_names(_hf_model(mcfg).state_dict(), False)
    del sd["encoder.layers.1.fc1.weight"]
    torch.save({"cfg": {"model": mcfg, "task": {}}, "model": sd}, tmp_path / "c.pt")
    with pytest.raises(SystemExit) as ex:
        main([str(tmp_path / "c.pt"), str(tmp_path / "hf")])
    assert ex.value.code == 2
    assert "encoder.layers.1.feed_forward.intermediate_dense.weight" in capsys.readouterr().err
    assert not (tmp_path / "hf").exists()
