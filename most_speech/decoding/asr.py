"""ASR decoding: speech (continuous frames or units) -> text, batched, greedy or beam search, with the KV cache;
optionally with the model's CTC head (CTC greedy, or joint CTC/attention rescoring of the beam's N-best).

Joint scoring follows the hybrid CTC/attention recipe of ESPnet and WeNet's attention rescoring, applied to
a decoder-only model: every candidate (the beam's N-best plus the CTC greedy output) gets
``(1 - ctc_weight) * log P_lm(candidate + eos | prompt) + ctc_weight * log P_ctc(candidate | frames)`` and the
best one wins. transformers' ``generate`` cannot add a CTC prefix score inside its beam search, hence the
rescoring.
"""
from __future__ import annotations

import logging
from typing import Dict, Iterable, List, Optional, Sequence

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..data.templates import TaskTemplates
from .features import FeatureSource
from .generation import chunks, left_pad

log = logging.getLogger(__name__)


class ASRDecoder:
    """Transcribe manifest entries with a MoST model.

    Parameters
    ----------
    model : MoSTForCausalLM
    templates : TaskTemplates
        Builds the ASR prompt (MoST's instruction by default) in the model's speech-input mode.
    features : callable, optional
        Feature source for continuous input (:mod:`most_speech.decoding.features`); not needed for units.
    beam_size : int
        1 = greedy.
    ctc_weight : float
        0: the LM's own decoding (MoST). 1: CTC greedy decoding of the frames. In between: joint CTC/attention
        rescoring of the beam's N-best and the CTC greedy hypothesis. Needs a model trained with a CTC head
        (``audio_ctc_weight > 0``) and continuous audio input.
    max_new_tokens : int
    batch_size : int

    Examples
    --------
    >>> dec = ASRDecoder(model, templates, features=src, beam_size=4)           # doctest: +SKIP
    >>> dec.transcribe([{"id": "utt1", "audio": "a.wav"}])                      # doctest: +SKIP
    {'utt1': 'hello world'}
    >>> joint = ASRDecoder(model, templates, features=src, beam_size=4, ctc_weight=0.3)  # doctest: +SKIP
    """

    def __init__(self, model, templates: TaskTemplates, features: Optional[FeatureSource] = None,
                 beam_size: int = 1, max_new_tokens: int = 200, batch_size: int = 8, length_penalty: float = 1.0,
                 ctc_weight: float = 0.0):
        if not 0.0 <= ctc_weight <= 1.0:
            raise ValueError(f"ctc_weight must be in [0, 1], got {ctc_weight}")
        if ctc_weight > 0 and getattr(model, "audio_ctc_head", None) is None:
            raise ValueError("ctc_weight > 0 needs a model with a CTC head (trained with audio_ctc_weight > 0)")
        self.model = model.eval()
        self.templates = templates
        self.tokenizer = templates.tokenizer
        self.features = features
        self.beam_size = beam_size
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.length_penalty = length_penalty
        self.ctc_weight = ctc_weight

    def _prompt_batch(self, entries: Sequence[dict]):
        examples = [self.templates.build("asr", e, prompt_only=True) for e in entries]
        feats = None
        if any(ex.audio_spans for ex in examples):
            if self.features is None:
                raise ValueError("ASR prompts use continuous audio but the decoder has no feature source")
            feats = self.features(entries)
        return left_pad([ex.input_ids for ex in examples], self.tokenizer.pad_id, feats).to(self.model.device)

    @torch.no_grad()
    def decode_batch(self, entries: Sequence[dict]) -> List[str]:
        """Hypotheses of one batch, in order."""
        batch = self._prompt_batch(entries)
        if self.ctc_weight > 0 and batch.audio_features is None:
            raise ValueError("CTC decoding needs continuous audio input (the model reads units here)")
        if self.ctc_weight == 1.0:
            return [self.tokenizer.decode(h) for h in self._ctc_greedy(batch)]
        nbest = self.beam_size if self.ctc_weight > 0 else 1
        out = self.model.generate(batch.input_ids, **batch.generate_kwargs(), max_new_tokens=self.max_new_tokens,
                                  num_beams=self.beam_size, num_return_sequences=nbest, do_sample=False,
                                  length_penalty=self.length_penalty, eos_token_id=self.tokenizer.eos_id,
                                  pad_token_id=self.tokenizer.pad_id)
        if batch.audio_features is None:  # generate() returns prompt + new tokens for token prompts
            out = out[:, batch.input_ids.shape[1]:]
        hyps = [self._until_eos(row) for row in out.tolist()]
        if self.ctc_weight > 0:
            hyps = self._rescore(batch, [hyps[i * nbest:(i + 1) * nbest] for i in range(len(entries))])
        return [self.tokenizer.decode(h) for h in hyps]

    # ------------------------------------------------------------------ CTC
    def _ctc_greedy(self, batch) -> List[List[int]]:
        return self._ctc_greedy_from(*self._ctc_log_probs(batch))

    def _ctc_log_probs(self, batch):
        if batch.audio_features.shape[0] != batch.input_ids.shape[0]:
            raise ValueError("CTC decoding expects one audio segment per ASR prompt")
        return self.model.audio_ctc_log_probs(batch.input_ids, batch.audio_features, batch.audio_feature_lengths,
                                              batch.attention_mask)

    def _rescore(self, batch, nbest: List[List[List[int]]]) -> List[List[int]]:
        """The best of each utterance's candidates (N-best + CTC greedy) under the joint score."""
        log_probs, lengths = self._ctc_log_probs(batch)
        greedy = self._ctc_greedy_from(log_probs, lengths)
        best = []
        for i, cands in enumerate(nbest):
            cands = list(dict.fromkeys(map(tuple, [*cands, greedy[i]])))
            ctc = self._ctc_scores(log_probs[i], int(lengths[i]), cands)
            lm = self._lm_scores(batch, i, cands)
            joint = (1.0 - self.ctc_weight) * lm + self.ctc_weight * ctc
            best.append(list(cands[int(joint.argmax())]))
        return best

    @staticmethod
    def _ctc_greedy_from(log_probs, lengths) -> List[List[int]]:
        """Best path per segment, repeats merged and blanks (the last class) dropped."""
        best, blank = log_probs.argmax(-1).tolist(), log_probs.shape[-1] - 1
        return [[t for j, t in enumerate(r[:n]) if t != blank and (j == 0 or t != r[j - 1])]
                for r, n in zip(best, lengths.tolist())]

    @staticmethod
    def _ctc_scores(log_probs, frames: int, cands) -> torch.Tensor:
        """log P_ctc of each candidate; -inf for candidates with non-text tokens the head cannot emit."""
        blank = log_probs.shape[-1] - 1
        scores = torch.full((len(cands),), float("-inf"))
        ok = [k for k, c in enumerate(cands) if all(0 <= t < blank for t in c)]
        if ok:
            targets = [torch.tensor(cands[k], dtype=torch.long, device=log_probs.device) for k in ok]
            lp = log_probs[:frames, None, :].expand(frames, len(ok), -1)
            padded = torch.nn.utils.rnn.pad_sequence(targets, batch_first=True) if any(len(t) for t in targets) \
                else log_probs.new_zeros(len(ok), 1, dtype=torch.long)
            nll = F.ctc_loss(lp, padded, torch.full((len(ok),), frames), torch.tensor([len(t) for t in targets]),
                             blank=blank, reduction="none", zero_infinity=False)
            scores[ok] = -nll.float().cpu()
        return scores

    @torch.no_grad()
    def score(self, entries: Sequence[dict], texts: Sequence[str]) -> torch.Tensor:
        """How likely each entry's audio says its text: teacher-forced, no search.

        The score is the one the joint decoding ranks candidates by: ``log P_lm(text + eos | audio)``, and with
        ``ctc_weight > 0`` ``(1 - ctc_weight) * log P_lm + ctc_weight * log P_ctc(text | frames)``.

        Returns
        -------
        torch.Tensor
            ``[len(entries)]`` log-probabilities (nats; -inf where the CTC head cannot emit the text).

        Examples
        --------
        >>> dec.score(entries, ["HELLO WORLD"] * len(entries)).argmax()            # doctest: +SKIP
        """
        if len(entries) != len(texts):
            raise ValueError(f"score: {len(entries)} entries but {len(texts)} texts")
        batch = self._prompt_batch(entries)
        cands = [tuple(self.tokenizer.encode(t, parse_special=False)) for t in texts]
        lm = torch.stack([self._lm_scores(batch, i, [c])[0] for i, c in enumerate(cands)])
        if self.ctc_weight == 0:
            return lm
        if batch.audio_features is None:
            raise ValueError("CTC scoring needs continuous audio input (the model reads units here)")
        log_probs, lengths = self._ctc_log_probs(batch)
        ctc = torch.stack([self._ctc_scores(log_probs[i], int(lengths[i]), [c])[0] for i, c in enumerate(cands)])
        return (1.0 - self.ctc_weight) * lm + self.ctc_weight * ctc

    def _lm_scores(self, batch, i: int, cands) -> torch.Tensor:
        """log P_lm(candidate + eos | prompt of utterance i), teacher-forced in one forward."""
        prompt = batch.input_ids[i][batch.attention_mask[i].bool()].tolist()
        rows = [prompt + list(c) + [self.tokenizer.eos_id] for c in cands]
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), self.tokenizer.pad_id, dtype=torch.long, device=batch.input_ids.device)
        labels = torch.full_like(ids, -100)
        for k, r in enumerate(rows):
            ids[k, :len(r)] = torch.tensor(r, device=ids.device)
            labels[k, len(prompt):len(r)] = ids[k, len(prompt):len(r)]
        mask = (labels != -100) | (torch.arange(width, device=ids.device)[None, :] < len(prompt))
        if batch.audio_features is None:  # unit input: the speech is in the token prompt
            logits = self.model(input_ids=ids, attention_mask=mask.long()).logits
        else:
            n = int(batch.audio_feature_lengths[i])
            feats = batch.audio_features[i:i + 1, :n].expand(len(rows), -1, -1)
            spliced = self.model.splice_audio(ids, feats, batch.audio_feature_lengths[i:i + 1].expand(len(rows)),
                                              mask.long(), labels)
            logits = self.model(inputs_embeds=spliced.inputs_embeds, attention_mask=spliced.attention_mask,
                                position_ids=spliced.position_ids, modality_ids=spliced.modality_ids).logits
            labels = spliced.labels
        logp = logits[:, :-1].float().log_softmax(-1)
        target = labels[:, 1:]
        picked = logp.gather(-1, target.clamp(min=0)[..., None])[..., 0] * (target != -100)
        return picked.sum(-1).cpu()

    def _until_eos(self, ids: List[int]) -> List[int]:
        eos = self.tokenizer.eos_id
        return ids[:ids.index(eos)] if eos in ids else ids

    def transcribe(self, entries: Iterable[dict], progress: bool = True) -> Dict[str, str]:
        """Transcribe all entries (batched); returns ``{id: hypothesis}``."""
        entries = list(entries)
        hyps: Dict[str, str] = {}
        for batch in tqdm(chunks(entries, self.batch_size), desc="asr decode", disable=not progress,
                          unit="batch"):
            for entry, hyp in zip(batch, self.decode_batch(batch)):
                hyps[entry["id"]] = hyp
        return hyps
