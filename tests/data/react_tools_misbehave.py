"""Tools that misbehave, for tests/runtime/test_react_smollm_safety.py: each has the
calculator's parameters and description, so the model calls it as it would the calculator."""

import time

HANG_S = 5.0  # longer than the test's tool_timeout_s; the abandoned thread ends on its own


def raises(expression: str) -> float:
    """Evaluate an arithmetic expression with + - * / and parentheses, e.g. (3 + 4) * 5."""
    raise ValueError(f"cannot evaluate {expression!r}: the tool is broken")


def hangs(expression: str) -> float:
    """Evaluate an arithmetic expression with + - * / and parentheses, e.g. (3 + 4) * 5."""
    time.sleep(HANG_S)
    return 0.0


def wrong_type(expression: str) -> float:
    """Evaluate an arithmetic expression with + - * / and parentheses, e.g. (3 + 4) * 5."""
    return "forty-two"  # a str where the annotation says float
