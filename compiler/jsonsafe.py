"""JSON reading with a nesting bound, for text that lmpc does not control (data files, artifacts).

Python's json module recurses once per `[` or `{`: a value nested ~1000 deep raises
RecursionError (a traceback, not a message), and values a few hundred deep that do parse still
break the recursive code that handles them later. Like serde_json's recursion limit, the text
is checked first, with a linear scan, and a value that nests deeper than the bound is refused
as a JSONDecodeError positioned (line:col) at the first bracket past the bound. Callers that
already handle JSONDecodeError (e.msg, e.lineno, e.colno) handle this one too.

No imports beyond the standard library: both the compiler (artifact loading) and the runtime
(data files) use it.
"""

from __future__ import annotations

import json
import re
from typing import Any

# A complete JSON string (skipped whole: brackets inside strings do not nest), or one bracket.
_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.S)


class JSONTooDeep(json.JSONDecodeError):
    """A JSON text that nests deeper than allowed; a JSONDecodeError positioned at the bracket."""

    def __init__(self, doc: str, pos: int, max_depth: int) -> None:
        self.max_depth = max_depth
        super().__init__(f"nested too deeply (more than {max_depth} levels of `[` and `{{`)", doc, pos)


def too_deep_at(text: str, max_depth: int, start: int = 0, one_value: bool = False) -> tuple[int | None, int]:
    """(offset of the first bracket nested deeper than max_depth, or None; where the scan ended).

    one_value: scan only the value that starts at `start` (ending where its brackets close),
    so a caller walking a list can skip just the element that is too deep (a value that is not
    an array or object is returned as (None, start)). The scan never fails on malformed JSON:
    json.loads reports that afterwards."""
    if one_value and text[start:start + 1] not in ("[", "{"):
        return None, start
    if not one_value and text.count("[", start) + text.count("{", start) <= max_depth:
        return None, len(text)  # cannot nest too deeply: skip the scan
    depth, first = 0, None
    for m in _TOKEN.finditer(text, start):
        ch = m.group()
        if ch in "[{":
            depth += 1
            if depth > max_depth and first is None:
                first = m.start()
        elif ch in "]}":
            depth = max(0, depth - 1)
        if one_value and depth == 0:
            return first, m.end()
    return first, len(text)


def load_json_bounded(text: str, max_depth: int) -> Any:
    """json.loads(text), refusing (JSONTooDeep) a value nested deeper than max_depth."""
    at, _ = too_deep_at(text, max_depth)
    if at is not None:
        raise JSONTooDeep(text, at, max_depth)
    try:
        return json.loads(text)
    except RecursionError:  # cannot happen below the bound; kept so no traceback ever escapes
        raise JSONTooDeep(text, 0, max_depth) from None
