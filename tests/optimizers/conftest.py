from __future__ import annotations

import pytest

from .fake import CONTEXTS


@pytest.fixture(autouse=True)
def close_contexts():
    """Shut the thread pools of every program the optimizers made in a test."""
    yield
    while CONTEXTS:
        CONTEXTS.pop().close()
