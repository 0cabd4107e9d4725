"""Run-time values: evaluate IR expressions, validate and coerce values against JSON Schemas."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import jsonschema.exceptions
import jsonschema.validators

from lmpc.compiler import operators


evaluate = operators.evaluate_expr  # an IR expression's value; lookup(node_id, path) reads a ref


def get_path(value: Any, path: list[str]) -> Any:
    for name in path:
        value = None if value is None else value[name]
    return value


_validators: dict[str, Any] = {}


def _validator(schema: dict) -> Any:
    # jsonschema.validate() re-checks the schema itself on every call, which costs more than
    # the validation: build one validator per distinct schema (schemas come from the IR).
    key = json.dumps(schema, sort_keys=True)
    v = _validators.get(key)
    if v is None:
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
        v = _validators[key] = cls(schema)
    return v


def validation_error(value: Any, schema: dict) -> str | None:
    """None when `value` fits `schema`, else a one-line reason."""
    error = jsonschema.exceptions.best_match(_validator(schema).iter_errors(value))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path)
    return f"{where + ': ' if where else ''}{error.message}"


def coerce_text(text: str, schema: dict) -> Any:
    """A command-line string as a value of `schema`'s type (`--input n=3` gives the int 3)."""
    if "anyOf" in schema:  # T?: null, or the inner type's reading
        if text == "null":
            return None
        inner = [s for s in schema["anyOf"] if s.get("type") != "null"]
        return coerce_text(text, inner[0]) if inner else text
    kind = schema.get("type")
    if kind == "string" or "enum" in schema:
        return text
    if kind == "boolean" and text.strip().lower() in ("true", "false"):
        return text.strip().lower() == "true"  # spreadsheets and shells write TRUE / True
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # validation then says what is wrong
