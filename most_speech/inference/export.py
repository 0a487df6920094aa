"""The export folder: everything inference needs, in one directory, loaded without pickles.

Layout::

    export/
      most.json          what the pieces are: speech input mode, km_tag, unit rate, encoder, prompts
      model/             MoSTForCausalLM.save_pretrained (config.json + model.safetensors)
      tokenizer/         MoSTTokenizer.save (tokenizer + token_layout.json)
      vocoder/           optional: a saved unit vocoder (its own config.json, km_tag inside)
      encoder/           optional: a transformers HuBERT directory (continuous input or units from audio)
      kmeans.safetensors optional: centroids for unit input (speech_input = "units")

An experiment folder of ``train.py`` is turned into this by the recipes' export stage.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

MANIFEST = "most.json"


@dataclass
class ExportInfo:
    """Contents of ``most.json``."""

    speech_input: str = "continuous"
    km_tag: Optional[str] = None
    unit_rate: float = 50.0
    encoder: dict = field(default_factory=lambda: {"kind": "fbank"})
    template: dict = field(default_factory=dict)
    has_vocoder: bool = False
    has_kmeans: bool = False

    @classmethod
    def load(cls, directory) -> "ExportInfo":
        path = Path(directory) / MANIFEST
        if not path.is_file():
            raise FileNotFoundError(f"{directory} is not a most_speech export (no {MANIFEST}); make one with "
                                    f"most_speech.inference.export.export_model or the recipe's export stage")
        data = json.loads(path.read_text())
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"{path}: unknown fields {sorted(unknown)}")
        return cls(**data)


def export_model(out_dir, model, tokenizer, *, info: ExportInfo, vocoder=None, encoder_dir=None,
                 kmeans=None, overwrite: bool = False) -> Path:
    """Write an export folder (atomically: into a temporary folder, then renamed).

    Parameters
    ----------
    model : MoSTForCausalLM
    tokenizer : MoSTTokenizer
    info : ExportInfo
    vocoder : UnitVocoder, optional
    encoder_dir : path, optional
        An encoder directory to copy (HuBERT or phonetic encoder: ``encoder.kind`` "hubert" or "phonetic").
    kmeans : KMeansQuantizer, optional

    Examples
    --------
    >>> export_model("exp/export", model, tokenizer, info=ExportInfo(km_tag=km.km_tag), vocoder=voc)  # doctest: +SKIP
    """
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        model.save_pretrained(tmp / "model")
        tokenizer.save(tmp / "tokenizer")
        info = ExportInfo(**asdict(info))
        if vocoder is not None:
            vocoder.save(tmp / "vocoder")
            info.has_vocoder = True
        if encoder_dir is not None:
            shutil.copytree(encoder_dir, tmp / "encoder")
            info.encoder = dict(info.encoder, model_dir="encoder")
        if kmeans is not None:
            kmeans.save(tmp / "kmeans.safetensors")
            info.has_kmeans = True
        (tmp / MANIFEST).write_text(json.dumps(asdict(info), indent=2))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
