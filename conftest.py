"""Shared pytest set-up for the most_speech test suite and the docstring examples."""
import os
import sys

# The tests use tiny tensors: one intra-op thread is as fast as two, and it does not collapse when the machine
# is busy (OpenMP workers spin and get descheduled; a decode step went from 33 ms to 1.6 s under load).
# Set before torch is imported, so subprocesses started by tests inherit it too.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import pytest  # noqa: E402


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session, config, items):
    """Drop SpeechBrain's lazy integration modules whose optional backend (k2, ...) is not installed.

    Hypothesis' pytest plugin reads ``__file__`` of every module in ``sys.modules`` after collection; on a
    SpeechBrain ``LazyModule`` that attribute access imports the integration and raises ImportError, which
    aborts the whole session. Removing the never-loaded placeholders is harmless: SpeechBrain re-creates them
    on demand.
    """
    for name, module in list(sys.modules.items()):
        if type(module).__name__ in ("LazyModule", "DeprecatedModuleRedirect") and name.startswith("speechbrain"):
            try:
                getattr(module, "__file__", None)
            except ImportError:
                del sys.modules[name]
