"""``MoSTForCausalLM``: a DeepSeek-V2 decoder whose MoE layers route each token within its modality's experts.

Parameter names equal transformers' ``DeepseekV2ForCausalLM``, so DeepSeek-V2 weights load directly; what
differs is the router (modality mask before top-k, :mod:`most_speech.models.moe`), the attention's decode path
(absorbed latent cache, :mod:`most_speech.models.mla`), and the outputs (auxiliary balance loss added to the
loss and reported on its own, routing counts per expert and modality).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import DynamicCache
from transformers.masking_utils import create_causal_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import MoeCausalLMOutputWithPast, MoeModelOutputWithPast

from .audio_ctc import AudioCTCHead, gather_frames
from .audio_projector import AudioProjector, splice_audio_frames, wave_spans
from .configuration import MoSTConfig
from .mla import MLAAttention, MoSTRMSNorm, MoSTRotaryEmbedding, _rope_inv_freq
from .moe import MAMoE, MoSTMLP, RoutedExperts, ModalityAwareRouter
from .tts_alignment import guided_attention_loss


@dataclass
class MoSTModelOutput(MoeModelOutputWithPast):
    """Decoder output plus the summed auxiliary balance loss and per-layer routing counts.

    ``routing_counts`` is a list (one entry per MoE layer) of ``[num_marks, n_routed_experts]`` tensors:
    how many (token, slot) picks each expert received from tokens of each modality mark.
    """

    aux_loss: Optional[torch.FloatTensor] = None
    routing_counts: Optional[List[torch.Tensor]] = None


@dataclass
class MoSTCausalLMOutput(MoeCausalLMOutputWithPast):
    """Causal-LM output. ``loss = lm_loss + aux_loss (+ audio_ctc_weight * ctc_loss + unit_ctc_weight *
    unit_ctc_loss + tts_alignment_weight * tts_alignment_loss)`` when labels are given (aux is 0 outside
    training; each optional term is None when it was not computed)."""

    lm_loss: Optional[torch.FloatTensor] = None
    ctc_loss: Optional[torch.FloatTensor] = None
    unit_ctc_loss: Optional[torch.FloatTensor] = None
    tts_alignment_loss: Optional[torch.FloatTensor] = None
    routing_counts: Optional[List[torch.Tensor]] = None


class MoSTDecoderLayer(GradientCheckpointingLayer):
    """Pre-norm decoder layer: MLA attention, then a dense MLP (first layers) or a MAMoE."""

    def __init__(self, config: MoSTConfig, layer_idx: int):
        super().__init__()
        self.self_attn = MLAAttention(config, layer_idx)
        self.is_moe = config.is_moe_layer(layer_idx)
        self.mlp = MAMoE(config) if self.is_moe else MoSTMLP(config)
        self.input_layernorm = MoSTRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = MoSTRMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(self, hidden_states, position_embeddings=None, attention_mask=None, past_key_values=None,
                modality_ids=None, token_mask=None, **kwargs):
        residual = hidden_states
        hidden_states = self.self_attn(self.input_layernorm(hidden_states), position_embeddings=position_embeddings,
                                       attention_mask=attention_mask, past_key_values=past_key_values)
        hidden_states = residual + hidden_states
        residual = hidden_states
        hidden_states = self.post_attention_layernorm(hidden_states)
        if self.is_moe:
            out = self.mlp(hidden_states, modality_ids=modality_ids, token_mask=token_mask)
            return residual + out.hidden_states, out.aux_loss, out.expert_counts
        return residual + self.mlp(hidden_states), None, None


def _modality_table(config: MoSTConfig) -> torch.Tensor:
    """Modality mark of every token id (all text when the config has no token layout)."""
    layout = config.layout
    table = layout.modality_table() if layout is not None else [0] * config.vocab_size
    return torch.tensor(table, dtype=torch.long)


class MoSTPreTrainedModel(PreTrainedModel):
    config_class = MoSTConfig
    config: MoSTConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["MoSTDecoderLayer"]
    _skip_keys_device_placement = ["past_key_values"]
    _supports_sdpa = True
    _supports_attention_backend = False
    _keys_to_ignore_on_load_unexpected = [r"rotary_emb\.inv_freq"]

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, ModalityAwareRouter):
            module.weight.normal_(0.0, std)
        elif isinstance(module, RoutedExperts):
            module.gate_up_proj.normal_(0.0, std)
            module.down_proj.normal_(0.0, std)
        # Non-persistent buffers are not in checkpoints: from_pretrained leaves them empty, so fill them here.
        elif isinstance(module, MoSTRotaryEmbedding):
            module.inv_freq.copy_(_rope_inv_freq(self.config)[0])
        elif isinstance(module, MoSTModel):
            module.modality_table.copy_(_modality_table(self.config))


class MoSTModel(MoSTPreTrainedModel):
    """The decoder stack (embeddings, layers, final norm) with modality marks derived from the token layout.

    Examples
    --------
    >>> from most_speech.models import MoSTConfig, MoSTModel
    >>> model = MoSTModel(MoSTConfig.tiny())
    >>> out = model(torch.tensor([[1, 2, 210, 211]]))
    >>> out.last_hidden_state.shape
    torch.Size([1, 4, 64])
    """

    def __init__(self, config: MoSTConfig):
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList([MoSTDecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.norm = MoSTRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = MoSTRotaryEmbedding(config)
        self.register_buffer("modality_table", _modality_table(config), persistent=False)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

    def modality_ids_for(self, input_ids: torch.LongTensor) -> torch.LongTensor:
        """Modality mark of each token id, from the token layout; ids outside the layout raise ``ValueError``."""
        if input_ids.numel() and (input_ids.min() < 0 or input_ids.max() >= self.modality_table.numel()):
            bad = input_ids[(input_ids < 0) | (input_ids >= self.modality_table.numel())][0].item()
            raise ValueError(f"token id {bad} is outside the token layout / vocabulary "
                             f"(vocab_size={self.modality_table.numel()})")
        return self.modality_table[input_ids]

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                inputs_embeds=None, use_cache=None, modality_ids=None, output_hidden_states=None,
                **kwargs) -> MoSTModelOutput:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if self.gradient_checkpointing and self.training:
            use_cache = False
        if modality_ids is None:
            if input_ids is not None:
                modality_ids = self.modality_ids_for(input_ids)
            else:
                modality_ids = torch.zeros(inputs_embeds.shape[:2], dtype=torch.long, device=inputs_embeds.device)
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache(config=self.config)
        past_len = past_key_values.get_seq_length() if past_key_values is not None else 0
        seq_len = inputs_embeds.shape[1]
        if position_ids is None and attention_mask is not None and attention_mask.dim() == 2:
            # Left padding (batched generation): positions count real tokens only.
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -seq_len:]
        elif position_ids is None:
            position_ids = torch.arange(past_len, past_len + seq_len, device=inputs_embeds.device).unsqueeze(0)
        causal_mask = create_causal_mask(config=self.config, inputs_embeds=inputs_embeds,
                                         attention_mask=attention_mask, past_key_values=past_key_values,
                                         position_ids=position_ids)
        token_mask = attention_mask[:, -seq_len:].bool() if attention_mask is not None and attention_mask.dim() == 2 \
            else None

        hidden_states = inputs_embeds
        position_embeddings = self.rotary_emb(hidden_states, position_ids)
        aux_loss = hidden_states.new_zeros((), dtype=torch.float32)
        routing_counts, all_hidden = [], [] if output_hidden_states else None
        for layer in self.layers:
            if all_hidden is not None:
                all_hidden.append(hidden_states)
            hidden_states, layer_aux, counts = layer(hidden_states, position_embeddings=position_embeddings,
                                                     attention_mask=causal_mask, past_key_values=past_key_values,
                                                     modality_ids=modality_ids, token_mask=token_mask)
            if layer_aux is not None:
                aux_loss = aux_loss + layer_aux
                routing_counts.append(counts)
        hidden_states = self.norm(hidden_states)
        if all_hidden is not None:
            all_hidden.append(hidden_states)
        return MoSTModelOutput(last_hidden_state=hidden_states, past_key_values=past_key_values if use_cache else None,
                               hidden_states=tuple(all_hidden) if all_hidden is not None else None,
                               aux_loss=aux_loss, routing_counts=routing_counts)


class MoSTForCausalLM(MoSTPreTrainedModel, GenerationMixin):
    """MoST language model with an LM head; ``forward(labels=...)`` returns LM loss + balance loss.

    Examples
    --------
    >>> from most_speech.models import MoSTConfig, MoSTForCausalLM
    >>> model = MoSTForCausalLM(MoSTConfig.tiny()).eval()
    >>> ids = torch.tensor([[1, 2, 3]])
    >>> # min_new_tokens: a random model may emit EOS at any step
    >>> model.generate(ids, min_new_tokens=4, max_new_tokens=4, do_sample=False).shape
    torch.Size([1, 7])
    """

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: MoSTConfig):
        super().__init__(config)
        self.model = MoSTModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.audio_projector = None
        if config.audio_feature_dim:
            self.audio_projector = AudioProjector(config.audio_feature_dim, config.hidden_size,
                                                  config.audio_frame_stack, config.audio_projector_type,
                                                  getattr(config, "audio_feature_norm", "none"),
                                                  getattr(config, "audio_encoder_layers", 0))
        self.audio_ctc_head = None
        if getattr(config, "audio_ctc_weight", 0.0) > 0:
            self.audio_ctc_head = AudioCTCHead(config.hidden_size, config.layout.text_vocab_size)
        for i in config.tts_alignment_layer_ids():
            self.model.layers[i].self_attn.record_heads = config.tts_alignment_heads
        self.post_init()

    def splice_audio(self, input_ids, audio_features, audio_feature_lengths, attention_mask=None, labels=None,
                     padding_side="right"):
        """Embed ``input_ids`` and splice projected ``audio_features`` between the audio-wave markers.

        Returns a :class:`~most_speech.models.audio_projector.SplicedInputs`.
        """
        if self.audio_projector is None:
            raise ValueError("audio_features given but the model has no audio projector (set "
                             "config.audio_feature_dim)")
        layout = self.config.layout
        embeds = self.model.embed_tokens(input_ids)
        marks = self.model.modality_ids_for(input_ids)
        frames, lengths = self.audio_projector(audio_features.to(embeds.dtype), audio_feature_lengths)
        return splice_audio_frames(input_ids, embeds, frames, lengths, bow_id=layout.bow_id, eow_id=layout.eow_id,
                                   modality_ids=marks, audio_mark=layout.modality_of(layout.bow_id),
                                   attention_mask=attention_mask, labels=labels, padding_side=padding_side)

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                inputs_embeds=None, labels=None, use_cache=None, modality_ids=None, logits_to_keep=0,
                output_hidden_states=None, audio_features=None, audio_feature_lengths=None,
                audio_ctc_targets=None, audio_ctc_target_lengths=None, unit_spans=None,
                **kwargs) -> MoSTCausalLMOutput:
        """Causal-LM forward; ``audio_features [S, N, D]`` / ``audio_feature_lengths [S]`` splice continuous audio.

        With ``labels``, a CTC head (``config.audio_ctc_weight > 0``) and ``audio_ctc_targets [S, L]`` /
        ``audio_ctc_target_lengths [S]`` (text token ids of what each segment says; length 0: none), the loss
        adds ``audio_ctc_weight`` times the CTC loss of the frames, also returned as ``ctc_loss``. Given
        ``unit_spans`` (:func:`~most_speech.training.features.batch_unit_spans`: where TTS responses' unit tokens
        are and the text they speak), it adds ``unit_ctc_weight`` times the same head's CTC loss of those tokens'
        hidden states (``unit_ctc_loss``) and, in training, ``tts_alignment_weight`` times the guided-attention
        prior of :mod:`~most_speech.models.tts_alignment` (``tts_alignment_loss``).
        """
        if self.training and self.model.gradient_checkpointing and self.config.tts_alignment_layer_ids():
            # checkpointed layers run their first forward without autograd: the prior would not reach the heads
            raise ValueError("tts_alignment_weight > 0 needs gradient checkpointing off (the prior reads the "
                             "attention's queries and keys of the forward pass)")
        spliced, input_ids_before = None, input_ids
        if audio_features is not None:
            spliced = self.splice_audio(input_ids, audio_features, audio_feature_lengths, attention_mask, labels)
            input_ids, inputs_embeds, attention_mask = None, spliced.inputs_embeds, spliced.attention_mask
            modality_ids, position_ids, labels = spliced.modality_ids, spliced.position_ids, spliced.labels
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         past_key_values=past_key_values, inputs_embeds=inputs_embeds, use_cache=use_cache,
                         modality_ids=modality_ids, output_hidden_states=output_hidden_states)
        records = self._take_attention_records()
        hidden = out.last_hidden_state
        if isinstance(logits_to_keep, int) and logits_to_keep > 0:
            hidden = hidden[:, -logits_to_keep:]
        elif isinstance(logits_to_keep, torch.Tensor):
            hidden = hidden[:, logits_to_keep]
        logits = self.lm_head(hidden)
        lm_loss = loss = ctc_loss = unit_loss = align_loss = None
        if labels is not None:
            lm_loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
            loss = lm_loss + out.aux_loss.to(lm_loss.dtype)
            if self.audio_ctc_head is not None and spliced is not None and audio_ctc_targets is not None:
                ctc_loss = self.audio_ctc_head.loss(self._ctc_frames(spliced, out.last_hidden_state),
                                                    spliced.frame_lengths, audio_ctc_targets.to(logits.device),
                                                    audio_ctc_target_lengths.to(logits.device))
                loss = loss + self.config.audio_ctc_weight * ctc_loss.to(loss.dtype)
            if unit_spans is not None:
                starts = self._unit_starts(unit_spans, spliced, input_ids_before)
                if self.config.unit_ctc_weight > 0:
                    unit_loss = self._unit_ctc_loss(out.last_hidden_state, unit_spans, starts)
                    loss = loss + self.config.unit_ctc_weight * unit_loss.to(loss.dtype)
                if records:
                    align_loss = self._tts_alignment_loss(records, unit_spans, starts)
                    loss = loss + self.config.tts_alignment_weight * align_loss.to(loss.dtype)
        return MoSTCausalLMOutput(loss=loss, lm_loss=lm_loss, aux_loss=out.aux_loss, ctc_loss=ctc_loss,
                                  unit_ctc_loss=unit_loss, tts_alignment_loss=align_loss, logits=logits,
                                  past_key_values=out.past_key_values, hidden_states=out.hidden_states,
                                  routing_counts=out.routing_counts)

    def audio_ctc_log_probs(self, input_ids, audio_features, audio_feature_lengths, attention_mask=None):
        """The CTC head's ``[S, N, text_vocab + 1]`` log-probabilities over each audio segment's frames, and the
        frame counts ``[S]``, for a prompt that holds the segments (as in ``forward``; blank is the last class).

        Used by CTC and joint CTC/attention ASR decoding (:class:`~most_speech.decoding.asr.ASRDecoder`).
        """
        if self.audio_ctc_head is None:
            raise ValueError("the model has no CTC head (it was trained with audio_ctc_weight = 0)")
        spliced = self.splice_audio(input_ids, audio_features, audio_feature_lengths, attention_mask)
        hidden = None
        if getattr(self.config, "audio_ctc_input", "lm") == "lm":
            hidden = self.model(inputs_embeds=spliced.inputs_embeds, attention_mask=spliced.attention_mask,
                                position_ids=spliced.position_ids, modality_ids=spliced.modality_ids,
                                use_cache=False).last_hidden_state
        return self.audio_ctc_head(self._ctc_frames(spliced, hidden)), spliced.frame_lengths

    def _unit_starts(self, unit_spans, spliced, input_ids):
        """``[S, 2]`` (row, column) of each TTS response's first unit in the model's input, past spliced frames.

        Assumes right padding, as training batches are collated: frames spliced earlier in a row push its tokens
        to the right by their number.
        """
        starts = unit_spans["starts"].to(self.device)
        if spliced is None:
            return starts
        starts = starts.clone()
        bows = torch.tensor(wave_spans(input_ids, self.config.layout.bow_id, self.config.layout.eow_id),
                            dtype=torch.long, device=starts.device).view(-1, 2)
        lengths = spliced.frame_lengths.to(starts.device)
        for k, (row, col) in enumerate(starts.tolist()):
            before = (bows[:, 0] == row) & (bows[:, 1] < col)
            starts[k, 1] += int(lengths[before].sum())
        return starts

    def _unit_ctc_loss(self, last_hidden, unit_spans, starts):
        """CTC of the hidden states at TTS responses' unit tokens against their text (``unit_ctc_weight``)."""
        device = last_hidden.device
        lengths = unit_spans["lengths"].to(device)
        frames = gather_frames(last_hidden, starts, lengths)
        return self.audio_ctc_head.loss(frames, lengths, unit_spans["targets"].to(device),
                                        unit_spans["target_lengths"].to(device))

    def _take_attention_records(self):
        """The recorded heads' ``(query, key, mask, scale)`` of this forward, cleared from the layers."""
        records = []
        for layer in self.model.layers:
            attn = layer.self_attn
            if attn.recorded is not None:
                records.append((*attn.recorded, attn.scaling))
                attn.recorded = None
        return records

    def _tts_alignment_loss(self, records, unit_spans, starts):
        """The guided-attention prior averaged over the recorded layers (``tts_alignment_weight``)."""
        lengths, text_lengths = unit_spans["lengths"], unit_spans["target_lengths"]
        losses = [guided_attention_loss(query, key, scale, starts, lengths, text_lengths, mask,
                                        self.config.tts_alignment_sigma) for query, key, mask, scale in records]
        return torch.stack(losses).mean()

    def _ctc_frames(self, spliced, last_hidden):
        """``[S, N, H]`` what the CTC head reads (``config.audio_ctc_input``), zero beyond each segment."""
        if getattr(self.config, "audio_ctc_input", "lm") == "projector":
            return spliced.frames
        return gather_frames(last_hidden, spliced.frame_starts, spliced.frame_lengths)

    @torch.no_grad()
    def generate(self, input_ids=None, audio_features=None, audio_feature_lengths=None, attention_mask=None,
                 **kwargs):
        """``GenerationMixin.generate``, plus continuous audio: with ``audio_features`` the prompt is spliced
        (left-padded) and passed as ``inputs_embeds``; the result then holds the new tokens only."""
        if audio_features is None:
            return super().generate(input_ids, attention_mask=attention_mask, **kwargs)
        spliced = self.splice_audio(input_ids, audio_features, audio_feature_lengths, attention_mask,
                                    padding_side="left")
        return super().generate(inputs_embeds=spliced.inputs_embeds, attention_mask=spliced.attention_mask,
                                modality_ids=spliced.modality_ids, **kwargs)

    def prepare_inputs_for_generation(self, input_ids, past_key_values=None, attention_mask=None,
                                      inputs_embeds=None, modality_ids=None, **kwargs):
        inputs = super().prepare_inputs_for_generation(input_ids, past_key_values=past_key_values,
                                                       attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                                                       **kwargs)
        # Explicit marks belong to the embedded prompt; later steps feed token ids and take marks from the layout.
        if modality_ids is not None and inputs.get("inputs_embeds") is not None:
            inputs["modality_ids"] = modality_ids[:, -inputs["inputs_embeds"].shape[1]:]
        return inputs


__all__ = ["MoSTModel", "MoSTForCausalLM", "MoSTPreTrainedModel", "MoSTModelOutput", "MoSTCausalLMOutput"]
