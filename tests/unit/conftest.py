"""Fixtures shared by the unit tests."""
from types import SimpleNamespace

import pytest


@pytest.fixture
def bare_brain():
    """Factory of a ``MoSTBrain`` holding only what ``_model_inputs`` reads.

    ``Brain.__init__`` is skipped (no run folder, optimiser or checkpointer), so a test can check how a batch
    becomes the model's inputs without building the rest.
    """
    from most_speech.training.brain import MoSTBrain

    def make(model=None, feature_source=None, **hparams):
        brain = object.__new__(MoSTBrain)
        brain.hparams = SimpleNamespace(**hparams)
        brain.device, brain.engine, brain.feature_source = "cpu", None, feature_source
        brain.modules = {"model": model} if model is not None else {}
        return brain

    return make
