"""Pure builtin functions usable in expressions: their type rules and implementations.

The compiler type-checks calls with `check`; the runtime evaluates them with `impl`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

from lmpc.compiler.types import INT, STR, AnyT, EnumT, ListT, NeverT, Prim, Type, assignable, describe


@dataclass(frozen=True)
class Builtin:
    name: str
    usage: str
    min_args: int
    max_args: int | None  # None: any number
    check: Callable[[list[Type]], "Type | str"]  # result type, or why the call is wrong
    impl: Callable[..., Any]


def _is_text(t: Type) -> bool:
    return isinstance(t, (AnyT, EnumT)) or (isinstance(t, Prim) and t.name == "str")


def _len(ts: list[Type]) -> Type | str:
    t = ts[0]
    if isinstance(t, (ListT, AnyT)) or _is_text(t):
        return INT
    return f"len() takes a list or a str, not {describe(t)}"


def _join(ts: list[Type]) -> Type | str:
    items = ts[0]
    if not isinstance(items, (ListT, AnyT)):
        return f"join() takes a list as its first argument, not {describe(items)}"
    if isinstance(items, ListT) and not isinstance(items.item, NeverT) and assignable(items.item, STR):
        return f"join() needs a list of strings, not {describe(items)}"
    if len(ts) > 1 and not _is_text(ts[1]):
        return f"join()'s separator must be a str, not {describe(ts[1])}"
    return STR


def _text_fn(name: str) -> Callable[[list[Type]], Type | str]:
    def check(ts: list[Type]) -> Type | str:
        bad = [t for t in ts if not _is_text(t)]
        return f"{name}() takes str, not {describe(bad[0])}" if bad else STR

    return check


def _majority_type(ts: list[Type]) -> "Type | str":
    items = ts[0]
    if isinstance(items, AnyT):
        return items
    if not isinstance(items, ListT):
        return f"majority() takes a list, not {describe(items)}"
    if isinstance(items.item, NeverT):
        return "majority() of an empty list has no value"
    return items.item


def _majority(values: list) -> Any:
    """The most common value; a tie goes to the value that reached the top count first."""
    if not values:
        raise ValueError("majority() of an empty list")
    counts: dict[str, int] = {}
    best, best_count = values[0], 0
    for v in values:
        key = json.dumps(v, sort_keys=True)
        counts[key] = counts.get(key, 0) + 1
        if counts[key] > best_count:
            best, best_count = v, counts[key]
    return best


def _to_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


BUILTINS: dict[str, Builtin] = {
    b.name: b
    for b in [
        Builtin("len", "len(list_or_str) -> int", 1, 1, _len, len),
        Builtin("join", 'join(list[str], sep: str = ", ") -> str', 1, 2, _join,
                lambda items, sep=", ": sep.join(items)),
        Builtin("str", "str(value) -> str", 1, 1, lambda ts: STR, _to_str),
        Builtin("lower", "lower(str) -> str", 1, 1, _text_fn("lower"), lambda s: s.lower()),
        Builtin("upper", "upper(str) -> str", 1, 1, _text_fn("upper"), lambda s: s.upper()),
        Builtin("concat", "concat(str, ...) -> str", 1, None, _text_fn("concat"), lambda *s: "".join(s)),
        Builtin("majority", "majority(list[T]) -> T", 1, 1, _majority_type, _majority),
    ]
}
