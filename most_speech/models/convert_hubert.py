"""Convert a fairseq HuBERT checkpoint into a transformers ``HubertModel`` directory.

``most-convert-hubert SRC.pt DST_DIR`` writes ``config.json``, ``model.safetensors`` and
``preprocessor_config.json`` (``do_normalize`` from fairseq's ``task.normalize``). fairseq is not imported and the
checkpoint is loaded with ``torch.load(weights_only=True)``, allowing only ``argparse.Namespace`` besides tensors
and plain values, so no pickled code runs. Pre-training checkpoints (fairseq ``HubertModel``) are supported;
fine-tuned CTC checkpoints (``w2v_encoder.*`` keys) are refused with a clear message.

transformers ships its own converter, but it imports fairseq and unpickles the checkpoint unrestricted; this
one does neither.
"""
from __future__ import annotations

import argparse
import ast
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

from most_speech.audio.safe_load import safe_torch_load

logger = logging.getLogger(__name__)

DEFAULT_CONV_LAYERS = "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2"
#: fairseq keys with no counterpart in ``HubertModel`` (pre-training heads).
DROPPED_PREFIXES = ("label_embs_concat", "final_proj", "label_embs", "untie_final_proj")
_FINETUNED_PREFIX = "w2v_encoder."

# Per-layer renames: fairseq suffix -> transformers suffix.
_LAYER_RENAMES = {
    "self_attn.q_proj": "attention.q_proj",
    "self_attn.k_proj": "attention.k_proj",
    "self_attn.v_proj": "attention.v_proj",
    "self_attn.out_proj": "attention.out_proj",
    "self_attn_layer_norm": "layer_norm",
    "fc1": "feed_forward.intermediate_dense",
    "fc2": "feed_forward.output_dense",
    "final_layer_norm": "final_layer_norm",
}
_FIXED_RENAMES = {
    "mask_emb": "masked_spec_embed",
    "layer_norm.weight": "feature_projection.layer_norm.weight",
    "layer_norm.bias": "feature_projection.layer_norm.bias",
    "post_extract_proj.weight": "feature_projection.projection.weight",
    "post_extract_proj.bias": "feature_projection.projection.bias",
    "encoder.layer_norm.weight": "encoder.layer_norm.weight",
    "encoder.layer_norm.bias": "encoder.layer_norm.bias",
    "encoder.pos_conv.0.bias": "encoder.pos_conv_embed.conv.bias",
    "encoder.pos_conv.0.weight_g": "encoder.pos_conv_embed.conv.parametrizations.weight.original0",
    "encoder.pos_conv.0.weight_v": "encoder.pos_conv_embed.conv.parametrizations.weight.original1",
    # fairseq run under torch's newer weight_norm parametrization
    "encoder.pos_conv.0.parametrizations.weight.original0":
        "encoder.pos_conv_embed.conv.parametrizations.weight.original0",
    "encoder.pos_conv.0.parametrizations.weight.original1":
        "encoder.pos_conv_embed.conv.parametrizations.weight.original1",
}


class ConversionError(ValueError):
    """The checkpoint is not a usable fairseq HuBERT checkpoint."""


def parse_conv_layers(spec: str) -> list[tuple[int, int, int]]:
    """Parse fairseq's ``conv_feature_layers`` string without ``eval``.

    Only list/tuple literals of integers combined with ``+`` and ``* n`` are accepted.

    Examples
    --------
    >>> parse_conv_layers("[(512,10,5)] + [(512,3,2)] * 2")
    [(512, 10, 5), (512, 3, 2), (512, 3, 2)]
    """
    try:
        tree = ast.parse(spec.strip(), mode="eval").body
        layers = _eval_conv_node(tree)
    except (SyntaxError, ValueError, TypeError) as exc:
        raise ConversionError(f"cannot parse conv_feature_layers {spec!r}: {exc}") from exc
    if not layers or any(len(t) != 3 or not all(isinstance(v, int) for v in t) for t in layers):
        raise ConversionError(f"conv_feature_layers {spec!r} must be a list of (dim, kernel, stride) triples")
    return [tuple(t) for t in layers]


def _eval_conv_node(node):
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _eval_conv_node(node.left) + _eval_conv_node(node.right)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
        left, right = _eval_conv_node(node.left), _eval_conv_node(node.right)
        return left * right if isinstance(right, int) else right * left
    if isinstance(node, (ast.List, ast.Tuple, ast.Constant)):
        return ast.literal_eval(node)
    raise ValueError(f"unsupported expression {ast.dump(node)}")


def load_fairseq_checkpoint(src: str | os.PathLike) -> tuple[dict, dict, dict]:
    """Return ``(model_cfg, task_cfg, state_dict)`` from a fairseq checkpoint, loaded safely.

    Examples
    --------
    >>> import tempfile, torch
    >>> p = tempfile.mkdtemp() + "/c.pt"
    >>> torch.save({"cfg": {"model": {"encoder_layers": 2}, "task": {}}, "model": {}}, p)
    >>> load_fairseq_checkpoint(p)[0]
    {'encoder_layers': 2}
    """
    ckpt = safe_torch_load(src, allowed=[argparse.Namespace], what="fairseq checkpoint")
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise ConversionError(f"{src} is not a fairseq checkpoint: no 'model' state dict")
    cfg = ckpt.get("cfg")
    if isinstance(cfg, dict) and isinstance(cfg.get("model"), dict):
        model_cfg, task_cfg = cfg["model"], cfg.get("task") or {}
    elif isinstance(ckpt.get("args"), argparse.Namespace):
        model_cfg = task_cfg = vars(ckpt["args"])  # old fairseq: one flat namespace
    else:
        raise ConversionError(f"{src} has neither cfg['model'] (dict) nor args (argparse.Namespace)")
    state = ckpt["model"]
    if any(k.startswith(_FINETUNED_PREFIX) for k in state):
        raise ConversionError(f"{src} is a fine-tuned (CTC) HuBERT checkpoint; convert the pre-trained one")
    return dict(model_cfg), dict(task_cfg), dict(state)


def hubert_config_from_fairseq(model_cfg: dict) -> HubertConfig:
    """Map fairseq HuBERT model options to a ``HubertConfig``.

    Examples
    --------
    >>> hubert_config_from_fairseq({"encoder_layers": 2}).conv_stride
    [5, 2, 2, 2, 2, 2, 2]
    """
    conv = parse_conv_layers(model_cfg.get("conv_feature_layers") or DEFAULT_CONV_LAYERS)
    mode = model_cfg.get("extractor_mode", "default")
    if mode not in ("default", "layer_norm"):
        raise ConversionError(f"unsupported extractor_mode {mode!r} (expected 'default' or 'layer_norm')")
    return HubertConfig(
        hidden_size=model_cfg.get("encoder_embed_dim", 768),
        num_hidden_layers=model_cfg.get("encoder_layers", 12),
        num_attention_heads=model_cfg.get("encoder_attention_heads", 12),
        intermediate_size=model_cfg.get("encoder_ffn_embed_dim", 3072),
        hidden_act=model_cfg.get("activation_fn", "gelu"),
        conv_dim=[c[0] for c in conv], conv_kernel=[c[1] for c in conv], conv_stride=[c[2] for c in conv],
        conv_bias=bool(model_cfg.get("conv_bias", False)),
        feat_extract_norm="group" if mode == "default" else "layer",
        do_stable_layer_norm=bool(model_cfg.get("layer_norm_first", False)),
        num_conv_pos_embeddings=model_cfg.get("conv_pos", 128),
        num_conv_pos_embedding_groups=model_cfg.get("conv_pos_groups", 16),
        feat_proj_layer_norm=True,
        apply_spec_augment=False,
        layerdrop=0.0,
    )


def rename_fairseq_key(key: str, feat_extract_norm: str) -> str | None:
    """transformers name for one fairseq parameter name; None for dropped pre-training heads.

    Examples
    --------
    >>> rename_fairseq_key("encoder.layers.3.fc1.weight", "group")
    'encoder.layers.3.feed_forward.intermediate_dense.weight'
    >>> rename_fairseq_key("feature_extractor.conv_layers.0.2.weight", "group")
    'feature_extractor.conv_layers.0.layer_norm.weight'
    """
    if key.startswith(DROPPED_PREFIXES):
        return None
    if key in _FIXED_RENAMES:
        return _FIXED_RENAMES[key]
    m = re.fullmatch(r"encoder\.layers\.(\d+)\.(.+)\.(weight|bias)", key)
    if m and m.group(2) in _LAYER_RENAMES:
        return f"encoder.layers.{m.group(1)}.{_LAYER_RENAMES[m.group(2)]}.{m.group(3)}"
    m = re.fullmatch(r"feature_extractor\.conv_layers\.(\d+)\.(0|2|2\.1)\.(weight|bias)", key)
    if m:
        i, part, kind = m.groups()
        if part == "0":
            return f"feature_extractor.conv_layers.{i}.conv.{kind}"
        # "default" mode: GroupNorm at .2 of layer 0; "layer_norm" mode: LayerNorm at .2.1 of every layer
        if (part == "2" and feat_extract_norm == "group" and i == "0") or (
                part == "2.1" and feat_extract_norm == "layer"):
            return f"feature_extractor.conv_layers.{i}.layer_norm.{kind}"
    raise ConversionError(f"unexpected fairseq HuBERT parameter {key!r}")


def convert_state_dict(state: dict, config: HubertConfig) -> dict:
    """Rename a fairseq HuBERT state dict to ``HubertModel``'s names (pre-training heads dropped)."""
    out = {}
    for key, value in state.items():
        new = rename_fairseq_key(key, config.feat_extract_norm)
        if new is not None:
            out[new] = value
    return out


def convert_fairseq_hubert(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Convert ``src`` (fairseq ``.pt``) into a transformers directory ``dst``; return ``dst``.

    The directory appears complete or not at all (written to a temporary sibling, then renamed).

    Examples
    --------
    >>> convert_fairseq_hubert("hubert_base_ls960.pt", "exp/hubert_base")   # doctest: +SKIP
    """
    src, dst = Path(src), Path(dst)
    model_cfg, task_cfg, state = load_fairseq_checkpoint(src)
    config = hubert_config_from_fairseq(model_cfg)
    model = HubertModel(config)
    expected = model.state_dict()
    weights = convert_state_dict(state, config)
    missing = sorted(set(expected) - set(weights))
    if missing:
        raise ConversionError(f"{src}: no fairseq weights for {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    for name, tensor in weights.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise ConversionError(
                f"{src}: {name} has shape {tuple(tensor.shape)}, the config implies {tuple(expected[name].shape)}")
    model.load_state_dict(weights, strict=True)
    extractor = Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=int(task_cfg.get("sample_rate", 16000)), padding_value=0.0,
        do_normalize=bool(task_cfg.get("normalize", False)), return_attention_mask=config.feat_extract_norm == "layer")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        extractor.save_pretrained(tmp)
        if dst.exists():
            shutil.rmtree(dst)
        os.replace(tmp, dst)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    logger.info("converted %s -> %s (%d layers, dim %d)", src, dst, config.num_hidden_layers, config.hidden_size)
    return dst


def main(argv=None) -> int:
    """``most-convert-hubert SRC DST``: fairseq HuBERT checkpoint to a transformers directory."""
    parser = argparse.ArgumentParser(prog="most-convert-hubert", description=__doc__.splitlines()[0])
    parser.add_argument("src", help="fairseq checkpoint (e.g. hubert_base_ls960.pt, mhubert_base_25hz.pt)")
    parser.add_argument("dst", help="output directory (config.json + model.safetensors)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        convert_fairseq_hubert(args.src, args.dst)
    except (ValueError, FileNotFoundError) as exc:
        parser.exit(2, f"most-convert-hubert: error: {exc}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
