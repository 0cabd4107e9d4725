"""The IR: one typed networkx.DiGraph per pipeline, after inlining, pruning and ordering."""

from __future__ import annotations

import json

import jsonschema
import pytest

from lmpc.compiler import compile_source
from lmpc.compiler.ir import from_json, prompt_nodes, step_nodes, to_json
from lmpc.compiler.lower import default_instructions
from lmpc.compiler.types import (
    BOOL, FLOAT, INT, STR, EnumT, ListT, NullT, ObjT, OptT, assignable, from_schema, to_schema,
)

FAN_IN = '''
type Verdict = "good" | "bad"
signature Aspect = review, aspect -> score: int, note
signature Merge {
    "Combine the notes."
    food: int
    service: int
    notes: list[str]
    ->
    verdict: Verdict
}
pipeline review(review: str) -> (verdict: Verdict, n: int) {
    food = predict Aspect(review: review, aspect: "food")
    service = predict Aspect(review: review, aspect: "service")
    m = chain_of_thought Merge(food: food.score, service: service.score, notes: [food.note, service.note])
    return verdict: m.verdict, n: len([food.note])
}
'''


def graph(src: str, name: str):
    program = compile_source(src, "t.lmp")
    return program.graphs[name]


# ---- a multi-step pipeline ------------------------------------------------------------------


def test_nodes_kinds_and_bindings():
    g = graph(FAN_IN, "review")
    assert {n: d["kind"] for n, d in g.nodes(data=True)} == {
        "in:review": "input", "food": "predict", "service": "predict", "m": "chain_of_thought",
        "out:verdict": "output", "out:n": "output",
    }
    assert g.nodes["food"]["bindings"] == {"review": {"ref": "in:review", "path": []}, "aspect": {"lit": "food"}}
    assert g.nodes["m"]["bindings"] == {
        "food": {"ref": "food", "path": ["score"]},
        "service": {"ref": "service", "path": ["score"]},
        "notes": {"list": [{"ref": "food", "path": ["note"]}, {"ref": "service", "path": ["note"]}]},
    }
    assert g.nodes["out:n"]["bindings"] == {"value": {"call": "len", "args": [{"list": [{"ref": "food", "path": ["note"]}]}]}}
    assert g.nodes["m"]["signature"] == "Merge" and g.nodes["m"]["instructions"] == "Combine the notes."
    assert g.nodes["food"]["demos"] == [] and g.nodes["food"]["model"] is None
    assert g.nodes["out:verdict"]["type"] == "Verdict"
    assert g.nodes["in:review"]["schema"] == {"type": "string"}
    assert set(step_nodes(g)) == {"food", "service", "m"}


def test_typed_edges():
    g = graph(FAN_IN, "review")
    assert set(g.edges) == {
        ("in:review", "food"), ("in:review", "service"), ("food", "m"), ("service", "m"),
        ("m", "out:verdict"), ("food", "out:n"),
    }
    assert g.edges["food", "m"]["uses"] == [
        {"arg": "food", "path": ["score"], "type": "int"},
        {"arg": "notes", "path": ["note"], "type": "str"},
    ]
    assert g.edges["m", "out:verdict"]["uses"] == [{"arg": "value", "path": ["verdict"], "type": "Verdict"}]
    assert g.edges["in:review", "food"]["uses"] == [{"arg": "review", "path": [], "type": "str"}]


def test_order_and_levels():
    g = graph(FAN_IN, "review")
    order = g.graph["order"]
    assert order == ["in:review", "food", "service", "m", "out:verdict", "out:n"]
    levels = {n: g.nodes[n]["level"] for n in g}
    assert levels == {"in:review": 0, "food": 1, "service": 1, "m": 2, "out:verdict": 3, "out:n": 2}
    # every edge goes forward in the order and up in level
    for u, v in g.edges:
        assert order.index(u) < order.index(v) and levels[u] < levels[v]
    assert prompt_nodes(g) == ["food", "service", "m"]


def test_graph_attributes():
    g = graph(FAN_IN, "review")
    assert g.graph["name"] == "review"
    assert g.graph["inputs"] == {"review": {"type": "str", "schema": {"type": "string"}, "description": None}}
    assert g.graph["outputs"]["verdict"]["schema"] == {"type": "string", "enum": ["good", "bad"]}
    assert g.graph["default_model"] == "default"
    assert g.graph["models"]["default"]["provider"] == "llama_cpp"
    assert g.graph["source"]["file"] == "t.lmp" and len(g.graph["source"]["sha256"]) == 64


def test_chain_of_thought_adds_reasoning_first():
    g = graph(FAN_IN, "review")
    assert list(g.nodes["m"]["outputs"]) == ["reasoning", "verdict"]
    assert g.nodes["m"]["outputs"]["reasoning"]["schema"] == {"type": "string"}
    assert list(g.nodes["food"]["outputs"]) == ["score", "note"]  # predict adds nothing


def test_reasoning_can_be_returned():
    src = '''
    signature Solve = problem -> answer: int
    pipeline solve(problem: str) -> (answer: int, why: str) {
        s = chain_of_thought Solve(problem: problem)
        return answer: s.answer, why: s.reasoning
    }'''
    g = graph(src, "solve")
    assert g.edges["s", "out:why"]["uses"] == [{"arg": "value", "path": ["reasoning"], "type": "str"}]


def test_default_instructions_and_call_nodes():
    src = '''
    signature Lookup = query -> rows: list[str]
    signature Answer = query, rows: list[str] -> answer
    pipeline qa(query: str) -> (answer: str) {
        r = call "tools.py:lookup" Lookup(query: query)
        a = predict Answer(query: query, rows: r.rows)
        return answer: a.answer
    }'''
    g = graph(src, "qa")
    assert g.nodes["a"]["instructions"] == default_instructions(["query", "rows"], ["answer"])
    assert g.nodes["a"]["instructions"] == "Given the fields `query`, `rows`, produce the fields `answer`."
    r = g.nodes["r"]
    assert r["kind"] == "call" and r["fn"] == "tools.py:lookup"
    assert "instructions" not in r and "demos" not in r
    assert prompt_nodes(g) == ["a"]


# ---- inlining -------------------------------------------------------------------------------

COMPOSED = '''
model fast = llama_cpp(builtin: "smollm2-135m")
model slow = llama_cpp(path: "big.gguf")
signature Summarize = text -> summary
signature Tag = text, summary -> tags: list[str]
signature Title = summary, tags: list[str] -> title

pipeline summarize(text: str) -> (summary: str, tags: list[str]) {
    s = predict Summarize(text: text)
    t = predict Tag(text: text, summary: s.summary) using fast
    return summary: s.summary, tags: t.tags
}

pipeline headline(article: str) -> (title: str) {
    c = summarize(text: article) using slow
    h = chain_of_thought Title(summary: c.summary, tags: c.tags)
    return title: h.title
}
'''


def test_call_is_inlined_with_prefixed_nodes():
    g = graph(COMPOSED, "headline")
    assert set(g.nodes) == {"in:article", "c/s", "c/t", "h", "out:title"}
    assert "c" not in g and not any(d["kind"] == "pipeline" for _, d in g.nodes(data=True))
    assert g.nodes["c/s"]["step"] == "c/s" and g.nodes["c/s"]["kind"] == "predict"


def test_inlined_refs_are_substituted():
    g = graph(COMPOSED, "headline")
    # the callee's input `text` is replaced by the caller's argument (its input `article`)
    assert g.nodes["c/s"]["bindings"] == {"text": {"ref": "in:article", "path": []}}
    assert g.nodes["c/t"]["bindings"] == {"text": {"ref": "in:article", "path": []},
                                          "summary": {"ref": "c/s", "path": ["summary"]}}
    # the caller's refs to `c.summary` / `c.tags` go to what the callee returns
    assert g.nodes["h"]["bindings"] == {"summary": {"ref": "c/s", "path": ["summary"]},
                                        "tags": {"ref": "c/t", "path": ["tags"]}}
    assert set(g.edges) == {("in:article", "c/s"), ("in:article", "c/t"), ("c/s", "c/t"), ("c/s", "h"),
                            ("c/t", "h"), ("h", "out:title")}
    assert g.edges["c/t", "h"]["uses"] == [{"arg": "tags", "path": ["tags"], "type": "list[str]"}]
    assert g.graph["order"] == ["in:article", "c/s", "c/t", "h", "out:title"]


def test_using_on_a_call_applies_inside_unless_the_step_names_its_own():
    g = graph(COMPOSED, "headline")
    assert g.nodes["c/s"]["model"] == "slow"
    assert g.nodes["c/t"]["model"] == "fast"  # its own `using` wins
    assert g.nodes["h"]["model"] is None
    # the callee's own graph is untouched by the caller's `using`
    inner = graph(COMPOSED, "summarize")
    assert inner.nodes["s"]["model"] is None and set(inner.nodes) == {"in:text", "s", "t", "out:summary", "out:tags"}


def test_nested_and_repeated_calls():
    src = '''
    signature Up = text -> text_out: str
    pipeline a(x: str) -> (y: str) { s = predict Up(text: x) return y: s.text_out }
    pipeline b(x: str) -> (y: str) { first = a(x: x) second = a(x: first.y) return y: second.y }
    pipeline c(x: str) -> (y: str) { inner = b(x: x) return y: inner.y }
    '''
    g = graph(src, "c")
    assert set(step_nodes(g)) == {"inner/first/s", "inner/second/s"}
    assert g.nodes["inner/second/s"]["bindings"] == {"text": {"ref": "inner/first/s", "path": ["text_out"]}}
    assert g.nodes["out:y"]["bindings"] == {"value": {"ref": "inner/second/s", "path": ["text_out"]}}
    assert [g.nodes[n]["level"] for n in g.graph["order"]] == [0, 1, 2, 3]


def test_passthrough_call_and_computed_return():
    src = '''
    signature Up = text -> text_out: str
    pipeline ident(x: str) -> (y: str, n: int) { return y: x, n: len(x) }
    pipeline use(q: str) -> (r: str) {
        i = ident(x: q)
        s = predict Up(text: concat(i.y, "!"))
        return r: s.text_out
    }'''
    g = graph(src, "use")
    assert g.nodes["s"]["bindings"] == {
        "text": {"call": "concat", "args": [{"ref": "in:q", "path": []}, {"lit": "!"}]}}
    assert set(g.edges) == {("in:q", "s"), ("s", "out:r")}


def test_optional_callee_input_not_passed_is_null():
    src = '''
    type Who = { name: str }
    signature Greet = name: str?, style: str? -> greeting
    pipeline greet(who: Who?, style: str?) -> (greeting: str, name: str?) {
        g = predict Greet(name: who.name, style: style)
        return greeting: g.greeting, name: who.name
    }
    pipeline main(x: str) -> (greeting: str, name: str?) {
        g = greet(style: x)
        return greeting: g.greeting, name: g.name
    }'''
    g = graph(src, "main")
    assert g.nodes["g/g"]["bindings"] == {"name": {"lit": None}, "style": {"ref": "in:x", "path": []}}
    assert g.nodes["out:name"]["bindings"] == {"value": {"lit": None}}
    # a field of an optional object is itself optional, on the edge as in the checker
    inner = graph(src, "greet")
    assert inner.edges["in:who", "g"]["uses"] == [{"arg": "name", "path": ["name"], "type": "str?"}]


# ---- pruning and optional inputs ------------------------------------------------------------


def test_unused_steps_are_pruned():
    src = '''
    signature Answer = question -> answer
    signature Translate = text -> translation
    pipeline qa(question: str) -> (answer: str) {
        a = predict Answer(question: question)
        t = predict Translate(text: a.answer)
        u = predict Translate(text: t.translation)
        return answer: a.answer
    }'''
    program = compile_source(src, "t.lmp")
    assert sorted(d.code for d in program.diagnostics) == ["unused-step", "unused-step"]
    g = program.graphs["qa"]
    assert set(g.nodes) == {"in:question", "a", "out:answer"}
    assert g.graph["order"] == ["in:question", "a", "out:answer"]


def test_unused_callee_outputs_are_pruned_after_inlining():
    g = graph(COMPOSED.replace("tags: c.tags", 'tags: ["x"]'), "headline")
    assert "c/t" not in g and "c/s" in g


def test_optional_inputs_not_passed_are_bound_to_null():
    src = '''
    signature Answer = question, context: list[str]?, style: str? -> answer
    pipeline qa(question: str) -> (answer: str) {
        a = predict Answer(question: question, style: "short")
        return answer: a.answer
    }'''
    g = graph(src, "qa")
    assert g.nodes["a"]["bindings"] == {"question": {"ref": "in:question", "path": []},
                                        "style": {"lit": "short"}, "context": {"lit": None}}
    assert set(g.predecessors("a")) == {"in:question"}
    assert g.nodes["a"]["inputs"]["context"]["schema"] == {"anyOf": [{"type": "array", "items": {"type": "string"}},
                                                                     {"type": "null"}]}


# ---- JSON Schemas -------------------------------------------------------------------------------


def test_schemas_of_types():
    assert to_schema(STR) == {"type": "string"}
    assert to_schema(INT) == {"type": "integer"}
    assert to_schema(FLOAT) == {"type": "number"}
    assert to_schema(BOOL) == {"type": "boolean"}
    assert to_schema(ListT(INT)) == {"type": "array", "items": {"type": "integer"}}
    assert to_schema(OptT(STR)) == {"anyOf": [{"type": "string"}, {"type": "null"}]}
    assert to_schema(EnumT(("a", "b"))) == {"type": "string", "enum": ["a", "b"]}
    assert to_schema(NullT()) == {"type": "null"}
    assert to_schema(ObjT((("name", STR), ("age", OptT(INT)), ("tags", ListT(STR))))) == {
        "type": "object",
        "properties": {"name": {"type": "string"},
                       "age": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
                       "tags": {"type": "array", "items": {"type": "string"}}},
        "required": ["name", "tags"],
        "additionalProperties": False,
    }


def test_schemas_of_declared_types_on_nodes_validate_values():
    src = '''
    type Person = { name: str, age: int?, roles: list["admin" | "user"] }
    signature Extract = text -> people: list[Person], lead: Person?
    pipeline extract(text: str) -> (people: list[Person]) {
        e = predict Extract(text: text)
        return people: e.people
    }'''
    g = graph(src, "extract")
    outs = g.nodes["e"]["outputs"]
    assert outs["people"]["type"] == "list[Person]"
    people = outs["people"]["schema"]
    jsonschema.validate([{"name": "a", "age": None, "roles": ["admin"]}, {"name": "b", "roles": []}], people)
    for bad in ([{"name": "a", "roles": ["root"]}], [{"roles": []}], [{"name": "a", "roles": [], "x": 1}],
                {"name": "a"}, [{"name": 3, "roles": []}]):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, people)
    jsonschema.validate(None, outs["lead"]["schema"])


@pytest.mark.parametrize("t", [
    STR, INT, FLOAT, BOOL, ListT(ListT(STR)), OptT(EnumT(("x",))),
    ObjT((("a", OptT(ObjT((("b", ListT(INT)),)))),)),
])
def test_from_schema_inverts_to_schema(t):
    back = from_schema(to_schema(t))
    assert back == t
    assert assignable(back, t) is None and assignable(t, back) is None


# ---- JSON round trip ------------------------------------------------------------------------


@pytest.mark.parametrize("src,name", [(FAN_IN, "review"), (COMPOSED, "headline")])
def test_json_round_trip(src: str, name: str):
    g = graph(src, name)
    data = to_json(g)
    text = json.dumps(data, sort_keys=True)
    back = from_json(json.loads(text))
    assert set(back.nodes) == set(g.nodes)
    assert set(back.edges) == set(g.edges)
    for n in g:
        assert back.nodes[n] == g.nodes[n]
    for e in g.edges:
        assert back.edges[e] == g.edges[e]
    assert back.graph == g.graph
    assert json.dumps(to_json(back), sort_keys=True) == text  # stable
    assert [n["id"] for n in data["nodes"]] == sorted(n["id"] for n in data["nodes"])
