"""``MoSTConfig``: DeepSeek-V2's configuration plus the modality-aware MoE (MAMoE) fields.

The DeepSeek-V2 fields keep their names and meaning (``n_routed_experts``, ``num_experts_per_tok``,
``kv_lora_rank``, ``topk_method`` ...), so a DeepSeek-V2 ``config.json`` becomes a MoST one by adding the MAMoE
fields. Everything that can be wrong is checked at construction with a message that names the field.
"""
from __future__ import annotations

from typing import Dict, List, Optional

from huggingface_hub.dataclasses import strict
from transformers import DeepseekV2Config

from ..text.token_layout import MODALITY_IDS, TokenLayout, modality_id

# Fields of DeepSeek's original remote-code config that transformers' DeepseekV2Config does not know.
_DEEPSEEK_ROUTING_DEFAULTS = {"aux_loss_alpha": 0.001, "seq_aux": True, "moe_layer_freq": 1,
                              "scoring_func": "softmax"}


@strict
class MoSTConfig(DeepseekV2Config):
    r"""Configuration of a MoST model: a DeepSeek-V2 decoder whose MoE layers route per modality.

    Parameters (beyond DeepSeek-V2's)
    ---------------------------------
    aux_loss_alpha : float
        Weight of the expert-balance loss (DeepSeek-V2: 0.001). 0 turns it off.
    seq_aux : bool
        Balance loss per sequence (True, DeepSeek-V2's default) or per batch.
    moe_layer_freq : int
        Every ``moe_layer_freq``-th layer from ``first_k_dense_replace`` on is an MoE layer.
    scoring_func : str
        Only ``"softmax"`` (DeepSeek-V2's router).
    use_modality_aware_routing : bool
        When True, a token may only be routed to the experts of its own modality group. When False the
        model is a plain DeepSeek-V2 (all experts open to every token).
    modality_expert_groups : dict
        Modality name (``"text"``, ``"audio"``, ``"image"``, ...) -> list of routed-expert indices. Default:
        MoST's split, first half text, second half audio. MoST's ``text_expert_indices`` /
        ``audio_expert_indices`` keyword arguments are accepted and folded into this mapping.
    group_softmax : bool
        False (MoST's behaviour, the default): the router's softmax runs over all routed experts and
        out-of-group experts are masked before top-k, so routing weights match a DeepSeek checkpoint.
        True: the softmax runs over the token's group only (weights of a group sum to one).
    token_layout : dict
        A :class:`~most_speech.text.token_layout.TokenLayout` as a dict; the model derives each token's
        modality mark from it. ``None``: marks must be passed as ``modality_ids`` (or all tokens are text).
    audio_feature_dim : int or None
        Width of the speech encoder's frames (768 for HuBERT-base / mHuBERT). When set, the model owns a
        trainable :class:`~most_speech.models.audio_projector.AudioProjector` and accepts ``audio_features``
        spliced between begin/end-audio-wave tokens ("continuous" audio input).
    audio_frame_stack : int
        Consecutive encoder frames concatenated before the projection (1: none; 2 halves the frame rate).
    audio_projector_type : str
        ``"linear"`` (MoST), ``"mlp"`` (linear, GELU, linear) or ``"conv"`` (linear, then two residual
        convolutions over time that see 2 stacked positions either side: context for raw filterbanks, which,
        unlike HuBERT's frames, carry none).
    audio_feature_norm : str
        ``"none"`` (MoST, for HuBERT features) or ``"utterance"``: per-segment mean and variance normalisation
        of the frames before the projector (use it for filterbank or MFCC input).
    audio_encoder_layers : int
        Bidirectional self-attention layers at the end of a ``"conv"`` projector (0, MoST: none): the context
        HuBERT's frames carry and filterbank frames lack.
    audio_ctc_weight : float
        Weight of an auxiliary CTC loss of the spliced frames against the transcript (ASR examples only;
        :mod:`~most_speech.models.audio_ctc`). 0 (MoST): no CTC head.
    audio_ctc_input : str
        What the CTC head reads: ``"lm"``, the frames' last hidden states in the LM, or ``"projector"``, the
        projector's output frames (an encoder CTC as in hybrid CTC/attention ASR; needs no LM pass to decode).
    unit_ctc_weight : float
        Weight of an auxiliary CTC loss of the hidden states at a TTS response's unit tokens against the text
        they speak (the same head as ``audio_ctc_weight``; needs ``audio_ctc_weight > 0``). 0 (MoST): none.
        It makes each unit's state say which part of the text it voices, which a small model trained from
        scratch otherwise learns slowly (its TTS drifts off the text mid-sentence).
    tts_alignment_weight : float
        Weight of a guided-attention prior on TTS responses (:mod:`~most_speech.models.tts_alignment`): in
        ``tts_alignment_heads`` heads of each layer in ``tts_alignment_layers``, the query that predicts unit
        ``t`` of ``T`` is pushed to attend to the text near ``t / T`` of the way through it (DC-TTS's guided
        attention). A training loss only, and not with gradient checkpointing. 0 (MoST): none.
    tts_alignment_layers : list of int or None
        Decoder layers whose heads carry the prior; None: every layer but the first.
    tts_alignment_heads : int
        How many heads (the first ones) of each such layer.
    tts_alignment_sigma : float
        Width of the band around the diagonal, as a fraction of the text (DC-TTS: 0.2).
    km_tag : str or None
        The k-means model whose units the unit tokens stand for (``encoder-Llayer-kmK-fingerprint``). Set by
        training from its data; unit data of another tag, or a vocoder of another tag, is refused.

    Examples
    --------
    >>> cfg = MoSTConfig.tiny()
    >>> cfg.modality_expert_groups
    {'text': [0, 1, 2, 3], 'audio': [4, 5, 6, 7]}
    """

    model_type = "most"

    aux_loss_alpha: float = 0.001
    seq_aux: bool = True
    moe_layer_freq: int = 1
    scoring_func: str = "softmax"
    use_modality_aware_routing: bool = True
    modality_expert_groups: Optional[dict] = None
    group_softmax: bool = False
    token_layout: Optional[dict] = None
    audio_feature_dim: Optional[int] = None
    audio_frame_stack: int = 1
    audio_projector_type: str = "linear"
    audio_feature_norm: str = "none"
    audio_encoder_layers: int = 0
    audio_ctc_weight: float = 0.0
    audio_ctc_input: str = "lm"
    unit_ctc_weight: float = 0.0
    tts_alignment_weight: float = 0.0
    tts_alignment_layers: Optional[list] = None
    tts_alignment_heads: int = 1
    tts_alignment_sigma: float = 0.2
    km_tag: Optional[str] = None

    def __post_init__(self, **kwargs):
        text = kwargs.pop("text_expert_indices", None)
        audio = kwargs.pop("audio_expert_indices", None)
        for legacy in ("ep_size", "pretraining_tp"):
            kwargs.pop(legacy, None)
        super().__post_init__(**kwargs)
        if self.num_experts_per_tok is None:
            raise ValueError("MoSTConfig: num_experts_per_tok must be set explicitly")
        groups = dict(self.modality_expert_groups or {})
        if text is not None:
            groups["text"] = list(text)
        if audio is not None:
            groups["audio"] = list(audio)
        if not groups:
            half = self.n_routed_experts // 2
            groups = {"text": list(range(half)), "audio": list(range(half, self.n_routed_experts))}
        self.modality_expert_groups = {str(k): [int(i) for i in v] for k, v in groups.items()}
        self.validate_mamoe()

    # ------------------------------------------------------------------ derived views
    @property
    def layout(self) -> Optional[TokenLayout]:
        """The token layout as an object, or None."""
        return TokenLayout.from_dict(self.token_layout) if self.token_layout else None

    def expert_groups_by_mark(self) -> Dict[int, List[int]]:
        """Integer modality mark -> routed-expert indices."""
        return {modality_id(k): v for k, v in self.modality_expert_groups.items()}

    def is_moe_layer(self, layer_idx: int) -> bool:
        """Whether decoder layer ``layer_idx`` has an MoE MLP (DeepSeek-V2's rule)."""
        return (self.n_routed_experts is not None and layer_idx >= self.first_k_dense_replace
                and layer_idx % self.moe_layer_freq == 0)

    # ------------------------------------------------------------------ validation
    def validate_mamoe(self) -> None:
        """Check expert groups, top-k and group-limited settings, and the token layout."""
        E, k = self.n_routed_experts, self.num_experts_per_tok
        if self.scoring_func != "softmax":
            raise ValueError(f"MoSTConfig: scoring_func={self.scoring_func!r} is not supported (only 'softmax')")
        if self.topk_method not in ("greedy", "group_limited_greedy"):
            raise ValueError(f"MoSTConfig: topk_method={self.topk_method!r}; use 'greedy' or 'group_limited_greedy'")
        if not 1 <= k <= E:
            raise ValueError(f"MoSTConfig: num_experts_per_tok={k} must be in 1..n_routed_experts={E}")
        if self.audio_frame_stack < 1 or self.audio_projector_type not in ("linear", "mlp", "conv"):
            raise ValueError(f"MoSTConfig: audio_frame_stack={self.audio_frame_stack} must be >= 1 and "
                             f"audio_projector_type={self.audio_projector_type!r} one of 'linear', 'mlp', 'conv'")
        if self.audio_feature_norm not in ("none", "utterance"):
            raise ValueError(f"MoSTConfig: audio_feature_norm={self.audio_feature_norm!r} must be 'none' or "
                             f"'utterance'")
        if self.audio_encoder_layers < 0 or (self.audio_encoder_layers > 0 and self.audio_projector_type != "conv"):
            raise ValueError(f"MoSTConfig: audio_encoder_layers={self.audio_encoder_layers} must be >= 0, and > 0 "
                             f"needs audio_projector_type='conv' (not {self.audio_projector_type!r})")
        if self.audio_ctc_input not in ("lm", "projector"):
            raise ValueError(f"MoSTConfig: audio_ctc_input={self.audio_ctc_input!r} must be 'lm' or 'projector'")
        if self.audio_ctc_weight < 0 or (self.audio_ctc_weight > 0 and not (self.audio_feature_dim
                                                                             and self.token_layout)):
            raise ValueError(f"MoSTConfig: audio_ctc_weight={self.audio_ctc_weight} must be >= 0, and a CTC loss "
                             f"needs audio_feature_dim and token_layout")
        if self.unit_ctc_weight < 0 or (self.unit_ctc_weight > 0 and self.audio_ctc_weight <= 0):
            raise ValueError(f"MoSTConfig: unit_ctc_weight={self.unit_ctc_weight} must be >= 0, and > 0 needs the "
                             f"CTC head of audio_ctc_weight > 0 (got {self.audio_ctc_weight})")
        self._validate_tts_alignment()
        if self.moe_layer_freq < 1:
            raise ValueError(f"MoSTConfig: moe_layer_freq={self.moe_layer_freq} must be >= 1")
        self._validate_groups(E, k)
        if self.topk_method == "group_limited_greedy":
            self._validate_group_limited(E, k)
        self._validate_layout()

    def reads_unit_spans(self) -> bool:
        """Whether a training forward uses TTS unit spans (``unit_spans``): the unit-side CTC or the prior.

        Examples
        --------
        >>> MoSTConfig.tiny().reads_unit_spans(), MoSTConfig.tiny(tts_alignment_weight=1.0).reads_unit_spans()
        (False, True)
        """
        return self.unit_ctc_weight > 0 or self.tts_alignment_weight > 0

    def tts_alignment_layer_ids(self) -> List[int]:
        """Layers whose first ``tts_alignment_heads`` heads carry the TTS alignment prior (none at weight 0)."""
        if self.tts_alignment_weight <= 0:
            return []
        if self.tts_alignment_layers is None:
            return list(range(1, self.num_hidden_layers))
        return sorted({int(i) for i in self.tts_alignment_layers})

    def _validate_tts_alignment(self) -> None:
        if self.tts_alignment_weight < 0 or self.tts_alignment_sigma <= 0:
            raise ValueError(f"MoSTConfig: tts_alignment_weight={self.tts_alignment_weight} must be >= 0 and "
                             f"tts_alignment_sigma={self.tts_alignment_sigma} > 0")
        if self.tts_alignment_weight == 0:
            return
        if not 1 <= self.tts_alignment_heads <= self.num_attention_heads:
            raise ValueError(f"MoSTConfig: tts_alignment_heads={self.tts_alignment_heads} must be in "
                             f"1..num_attention_heads={self.num_attention_heads}")
        layers = self.tts_alignment_layer_ids()
        bad = [i for i in layers if not 0 <= i < self.num_hidden_layers]
        if not layers or bad:
            raise ValueError(f"MoSTConfig: tts_alignment_layers={self.tts_alignment_layers} must name layers in "
                             f"0..num_hidden_layers-1={self.num_hidden_layers - 1}")

    def _validate_groups(self, E: int, k: int) -> None:
        seen: Dict[int, str] = {}
        for name, experts in self.modality_expert_groups.items():
            modality_id(name)
            if not experts:
                raise ValueError(f"MoSTConfig: modality_expert_groups[{name!r}] is empty")
            for e in experts:
                if not 0 <= e < E:
                    raise ValueError(f"MoSTConfig: expert {e} in modality_expert_groups[{name!r}] is outside "
                                     f"0..n_routed_experts-1={E - 1}")
                if e in seen:
                    raise ValueError(f"MoSTConfig: expert {e} is in both the {seen[e]!r} and {name!r} groups")
                seen[e] = name
            if self.use_modality_aware_routing and k > len(experts):
                raise ValueError(f"MoSTConfig: num_experts_per_tok={k} is larger than the {name!r} expert group "
                                 f"({len(experts)} experts)")
        missing = sorted(set(range(E)) - set(seen))
        if self.use_modality_aware_routing and missing:
            raise ValueError(f"MoSTConfig: experts {missing} belong to no modality group (modality_expert_groups)")

    def _validate_group_limited(self, E: int, k: int) -> None:
        n_group, topk_group = self.n_group, self.topk_group
        if not n_group or not topk_group:
            raise ValueError("MoSTConfig: topk_method='group_limited_greedy' needs n_group and topk_group")
        if E % n_group:
            raise ValueError(f"MoSTConfig: n_group={n_group} does not divide n_routed_experts={E}")
        if not 1 <= topk_group <= n_group:
            raise ValueError(f"MoSTConfig: topk_group={topk_group} must be in 1..n_group={n_group}")
        per_group = E // n_group
        groups = self.modality_expert_groups.items() if self.use_modality_aware_routing else [("all", range(E))]
        for name, experts in groups:
            # The router keeps the topk_group groups with the best scores among the groups holding this
            # modality's experts; whichever those are, together they must hold at least k of its experts.
            counts = sorted(c for c in (sum(1 for e in experts if e // per_group == g) for g in range(n_group)) if c)
            worst = sum(counts[:topk_group])
            if worst < k:
                raise ValueError(f"MoSTConfig: with n_group={n_group}, topk_group={topk_group} a {name!r} token may "
                                 f"reach only {worst} of its experts, fewer than num_experts_per_tok={k}; "
                                 f"raise topk_group or spread the {name!r} experts evenly over the groups")

    def _validate_layout(self) -> None:
        if not self.token_layout:
            return
        layout = self.layout
        if layout.vocab_size != self.vocab_size:
            raise ValueError(f"MoSTConfig: token_layout.vocab_size={layout.vocab_size} differs from "
                             f"vocab_size={self.vocab_size}")
        if self.use_modality_aware_routing:
            marks = set(self.expert_groups_by_mark())
            for name in layout.modalities():
                if modality_id(name) not in marks:
                    raise ValueError(f"MoSTConfig: the token layout has {name!r} tokens but modality_expert_groups "
                                     f"has no {name!r} group")

    # ------------------------------------------------------------------ presets
    @classmethod
    def tiny(cls, **overrides) -> "MoSTConfig":
        """A tiny random-init config for tests and CPU recipes (2 layers, 8 experts split 4/4)."""
        layout = TokenLayout.build(text_vocab_size=200, num_units=50, pad_to_multiple_of=8)
        kw = dict(vocab_size=layout.vocab_size, hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, n_routed_experts=8,
                  n_shared_experts=1, num_experts_per_tok=2, first_k_dense_replace=1, kv_lora_rank=32,
                  q_lora_rank=None, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16,
                  max_position_embeddings=512, bos_token_id=layout.bos_id, eos_token_id=layout.eos_id,
                  pad_token_id=layout.pad_id, token_layout=layout.to_dict())
        kw.update(overrides)
        return cls(**kw)


__all__ = ["MoSTConfig", "MODALITY_IDS"]
