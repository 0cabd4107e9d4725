"""Run-time values: evaluate IR expressions, validate and coerce values against JSON Schemas."""

from __future__ import annotations

import json
from typing import Any

import jsonschema

from lmpc.compiler.builtins import BUILTINS


def evaluate(expr: dict, lookup) -> Any:
    """Evaluate an IR expression; lookup(node_id, path) returns a ref's value."""
    if "ref" in expr:
        return lookup(expr["ref"], expr["path"])
    if "lit" in expr:
        return expr["lit"]
    if "list" in expr:
        return [evaluate(e, lookup) for e in expr["list"]]
    if "call" in expr:
        return BUILTINS[expr["call"]].impl(*[evaluate(a, lookup) for a in expr["args"]])
    raise ValueError(f"not an IR expression: {expr!r}")


def get_path(value: Any, path: list[str]) -> Any:
    for name in path:
        value = None if value is None else value[name]
    return value


def validation_error(value: Any, schema: dict) -> str | None:
    """None when `value` fits `schema`, else a one-line reason."""
    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError as e:
        where = "/".join(str(p) for p in e.absolute_path)
        return f"{where + ': ' if where else ''}{e.message}"
    return None


def coerce_text(text: str, schema: dict) -> Any:
    """A command-line string as a value of `schema`'s type (`--input n=3` gives the int 3)."""
    kind = schema.get("type")
    if kind == "string" or "enum" in schema:
        return text
    if "anyOf" in schema and text == "null":
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # validation then says what is wrong
