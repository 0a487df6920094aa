"""most_speech: an open speech-text foundation-model toolkit (MoST, a modality-aware mixture of experts).

Subpackages load on first use (``most_speech.models``, ``most_speech.audio``, ...): the command-line tools
that need no model (manifests, k-means, WER, reports) start in a fraction of a second instead of paying for
torch + transformers (~7 s on a 2-core machine, ~30 calls in one mini run). ``import most_speech.models``
registers MoST with transformers' Auto classes (``AutoModelForCausalLM.from_pretrained(dir)``).

Examples
--------
>>> import most_speech
>>> most_speech.models.MoSTConfig.model_type
'most'
"""
import importlib

__version__ = "0.1.0"

_SUBPACKAGES = ("audio", "data", "decoding", "inference", "models", "recipes", "scoring", "text", "training",
                "vocoder")


def __getattr__(name):
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_SUBPACKAGES))
