"""Tools of react.lmp (read by the compiler with Python's ast, never imported by the tests)."""


def calculator(expression: str) -> float:
    """Evaluate an arithmetic expression."""
    raise NotImplementedError


def convert(amount: float, unit: str) -> float:
    """Convert an amount between kilometres and miles."""
    raise NotImplementedError
