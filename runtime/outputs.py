"""Turn a model's raw text into validated Python values, or a typed error that keeps the text."""

from __future__ import annotations

import json
from typing import Any

from lmpc.runtime.errors import OutputError
from lmpc.runtime.values import validation_error


def _extract_json(text: str) -> Any:
    stripped = text.strip()
    try:
        return json.loads(stripped)
    except json.JSONDecodeError:
        pass
    # A server without structured output may wrap the object in prose or a code fence.
    start = stripped.find("{")
    if start >= 0:
        try:
            value, _ = json.JSONDecoder().raw_decode(stripped[start:])
            return value
        except json.JSONDecodeError:
            pass
    raise ValueError("the output is not JSON")


def parse_output(raw: str, schema: dict, where: str) -> dict[str, Any]:
    """Decode and validate one prompt node's output against its output schema."""
    try:
        value = _extract_json(raw)
    except ValueError as e:
        raise OutputError(f"{where}: {e}", raw_text=raw) from None
    why = validation_error(value, schema)
    if why is not None:
        raise OutputError(f"{where}: the output does not fit its type ({why})", raw_text=raw)
    return value
