"""Remove steps whose results never reach an output (the checker warned: unused-step)."""

from __future__ import annotations

import networkx as nx

from lmpc.compiler.ir import NodeKind, is_step


def prune_unused(g: nx.DiGraph, ctx) -> nx.DiGraph:
    outputs = [n for n, d in g.nodes(data=True) if d["kind"] == NodeKind.OUTPUT]
    live = set(outputs)
    for o in outputs:
        live |= nx.ancestors(g, o)
    dead = [n for n, d in g.nodes(data=True) if is_step(d) and n not in live]
    g.remove_nodes_from(dead)
    return g
