"""The .lmp type system: resolved types, their JSON Schemas, and assignability."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

PRIMITIVES = ("str", "int", "float", "bool")
GENERICS = ("list",)

# The one nesting limit: brackets in a .lmp file, levels of `list[...]` and `{...}` in a type
# (through named types too), and rows of data files (see runtime/data.py) nest at most this
# deep. Everything below it works at every later stage (JSON Schema validation, the llama.cpp
# grammar, the recursive json parser) with a wide margin; structured-output APIs allow far less
# (OpenAI: 10 levels), and no real program comes near it.
MAX_NESTING = 16


@dataclass(frozen=True)
class Prim:
    name: str  # str | int | float | bool
    alias: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class ListT:
    item: "Type"
    alias: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class OptT:
    inner: "Type"
    alias: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class EnumT:
    values: tuple[str, ...]
    alias: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class ObjT:
    fields: tuple[tuple[str, "Type"], ...]
    alias: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class NullT:
    """The type of the literal `null`; only fits optional types."""

    alias: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class AnyT:
    """Stands in after an error so one mistake does not cascade into many."""

    alias: str | None = field(default=None, compare=False)
    # Stands for a type past MAX_NESTING: types built on it are past it too, but not reported again.
    too_deep: bool = field(default=False, compare=False)


@dataclass(frozen=True)
class NeverT:
    """Item type of the empty list `[]`: fits any list."""

    alias: str | None = field(default=None, compare=False)


Type = Union[Prim, ListT, OptT, EnumT, ObjT, NullT, AnyT, NeverT]

STR = Prim("str")
INT = Prim("int")
FLOAT = Prim("float")
BOOL = Prim("bool")
ANY = AnyT()
TOO_DEEP = AnyT(too_deep=True)


def with_alias(t: Type, alias: str) -> Type:
    return type(t)(**{**{k: getattr(t, k) for k in t.__dataclass_fields__}, "alias": alias})


def nesting(t: Type) -> int:
    """How many `list[...]` and `{...}` levels deep the type goes (the JSON value's depth);
    a type built on TOO_DEEP is past the limit."""
    if isinstance(t, AnyT) and t.too_deep:
        return MAX_NESTING + 1
    if isinstance(t, ListT):
        return 1 + nesting(t.item)
    if isinstance(t, OptT):
        return nesting(t.inner)
    if isinstance(t, ObjT):
        return 1 + max((nesting(ft) for _, ft in t.fields), default=0)
    return 0


def built_on_too_deep(t: Type) -> bool:
    if isinstance(t, AnyT):
        return t.too_deep
    if isinstance(t, (ListT, OptT)):
        return built_on_too_deep(t.item if isinstance(t, ListT) else t.inner)
    if isinstance(t, ObjT):
        return any(built_on_too_deep(ft) for _, ft in t.fields)
    return False


def describe(t: Type, expand: bool = False) -> str:
    """How a type reads in messages: its declared name, or its structure."""
    if t.alias and not expand:
        return t.alias
    if isinstance(t, Prim):
        return t.name
    if isinstance(t, ListT):
        return f"list[{describe(t.item)}]"
    if isinstance(t, OptT):
        return f"{describe(t.inner)}?"
    if isinstance(t, EnumT):
        return " | ".join(f'"{v}"' for v in t.values)
    if isinstance(t, ObjT):
        return "{" + ", ".join(f"{n}: {describe(ft)}" for n, ft in t.fields) + "}"
    if isinstance(t, NullT):
        return "null"
    if isinstance(t, NeverT):
        return "never"
    return "any"


def to_schema(t: Type) -> dict:
    """The JSON Schema that constrains a model's output and validates values at run time."""
    if isinstance(t, Prim):
        return {"type": {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}[t.name]}
    if isinstance(t, ListT):
        return {"type": "array", "items": to_schema(t.item)}
    if isinstance(t, OptT):
        return {"anyOf": [to_schema(t.inner), {"type": "null"}]}
    if isinstance(t, EnumT):
        return {"type": "string", "enum": list(t.values)}
    if isinstance(t, ObjT):
        return {
            "type": "object",
            "properties": {n: to_schema(ft) for n, ft in t.fields},
            "required": [n for n, ft in t.fields if not isinstance(ft, OptT)],
            "additionalProperties": False,
        }
    if isinstance(t, NullT):
        return {"type": "null"}
    return {}


def from_schema(s: dict) -> Type:
    """Inverse of to_schema (for artifacts and IR that carry only schemas)."""
    if "anyOf" in s:
        inner = [x for x in s["anyOf"] if x.get("type") != "null"]
        return OptT(from_schema(inner[0]) if inner else ANY)
    if "enum" in s:
        return EnumT(tuple(s["enum"]))
    kind = s.get("type")
    if kind == "array":
        return ListT(from_schema(s.get("items", {})))
    if kind == "object":
        return ObjT(tuple((n, from_schema(fs)) for n, fs in s.get("properties", {}).items()))
    prim = {"string": STR, "integer": INT, "number": FLOAT, "boolean": BOOL}
    if kind in prim:
        return prim[kind]
    if kind == "null":
        return NullT()
    return ANY


def assignable(src: Type, dst: Type) -> str | None:
    """None when a value of type `src` fits where `dst` is expected, else why not."""
    if isinstance(src, (AnyT, NeverT)) or isinstance(dst, AnyT):
        return None
    if isinstance(dst, OptT):
        if isinstance(src, NullT):
            return None
        return assignable(src.inner if isinstance(src, OptT) else src, dst.inner)
    if isinstance(src, OptT):
        return f"the value may be null, but {describe(dst)} is not optional (declare it `{describe(dst)}?`)"
    if isinstance(src, NullT):
        return f"null does not fit {describe(dst)} (declare it `{describe(dst)}?`)"
    if isinstance(dst, Prim):
        if isinstance(src, Prim):
            if src.name == dst.name or (src.name == "int" and dst.name == "float"):
                return None
            return None if src == dst else _mismatch(src, dst)
        if isinstance(src, EnumT) and dst.name == "str":
            return None
        return _mismatch(src, dst)
    if isinstance(dst, EnumT):
        if isinstance(src, EnumT):
            extra = [v for v in src.values if v not in dst.values]
            if not extra:
                return None
            return f'"{extra[0]}" is not one of {describe(dst, expand=True)}'
        if isinstance(src, Prim) and src.name == "str":
            return f"any string does not fit {describe(dst)}, which allows only {describe(dst, expand=True)}"
        return _mismatch(src, dst)
    if isinstance(dst, ListT):
        if isinstance(src, ListT):
            why = assignable(src.item, dst.item)
            return None if why is None else f"list items: {why}"
        return _mismatch(src, dst)
    if isinstance(dst, ObjT):
        if not isinstance(src, ObjT):
            return _mismatch(src, dst)
        have = dict(src.fields)
        for name, ft in dst.fields:
            if name not in have:
                if isinstance(ft, OptT):
                    continue
                return f"field `{name}` is missing"
            why = assignable(have[name], ft)
            if why is not None:
                return f"field `{name}`: {why}"
        return None
    return _mismatch(src, dst)


def _mismatch(src: Type, dst: Type) -> str:
    return f"{describe(src)} does not fit {describe(dst)}"


def join(types: list[Type]) -> Type:
    """The type of a list literal's items."""
    types = [t for t in types if not isinstance(t, NeverT)]
    if not types:
        return NeverT()
    if all(isinstance(t, EnumT) for t in types):
        values: list[str] = []
        for t in types:
            values.extend(v for v in t.values if v not in values)
        return EnumT(tuple(values))
    first = types[0]
    if all(assignable(t, first) is None for t in types):
        return first
    for t in types:
        if all(assignable(o, t) is None for o in types):
            return t
    return ANY
