"""Frozen HuBERT feature encoder on transformers' ``HubertModel``.

Layer semantics (the same as ``HubertModel(..., output_hidden_states=True).hidden_states[L]`` and fairseq's
``extract_features(output_layer=L)``):

* ``layer=L`` (1..num_hidden_layers) is the output of transformer layer L. For pre-LN models
  (``do_stable_layer_norm``) this is *before* the encoder's final LayerNorm, as in both references.
* ``layer=0`` is the transformer input: projected CNN features plus the convolutional positional embedding
  (followed by the encoder LayerNorm in post-LN models such as HuBERT-base).

MoST uses the last layer of mHuBERT-25Hz for continuous input and layer 11 for k-means units; fairseq's
reference units for HuBERT-base use layer 9. Layers above ``layer`` are dropped at construction (they never run).

Batching is exact: a padded batch gives the same frames as encoding each utterance alone. HuBERT-base's first CNN
layer uses GroupNorm over time, so for ``feat_extract_norm="group"`` models the CNN runs per utterance on the
unpadded waveform and only the transformer is batched (with a padding mask). Recordings longer than
``chunk_seconds`` are encoded in windows of ``chunk_seconds`` plus ``context_seconds`` on each side, aligned to
the frame grid, keeping each window's central frames; the frame count equals that of one pass.

Checking against fairseq: ``shared/data/hubert_reference`` holds fairseq's HuBERT-base layer-9 features and km500
units for one utterance. With real weights converted by ``most-convert-hubert hubert_base_ls960.pt DIR``, run
``MOST_HUBERT_BASE_DIR=DIR [MOST_HUBERT_KM500=hubert_base_ls960_L9_km500.bin] pytest -m slow
tests/unit/test_hubert_encoder.py``.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch
from torch import nn
from transformers import HubertConfig, HubertModel

from most_speech.audio.frontends import SAMPLE_RATE, split_batch

logger = logging.getLogger(__name__)

_BASE_KERNELS = (10, 3, 3, 3, 3, 2, 2)
_BASE_STRIDES = (5, 2, 2, 2, 2, 2, 2)


def hubert_base_config(**overrides) -> HubertConfig:
    """HuBERT-base (fairseq ``hubert_base_ls960``): 12 layers, 768-d, conv stride 320, 50 frames/s.

    Examples
    --------
    >>> cfg = hubert_base_config()
    >>> cfg.hidden_size, sum(1 for _ in cfg.conv_stride)
    (768, 7)
    """
    kw = dict(
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
        conv_dim=(512,) * 7, conv_kernel=_BASE_KERNELS, conv_stride=_BASE_STRIDES, conv_bias=False,
        feat_extract_norm="group", do_stable_layer_norm=False, num_conv_pos_embeddings=128,
        num_conv_pos_embedding_groups=16,
    )
    kw.update(overrides)
    return HubertConfig(**kw)


def mhubert_25hz_config(**overrides) -> HubertConfig:
    """mHuBERT-base 25 Hz (MoST / Spirit LM speech encoder): HuBERT-base with one more (2, 2) conv layer.

    Total stride 640 samples, 25 frames/s at 16 kHz.

    Examples
    --------
    >>> list(mhubert_25hz_config().conv_stride)
    [5, 2, 2, 2, 2, 2, 2, 2]
    """
    kw = dict(conv_dim=(512,) * 8, conv_kernel=_BASE_KERNELS + (2,), conv_stride=_BASE_STRIDES + (2,))
    kw.update(overrides)
    return hubert_base_config(**kw)


def tiny_hubert_config(frame_rate: int = 50, **overrides) -> HubertConfig:
    """A tiny random-weight HuBERT for tests with the real conv strides (50 or 25 frames/s).

    Examples
    --------
    >>> tiny_hubert_config(25).hidden_size
    32
    """
    if frame_rate not in (50, 25):
        raise ValueError(f"tiny_hubert_config: frame_rate must be 50 or 25, got {frame_rate}")
    base = mhubert_25hz_config() if frame_rate == 25 else hubert_base_config()
    kw = dict(
        hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
        conv_dim=(16,) * len(base.conv_stride), conv_kernel=tuple(base.conv_kernel),
        conv_stride=tuple(base.conv_stride), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
    )
    kw.update(overrides)
    return hubert_base_config(**kw)


def conv_frames(num_samples, kernels, strides):
    """Frames produced by a stack of unpadded 1-D convolutions (int or LongTensor input).

    Examples
    --------
    >>> conv_frames(16000, (10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2))
    49
    """
    n = num_samples
    for k, s in zip(kernels, strides):
        n = (n - k) // s + 1
    if isinstance(n, torch.Tensor):
        return n.clamp(min=0)
    return max(int(n), 0)


class HubertEncoder(nn.Module):
    """Frozen HuBERT returning one layer's features for a padded batch of waveforms.

    Parameters
    ----------
    model : HubertModel or HubertConfig
        A config builds a randomly initialised model (tests, benchmarks).
    layer : int, optional
        Which hidden state to return (see module docstring); default the last layer.
    chunk_seconds : float or None
        Longer recordings are encoded in windows of this length (None: never chunk).
    context_seconds : float
        Extra audio on each side of a window, dropped from its output.
    normalize_waveform : bool
        Zero-mean unit-variance each waveform first (fairseq ``task.normalize``; HuBERT-large/xlarge).

    Examples
    --------
    >>> enc = HubertEncoder(tiny_hubert_config(25), layer=2)
    >>> feats, lens = enc(torch.randn(2, 16000), torch.tensor([16000, 8000]))
    >>> feats.shape, lens.tolist(), enc.frame_rate
    (torch.Size([2, 24, 32]), [24, 12], 25.0)
    """

    def __init__(self, model, layer: int | None = None, chunk_seconds: float | None = 60.0,
                 context_seconds: float = 2.0, normalize_waveform: bool = False):
        super().__init__()
        if isinstance(model, HubertConfig):
            model = HubertModel(model)
        cfg = model.config
        self.layer = cfg.num_hidden_layers if layer is None else int(layer)
        if not 0 <= self.layer <= cfg.num_hidden_layers:
            raise ValueError(f"HuBERT layer must be in 0..{cfg.num_hidden_layers}, got {layer}")
        model.encoder.layers = model.encoder.layers[: self.layer]
        if cfg.do_stable_layer_norm:
            model.encoder.layer_norm = nn.Identity()  # hidden_states[L] is taken before the final LayerNorm
        model.config.layerdrop = 0.0
        self.model = model.requires_grad_(False)
        self.kernels, self.strides = tuple(cfg.conv_kernel), tuple(cfg.conv_stride)
        self.per_utterance_cnn = cfg.feat_extract_norm == "group"
        self.chunk_seconds, self.context_seconds = chunk_seconds, context_seconds
        self.normalize_waveform = normalize_waveform
        self.sample_rate = SAMPLE_RATE
        super().train(False)

    @classmethod
    def from_pretrained(cls, model_dir: str | os.PathLike, layer: int | None = None, **kwargs) -> "HubertEncoder":
        """Load a transformers HuBERT directory (e.g. written by ``most-convert-hubert``).

        ``do_normalize`` from a ``preprocessor_config.json`` next to the weights sets ``normalize_waveform``
        unless given explicitly.

        Examples
        --------
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> HubertModel(tiny_hubert_config()).save_pretrained(d)
        >>> HubertEncoder.from_pretrained(d, layer=1).dim
        32
        """
        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise FileNotFoundError(f"{model_dir} is not a HuBERT model directory (no config.json)")
        pre = model_dir / "preprocessor_config.json"
        if "normalize_waveform" not in kwargs and pre.is_file():
            kwargs["normalize_waveform"] = bool(json.loads(pre.read_text()).get("do_normalize", False))
        model = HubertModel.from_pretrained(str(model_dir))
        logger.info("loaded HuBERT from %s (layer %s)", model_dir, layer)
        return cls(model, layer=layer, **kwargs)

    def train(self, mode: bool = True) -> "HubertEncoder":
        """Stay in eval mode whatever a parent module asks (the encoder is frozen)."""
        return super().train(False)

    @property
    def stride(self) -> int:
        """Samples between successive frames."""
        out = 1
        for s in self.strides:
            out *= s
        return out

    @property
    def receptive_field(self) -> int:
        """Samples seen by one CNN frame."""
        field, jump = 1, 1
        for k, s in zip(self.kernels, self.strides):
            field += (k - 1) * jump
            jump *= s
        return field

    @property
    def frame_rate(self) -> float:
        """Frames per second at 16 kHz."""
        return self.sample_rate / self.stride

    @property
    def dim(self) -> int:
        """Feature dimension."""
        return self.model.config.hidden_size

    def frames_for(self, num_samples):
        """Number of frames for ``num_samples`` samples (int or LongTensor)."""
        return conv_frames(num_samples, self.kernels, self.strides)

    @torch.no_grad()
    def forward(self, wavs, wav_lengths=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode a batch.

        Parameters
        ----------
        wavs : torch.Tensor or list of torch.Tensor
            ``[B, T]`` zero-padded 16 kHz waveforms, or a list of ``[T_i]``.
        wav_lengths : torch.Tensor, optional
            ``[B]`` valid samples per row (default: all of ``T``).

        Returns
        -------
        feats : torch.Tensor
            ``[B, T', dim]`` float32, zero beyond each row's length.
        feat_lengths : torch.Tensor
            ``[B]`` long.
        """
        items = split_batch(wavs, wav_lengths)
        device = next(self.model.parameters()).device
        items = [w.to(device=device, dtype=torch.float32) for w in items]
        for i, w in enumerate(items):
            if self.frames_for(w.shape[0]) < 1:
                raise ValueError(
                    f"waveform {i} has {w.shape[0]} samples, fewer than one HuBERT frame ({self.receptive_field})"
                )
        if self.normalize_waveform:
            items = [torch.nn.functional.layer_norm(w, w.shape) for w in items]
        limit = None if self.chunk_seconds is None else int(self.chunk_seconds * self.sample_rate)
        short = [i for i, w in enumerate(items) if limit is None or w.shape[0] <= limit]
        outputs: list[torch.Tensor | None] = [None] * len(items)
        if short:
            feats, lens = self._encode([items[i] for i in short])
            for j, i in enumerate(short):
                outputs[i] = feats[j, : lens[j]]
        for i, w in enumerate(items):
            if outputs[i] is None:
                outputs[i] = self._encode_chunked(w)
        lengths = torch.tensor([o.shape[0] for o in outputs], dtype=torch.long)
        return nn.utils.rnn.pad_sequence(outputs, batch_first=True), lengths

    def _encode(self, items: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """One batched pass over unnormalised, unchunked waveforms."""
        wav_lens = torch.tensor([w.shape[0] for w in items])
        lens = self.frames_for(wav_lens)
        cnn = self.model.feature_extractor
        if self.per_utterance_cnn or len(items) == 1:
            conv = [cnn(w[None])[0].T for w in items]  # [t_i, C]
            x = nn.utils.rnn.pad_sequence(conv, batch_first=True)
        else:
            x = cnn(nn.utils.rnn.pad_sequence(items, batch_first=True)).transpose(1, 2)
        x = x[:, : int(lens.max())]
        x = self.model.feature_projection(x)
        mask = None
        if bool((lens != lens.max()).any()):
            mask = torch.arange(x.shape[1], device=x.device)[None] < lens.to(x.device)[:, None]
        out = self.model.encoder(x, attention_mask=mask).last_hidden_state
        if mask is not None:
            out = out.masked_fill(~mask[..., None], 0.0)
        return out, lens

    def _encode_chunked(self, wav: torch.Tensor) -> torch.Tensor:
        """Windows aligned to the frame grid (window start = first frame x stride) with context on both sides."""
        total = self.frames_for(wav.shape[0])
        core = max(1, int(self.chunk_seconds * self.frame_rate))
        ctx = int(self.context_seconds * self.frame_rate)
        windows, spans = [], []
        for f0 in range(0, total, core):
            f1 = min(total, f0 + core)
            a, b = max(0, f0 - ctx), min(total, f1 + ctx)
            windows.append(wav[a * self.stride: (b - 1) * self.stride + self.receptive_field])
            spans.append((f0 - a, f1 - a))
        logger.debug("encoding %d samples in %d windows", wav.shape[0], len(windows))
        pieces = []
        for start in range(0, len(windows), 4):  # a few windows per pass bounds memory
            feats, _ = self._encode(windows[start: start + 4])
            pieces += [feats[j, s0:s1] for j, (s0, s1) in enumerate(spans[start: start + 4])]
        out = torch.cat(pieces)
        assert out.shape[0] == total, (out.shape, total)
        return out
