"""Remove steps whose results never reach an output (the checker warned: unused-step)."""

from __future__ import annotations

import networkx as nx

from lmpc.compiler.ir import STEP_KINDS


def prune_unused(g: nx.DiGraph, ctx) -> nx.DiGraph:
    outputs = [n for n, d in g.nodes(data=True) if d["kind"] == "output"]
    live = set(outputs)
    for o in outputs:
        live |= nx.ancestors(g, o)
    dead = [n for n, d in g.nodes(data=True) if d["kind"] in STEP_KINDS and n not in live]
    g.remove_nodes_from(dead)
    return g
