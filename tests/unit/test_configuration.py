"""MoSTConfig: defaults, MoST's keyword arguments, validation messages that name the field."""
import pytest
import torch

from most_speech.models import MoSTConfig, MoSTForCausalLM
from most_speech.text.token_layout import TokenLayout


def test_default_partition_and_most_keywords():
    assert MoSTConfig.tiny().modality_expert_groups == {"text": [0, 1, 2, 3], "audio": [4, 5, 6, 7]}
    cfg = MoSTConfig.tiny(text_expert_indices=[0, 1, 2], audio_expert_indices=[3, 4, 5, 6, 7])
    assert cfg.expert_groups_by_mark() == {0: [0, 1, 2], 1: [3, 4, 5, 6, 7]}
    again = MoSTConfig.from_dict(cfg.to_dict())
    assert again.modality_expert_groups == cfg.modality_expert_groups and again.layout == cfg.layout


def test_an_image_group_is_a_config_change():
    layout = TokenLayout.build(text_vocab_size=200, num_units=50, vocab_size=264)   # 8 free rows for images
    ranges = layout.modality_ranges[:-1] + [{"start": layout.eow_id + 1, "end": layout.vocab_size,
                                              "modality": "image"}]
    layout = TokenLayout.from_dict(dict(layout.to_dict(), modality_ranges=ranges))
    groups = {"text": [0, 1, 2], "audio": [3, 4, 5], "image": [6, 7]}
    cfg = MoSTConfig.tiny(vocab_size=264, token_layout=layout.to_dict(), modality_expert_groups=groups)
    assert cfg.expert_groups_by_mark()[2] == [6, 7]
    counts = MoSTForCausalLM(cfg)(torch.tensor([[1, 2, 257, 258, 259]])).routing_counts[0]
    assert counts[2].sum() == 3 * cfg.num_experts_per_tok and counts[2, :6].sum() == 0
    with pytest.raises(ValueError, match="has 'image' tokens but modality_expert_groups has no 'image' group"):
        MoSTConfig.tiny(vocab_size=264, token_layout=layout.to_dict())


@pytest.mark.parametrize("overrides, message", [
    (dict(text_expert_indices=[0, 1, 2, 3, 4], audio_expert_indices=[4, 5, 6, 7]), "expert 4 is in both"),
    (dict(modality_expert_groups={"text": [0, 1, 2, 3], "audio": [4, 5, 6]}), r"experts \[7\] belong to no"),
    (dict(modality_expert_groups={"text": [0, 1, 2, 3], "audio": [4, 5, 6, 9]}), "expert 9 .* outside"),
    (dict(num_experts_per_tok=5), "larger than the 'text' expert group"),
    (dict(topk_method="group_limited_greedy", n_group=3, topk_group=1), "n_group=3 does not divide"),
    (dict(topk_method="group_limited_greedy", n_group=4, topk_group=5), "topk_group=5 must be in 1..n_group=4"),
    (dict(topk_method="group_limited_greedy", n_group=4, topk_group=1, num_experts_per_tok=3),
     "may reach only 2 of its experts"),
    # The best two groups could hold 3 text experts, but the router may keep groups 0 and 1 (one each).
    (dict(text_expert_indices=[0, 2, 4, 5], audio_expert_indices=[1, 3, 6, 7], topk_method="group_limited_greedy",
          n_group=4, topk_group=2, num_experts_per_tok=3), "'text' token may reach only 2"),
    (dict(vocab_size=300), "token_layout.vocab_size=256 differs from vocab_size=300"),
    (dict(scoring_func="sigmoid"), "scoring_func"),
    (dict(topk_method="noaux_tc"), "topk_method"),
    (dict(audio_frame_stack=0), "audio_frame_stack"),
])
def test_validation_names_the_problem(overrides, message):
    with pytest.raises(ValueError, match=message):
        MoSTConfig.tiny(**overrides)


def test_num_experts_per_tok_is_required():
    with pytest.raises(ValueError, match="num_experts_per_tok must be set"):
        MoSTConfig(hidden_size=64, num_attention_heads=4)
