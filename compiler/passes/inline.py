"""Inline pipeline calls, so the runtime and the optimizers see one flat DAG of steps.

A call step `c = other(x: e)` is replaced by other's steps, renamed `c/<step>`; other's
input refs are replaced by the caller's argument expressions, and the caller's refs to
`c.out` by other's return expression. Each call gets its own prompt nodes (its own
parameter sites), as two uses of one module do in DSPy.
"""

from __future__ import annotations

import copy

import networkx as nx

from lmpc.compiler.ir import NodeKind, inlined_id, input_name, map_refs, rebuild_edges, refs


def _extend(expr: dict, rest: list[str]) -> dict:
    if not rest:
        return expr
    if "ref" in expr:
        return {"ref": expr["ref"], "path": expr["path"] + rest}
    if expr.get("lit", ...) is None:
        return expr  # a field of an optional input that was not passed (or passed null) is null
    raise AssertionError("field access into a computed value is rejected by the checker")


def _inlined(pipeline: str, ctx) -> nx.DiGraph:
    """`pipeline` with its own calls inlined; computed once per pass run and then only read."""
    if pipeline not in ctx.inlined:
        ctx.inlined[pipeline] = inline_calls(ctx.raw[pipeline].copy(), ctx)
    return ctx.inlined[pipeline]


def _set_body_model(node: dict, model: str | None) -> None:
    """`using` on a call applies inside the bodies of the callee's nodes too."""
    for _, d in node.get("body", nx.DiGraph()).nodes(data=True):
        if d.get("model") is None and d["kind"] not in (NodeKind.INPUT, NodeKind.OUTPUT, NodeKind.CALL):
            d["model"] = model
            _set_body_model(d, model)


def _passes_on_bodies(g: nx.DiGraph, ctx) -> None:
    """A node's body (a map's) goes through the same passes as a pipeline, first."""
    from lmpc.compiler.passes import run_passes_on

    for _, d in g.nodes(data=True):
        if "body" in d and not d["body"].graph.get("order"):
            d["body"] = run_passes_on(d["body"], ctx)


def inline_calls(g: nx.DiGraph, ctx) -> nx.DiGraph:
    _passes_on_bodies(g, ctx)
    calls = [n for n, d in g.nodes(data=True) if d["kind"] == NodeKind.PIPELINE]
    if not calls:
        return g
    returns_of: dict[str, dict[str, dict]] = {}  # call node -> output name -> returned expression
    for call in calls:
        node = g.nodes[call]
        callee = _inlined(node["pipeline"], ctx)
        args = node["bindings"]

        def rename(ref: dict) -> dict:
            name = input_name(ref["ref"])
            if name is not None:
                return _extend(copy.deepcopy(args.get(name, {"lit": None})), ref["path"])
            return {"ref": inlined_id(call, ref["ref"]), "path": list(ref["path"])}

        returns: dict[str, dict] = {}
        for nid, data in callee.nodes(data=True):
            if data["kind"] == NodeKind.INPUT:
                continue
            bindings = {a: map_refs(e, rename) for a, e in data.get("bindings", {}).items()}
            if data["kind"] == NodeKind.OUTPUT:
                returns[data["name"]] = bindings["value"]
                continue
            new = copy.deepcopy({k: v for k, v in data.items() if k != "bindings"})
            new["bindings"] = bindings
            if "when" in new:  # a conditional step's condition reads the callee's values too
                new["when"] = map_refs(new["when"], rename)
            for c in new.get("checks", ()):  # a check reads the callee's values, as its bindings do
                c["cond"] = map_refs(c["cond"], rename)
            new["step"] = inlined_id(call, data["step"])
            if new.get("model") is None and new["kind"] != NodeKind.CALL:
                new["model"] = node.get("model")  # `using` on a call applies inside it
                _set_body_model(new, node.get("model"))
            g.add_node(inlined_id(call, nid), **new)
        returns_of[call] = returns
    g.remove_nodes_from(calls)

    def through(ref: dict) -> dict:
        returns = returns_of.get(ref["ref"])
        if returns is None:
            return ref
        # A returned expression may read another call's outputs (through the call's arguments).
        return map_refs(_extend(copy.deepcopy(returns[ref["path"][0]]), ref["path"][1:]), through)

    # One pass over the graph for all calls (not one per call: that was quadratic).
    for _, data in g.nodes(data=True):
        b = data.get("bindings")
        if b and any(r["ref"] in returns_of for e in b.values() for r in refs(e)):
            data["bindings"] = {a: map_refs(e, through) for a, e in b.items()}
        if "when" in data:
            data["when"] = map_refs(data["when"], through)
        for c in data.get("checks", ()):
            c["cond"] = map_refs(c["cond"], through)
    rebuild_edges(g)
    return g
