"""Record a deterministic run order and each node's level (steps of one level are independent)."""

from __future__ import annotations

import networkx as nx


def annotate_order(g: nx.DiGraph, ctx) -> nx.DiGraph:
    # Ties are broken by source position, so the order reads like the file.
    def key(n: str) -> tuple:
        span = g.nodes[n].get("span") or {}
        return (span.get("line", 0), span.get("col", 0), n)

    order = list(nx.lexicographical_topological_sort(g, key=key))
    g.graph["order"] = order
    for n in order:
        preds = list(g.predecessors(n))
        g.nodes[n]["level"] = 1 + max((g.nodes[p]["level"] for p in preds), default=-1)
    return g
