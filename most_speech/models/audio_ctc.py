"""CTC on the spliced audio frames: an optional auxiliary loss that makes the frames carry their transcript.

A decoder-only model trained from scratch on ASR first learns the language of the transcripts and only later
starts to read the audio (the ASR loss sits at the text-LM loss for hundreds of steps). Hybrid CTC/attention
training (ESPnet's ``ctc_weight``) is the usual cure for encoder-decoder models; here the "encoder" outputs
are the LM's own last hidden states at the audio frames or the audio projector's output frames
(``MoSTConfig.audio_ctc_input``), read by a small linear head over the text vocabulary plus a blank. MoST itself does not use it (``MoSTConfig.audio_ctc_weight = 0``); from-scratch
recipes on little data do. No library offers CTC over frames spliced into a decoder's sequence, hence this.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["AudioCTCHead", "gather_frames"]


def gather_frames(hidden: Tensor, frame_starts: Tensor, frame_lengths: Tensor) -> Tensor:
    """``[S, N, H]``: the hidden states of each segment's frames, zero-padded to the longest segment.

    Examples
    --------
    >>> h = torch.arange(12.).view(2, 6, 1)
    >>> gather_frames(h, torch.tensor([[0, 1], [1, 2]]), torch.tensor([2, 3]))[..., 0].tolist()
    [[1.0, 2.0, 0.0], [8.0, 9.0, 10.0]]
    """
    B, L, H = hidden.shape
    n = int(frame_lengths.max()) if frame_lengths.numel() else 0
    steps = torch.arange(n, device=hidden.device)
    valid = steps[None, :] < frame_lengths[:, None].to(hidden.device)
    flat = frame_starts[:, :1] * L + frame_starts[:, 1:] + steps[None, :]
    frames = hidden.reshape(B * L, H)[flat.clamp_(max=B * L - 1)]
    return frames * valid[..., None].to(frames.dtype)


class AudioCTCHead(nn.Module):
    """Linear head from hidden states to ``text_vocab_size`` token classes plus a blank (the last class).

    Parameters
    ----------
    hidden_size, text_vocab_size : int

    Examples
    --------
    >>> head = AudioCTCHead(8, 5)
    >>> h = torch.randn(1, 10, 8)
    >>> frames = gather_frames(h, torch.tensor([[0, 2]]), torch.tensor([6]))
    >>> loss = head.loss(frames, torch.tensor([6]), torch.tensor([[1, 3]]), torch.tensor([2]))
    >>> bool(loss > 0), loss.requires_grad
    (True, True)
    """

    def __init__(self, hidden_size: int, text_vocab_size: int):
        super().__init__()
        self.blank = text_vocab_size
        self.proj = nn.Linear(hidden_size, text_vocab_size + 1)

    def forward(self, frames: Tensor) -> Tensor:
        """Log-probabilities ``[S, N, V + 1]`` (float32)."""
        return self.proj(frames).float().log_softmax(-1)

    def loss(self, frames: Tensor, frame_lengths: Tensor, targets: Tensor, target_lengths: Tensor) -> Tensor:
        """Mean CTC loss per target token over the segments that have a transcript (``target_lengths > 0``).

        ``frames [S, N, H]`` are the segments' hidden states (:func:`gather_frames` of the LM's, or the
        projector's output), valid up to ``frame_lengths [S]``.

        Segments too short for their transcript contribute 0 (``zero_infinity``) instead of an infinite loss.
        """
        keep = target_lengths > 0
        if not bool(keep.any()):
            return frames.new_zeros(()).float()
        log_probs = self(frames[keep]).transpose(0, 1)  # [N, S, C]
        return F.ctc_loss(log_probs, targets[keep], frame_lengths[keep], target_lengths[keep], blank=self.blank,
                          reduction="mean", zero_infinity=True)
