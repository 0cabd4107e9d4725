"""random_search: DSPy's BootstrapFewShotWithRandomSearch on one teacher run.

Candidates: 0 = the input graph (zero-shot, or whatever demos it already has), 1 = labeled
demos only, 2 = bootstrapped with max_demos, 3.. = bootstrapped with a seeded shuffle and a
seeded size in [1, max_demos]. The teacher runs once over the training set: its traces do
not depend on the candidate, only the selection does. Each candidate is scored on the dev
set (the training set when there is none); the best wins, ties going to fewer demos, then to
the lower index. With a `max_prompt_tokens` budget (OptimizeContext), a candidate whose
prompts average more tokens per example is never chosen.
"""

from __future__ import annotations

from typing import Any

import networkx as nx

from lmpc.compiler.options import STRATEGY_OPTIONS
from lmpc.compiler.ir import calls_per_row, parameter_sites, site, to_json
from lmpc.optimizers.base import Candidate, OptimizeContext, Optimizer, OptimizerConfigError, OptimizeResult
from lmpc.optimizers.bootstrap import check_teacher, choose_demos, run_teacher
from lmpc.optimizers.demos import copy_graph, demo_count, rng_for
from lmpc.optimizers.labeled import labeled_demos


class RandomSearch(Optimizer):
    name = "random_search"
    options_spec = STRATEGY_OPTIONS["random_search"]

    def planned_calls(self, graph: nx.DiGraph, n_train: int, n_dev: int, judge: int = 0,
                      per_row: int | None = None) -> dict[str, int]:
        per_row = (calls_per_row(graph) if per_row is None else per_row) + judge  # each row's prediction is scored
        teacher = n_train * per_row if self.options["candidates"] > 2 else 0
        scored_on = n_dev or n_train
        return {"teacher": teacher, "candidates": self.options["candidates"] * scored_on * per_row}

    def _graphs(self, graph: nx.DiGraph, ctx: OptimizeContext, seed: int) -> tuple[list[tuple[nx.DiGraph, dict]], dict]:
        """The candidate graphs with what each is, and the teacher's summary."""
        o = self.options
        out: list[tuple[nx.DiGraph, dict]] = [(graph, {"kind": "zero_shot"})]
        if o["candidates"] > 1:
            g = copy_graph(graph)
            chosen, _ = labeled_demos(graph, ctx.trainset, o["max_labeled"], seed)
            for nid, demos in chosen.items():
                site(g, nid)["demos"] = demos
            out.append((g, {"kind": "labeled"}))
        teacher: dict[str, Any] = {}
        if o["candidates"] > 2:
            run = run_teacher(self.name, graph, ctx, o["teacher"], max_rounds=1)
            teacher = run.summary()
            ctx.log(f"{self.name}: {len(run.passed)} of {run.train} training examples passed on the teacher "
                    f"({run.errors} errors, {run.calls} calls)")
            for i in range(2, o["candidates"]):
                size = o["max_demos"] if i == 2 else rng_for(self.name, "size", seed, i).randint(1, o["max_demos"])
                g, nodes = choose_demos(graph, run, ctx.trainset, size, o["max_labeled"], f"{seed}:{i}",
                                        o["balance"])
                out.append((g, {"kind": "bootstrapped", "max_demos": size, "nodes": nodes}))
        return out, teacher

    def compile(self, graph: nx.DiGraph, ctx: OptimizeContext) -> OptimizeResult:
        o = self.options
        seed = self.seed(ctx)
        check_teacher(self.name, graph, o["teacher"])
        if not ctx.trainset and o["candidates"] > 1:
            raise OptimizerConfigError(f"{self.name} needs training examples (`train` in the optimize block)")
        scored_on, examples = ctx.scoring_set()
        if not ctx.devset:
            ctx.log(f"{self.name}: no dev set; scoring the candidates on the training set (optimistic)")
        graphs, teacher = self._graphs(graph, ctx, seed)
        budget = ctx.max_prompt_tokens
        rows: list[dict[str, Any]] = []
        seen: dict[str, int] = {}
        for i, (g, about) in enumerate(graphs):
            key = repr(to_json(g))
            row = {"index": i, **about, "demos": demo_count(g)}
            if key in seen:  # the same demos as an earlier candidate: same score, no calls
                first = rows[seen[key]]
                row.update(score=first["score"], errors=first["errors"], calls=0, prompt_tokens=first["prompt_tokens"],
                           same_as=seen[key])
            else:
                seen[key] = i
                report = ctx.evaluate(g, examples, label=f"{self.name}: candidate {i} ({i + 1}/{len(graphs)})")
                row.update(score=round(report.score, 6), errors=report.errors, calls=report.calls,
                           prompt_tokens=report.prompt_tokens_per_example)
            if budget is not None and row["prompt_tokens"] > budget:
                row["over_budget"] = True
            ctx.log(f"{self.name}: candidate {i} ({row['kind']}, {row['demos']} demos): score {row['score']:.3f}, "
                    f"{row['prompt_tokens']:g} prompt tokens/example" + (" (over max_prompt_tokens)"
                                                                        if row.get("over_budget") else ""))
            rows.append(row)
        eligible = [r for r in rows if not r.get("over_budget")]
        if not eligible:
            ctx.log(f"{self.name}: no candidate fits max_prompt_tokens {budget}; keeping the one with the fewest "
                    f"prompt tokens")
            eligible = [min(rows, key=lambda r: (r["prompt_tokens"], r["index"]))]
        best = min(eligible, key=lambda r: (-r["score"], r["demos"], r["index"]))
        ctx.log(f"{self.name}: best is candidate {best['index']} ({best['kind']}), score {best['score']:.3f}")
        calls = teacher.get("calls", 0) + sum(r["calls"] for r in rows)
        report = {"seed": seed, "scored_on": scored_on, "best": best["index"], "best_score": best["score"],
                  "calls": calls, "teacher": teacher, "max_prompt_tokens": budget, "candidates": rows}
        ranked = sorted((r for r in eligible if "same_as" not in r), key=lambda r: (-r["score"], r["demos"], r["index"]))
        candidates = [Candidate(copy_graph(graphs[r["index"]][0]), r["score"], {"index": r["index"], "kind": r["kind"]})
                      for r in ranked]
        return OptimizeResult(copy_graph(graphs[best["index"]][0]), report, candidates)
