"""A hard budget on model calls (cache hits are free), shared by every program of a build."""

from __future__ import annotations

import threading

from lmpc.runtime.errors import LmpcRuntimeError


class BudgetExceededError(LmpcRuntimeError):
    """Raised instead of making a model call past the budget; finished calls stay cached."""


class CallBudget:
    def __init__(self, max_calls: int | None = None):
        self.max_calls = max_calls
        self.used = 0
        self._lock = threading.Lock()

    def charge(self) -> None:
        with self._lock:
            if self.max_calls is not None and self.used >= self.max_calls:
                raise BudgetExceededError(
                    f"the budget of {self.max_calls} model calls is spent; finished calls are cached, so "
                    f"running again with a larger --max-calls resumes where this stopped")
            self.used += 1
