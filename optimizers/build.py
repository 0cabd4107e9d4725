"""Compile a pipeline with a strategy chain: zero-shot score, each strategy, final score.

The report records only what does not depend on the cache's state (scores, candidates, the
calls the build needed), so an interrupted build run again ends with the same artifact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import networkx as nx

from lmpc.compiler.diagnostics import printable
from lmpc.compiler.ir import calls_per_row, parameter_sites, site, walk
from lmpc.optimizers.base import OptimizeContext, Optimizer, OptimizerConfigError
from lmpc.optimizers.coverage import label_counts
from lmpc.optimizers.demos import label_fields
from lmpc.runtime.labels import collapse_warning
from lmpc.runtime.trace import start_meter


SEARCHES = ("random_search", "bayesian")  # strategies whose result lists scored candidates


@dataclass
class PlannedStage:
    stage: str
    calls: int
    searches: int = 0  # runs of retrieve steps: not model calls (cached like them, outside --max-calls)


def retrieve_steps(graph: nx.DiGraph) -> list[str]:
    """The retrieve steps a row runs, bodies included (a map's body once: one item per row)."""
    return [sid for sid, d in walk(graph) if d.get("kind") == "retrieve"]


def make_optimizers(strategies: list[dict[str, Any]]) -> list[Optimizer]:
    from lmpc.optimizers import REGISTRY

    out = []
    for spec in strategies:
        cls = REGISTRY.get(spec["name"])
        if cls is None:
            raise OptimizerConfigError(f"strategy `{spec['name']}` is not available in this version of lmpc "
                                       f"(available: {', '.join(sorted(REGISTRY))})")
        out.append(cls(**spec.get("options", {})))
    # checked before any model call: ensemble votes over the candidates of the search before it
    for i, opt in enumerate(out):
        if opt.name == "ensemble" and (i == 0 or out[i - 1].name not in SEARCHES):
            from lmpc.optimizers.ensemble import NEEDS_SEARCH

            raise OptimizerConfigError(NEEDS_SEARCH)
        if opt.name == "knn_few_shot" and i < len(out) - 1:
            raise OptimizerConfigError(f"knn_few_shot chooses each input's demos at run time, so the demos of "
                                       f"`{out[i + 1].name}` after it would be ignored: put knn_few_shot last "
                                       f"in the chain")
    return out


def plan(graph: nx.DiGraph, optimizers: list[Optimizer], n_train: int, n_dev: int,
         judge: nx.DiGraph | None = None) -> list[PlannedStage]:
    """Upper bounds of model calls per stage, before cache hits (what --dry-run prints), and
    of searches: every run of the program on a row runs its retrieve steps once.

    judge: the metric's judge pipeline, whose calls (one run per scored row) count too."""
    per_judge = calls_per_row(judge) if judge is not None else 0
    per_row = calls_per_row(graph) + per_judge  # checks' retries and best_of's samples included
    r_judge = len(retrieve_steps(judge)) if judge is not None else 0
    r_row = len(retrieve_steps(graph)) + r_judge
    stages = [PlannedStage("evaluate zero-shot on dev", n_dev * per_row, n_dev * r_row)]
    for opt in optimizers:
        searches = opt.planned_calls(graph, n_train, n_dev, r_judge, per_row=len(retrieve_steps(graph)))
        for stage, calls in opt.planned_calls(graph, n_train, n_dev, per_judge).items():
            stages.append(PlannedStage(f"{opt.name}: {stage}", calls, searches.get(stage, 0)))
    stages.append(PlannedStage("evaluate the result on dev", n_dev * per_row, n_dev * r_row))
    return stages


def demo_labels(graph: nx.DiGraph) -> dict[str, dict[str, int]]:
    """Per prompt node with enum or bool outputs: its demos' label counts (a knn node: its pool's)."""
    out = {}
    for nid in parameter_sites(graph):
        node = site(graph, nid)
        shown = (node.get("knn") or {}).get("pool") or node.get("demos", [])
        if label_fields(node):
            out[nid] = label_counts(node, shown)
    return out


def build(graph: nx.DiGraph, optimizers: list[Optimizer], ctx: OptimizeContext) -> tuple[nx.DiGraph, dict[str, Any]]:
    """Run the strategy chain on `graph`; returns the optimized graph and the build report."""
    usage = start_meter()  # every model call of the build: programs, teachers, judges
    try:
        ctx.log(f"evaluating the zero-shot program on {len(ctx.devset)} dev examples")
        before = ctx.evaluate(graph, ctx.devset, label="zero-shot on dev")
        ctx.log(f"zero-shot dev score {before.score:.3f} ({before.errors} errors)")
        steps = []
        current = graph
        for i, opt in enumerate(optimizers, 1):
            ctx.log(f"strategy {i}/{len(optimizers)}: {opt.name}("
                    f"{', '.join(f'{k}: {v}' for k, v in opt.options.items() if v is not None)})")
            result = opt.compile(current, ctx)
            ctx.previous = result
            current = result.graph
            steps.append({"strategy": opt.name, "options": opt.options, **result.report})
        ctx.log("evaluating the result on dev")
        after = ctx.evaluate(current, ctx.devset, label="result on dev")
    finally:
        usage.stop()
    tokens_before, tokens_after = before.prompt_tokens_per_example, after.prompt_tokens_per_example
    ctx.log(f"optimized dev score {after.score:.3f} ({after.errors} errors); prompt tokens per example "
            f"{tokens_before:g} -> {tokens_after:g}")
    if ctx.max_prompt_tokens is not None and tokens_after > ctx.max_prompt_tokens:
        ctx.log(f"warning: the result averages {tokens_after:g} prompt tokens per example, over max_prompt_tokens "
                f"{ctx.max_prompt_tokens}; only random_search, bayesian and ensemble choose under that budget "
                f"(lower max_demos / k for the other strategies)")
    demos = {n: len(site(current, n).get("demos", [])) for n in parameter_sites(current)}
    for stage, evaluated in (("zero-shot", before), ("result", after)):
        for warning in (collapse_warning(name, stats) for name, stats in evaluated.labels.items()):
            if warning is not None:
                ctx.log(f"warning: {stage} on dev: {printable(warning)}")
    report = {
        "train_examples": len(ctx.trainset),
        "dev_examples": len(ctx.devset),
        "score_before": round(before.score, 6),
        "score_after": round(after.score, 6),
        "errors_before": before.errors,
        "errors_after": after.errors,
        "eval_calls": before.calls + after.calls,
        "calls": usage.calls,  # every model call the build needed (cached ones included), judge calls too
        "prompt_tokens_before": tokens_before,  # mean per dev example, all prompt nodes summed
        "prompt_tokens_after": tokens_after,
        "strategies": steps,
        "demos_per_node": demos,
        "demo_labels": demo_labels(current),
    }
    if after.label_fields:  # enum and bool outputs: predicted/gold counts and confusion, before and after
        report["labels_before"], report["labels_after"] = before.labels, after.labels
    return current, report
