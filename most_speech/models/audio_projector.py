"""Continuous audio input: project encoder frames into LM embeddings and splice them into the token sequence.

Contract with the task templates (:mod:`most_speech.data.templates`): a continuous audio segment appears in
``input_ids`` as a begin-audio-wave token immediately followed by an end-audio-wave token. The segments of a
batch are numbered in row-major order of their begin-audio-wave tokens, and ``audio_features[s]`` holds the
encoder frames of segment ``s``. Splicing puts the projected frames between the two markers, marks them as
audio, gives them label -100 and attention 1, and renumbers positions contiguously.

The reference MoST code loses the gradient of its projection and misaligns labels; here the frames go through
``torch.cat`` with the token embeddings, so the projector trains, and every per-token tensor is rebuilt
together so labels, marks, masks and positions stay aligned.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import torch
import torch.nn.functional as F
from speechbrain.processing.features import InputNormalization
from torch import nn

IGNORE_INDEX = -100


class AudioProjector(nn.Module):
    """Trainable map from encoder frames ``[S, N, D]`` to LM embeddings ``[S, ceil(N / stack), H]``.

    Parameters
    ----------
    in_dim, out_dim : int
        Encoder frame width and LM hidden size.
    stack : int
        Consecutive frames concatenated before the projection (lowers the frame rate by ``stack``).
    kind : {"linear", "mlp", "conv"}
        MoST uses a single linear layer. ``"conv"`` adds two residual convolutions (kernel 5, GELU) over the
        stacked positions, so each LM position also sees its neighbours on both sides; padding is masked
        before each convolution, so a segment's output does not depend on what it is batched with.
    norm : {"none", "utterance"}
        ``"utterance"``: mean and variance normalisation of each segment over its own frames (padding
        excluded), before stacking. HuBERT's last layer is already layer-normalised (MoST: ``"none"``); raw
        filterbanks are not (log-mel values around 16 with speaker- and level-dependent offsets), and a linear
        projection of them swamps the token embeddings.
    encoder_layers : int
        Bidirectional self-attention layers (pre-norm, GELU, feed-forward ``3 * out_dim``) after the
        convolutions (``kind="conv"`` only: the convolutions are what gives the layers positions). HuBERT hands
        MoST frames that already hold a whole utterance's context; filterbank frames do not, and the causal LM
        alone then reads little more than the first words of the audio (measured on the mini corpus).

    Examples
    --------
    >>> proj = AudioProjector(768, 64, stack=2)
    >>> out, lens = proj(torch.randn(2, 9, 768), torch.tensor([9, 4]))
    >>> out.shape, lens.tolist()
    (torch.Size([2, 5, 64]), [5, 2])
    >>> normed = AudioProjector(80, 64, norm="utterance")
    >>> a, _ = normed(torch.randn(1, 50, 80), torch.tensor([50]))
    >>> b, _ = normed(3.0 * torch.randn(1, 50, 80) + 16.0, torch.tensor([50]))
    >>> a.shape == b.shape
    True
    >>> conv = AudioProjector(80, 64, stack=4, kind="conv")
    >>> out, lens = conv(torch.randn(2, 40, 80), torch.tensor([40, 17]))
    >>> out.shape, lens.tolist(), bool(out[1, 5:].abs().sum() == 0)
    (torch.Size([2, 10, 64]), [10, 5], True)
    >>> enc = AudioProjector(80, 64, stack=4, kind="conv", encoder_layers=2).eval()
    >>> out, lens = enc(torch.randn(2, 40, 80), torch.tensor([40, 17]))
    >>> out.shape, bool(out[1, 5:].abs().sum() == 0)
    (torch.Size([2, 10, 64]), True)
    """

    NORMS = ("none", "utterance")

    def __init__(self, in_dim: int, out_dim: int, stack: int = 1, kind: str = "linear", norm: str = "none",
                 encoder_layers: int = 0):
        super().__init__()
        if norm not in self.NORMS:
            raise ValueError(f"unknown audio feature norm {norm!r}; use one of {self.NORMS}")
        if encoder_layers < 0 or (encoder_layers > 0 and kind != "conv"):
            raise ValueError(f"encoder_layers={encoder_layers} must be >= 0, and > 0 needs kind='conv' (the "
                             f"convolutions give the attention layers their positions), not {kind!r}")
        self.stack = stack
        # SpeechBrain's per-sentence normalisation: statistics over the valid frames only, padding left at 0;
        # it holds no state, so the model's state dict is unchanged.
        self.norm = (InputNormalization(norm_type="sentence", avoid_padding_norm=True, epsilon=1e-5)
                     if norm == "utterance" else None)
        width = in_dim * stack
        if kind == "linear":
            self.proj = nn.Linear(width, out_dim)
        elif kind == "mlp":
            self.proj = nn.Sequential(nn.Linear(width, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))
        elif kind == "conv":
            self.proj = nn.Linear(width, out_dim)
            self.convs = nn.ModuleList(nn.Conv1d(out_dim, out_dim, 5, padding=2) for _ in range(2))
        else:
            raise ValueError(f"unknown audio projector kind {kind!r}")
        self.encoder = None
        if encoder_layers:
            heads = max(1, out_dim // 64)
            layer = nn.TransformerEncoderLayer(out_dim, heads, dim_feedforward=3 * out_dim, dropout=0.0,
                                               activation="gelu", batch_first=True, norm_first=True)
            # No nested-tensor fast path: it would make eval outputs at padding differ from training's.
            self.encoder = nn.TransformerEncoder(layer, encoder_layers, norm=nn.LayerNorm(out_dim),
                                                 enable_nested_tensor=False)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor):
        S, N, D = feats.shape
        if self.norm is not None and N > 0:
            feats = self.norm(feats, lengths.to(feats.dtype) / N)
        if self.stack > 1:
            pad = (-N) % self.stack
            feats = F.pad(feats, (0, 0, 0, pad)).reshape(S, (N + pad) // self.stack, D * self.stack)
            lengths = torch.div(lengths + self.stack - 1, self.stack, rounding_mode="floor")
        out = self.proj(feats)
        if hasattr(self, "convs"):
            valid = (torch.arange(out.shape[1], device=out.device)[None, :] < lengths[:, None].to(out.device))
            valid = valid[:, None, :].to(out.dtype)
            x = out.transpose(1, 2) * valid
            for conv in self.convs:
                x = (x + F.gelu(conv(x))) * valid
            out = x.transpose(1, 2)
            if self.encoder is not None:
                out = self.encoder(out, src_key_padding_mask=valid[:, 0] == 0) * valid.transpose(1, 2)
        return out, lengths


@dataclass
class SplicedInputs:
    """Per-token tensors after splicing, all ``[B, L]`` (embeddings ``[B, L, H]``), padded on one side."""

    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    modality_ids: torch.Tensor
    position_ids: torch.Tensor
    labels: Optional[torch.Tensor] = None
    frame_starts: Optional[torch.Tensor] = None
    """``[S, 2]`` (row, column) of each segment's first frame in the spliced tensors."""
    frame_lengths: Optional[torch.Tensor] = None
    """``[S]`` frames spliced for each segment."""
    frames: Optional[torch.Tensor] = None
    """``[S, N, H]`` the projected frames themselves (padded along N)."""


def wave_spans(input_ids: torch.Tensor, bow_id: int, eow_id: int, attention_mask=None) -> List[tuple]:
    """(row, column) of every begin-audio-wave token, row-major; each must be followed by end-audio-wave."""
    is_bow = input_ids == bow_id
    if attention_mask is not None:
        is_bow &= attention_mask.bool()
    spans = [tuple(rc) for rc in is_bow.nonzero().tolist()]
    for row, col in spans:
        if col + 1 >= input_ids.shape[1] or input_ids[row, col + 1] != eow_id:
            raise ValueError(f"row {row}: begin-audio-wave token at position {col} is not immediately followed by "
                             f"the end-audio-wave token {eow_id}; frames are spliced between the two")
    return spans


def splice_audio_frames(input_ids: torch.Tensor, token_embeds: torch.Tensor, frames: torch.Tensor,
                        frame_lengths: torch.Tensor, *, bow_id: int, eow_id: int, modality_ids: torch.Tensor,
                        audio_mark: int = 1, attention_mask: Optional[torch.Tensor] = None,
                        labels: Optional[torch.Tensor] = None, padding_side: str = "right") -> SplicedInputs:
    """Insert ``frames[s, :frame_lengths[s]]`` between the markers of audio segment ``s``.

    Parameters
    ----------
    input_ids : LongTensor [B, T]
    token_embeds : Tensor [B, T, H]
        Embeddings of ``input_ids``.
    frames : Tensor [S, N, H]
        Projected encoder frames of the S segments, padded along N.
    frame_lengths : LongTensor [S]
    modality_ids : LongTensor [B, T]
        Marks of the tokens; frames get ``audio_mark``.
    attention_mask, labels : optional [B, T]
        Padding (0) is dropped before splicing and re-added on ``padding_side``.

    Examples
    --------
    >>> ids = torch.tensor([[5, 7, 8, 6]])          # 7 = begin-audio-wave, 8 = end-audio-wave
    >>> out = splice_audio_frames(ids, torch.zeros(1, 4, 2), torch.ones(1, 3, 2), torch.tensor([3]),
    ...                           bow_id=7, eow_id=8, modality_ids=torch.zeros(1, 4, dtype=torch.long))
    >>> out.modality_ids.tolist(), out.position_ids.tolist()
    ([[0, 0, 1, 1, 1, 0, 0]], [[0, 1, 2, 3, 4, 5, 6]])
    """
    B, T = input_ids.shape
    mask = attention_mask.bool() if attention_mask is not None else torch.ones_like(input_ids, dtype=torch.bool)
    spans = wave_spans(input_ids, bow_id, eow_id, mask)
    if len(spans) != frames.shape[0]:
        raise ValueError(f"the batch has {len(spans)} audio-wave spans (begin-audio-wave tokens) but "
                         f"{frames.shape[0]} feature segments were given")
    rows, starts = [], []
    seg = 0
    for b in range(B):
        idx = mask[b].nonzero().squeeze(1)
        cuts = []
        while seg < len(spans) and spans[seg][0] == b:
            cuts.append((spans[seg][1], seg))
            seg += 1
        *row, offsets = _splice_row(b, idx, cuts, token_embeds, frames, frame_lengths, modality_ids, labels,
                                    audio_mark)
        rows.append(row)
        starts += [(b, off) for off in offsets]
    out = _pad_rows(rows, padding_side, labels is not None, starts)
    out.frame_lengths, out.frames = frame_lengths, frames
    return out


def _splice_row(b, idx, cuts, token_embeds, frames, frame_lengths, modality_ids, labels, audio_mark):
    emb, marks, labs, offsets = [], [], [], []
    start = length = 0
    for col, s in cuts:
        keep = idx[(idx >= start) & (idx <= col)]
        n = int(frame_lengths[s])
        offsets.append(length + keep.numel())
        length += keep.numel() + n
        emb += [token_embeds[b, keep], frames[s, :n].to(token_embeds.dtype)]
        marks += [modality_ids[b, keep], modality_ids.new_full((n,), audio_mark)]
        if labels is not None:
            labs += [labels[b, keep], labels.new_full((n,), IGNORE_INDEX)]
        start = col + 1
    keep = idx[idx >= start]
    emb.append(token_embeds[b, keep])
    marks.append(modality_ids[b, keep])
    if labels is not None:
        labs.append(labels[b, keep])
    return torch.cat(emb), torch.cat(marks), torch.cat(labs) if labels is not None else None, offsets


def _pad_rows(rows, padding_side: str, with_labels: bool, starts) -> SplicedInputs:
    L = max(r[0].shape[0] for r in rows)
    B, H = len(rows), rows[0][0].shape[1]
    ref = rows[0][0]
    embeds = ref.new_zeros(B, L, H)
    attn = torch.zeros(B, L, dtype=torch.long, device=ref.device)
    marks = torch.zeros(B, L, dtype=torch.long, device=ref.device)
    pos = torch.zeros(B, L, dtype=torch.long, device=ref.device)
    labels = torch.full((B, L), IGNORE_INDEX, dtype=torch.long, device=ref.device) if with_labels else None
    for b, (e, m, lab) in enumerate(rows):
        n = e.shape[0]
        sl = slice(L - n, L) if padding_side == "left" else slice(0, n)
        embeds[b, sl], attn[b, sl], marks[b, sl] = e, 1, m
        pos[b, sl] = torch.arange(n, device=ref.device)
        if with_labels:
            labels[b, sl] = lab
    shift = [L - r[0].shape[0] if padding_side == "left" else 0 for r in rows]
    frame_starts = torch.tensor([(b, off + shift[b]) for b, off in starts], dtype=torch.long,
                                device=ref.device).view(-1, 2)
    return SplicedInputs(embeds, attn, marks, pos, labels, frame_starts)
