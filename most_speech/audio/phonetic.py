"""A small CTC-trained phonetic encoder: the HuBERT stand-in of a corpus without HuBERT weights.

MoST hears and speaks through a frozen HuBERT: its layer-``L`` frames are the model's continuous input
and, through k-means, its speech units. On a machine that cannot download HuBERT (the mini corpus on a
laptop) filterbank frames are a poor substitute for both jobs: their k-means units split one sound by
speaker and loudness, so a unit vocoder voices them unintelligibly and a text-to-unit LM cannot predict
them from text. What makes HuBERT's units useful is that they are phonetic. A few CPU minutes of CTC
training on the corpus's own transcripts buy that property directly (the bottleneck / phonetic-posteriorgram
features of voice-conversion work): :class:`PhoneticEncoder` reads 80-d Kaldi filterbanks, normalises them
per utterance, stacks ``frame_stack`` frames and runs a convolution + a few bidirectional Transformer
layers with a CTC head on top: characters, or phonemes of the transcripts from espeak-ng
(:mod:`most_speech.text.g2p`; English spelling is not what frames should encode, and on the mini corpus
phoneme targets give the MoST on top 38.9 % test WER against 43.2 % with characters). Frozen, it has
:class:`~most_speech.audio.hubert.HubertEncoder`'s interface (``(wavs, lengths) -> (feats, lengths)``,
``frame_rate``, ``dim``, ``frames_for``), so stages 3-11 and the export use it as they use HuBERT
(``build_encoder("phonetic", model_dir=..., layer=...)``).

Training is :func:`most_speech.audio.phonetic_fit.fit_phonetic_encoder` (``most-train-phonetic-encoder``).
Weights are safetensors, the settings ``config.json`` next to them.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from most_speech.audio.frontends import KaldiFrontend

logger = logging.getLogger(__name__)

CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"


@dataclass
class PhoneticEncoderConfig:
    """Settings of :class:`PhoneticEncoder`.

    ``vocab`` lists the CTC output symbols after the blank (index 0): characters, or espeak-ng phonemes with
    ``|`` between words when ``targets`` is ``"phonemes"`` (:mod:`most_speech.text.g2p`); ``layer`` is the
    hidden state the encoder returns (0: the input projection, ``num_layers``: the last Transformer layer).

    Examples
    --------
    >>> cfg = PhoneticEncoderConfig(vocab=list("ab "))
    >>> cfg.frame_rate, cfg.num_outputs
    (25.0, 4)
    """

    vocab: list = field(default_factory=list)
    num_mel_bins: int = 80
    frame_stack: int = 4
    hidden_size: int = 192
    num_layers: int = 3
    num_heads: int = 4
    ffn_size: int = 512
    conv_kernel: int = 5
    dropout: float = 0.1
    layer: int = 2
    targets: str = "chars"

    @property
    def frame_rate(self) -> float:
        """Output frames per second (Kaldi fbank is 100 frames/s)."""
        return 100.0 / self.frame_stack

    @property
    def num_outputs(self) -> int:
        """CTC classes: the blank plus ``vocab``."""
        return len(self.vocab) + 1


def stack_normalized(feats: torch.Tensor, lengths: torch.Tensor, frame_stack: int):
    """Per-utterance mean/variance normalisation of padded ``[B, T, D]`` frames, then ``frame_stack`` stacking.

    Returns ``(x [B, ceil(T / s), s * D], lengths [B])``; padded frames stay zero. The same transform as
    :func:`most_speech.audio.kmeans.prepare_frames` with ``"utterance"``, batched.

    Examples
    --------
    >>> x, n = stack_normalized(torch.randn(2, 10, 3), torch.tensor([10, 7]), 4)
    >>> x.shape, n.tolist()
    (torch.Size([2, 3, 12]), [3, 2])
    """
    batch, time, dim = feats.shape
    mask = (torch.arange(time, device=feats.device)[None] < lengths[:, None]).unsqueeze(-1).to(feats.dtype)
    count = mask.sum(1).clamp(min=1)
    mean = (feats * mask).sum(1, keepdim=True) / count[:, None]
    var = (((feats - mean) ** 2) * mask).sum(1, keepdim=True) / count[:, None]
    x = (feats - mean) / (var.sqrt() + 1e-5) * mask
    pad = (-time) % frame_stack
    x = torch.nn.functional.pad(x, (0, 0, 0, pad)).reshape(batch, -1, frame_stack * dim)
    return x, (lengths + frame_stack - 1) // frame_stack


class PhoneticEncoder(nn.Module):
    """Filterbank -> stacked frames -> conv + Transformer layers -> CTC over characters.

    Examples
    --------
    >>> enc = PhoneticEncoder(PhoneticEncoderConfig(vocab=list("ab "), hidden_size=32, num_heads=2,
    ...                                             ffn_size=64, num_layers=2, layer=1))
    >>> feats, lens = enc(torch.randn(2, 16000), torch.tensor([16000, 8000]))
    >>> feats.shape, lens.tolist(), enc.frame_rate, enc.dim
    (torch.Size([2, 25, 32]), [25, 12], 25.0, 32)
    """

    def __init__(self, config: PhoneticEncoderConfig):
        super().__init__()
        if not 0 <= config.layer <= config.num_layers:
            raise ValueError(f"layer must be in 0..{config.num_layers}, got {config.layer}")
        self.config = config
        h = config.hidden_size
        self.frontend = KaldiFrontend("fbank", num_bins=config.num_mel_bins)
        self.input_proj = nn.Linear(config.num_mel_bins * config.frame_stack, h)
        # depthwise convolution as relative position information (as wav2vec 2.0's positional convolution)
        self.pos_conv = nn.Conv1d(h, h, config.conv_kernel, padding=config.conv_kernel // 2, groups=h)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(h, config.num_heads, config.ffn_size, config.dropout, activation="gelu",
                                       batch_first=True, norm_first=True) for _ in range(config.num_layers))
        self.final_norm = nn.LayerNorm(h)
        self.ctc_head = nn.Linear(h, config.num_outputs)

    # ------------------------------------------------------------------ encoder interface
    @property
    def frame_rate(self) -> float:
        return self.config.frame_rate

    @property
    def dim(self) -> int:
        return self.config.hidden_size

    @property
    def layer(self) -> int:
        """The hidden state :meth:`forward` returns (as ``HubertEncoder.layer``)."""
        return self.config.layer

    def frames_for(self, num_samples):
        """Output frames for ``num_samples`` 16 kHz samples (int or LongTensor)."""
        n = self.frontend.frames_for(num_samples)
        return (n + self.config.frame_stack - 1) // self.config.frame_stack

    @torch.no_grad()
    def forward(self, wavs, wav_lengths=None):
        """Layer-``config.layer`` frames of 16 kHz waveforms: ``([B, T', dim], lengths [B])``, zero-padded."""
        fbank, lengths = self.frontend(wavs, wav_lengths)
        device = self.input_proj.weight.device
        training = self.training
        self.eval()  # the frozen-encoder interface: no dropout, whatever mode a caller left the module in
        try:
            hidden, out_lengths = self.encode(fbank.to(device), lengths.to(device), layer=self.config.layer)
        finally:
            self.train(training)
        return hidden.float().cpu(), out_lengths.cpu()

    # ------------------------------------------------------------------ the network
    def encode(self, fbank: torch.Tensor, lengths: torch.Tensor, layer: int | None = None):
        """Hidden state ``layer`` (default: after the last layer and the final norm) of padded fbank frames."""
        x, out_lengths = stack_normalized(fbank, lengths, self.config.frame_stack)
        pad_mask = torch.arange(x.shape[1], device=x.device)[None] >= out_lengths[:, None]
        keep = (~pad_mask).unsqueeze(-1).to(x.dtype)
        x = self.input_proj(x) * keep
        x = (x + nn.functional.gelu(self.pos_conv(x.transpose(1, 2)).transpose(1, 2))) * keep
        if layer == 0:
            return x, out_lengths
        for i, block in enumerate(self.layers, 1):
            x = block(x, src_key_padding_mask=pad_mask) * keep
            if layer == i and i < len(self.layers):
                return x, out_lengths
        return self.final_norm(x) * keep, out_lengths

    def ctc_log_probs(self, fbank: torch.Tensor, lengths: torch.Tensor):
        """``(log_probs [B, T', classes], lengths [B])`` of the CTC head."""
        hidden, out_lengths = self.encode(fbank, lengths)
        return self.ctc_head(hidden).log_softmax(-1), out_lengths

    def greedy_symbols(self, fbank: torch.Tensor, lengths: torch.Tensor) -> list[list[str]]:
        """Best-path CTC symbol sequences (repeats merged, blanks dropped)."""
        log_probs, out_lengths = self.ctc_log_probs(fbank, lengths)
        out = []
        for best, n in zip(log_probs.argmax(-1).tolist(), out_lengths.tolist()):
            prev, symbols = 0, []
            for k in best[:n]:
                if k != prev and k != 0:
                    symbols.append(self.config.vocab[k - 1])
                prev = k
            out.append(symbols)
        return out

    def greedy_decode(self, fbank: torch.Tensor, lengths: torch.Tensor) -> list[str]:
        """Best-path CTC transcripts: characters joined, or phonemes separated by spaces."""
        sep = " " if self.config.targets == "phonemes" else ""
        return [sep.join(s).strip() for s in self.greedy_symbols(fbank, lengths)]

    # ------------------------------------------------------------------ saving and loading
    def save_pretrained(self, out_dir: str | os.PathLike) -> None:
        """Write ``config.json`` and ``model.safetensors`` into ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(out / WEIGHTS_NAME), metadata={"format": "pt"})
        (out / CONFIG_NAME).write_text(json.dumps({"model_type": "most_phonetic_encoder", **asdict(self.config)},
                                                  indent=1) + "\n")

    @classmethod
    def from_pretrained(cls, model_dir: str | os.PathLike, layer: int | None = None) -> "PhoneticEncoder":
        """Load a directory written by :meth:`save_pretrained`; ``layer`` overrides the saved output layer.

        Examples
        --------
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> PhoneticEncoder(PhoneticEncoderConfig(vocab=["a"], hidden_size=16, num_heads=2)).save_pretrained(d)
        >>> PhoneticEncoder.from_pretrained(d, layer=1).config.layer
        1
        """
        model_dir = Path(model_dir)
        cfg_path = model_dir / CONFIG_NAME
        if not cfg_path.is_file():
            raise FileNotFoundError(f"{model_dir} is not a phonetic encoder directory (no {CONFIG_NAME})")
        raw = json.loads(cfg_path.read_text())
        if raw.pop("model_type", None) != "most_phonetic_encoder":
            raise ValueError(f"{cfg_path} is not a most_speech phonetic encoder config")
        if layer is not None:
            raw["layer"] = int(layer)
        model = cls(PhoneticEncoderConfig(**raw))
        missing, unexpected = model.load_state_dict(load_file(str(model_dir / WEIGHTS_NAME)), strict=False)
        if missing or unexpected:
            raise ValueError(f"{model_dir / WEIGHTS_NAME}: missing {missing}, unexpected {unexpected}")
        logger.info("loaded phonetic encoder from %s (layer %d)", model_dir, model.config.layer)
        return model.eval().requires_grad_(False)
