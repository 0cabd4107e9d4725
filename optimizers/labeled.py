"""labeled_few_shot: demos taken straight from the training data's gold labels; no model calls."""

from __future__ import annotations

import networkx as nx

from lmpc.compiler.options import STRATEGY_OPTIONS
from lmpc.compiler.ir import parameter_sites, site
from lmpc.optimizers.base import OptimizeContext, Optimizer, OptimizeResult
from lmpc.optimizers.demos import copy_graph, label_plan, labeled_candidates, rng_for, select
from lmpc.runtime.data import Example


def node_labeled_candidates(graph: nx.DiGraph, nid: str, examples: list[Example]) -> tuple[list[dict], str | None]:
    """The node's labeled demos from every usable example, or ([], why it has none)."""
    plan = label_plan(graph, nid)
    if not plan.ok:
        return [], f"cannot take labeled demos: {plan.reason}"
    candidates = labeled_candidates(graph, plan, examples)
    return candidates, None if candidates else "no training example has gold for all of its outputs"


def labeled_demos(graph: nx.DiGraph, examples: list[Example], k: int, seed: int,
                  exclude: dict[str, set[str]] | None = None,
                  only: list[str] | None = None) -> tuple[dict[str, list[dict]], dict[str, str]]:
    """Up to k labeled demos per node that can take them, chosen with label coverage.

    exclude: per node, sources not to use (those already used by bootstrapped demos);
    only: these nodes (default: every prompt node).
    Returns (node -> demos, node -> why it takes none)."""
    chosen: dict[str, list[dict]] = {}
    skipped: dict[str, str] = {}
    for nid in (only if only is not None else parameter_sites(graph)):
        plan = label_plan(graph, nid)
        if not plan.ok:
            skipped[nid] = f"cannot take labeled demos: {plan.reason}"
            continue
        taken = (exclude or {}).get(nid, set())
        candidates = labeled_candidates(graph, plan, [ex for ex in examples if ex.source not in taken])
        if not candidates and not taken:
            skipped[nid] = "no training example has gold for all of its outputs"
            continue
        chosen[nid] = select(site(graph, nid), candidates, k, rng_for("labeled", seed, nid))
    return chosen, skipped


class LabeledFewShot(Optimizer):
    """DSPy's LabeledFewShot, with label coverage: k demos per node from the gold labels."""

    name = "labeled_few_shot"
    options_spec = STRATEGY_OPTIONS["labeled_few_shot"]

    def planned_calls(self, graph: nx.DiGraph, n_train: int, n_dev: int, judge: int = 0,
                      per_row: int | None = None) -> dict[str, int]:
        return {}

    def compile(self, graph: nx.DiGraph, ctx: OptimizeContext) -> OptimizeResult:
        seed = self.seed(ctx)
        out = copy_graph(graph)
        chosen, skipped = labeled_demos(graph, ctx.trainset, self.options["k"], seed)
        for nid, demos in chosen.items():
            site(out, nid)["demos"] = demos
        nodes = {nid: {"labeled": [d["source"] for d in demos]} for nid, demos in chosen.items()}
        nodes.update({nid: {"skipped": why} for nid, why in skipped.items()})
        if skipped:
            ctx.log(f"{self.name}: no labeled demos for " + "; ".join(f"`{n}` ({w})" for n, w in skipped.items()))
        return OptimizeResult(out, {"seed": seed, "calls": 0, "nodes": nodes})
