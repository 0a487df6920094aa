"""Convert a DeepSeek-V2 / V2-Lite checkpoint directory into a MoST checkpoint directory.

Accepts both on-disk layouts of DeepSeek-V2 weights: the original remote-code names (one tensor per expert,
``mlp.experts.{i}.{gate,up,down}_proj.weight``; config with ``rope_scaling``) and transformers' (the same
per-expert names when saved by ``save_pretrained``; fused ``mlp.experts.gate_up_proj`` / ``down_proj`` when
written from memory). The output always uses the per-expert names, which transformers' DeepSeek conversion
mapping (registered for MoST in :mod:`most_speech.models`) fuses at load time.

Every inherited tensor is copied bit-exact (same dtype, same values); only the embedding and LM-head rows that
the token layout adds beyond the source vocabulary are new. The output is written into a temporary folder and
moved into place at the end, so an interrupted conversion never leaves a half-written ``DST``.

Examples
--------
>>> convert_deepseek("DeepSeek-V2-Lite", "most-v2-lite")          # doctest: +SKIP
$ most-convert-deepseek DeepSeek-V2-Lite most-v2-lite --split half --num-units 500
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from ..text.token_layout import TokenLayout, deepseek_layout
from .configuration import MoSTConfig

log = logging.getLogger(__name__)

_DROP_CONFIG_KEYS = {"auto_map", "architectures", "model_type", "transformers_version", "_name_or_path",
                     "torch_dtype", "dtype", "quantization_config"}
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                    "generation_config.json")
_FUSED_GATE_UP = re.compile(r"^(.*\.mlp\.experts)\.gate_up_proj$")
_FUSED_DOWN = re.compile(r"^(.*\.mlp\.experts)\.down_proj$")
_VOCAB_TENSORS = ("model.embed_tokens.weight", "lm_head.weight")


def _source_files(src: Path) -> List[Path]:
    """The safetensors files of a checkpoint directory (from its index when there is one)."""
    index = src / "model.safetensors.index.json"
    if index.exists():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = sorted(p.name for p in src.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{src}: no *.safetensors weights (PyTorch .bin checkpoints are not read: they "
                                f"execute pickled code; convert them to safetensors first)")
    return [src / name for name in files]


def _source_tensors(files: List[Path]) -> Iterator[Tuple[str, torch.Tensor]]:
    """Yield (name, tensor) one at a time, so memory holds one tensor of the source at once."""
    for path in files:
        with safe_open(str(path), framework="pt") as handle:
            for key in handle.keys():
                yield key, handle.get_tensor(key)


def mamoe_config_from_deepseek(src_config: dict, layout: TokenLayout, expert_groups: Optional[Dict[str, List[int]]],
                               use_modality_aware_routing: bool = True) -> MoSTConfig:
    """Build a :class:`MoSTConfig` from a DeepSeek-V2 ``config.json`` dict and a token layout."""
    model_type = src_config.get("model_type")
    if model_type not in ("deepseek_v2", "most"):
        raise ValueError(f"config.json has model_type={model_type!r}; expected 'deepseek_v2'")
    kw = {k: v for k, v in src_config.items() if k not in _DROP_CONFIG_KEYS}
    if kw.get("num_experts_per_tok") is None:
        raise ValueError("config.json lacks num_experts_per_tok")
    kw.update(vocab_size=layout.vocab_size, token_layout=layout.to_dict(), bos_token_id=layout.bos_id,
              eos_token_id=layout.eos_id, pad_token_id=layout.pad_id,
              use_modality_aware_routing=use_modality_aware_routing)
    if expert_groups is not None:
        kw["modality_expert_groups"] = expert_groups
    kw.pop("text_expert_indices", None)
    kw.pop("audio_expert_indices", None)
    return MoSTConfig(**kw)


def expert_partition(n_experts: int, split: str = "half") -> Dict[str, List[int]]:
    """Expert groups by a named rule: ``half`` (MoST: first half text, second half audio) or ``interleave``."""
    if split == "half":
        h = n_experts // 2
        return {"text": list(range(h)), "audio": list(range(h, n_experts))}
    if split == "interleave":
        return {"text": list(range(0, n_experts, 2)), "audio": list(range(1, n_experts, 2))}
    raise ValueError(f"unknown expert split {split!r}; use 'half' or 'interleave' or pass --groups JSON")


def _resize_rows(weight: torch.Tensor, new_rows: int, init: str, generator: torch.Generator) -> torch.Tensor:
    """Grow a [V, H] matrix to [new_rows, H]; inherited rows stay bit-exact, new rows by ``init``."""
    old = weight.shape[0]
    if new_rows < old:
        raise ValueError(f"the token layout has {new_rows} ids but the source vocabulary has {old}: a layout may only "
                         f"add rows")
    if new_rows == old:
        return weight
    extra_shape = (new_rows - old, weight.shape[1])
    if init == "mean":
        mean = weight.float().mean(0)
        std = weight.float().std(0)
        extra = mean + 0.1 * std * torch.randn(extra_shape, generator=generator)
    elif init == "normal":
        extra = torch.randn(extra_shape, generator=generator) * 0.02
    else:
        raise ValueError(f"unknown new-row init {init!r}; use 'mean' or 'normal'")
    return torch.cat([weight, extra.to(weight.dtype)], 0)


def _converted(name: str, tensor: torch.Tensor, vocab: int, init: str, gen: torch.Generator):
    """Map one source tensor to one or more output tensors."""
    m = _FUSED_GATE_UP.match(name)
    if m:
        inter = tensor.shape[1] // 2
        for i in range(tensor.shape[0]):
            yield f"{m.group(1)}.{i}.gate_proj.weight", tensor[i, :inter].contiguous()
            yield f"{m.group(1)}.{i}.up_proj.weight", tensor[i, inter:].contiguous()
        return
    m = _FUSED_DOWN.match(name)
    if m and tensor.dim() == 3:
        for i in range(tensor.shape[0]):
            yield f"{m.group(1)}.{i}.down_proj.weight", tensor[i].contiguous()
        return
    if name in _VOCAB_TENSORS:
        tensor = _resize_rows(tensor, vocab, init, gen)
    yield name, tensor


def convert_deepseek(src, dst, *, layout: Optional[TokenLayout] = None, num_units: int = 500,
                     expert_groups: Optional[Dict[str, List[int]]] = None, split: str = "half",
                     use_modality_aware_routing: bool = True, new_row_init: str = "mean",
                     max_shard_bytes: int = 4 << 30, seed: int = 0, overwrite: bool = False) -> Path:
    """Convert DeepSeek-V2 checkpoint directory ``src`` into a MoST checkpoint directory ``dst``.

    Parameters
    ----------
    src, dst : path-like
        Source checkpoint (``config.json`` + safetensors) and the folder to create.
    layout : TokenLayout, optional
        Token layout of the MoST model; default :func:`deepseek_layout` (``num_units`` unit tokens).
    expert_groups : dict, optional
        Modality -> expert indices; default by ``split`` (``half``: MoST's first half text, second audio).
    use_modality_aware_routing : bool
        False gives a plain DeepSeek-V2 (useful for parity checks).
    new_row_init : {"mean", "normal"}
        Initialisation of embedding/LM-head rows that the layout adds beyond the source vocabulary.

    Returns
    -------
    Path
        ``dst``.
    """
    src, dst = Path(src), Path(dst)
    cfg_path = src / "config.json"
    if not cfg_path.exists():
        raise FileNotFoundError(f"{src}: no config.json (is this a DeepSeek-V2 checkpoint directory?)")
    if dst.exists() and not overwrite:
        raise FileExistsError(f"{dst} exists; pass overwrite=True (--overwrite) to replace it")
    src_config = json.loads(cfg_path.read_text())
    if layout is None:
        layout = deepseek_layout(num_units=num_units, vocab_size=max(102400, src_config.get("vocab_size", 0)))
    if expert_groups is None:
        expert_groups = expert_partition(src_config["n_routed_experts"], split)
    config = mamoe_config_from_deepseek(src_config, layout, expert_groups, use_modality_aware_routing)
    config.architectures = ["MoSTForCausalLM"]

    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.tmp-", dir=dst.parent))
    try:
        _write_weights(src, tmp, layout.vocab_size, new_row_init, max_shard_bytes, seed)
        config.save_pretrained(tmp)
        layout.save(tmp)
        for name in _TOKENIZER_FILES:
            if (src / name).exists():
                shutil.copy2(src / name, tmp / name)
        if dst.exists():
            shutil.rmtree(dst)
        os.replace(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote MoST checkpoint %s (expert groups %s)", dst, {k: len(v) for k, v in expert_groups.items()})
    return dst


def _write_weights(src: Path, out: Path, vocab: int, init: str, max_shard_bytes: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    shards: List[Dict[str, torch.Tensor]] = [{}]
    size = 0
    weight_map: Dict[str, str] = {}

    def flush():
        nonlocal size
        idx = len(shards)
        fname = f"model-{idx:05d}.safetensors"
        save_file(shards[-1], str(out / fname), metadata={"format": "pt"})
        weight_map.update({k: fname for k in shards[-1]})
        shards.append({})
        size = 0

    files = _source_files(src)
    total = 0
    for path in files:
        with safe_open(str(path), framework="pt") as handle:
            total += len(handle.keys())
    for key, tensor in tqdm(_source_tensors(files), total=total, desc="convert", unit="tensor", leave=False):
        for name, t in _converted(key, tensor, vocab, init, gen):
            if name in weight_map or name in shards[-1]:
                raise ValueError(f"{src}: tensor {name} appears twice (mixed fused and per-expert layouts?)")
            nbytes = t.numel() * t.element_size()
            if shards[-1] and size + nbytes > max_shard_bytes:
                flush()
            shards[-1][name] = t
            size += nbytes
    if shards[-1]:
        flush()
    n = len(shards) - 1
    renamed = {}
    for i in range(1, n + 1):
        final = "model.safetensors" if n == 1 else f"model-{i:05d}-of-{n:05d}.safetensors"
        os.replace(out / f"model-{i:05d}.safetensors", out / final)
        renamed[f"model-{i:05d}.safetensors"] = final
    if n > 1:
        index = {"metadata": {}, "weight_map": {k: renamed[v] for k, v in sorted(weight_map.items())}}
        (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def main(argv=None) -> None:
    """``most-convert-deepseek SRC DST``: DeepSeek-V2 checkpoint -> MoST checkpoint."""
    p = argparse.ArgumentParser(prog="most-convert-deepseek", description=__doc__.split("\n")[0])
    p.add_argument("src", help="DeepSeek-V2 checkpoint directory (config.json + *.safetensors)")
    p.add_argument("dst", help="MoST checkpoint directory to create")
    p.add_argument("--split", default="half", help="expert partition: half (MoST) or interleave")
    p.add_argument("--groups", help='explicit groups as JSON, e.g. \'{"text": [0,1], "audio": [2,3]}\'')
    p.add_argument("--num-units", type=int, default=500, help="unit tokens in the default DeepSeek layout")
    p.add_argument("--layout", help="token_layout.json to use instead of the DeepSeek layout")
    p.add_argument("--no-modality-routing", action="store_true", help="plain DeepSeek-V2 routing")
    p.add_argument("--new-row-init", default="mean", choices=["mean", "normal"])
    p.add_argument("--overwrite", action="store_true")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    layout = TokenLayout.load(a.layout) if a.layout else None
    groups = json.loads(a.groups) if a.groups else None
    convert_deepseek(a.src, a.dst, layout=layout, num_units=a.num_units, expert_groups=groups, split=a.split,
                     use_modality_aware_routing=not a.no_modality_routing, new_row_init=a.new_row_init,
                     overwrite=a.overwrite)
    print(f"wrote {a.dst}")


if __name__ == "__main__":
    main()
