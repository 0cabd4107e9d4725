"""Helpers for the IR: a typed networkx.DiGraph per pipeline.

This module is the contract between the compiler, the runtime and the optimizers: node ids,
the kinds of node, and the shapes of nodes, fields and expressions. What each kind of step
does lives in compiler/kinds/ (one module per kind, registered in `compiler.kinds.KINDS`).

Node ids: `in:NAME` (pipeline inputs), `out:NAME` (pipeline outputs), and step names (a step
inlined from a called pipeline is `caller_step/inner_step`). Always build them with
`input_id`, `output_id` and `inlined_id`. A node whose kind holds a sub-graph (`map`) keeps
it in its `body` attribute; a node inside a body is named from outside by a *site id*,
`step[*]/inner` (see `site`, `parameter_sites`). A step node's `bindings` map each input
argument to an expression; edges are derived from the `ref`s in those expressions.
Expressions are JSON values:

    {"ref": NODE_ID, "path": [FIELD, ...]}   a pipeline input, or a step's output field
    {"lit": VALUE}                           a literal
    {"list": [EXPR, ...]}                    a list
    {"call": BUILTIN, "args": [EXPR, ...]}   a pure builtin (compiler/builtins.py)
    {"op": OPERATOR, "args": [EXPR, ...]}    an operator (compiler/operators.py): two
                                             operands, one for "not"
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Any, Callable, Iterator, Optional, TypedDict, Union

import networkx as nx

from lmpc.compiler.types import ObjT, OptT, describe, from_schema


class NodeKind(str, Enum):
    """The `kind` attribute of a node. Step kinds are described by compiler/kinds/."""

    INPUT = "input"
    OUTPUT = "output"
    PREDICT = "predict"
    CHAIN_OF_THOUGHT = "chain_of_thought"
    CALL = "call"
    MAP = "map"
    PIPELINE = "pipeline"  # a call of another pipeline: exists only until the inline pass

    def __str__(self) -> str:
        return self.value


# -- shapes ------------------------------------------------------------------------------------
class Field(TypedDict):
    type: str  # how the type reads (keeps declared names like `Label`)
    schema: dict  # the JSON Schema lmpc's to_schema builds from the type
    description: Optional[str]


class Ref(TypedDict):
    ref: str  # a node id
    path: list[str]  # field names: the first one is a step's output field


Expr = Union[Ref, dict]  # also {"lit": V}, {"list": [Expr]}, {"call": NAME, "args": [Expr]}, {"op": OP, "args": [Expr]}


class StepNode(TypedDict, total=False):
    """A step node's attributes (compiler/kinds/<kind>.py lists which ones each kind uses)."""

    kind: str
    step: str  # the step's name as written (inlined: caller/inner)
    bindings: dict[str, Expr]  # exactly one per input
    inputs: dict[str, Field]
    outputs: dict[str, Field]
    model: Optional[str]
    span: Optional[dict]
    level: int  # derived (annotate pass)
    signature: str  # predict, chain_of_thought, call
    instructions: str  # prompt kinds
    demos: list[dict]  # prompt kinds
    fn: str  # call: "file.py:function"
    item: str  # map: the loop variable (also the input bound to the list)
    target: str  # map: the signature or pipeline run per item
    body: nx.DiGraph  # map: the sub-graph run per item
    when: Expr  # a conditional step: runs only when this is true, else its outputs are null


# -- ids ---------------------------------------------------------------------------------------
INPUT_PREFIX = "in:"
OUTPUT_PREFIX = "out:"
SITE_SEP = "[*]/"  # between a node holding a body and a node of that body


def input_id(name: str) -> str:
    return f"{INPUT_PREFIX}{name}"


def output_id(name: str) -> str:
    return f"{OUTPUT_PREFIX}{name}"


def input_name(nid: str) -> str | None:
    """The input's name for an input node id, else None."""
    return nid[len(INPUT_PREFIX):] if nid.startswith(INPUT_PREFIX) else None


def inlined_id(call_step: str, inner: str) -> str:
    """The id of a callee's node once inlined into the step that called it."""
    return f"{call_step}/{inner}"


def site_id(outer: str, inner: str) -> str:
    """The id of node `inner` of the body of node `outer`, seen from the outer graph."""
    return f"{outer}{SITE_SEP}{inner}"


def item_step(step: str, index: int, inner: str) -> str:
    """How traces and errors name one item's run of a body's step: `notes[2]/Summarize`."""
    return f"{step}[{index}]/{inner}"


def is_step(d: dict) -> bool:
    return d["kind"] not in (NodeKind.INPUT, NodeKind.OUTPUT)


def refs(expr: dict) -> Iterator[dict]:
    if "ref" in expr:
        yield expr
    for child in expr.get("list", ()):
        yield from refs(child)
    for child in expr.get("args", ()):
        yield from refs(child)


def map_refs(expr: dict, fn: Callable[[dict], dict]) -> dict:
    """A copy of `expr` with every ref replaced by fn(ref)."""
    if "ref" in expr:
        return fn(expr)
    if "list" in expr:
        return {"list": [map_refs(e, fn) for e in expr["list"]]}
    if "call" in expr:
        return {"call": expr["call"], "args": [map_refs(e, fn) for e in expr["args"]]}
    if "op" in expr:
        return {"op": expr["op"], "args": [map_refs(e, fn) for e in expr["args"]]}
    return dict(expr)


def expr_text(expr: dict, name: Callable[[dict], str] | None = None) -> str:
    """An IR expression as it reads in a .lmp file; `name(ref)` names a ref (default: its node
    id and path, `s.answer`, `in:question` as `question`)."""
    import json

    def show(e: dict, outer: int) -> str:
        if "ref" in e:
            if name is not None:
                return name(e)
            return ".".join([input_name(e["ref"]) or e["ref"], *e["path"]])
        if "lit" in e:
            return "null" if e["lit"] is None else json.dumps(e["lit"], ensure_ascii=False)
        if "list" in e:
            return "[" + ", ".join(show(i, 0) for i in e["list"]) + "]"
        if "call" in e:
            return f"{e['call']}(" + ", ".join(show(a, 0) for a in e["args"]) + ")"
        op = e["op"]
        rank = _RANK.get(op, 4)
        if op == "not":
            text = "not " + show(e["args"][0], rank)
        elif op in ("and", "or"):  # left-associative: a right operand of the same rank needs parentheses
            text = f"{show(e['args'][0], rank)} {op} {show(e['args'][1], rank + 1)}"
        else:  # a comparison's operands are atoms: any operator in them is parenthesized
            text = f"{show(e['args'][0], 5)} {op} {show(e['args'][1], 5)}"
        return f"({text})" if rank < outer else text

    return show(expr, 0)


_RANK = {"or": 1, "and": 2, "not": 3}  # comparisons bind tighter: 4 (and take atoms)


def value_schema(g: nx.DiGraph, ref: dict) -> dict:
    """The JSON Schema of the value a ref points at."""
    node = g.nodes[ref["ref"]]
    path = list(ref["path"])
    if node["kind"] == NodeKind.INPUT:
        schema = node["schema"]
    else:
        if not path:
            return {}
        schema = node["outputs"][path.pop(0)]["schema"]
    t = from_schema(schema)
    if "when" in node and not isinstance(t, OptT):
        t = OptT(t)  # a conditional step's outputs are null when it does not run
    optional = False
    for name in path:
        optional = optional or isinstance(t, OptT)
        t = t.inner if isinstance(t, OptT) else t
        t = dict(t.fields).get(name) if isinstance(t, ObjT) else None
        if t is None:
            return {}
    if optional and not isinstance(t, OptT):
        t = OptT(t)  # a field of an optional object is null when the object is
    from lmpc.compiler.types import to_schema

    return to_schema(t)


def value_type(g: nx.DiGraph, ref: dict) -> str:
    """How the type of a ref's value reads (keeps declared names like `Label`)."""
    node = g.nodes[ref["ref"]]
    path = ref["path"]
    if node["kind"] == NodeKind.INPUT and not path:
        return node["type"]
    if node["kind"] != NodeKind.INPUT and len(path) == 1:
        t = node["outputs"][path[0]]["type"]
        # a conditional step's outputs are null when it does not run
        return t + "?" if "when" in node and "anyOf" not in node["outputs"][path[0]]["schema"] else t
    return describe(from_schema(value_schema(g, ref)))


WHEN_ARG = "(when)"  # how an edge names what a conditional step's condition reads


def node_exprs(d: dict) -> Iterator[tuple[str, dict]]:
    """The expressions a node reads: its bindings, and a conditional step's `when` (named
    WHEN_ARG)."""
    yield from d.get("bindings", {}).items()
    if "when" in d:
        yield WHEN_ARG, d["when"]


def rebuild_edges(g: nx.DiGraph) -> None:
    """Derive edges from what nodes read (bindings, conditions); each edge lists what flows
    along it and its type."""
    g.remove_edges_from(list(g.edges))
    for nid, data in g.nodes(data=True):
        for arg, expr in node_exprs(data):
            for r in refs(expr):
                src = r["ref"]
                use = {"arg": arg, "path": list(r["path"]), "type": value_type(g, r)}
                if g.has_edge(src, nid):
                    g.edges[src, nid]["uses"].append(use)
                else:
                    g.add_edge(src, nid, uses=[use])


def step_nodes(g: nx.DiGraph) -> list[str]:
    return [n for n, d in g.nodes(data=True) if is_step(d)]


def _order(g: nx.DiGraph) -> list[str]:
    return g.graph.get("order") or list(nx.topological_sort(g))


def prompt_nodes(g: nx.DiGraph) -> list[str]:
    """The parameter sites optimizers rewrite (instructions, demos) in this graph's own nodes,
    in run order. Sites inside a node's body (a map) are listed by `parameter_sites`."""
    from lmpc.compiler.kinds import KINDS

    return [n for n in _order(g) if _is_prompt(KINDS, g.nodes[n])]


def _is_prompt(kinds: dict, d: dict) -> bool:
    kind = kinds.get(d["kind"])  # `pipeline` nodes (before inlining) have no kind module
    return kind is not None and kind.prompt


def walk(g: nx.DiGraph, prefix: str = "") -> Iterator[tuple[str, dict]]:
    """Every node of the graph and of the bodies it holds, with its site id, in run order."""
    for nid in _order(g):
        d = g.nodes[nid]
        yield prefix + nid, d
        if "body" in d:
            yield from walk(d["body"], site_id(prefix + nid, ""))


def calls_per_row(g: nx.DiGraph) -> int:
    """An upper bound of the model calls one row makes (--dry-run plans): per prompt node, its
    kind's calls (best_of: n) times 1 + the retries of the checks on it (each check retries on
    its own, so they add up). A map's body counts once: its item count is known at run time."""
    from lmpc.compiler.kinds import KINDS

    total = 0
    for _, d in walk(g):
        kind = KINDS.get(d["kind"])
        if kind is not None and kind.prompt:
            total += kind.max_calls(d) * (1 + sum(c["retries"] for c in d.get("checks", ())))
    return total


def parameter_sites(g: nx.DiGraph) -> list[str]:
    """Every prompt node, bodies included (`notes[*]/Summarize`), in run order: read and set
    one with `site(g, id)`."""
    from lmpc.compiler.kinds import KINDS

    return [sid for sid, d in walk(g) if _is_prompt(KINDS, d)]


def site(g: nx.DiGraph, sid: str) -> dict:
    """The attributes of the node a site id names (a node of g, or of a body inside it)."""
    outer, sep, rest = sid.partition(SITE_SEP)
    if not sep:
        return g.nodes[sid]
    return site(g.nodes[outer]["body"], rest)


def site_step(g: nx.DiGraph, sid: str) -> str:
    """How traces name the site's step, items replaced by `[*]`: `j[*]/Judge` (see event_site)."""
    outer, sep, rest = sid.partition(SITE_SEP)
    step = g.nodes[outer]["step"]
    return step if not sep else step + SITE_SEP + site_step(g.nodes[outer]["body"], rest)


def event_site(step: str) -> str:
    """A trace event's step with its item indices as `[*]` (`j[2]/Judge` -> `j[*]/Judge`), to
    match site_step."""
    return re.sub(r"\[\d+\]/", SITE_SEP, step)


def to_json(g: nx.DiGraph) -> dict[str, Any]:
    """A deterministic JSON form of the graph (node-link, sorted); bodies nested the same way."""
    data = nx.node_link_data(g, edges="edges")
    data["nodes"] = sorted(({**n, "body": to_json(n["body"])} if "body" in n else n for n in data["nodes"]),
                           key=lambda n: n["id"])
    data["edges"] = sorted(data["edges"], key=lambda e: (e["source"], e["target"]))
    return data


def from_json(data: dict[str, Any]) -> nx.DiGraph:
    g = nx.node_link_graph(data, directed=True, edges="edges")
    for _, d in g.nodes(data=True):
        if isinstance(d.get("body"), dict):
            d["body"] = from_json(d["body"])
    return g
