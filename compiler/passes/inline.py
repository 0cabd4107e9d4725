"""Inline pipeline calls, so the runtime and the optimizers see one flat DAG of steps.

A call step `c = other(x: e)` is replaced by other's steps, renamed `c/<step>`; other's
input refs are replaced by the caller's argument expressions, and the caller's refs to
`c.out` by other's return expression. Each call gets its own prompt nodes (its own
parameter sites), as two uses of one module do in DSPy.
"""

from __future__ import annotations

import copy

import networkx as nx

from lmpc.compiler.ir import map_refs, rebuild_edges


def _extend(expr: dict, rest: list[str]) -> dict:
    if not rest:
        return expr
    if "ref" in expr:
        return {"ref": expr["ref"], "path": expr["path"] + rest}
    raise AssertionError("field access into a computed value is rejected by the checker")


def _inlined(raw: dict[str, nx.DiGraph], pipeline: str, ctx) -> nx.DiGraph:
    return inline_calls(raw[pipeline].copy(), ctx)


def inline_calls(g: nx.DiGraph, ctx) -> nx.DiGraph:
    calls = [n for n, d in g.nodes(data=True) if d["kind"] == "pipeline"]
    for call in calls:
        node = g.nodes[call]
        callee = _inlined(ctx.raw, node["pipeline"], ctx)
        args = node["bindings"]

        def rename(ref: dict) -> dict:
            src = ref["ref"]
            if src.startswith("in:"):
                name = src[3:]
                return _extend(copy.deepcopy(args.get(name, {"lit": None})), ref["path"])
            return {"ref": f"{call}/{src}", "path": list(ref["path"])}

        returns: dict[str, dict] = {}
        for nid, data in callee.nodes(data=True):
            if data["kind"] == "input":
                continue
            bindings = {a: map_refs(e, rename) for a, e in data.get("bindings", {}).items()}
            if data["kind"] == "output":
                returns[data["name"]] = bindings["value"]
                continue
            new = copy.deepcopy(data)
            new["bindings"] = bindings
            new["step"] = f"{call}/{data['step']}"
            if new.get("model") is None and new["kind"] != "call":
                new["model"] = node.get("model")  # `using` on a call applies inside it
            g.add_node(f"{call}/{nid}", **new)

        def through(ref: dict) -> dict:
            if ref["ref"] == call:
                return _extend(copy.deepcopy(returns[ref["path"][0]]), ref["path"][1:])
            return ref

        g.remove_node(call)
        for nid in list(g.nodes):
            b = g.nodes[nid].get("bindings")
            if b:
                g.nodes[nid]["bindings"] = {a: map_refs(e, through) for a, e in b.items()}
    rebuild_edges(g)
    return g
