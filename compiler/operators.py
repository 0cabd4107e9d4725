"""Operators in expressions: their type rules (the checker), their evaluation (the runtime),
and what a condition proves about nulls (narrowing).

    ==  !=            any two comparable values (same type, int/float, str/enum); null with T?
    <  <=  >  >=      two numbers, or two strings (not optional: null has no order)
    in  not in        an item in a list, or a str in a str
    and  or  not      bool (not optional); `and`/`or` stop at the first operand that decides

Every operator gives a `bool`. `x != null and len(x) < 20` type-checks with `x: str?`: the
right operand of `and` (and of `or` after `x == null`) reads `x` as `str` (see `facts`).
"""

from __future__ import annotations

from typing import Any, Callable

from lmpc.compiler.builtins import BUILTINS
from lmpc.compiler.types import BOOL, AnyT, EnumT, ListT, NeverT, NullT, OptT, Prim, Type, assignable, describe

COMPARISONS = ("==", "!=", "<", "<=", ">", ">=")
MEMBERSHIP = ("in", "not in")
LOGICAL = ("and", "or", "not")
OPERATORS = COMPARISONS + MEMBERSHIP + LOGICAL
ARITY = {**{op: 2 for op in COMPARISONS + MEMBERSHIP + ("and", "or")}, "not": 1}


def _is_text(t: Type) -> bool:
    return isinstance(t, EnumT) or (isinstance(t, Prim) and t.name == "str")


def _is_number(t: Type) -> bool:
    return isinstance(t, Prim) and t.name in ("int", "float")


def _loose(t: Type) -> bool:
    """A type that stands in after an error (or an empty list's item): never reported again."""
    return isinstance(t, (AnyT, NeverT))


def _a(t: Type) -> str:
    text = describe(t)
    return ("an " if text[:1] in "aeiou" else "a ") + text


def _null_hint(op: str) -> str:
    return f"test for null first, e.g. `x != null and x {op} ...`"


def check(op: str, types: list[Type]) -> tuple[int, str, str | None] | None:
    """None when operator `op` takes operands of these types (the result is `bool`); else
    (index of the operand at fault, message, hint)."""
    if op in LOGICAL:
        for i, t in enumerate(types):
            if _loose(t) or t == BOOL:
                continue
            if isinstance(t, OptT) and t.inner == BOOL:
                return i, f"`{op}` needs a bool, but this may be null ({describe(t)})", \
                    "compare it: `x == true` is false for null"
            return i, f"`{op}` needs a bool, not {describe(t)}", "compare the value, e.g. `len(x) > 0`"
        return None
    left, right = types
    if op in ("==", "!="):
        if isinstance(left, NullT) or isinstance(right, NullT):
            other, at = (right, 1) if isinstance(left, NullT) else (left, 0)
            if _loose(other) or isinstance(other, (OptT, NullT)):
                return None
            return at, f"{_a(other)} is never null: `{op} null` is always " \
                       f"{'false' if op == '==' else 'true'}", "only optional values (`T?`) are compared with null"
        a = left.inner if isinstance(left, OptT) else left
        b = right.inner if isinstance(right, OptT) else right
        if _loose(a) or _loose(b) or assignable(a, b) is None or assignable(b, a) is None:
            return None
        return 1, f"{describe(left)} and {describe(right)} are never equal: `{op}` compares values of one type", \
            "convert one side, e.g. `str(n) == s`"
    if op in ("<", "<=", ">", ">="):
        for i, t in enumerate(types):
            if isinstance(t, OptT):
                return i, f"`{op}` needs a value, but this may be null ({describe(t)})", _null_hint(op)
        if _loose(left) or _loose(right):
            return None
        if (_is_number(left) and _is_number(right)) or (_is_text(left) and _is_text(right)):
            return None
        bad = 0 if not (_is_number(left) or _is_text(left)) else 1
        return bad, f"`{op}` compares two numbers or two strings, not {describe(left)} and {describe(right)}", \
            "compare a length with `len(x)`, or convert with str(...)"
    # in / not in
    if isinstance(right, OptT):
        return 1, f"`{op}` needs a list or a str on its right, but this may be null ({describe(right)})", \
            _null_hint(op)
    if _loose(right):
        return None
    if isinstance(right, ListT):
        item = right.item
        a = left.inner if isinstance(left, OptT) else left
        if _loose(a) or _loose(item) or assignable(a, item) is None or assignable(item, a) is None:
            return None
        return 0, f"{_a(left)} is never an item of {_a(right)}", None
    if _is_text(right):
        if isinstance(left, OptT):
            return 0, f"`{op}` on a str needs a str on its left, but this may be null ({describe(left)})", \
                _null_hint(op)
        if _loose(left) or _is_text(left):
            return None
        return 0, f"`{op}` on a str looks for a str, not {describe(left)}", "convert with str(...)"
    return 1, f"`{op}` needs a list or a str on its right, not {describe(right)}", None


# -- evaluation -------------------------------------------------------------------------------
def _order(op: str) -> Callable[[Any, Any], bool]:
    return {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b,
            ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}[op]


def _equal(a: Any, b: Any) -> bool:
    # The checker keeps bool apart from numbers; Python's True == 1 must not leak through a
    # value that reached here another way (an artifact, a Python function's output).
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return a == b


def _member(item: Any, container: Any) -> bool:
    if isinstance(container, str):
        if not isinstance(item, str):
            raise TypeError(f"`in` on a str needs a str on its left, not {_kind(item)}")
        return item in container
    if isinstance(container, list):
        return any(_equal(item, x) for x in container)
    raise TypeError(f"`in` needs a list or a str on its right, not {_kind(container)}")


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    return {bool: "bool", int: "int", float: "float", str: "str", list: "list", dict: "object"}.get(type(v), "?")


def _truth(op: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise TypeError(f"`{op}` needs a bool, not {_kind(v)}")
    return v


def evaluate(op: str, args: list[Any], value: Callable[[Any], Any]) -> bool:
    """Apply operator `op` to the IR expressions `args`; `value(expr)` evaluates one, so that
    `and`/`or` evaluate their right operand only when the left does not decide."""
    if op == "not":
        return not _truth(op, value(args[0]))
    if op == "and":
        return _truth(op, value(args[0])) and _truth(op, value(args[1]))
    if op == "or":
        return _truth(op, value(args[0])) or _truth(op, value(args[1]))
    a, b = value(args[0]), value(args[1])
    if op == "==":
        return _equal(a, b)
    if op == "!=":
        return not _equal(a, b)
    if op == "in":
        return _member(a, b)
    if op == "not in":
        return not _member(a, b)
    if a is None or b is None:
        raise TypeError(f"`{op}` cannot order null")
    numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b))
    if not numbers and not (isinstance(a, str) and isinstance(b, str)):
        raise TypeError(f"`{op}` compares two numbers or two strings, not {_kind(a)} and {_kind(b)}")
    return _order(op)(a, b)


# -- narrowing --------------------------------------------------------------------------------
Path = tuple[str, ...]


def facts(e: Any, holds: bool, path_of: Callable[[Any], Path | None]) -> set[Path]:
    """The values (as paths: `("x",)`, `("s", "field")`) that a condition proves non-null when
    it evaluates to `holds`. `e` is an AST expression; `path_of` gives a name's or field's
    path, None for anything else."""
    from lmpc.compiler import ast

    if not isinstance(e, ast.Op):
        return set()
    if e.op == "not":
        return facts(e.args[0], not holds, path_of)
    if e.op in ("and", "or"):
        # `a and b` true: both are; `a or b` false: neither is
        if (e.op == "and") == holds:
            return facts(e.args[0], holds, path_of) | facts(e.args[1], holds, path_of)
        return set()
    if e.op in ("==", "!="):
        left, right = e.args
        other = left if _is_null(right) else right if _is_null(left) else None
        path = path_of(other) if other is not None else None
        if path is not None and (e.op == "!=") == holds:
            return {path}
    return set()


def _is_null(e: Any) -> bool:
    from lmpc.compiler import ast

    return isinstance(e, ast.Literal) and e.value is None


def evaluate_expr(expr: dict, lookup: Callable[[str, list], Any]) -> Any:
    """Evaluate an IR expression; lookup(node_id, path) returns a ref's value (the runtime's
    row values, or a best_of sample's outputs)."""
    if "ref" in expr:
        return lookup(expr["ref"], expr["path"])
    if "lit" in expr:
        return expr["lit"]
    if "list" in expr:
        return [evaluate_expr(e, lookup) for e in expr["list"]]
    if "call" in expr:
        return BUILTINS[expr["call"]].impl(*[evaluate_expr(a, lookup) for a in expr["args"]])
    if "op" in expr:
        return evaluate(expr["op"], expr["args"], lambda e: evaluate_expr(e, lookup))
    raise ValueError(f"not an IR expression: {expr!r}")
