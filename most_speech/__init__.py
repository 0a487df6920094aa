"""most_speech: an open speech-text foundation-model toolkit (MoST, a modality-aware mixture of experts)."""

__version__ = "0.1.0"
