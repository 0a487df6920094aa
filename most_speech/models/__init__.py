"""MoST models: configuration, the MAMoE decoder, MLA attention, and converters.

Importing this package registers ``MoSTConfig`` / ``MoSTForCausalLM`` with transformers' Auto classes and
gives the ``most`` model type DeepSeek-V2's checkpoint layout (routed experts fused in memory, saved per
expert), so ``AutoModelForCausalLM.from_pretrained(dir)`` loads MoST checkpoints.
"""
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM
from transformers.conversion_mapping import (get_checkpoint_conversion_mapping,
                                             register_checkpoint_conversion_mapping)

from .configuration import MoSTConfig
from .modeling import MoSTForCausalLM, MoSTModel, MoSTPreTrainedModel


def _register():
    AutoConfig.register(MoSTConfig.model_type, MoSTConfig, exist_ok=True)
    AutoModel.register(MoSTConfig, MoSTModel, exist_ok=True)
    AutoModelForCausalLM.register(MoSTConfig, MoSTForCausalLM, exist_ok=True)
    if get_checkpoint_conversion_mapping(MoSTConfig.model_type) is None:
        register_checkpoint_conversion_mapping(MoSTConfig.model_type,
                                               get_checkpoint_conversion_mapping("deepseek_v2"))


_register()

__all__ = ["MoSTConfig", "MoSTForCausalLM", "MoSTModel", "MoSTPreTrainedModel"]
