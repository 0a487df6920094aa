"""most_speech: an open speech-text foundation-model toolkit (MoST, a modality-aware mixture of experts)."""

__version__ = "0.1.0"

# Registers MoST with transformers' Auto classes (AutoConfig / AutoModelForCausalLM).
from . import models  # noqa: E402,F401
