"""Helpers for the IR: a typed networkx.DiGraph per pipeline.

Node ids: `in:NAME` (pipeline inputs), `out:NAME` (pipeline outputs), and step names (a step
inlined from a called pipeline is `caller_step/inner_step`). A step node's `bindings` map
each input argument to an expression; edges are derived from the `ref`s in those
expressions. Expressions are JSON values:

    {"ref": NODE_ID, "path": [FIELD, ...]}   a pipeline input, or a step's output field
    {"lit": VALUE}                           a literal
    {"list": [EXPR, ...]}                    a list
    {"call": BUILTIN, "args": [EXPR, ...]}   a pure builtin (compiler/builtins.py)
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import networkx as nx

from lmpc.compiler.types import ObjT, OptT, describe, from_schema

PROMPT_KINDS = ("predict", "chain_of_thought")
STEP_KINDS = PROMPT_KINDS + ("call", "pipeline")


def input_id(name: str) -> str:
    return f"in:{name}"


def output_id(name: str) -> str:
    return f"out:{name}"


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
    return dict(expr)


def value_schema(g: nx.DiGraph, ref: dict) -> dict:
    """The JSON Schema of the value a ref points at."""
    node = g.nodes[ref["ref"]]
    path = list(ref["path"])
    if node["kind"] == "input":
        schema = node["schema"]
    else:
        if not path:
            return {}
        schema = node["outputs"][path.pop(0)]["schema"]
    t = from_schema(schema)
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
    if node["kind"] == "input" and not path:
        return node["type"]
    if node["kind"] != "input" and len(path) == 1:
        return node["outputs"][path[0]]["type"]
    return describe(from_schema(value_schema(g, ref)))


def rebuild_edges(g: nx.DiGraph) -> None:
    """Derive edges from node bindings; each edge lists what flows along it and its type."""
    g.remove_edges_from(list(g.edges))
    for nid, data in g.nodes(data=True):
        for arg, expr in data.get("bindings", {}).items():
            for r in refs(expr):
                src = r["ref"]
                use = {"arg": arg, "path": list(r["path"]), "type": value_type(g, r)}
                if g.has_edge(src, nid):
                    g.edges[src, nid]["uses"].append(use)
                else:
                    g.add_edge(src, nid, uses=[use])


def step_nodes(g: nx.DiGraph) -> list[str]:
    return [n for n, d in g.nodes(data=True) if d["kind"] in STEP_KINDS]


def prompt_nodes(g: nx.DiGraph) -> list[str]:
    """The parameter sites optimizers rewrite (instructions, demos), in run order."""
    order = g.graph.get("order") or list(nx.topological_sort(g))
    return [n for n in order if g.nodes[n]["kind"] in PROMPT_KINDS]


def to_json(g: nx.DiGraph) -> dict[str, Any]:
    """A deterministic JSON form of the graph (node-link, sorted)."""
    data = nx.node_link_data(g, edges="edges")
    data["nodes"] = sorted(data["nodes"], key=lambda n: n["id"])
    data["edges"] = sorted(data["edges"], key=lambda e: (e["source"], e["target"]))
    return data


def from_json(data: dict[str, Any]) -> nx.DiGraph:
    return nx.node_link_graph(data, directed=True, edges="edges")
