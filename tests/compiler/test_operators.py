"""Operators in expressions: parsing and precedence, typing (narrowing of `T?`), lowering to
the IR's {"op", "args"} form, evaluation, the artifact round trip and its load checks."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from lmpc.compiler import compile_source
from lmpc.compiler.api import analyze
from lmpc.compiler.artifact_graph import GraphFormatError, graph_from_json, graph_to_json
from lmpc.compiler.ir import expr_text
from lmpc.runtime.program import Program
from lmpc.runtime.values import evaluate

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "optimizers"))
from fake import FakeModel  # noqa: E402

HEAD = '''
model m = llama_cpp(builtin: "smollm2-135m")
type Label = "positive" | "negative"
signature Flag = text: str, on: bool -> label: Label
'''


def _source(cond: str, params: str = "text: str, n: int, x: float, hint: str?, tags: list[str], ok: bool") -> str:
    return HEAD + f'''
pipeline p({params}) -> (label: Label, v: bool) {{
    f = predict Flag(text: text, on: {cond})
    return label: f.label, v: {cond}
}}
'''


def _ir(cond: str, **kw) -> dict:
    g = compile_source(_source(cond, **kw)).graphs["p"]
    return g.nodes["f"]["bindings"]["on"]


def _errors(cond: str, **kw) -> list:
    _, diags = analyze(_source(cond, **kw), "t.lmp")
    return [d for d in diags if d.is_error]


@pytest.mark.parametrize("text, shape", [
    ("n > 1 or n < 0 and ok", ("or", (">",), ("and", ("<",), ()))),
    ("not ok and ok", ("and", ("not", ()), ())),
    ("not (ok and ok)", ("not", ("and", (), ()))),
    ("(n > 1 or ok) and ok", ("and", ("or", (">",), ()), ())),
    ("text not in tags", ("not in",)),
    ("not text in tags", ("not", ("in",))),
    ("ok or ok or ok", ("or", ("or", (), ()), ())),
])
def test_precedence(text, shape):
    def form(e):
        if "op" not in e:
            return ()
        kids = tuple(form(a) for a in e["args"])
        if e["op"] not in ("and", "or", "not"):
            return (e["op"],)
        return (e["op"],) + kids

    assert form(_ir(text)) == shape


@pytest.mark.parametrize("text", [
    "n > 1 or n < 0 and ok", "not (ok and ok)", "(n > 1 or ok) and ok", "text not in tags",
    "hint != null and len(hint) >= 3", "ok and (ok or not ok)", 'text == "a" or "b" in tags',
    "(ok == ok) == ok", "ok or (ok or ok)",
])
def test_expr_text_reads_back_as_the_same_ir(text):
    ir = _ir(text)
    assert _ir(expr_text(ir)) == ir


def test_chained_comparison_is_a_syntax_error():
    errors = _errors("1 < n < 3")
    assert [(d.code, d.span.col) for d in errors] == [("syntax-error", 44)]  # the second `<`


@pytest.mark.parametrize("cond", [
    "hint != null and len(hint) < 20",
    "hint == null or len(hint) < 20",
    "not (hint == null) and len(hint) < 20",
    "not (hint == null or len(hint) > 20)",
    "n > 1 and hint != null and ok and hint < \"m\"",
    "x > n and n >= x and 1 == 1.0",
    'text == "positive"',
    "hint == \"a\"",
    "hint in tags",
    "[] == tags and \"\" in text",
])
def test_well_typed(cond):
    assert _errors(cond) == []


@pytest.mark.parametrize("cond, code_at", [
    ("len(hint) < 20 or hint != null", "bad-builtin-call"),  # the test comes after the use
    ("hint != null or len(hint) < 20", "bad-builtin-call"),  # `or` after `!= null`: may be null
    ("hint < \"m\"", "bad-operand"),
    ("ok and n", "bad-operand"),
    ("n == text", "bad-operand"),
    ("n == null", "bad-operand"),
    ("text in n", "bad-operand"),
])
def test_ill_typed(cond, code_at):
    assert [d.code for d in _errors(cond)] == [code_at] * 2  # the condition is read twice


def test_a_label_compared_with_a_value_it_cannot_take():
    src = HEAD + '''
pipeline p(text: str) -> (v: bool) {
    f = predict Flag(text: text, on: true)
    return v: f.label == "neutral"
}
'''
    _, diags = analyze(src, "t.lmp")
    assert [(d.code, d.span.line, d.span.col) for d in diags] == [("bad-operand", 8, 26)]


# -- evaluation -------------------------------------------------------------------------------
def _eval(expr: dict, values: dict | None = None):
    values = values or {}
    return evaluate(expr, lambda ref, path: values[ref])


def lit(v):
    return {"lit": v}


def op(name, *args):
    return {"op": name, "args": list(args)}


@pytest.mark.parametrize("expr, want", [
    (op("==", lit(1), lit(1.0)), True),
    (op("==", lit(True), lit(1)), False),  # bool is not a number
    (op("!=", lit([1, {"a": True}]), lit([1, {"a": 1}])), True),
    (op("==", lit(None), lit(None)), True),
    (op("==", lit("a"), lit(None)), False),
    (op("<", lit(2), lit(2.5)), True),
    (op(">=", lit("b"), lit("a")), True),
    (op("in", lit("ell"), lit("hello")), True),
    (op("in", lit(2), lit([1, 2])), True),
    (op("not in", lit(True), lit([1])), True),  # true is not the number 1
    (op("not", lit(False)), True),
    (op("and", lit(True), lit(False)), False),
    (op("or", lit(False), lit(True)), True),
])
def test_evaluate(expr, want):
    assert _eval(expr) is want


def test_and_or_stop_at_the_deciding_operand():
    boom = {"ref": "in:missing", "path": []}  # looking it up raises KeyError
    assert _eval(op("and", lit(False), boom)) is False
    assert _eval(op("or", lit(True), boom)) is True
    with pytest.raises(KeyError):
        _eval(op("and", lit(True), boom))


@pytest.mark.parametrize("expr", [
    op("<", lit(None), lit(1)),
    op("<", lit("a"), lit(1)),
    op("and", lit(1), lit(True)),
    op("in", lit(1), lit("abc")),
    op("in", lit("a"), lit(3)),
])
def test_evaluate_refuses_values_the_checker_would_not_let_through(expr):
    with pytest.raises(TypeError):
        _eval(expr)


def test_runs_with_a_model_and_short_circuits_on_null():
    src = _source("hint != null and len(hint) < 5 and not (text in tags)")
    g = compile_source(src).graphs["p"]
    seen = []

    def answer(f, demos, req):
        seen.append(f["on"])
        return {"label": "positive"}

    rows = [{"text": "a", "n": 1, "x": 1.0, "hint": None, "tags": [], "ok": True},
            {"text": "a", "n": 1, "x": 1.0, "hint": "hey", "tags": [], "ok": True},
            {"text": "a", "n": 1, "x": 1.0, "hint": "hey", "tags": ["a"], "ok": True}]
    with Program(g, cache=False, trace_log=False, models={"m": FakeModel("m", answer)}) as prog:
        res = prog.batch(rows)
    assert [r.values["v"] for r in res] == [False, True, False]
    assert seen == ["false", "true", "false"]  # the prompt shows the value as text


# -- artifact ---------------------------------------------------------------------------------
def test_artifact_round_trip_keeps_operators():
    g = compile_source(_source("hint != null and len(hint) < 5 or not ok")).graphs["p"]
    data = graph_to_json(g)
    back = graph_from_json(data, "graph")
    assert back.nodes["f"]["bindings"] == g.nodes["f"]["bindings"]
    assert graph_to_json(back) == data


@pytest.mark.parametrize("bad, message", [
    ({"op": "xor", "args": [{"lit": True}, {"lit": True}]}, "OP one of"),
    ({"op": "not", "args": [{"lit": True}, {"lit": True}]}, "takes 1 operand"),
    ({"op": "<", "args": [{"lit": 1}]}, "takes 2 operands"),
    ({"op": "and", "args": {"a": 1}}, "takes 2 operands"),
    ({"op": "and", "args": [{"lit": True}, {"nope": 1}]}, "args/1"),
    ({"op": "==", "args": [{"lit": 1}, {"lit": 1}], "x": 1}, "an expression is"),
])
def test_artifact_refuses_a_malformed_operator(bad, message):
    g = compile_source(_source("ok")).graphs["p"]
    data = graph_to_json(g)
    node = next(n for n in data["nodes"] if n["id"] == "f")
    node["bindings"]["on"] = bad
    with pytest.raises(GraphFormatError, match="bindings/on") as e:
        graph_from_json(data, "graph")
    assert message in str(e.value)


def test_instruction_proposers_see_operators_as_written():
    from lmpc.optimizers.instructions import describe_program

    g = compile_source(_source("hint != null and not (text in tags)")).graphs["p"]
    assert "on: hint != null and not text in tags)" in describe_program(g, "f")
