"""IR passes: each is a function (graph, PassContext) -> graph, run in the order of PASSES."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import networkx as nx

from lmpc.compiler.passes.annotate import annotate_order
from lmpc.compiler.passes.inline import inline_calls
from lmpc.compiler.passes.prune import prune_unused


@dataclass
class PassContext:
    raw: dict[str, nx.DiGraph]  # every pipeline lowered, before passes (for inlining)
    inlined: dict[str, nx.DiGraph] = field(default_factory=dict)  # callees already inlined


Pass = Callable[[nx.DiGraph, PassContext], nx.DiGraph]

PASSES: tuple[Pass, ...] = (inline_calls, prune_unused, annotate_order)


def run_passes(name: str, raw: dict[str, nx.DiGraph]) -> nx.DiGraph:
    return run_passes_on(raw[name].copy(), PassContext(raw))


def run_passes_on(g: nx.DiGraph, ctx: PassContext) -> nx.DiGraph:
    """The passes over one graph (a pipeline's, or a node's body: inline_calls runs them on
    bodies first)."""
    for p in PASSES:
        g = p(g, ctx)
    return g
