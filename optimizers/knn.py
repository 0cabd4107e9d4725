"""knn_few_shot: demos chosen per input, by embedding similarity, from a bootstrapped pool.

Compile time: a teacher runs over the training set once (as bootstrap_few_shot's first
round); every prompt node's passing (inputs, outputs) pairs, one per distinct input, form its
pool, plus up to max_labeled labeled demos from rows the pool lacks. The pool's rendered
inputs are embedded once (cached) and the node gets `knn` = {k, embedder, identity, pool,
vectors} (see runtime/embed.py); its static `demos` are cleared: at run time the executor
shows the k pool demos nearest to each row's inputs instead.

The pool's order (which decides ties and which of two equal inputs is kept) is the demos'
seeded order (sorted by source, shuffled per node), so it does not depend on the order of
the training file. A node with an empty pool (no passing run, no labeled demo) is left as it
was and reported as skipped.
"""

from __future__ import annotations

from typing import Any

import networkx as nx

from lmpc.compiler.options import STRATEGY_OPTIONS
from lmpc.compiler.ir import calls_per_row, parameter_sites, site
from lmpc.optimizers.base import OptimizeContext, Optimizer, OptimizerConfigError, OptimizeResult
from lmpc.optimizers.bootstrap import check_teacher, run_teacher
from lmpc.optimizers.coverage import choose, label_counts
from lmpc.optimizers.demos import copy_graph, dedupe, label_fields, rng_for, seeded_order
from lmpc.optimizers.labeled import labeled_demos, node_labeled_candidates
from lmpc.optimizers.passages import fit_pools
from lmpc.runtime.embed import create_embedder, embed_cached
from lmpc.runtime.prompt import render_inputs


class KNNFewShot(Optimizer):
    """DSPy's KNNFewShot on one teacher run: a per-input choice from a stored, embedded pool."""

    name = "knn_few_shot"
    options_spec = STRATEGY_OPTIONS["knn_few_shot"]

    def planned_calls(self, graph: nx.DiGraph, n_train: int, n_dev: int, judge: int = 0,
                      per_row: int | None = None) -> dict[str, int]:
        return {"teacher": n_train * ((calls_per_row(graph) if per_row is None else per_row) + judge)}

    def compile(self, graph: nx.DiGraph, ctx: OptimizeContext) -> OptimizeResult:
        o = self.options
        seed = self.seed(ctx)
        check_teacher(self.name, graph, o["teacher"])
        if not ctx.trainset:
            raise OptimizerConfigError(f"{self.name} needs training examples (`train` in the optimize block)")
        # Before any model call: an unknown embedder or a missing package fails the build at once.
        embedder = create_embedder(o["embedder"], graph.graph.get("models", {}), ctx.base_dir)
        run = run_teacher(self.name, graph, ctx, o["teacher"], max_rounds=1)
        ctx.log(f"{self.name}: {len(run.passed)} of {run.train} training examples passed on the teacher "
                f"({run.errors} errors, {run.calls} calls)")
        out = copy_graph(graph)
        nodes: dict[str, dict[str, Any]] = {}
        pools: dict[str, list[dict[str, Any]]] = {}
        embedded = 0
        for nid in parameter_sites(graph):
            node = site(graph, nid)
            boot_candidates = run.candidates.get(nid, [])
            boot = dedupe(seeded_order(boot_candidates, rng_for("knn", seed, nid)))
            entry: dict[str, Any] = {"candidates": len(boot_candidates), "bootstrapped": len(boot)}
            if o["balance"] and label_fields(node):
                # the coverage rule over a pool as large as before (coverage.py): labels no
                # teacher run passed get labeled demos, no label more than its fair share
                labeled_all, why = node_labeled_candidates(graph, nid, ctx.trainset)
                pool = choose(node, boot_candidates, labeled_all, balance=True, boot_rng=rng_for("knn", seed, nid),
                              labeled_rng=rng_for("labeled", seed, nid), max_boot=len(boot),
                              fill_to=len(boot) + o["max_labeled"], max_topup=o["max_labeled"])
                entry["bootstrapped"] = sum(d["kind"] == "bootstrapped" for d in pool)
                entry["labeled"] = sum(d["kind"] == "labeled" for d in pool)
                entry["labels"] = label_counts(node, pool)
                if why is not None:
                    entry["labeled_skipped"] = why
            else:
                labeled: list[dict[str, Any]] = []
                if o["max_labeled"] > 0:
                    used = {nid: {d["source"] for d in boot}}
                    chosen, why = labeled_demos(graph, ctx.trainset, o["max_labeled"], seed, exclude=used,
                                                only=[nid])
                    seen = {render_inputs(node, d["inputs"]) for d in boot}
                    labeled = [d for d in chosen.get(nid, []) if render_inputs(node, d["inputs"]) not in seen]
                    entry["labeled"] = len(labeled)
                    if nid in why:
                        entry["labeled_skipped"] = why[nid]
                pool = boot + labeled
                if label_fields(node):
                    entry["labels"] = label_counts(node, pool)
            nodes[nid], pools[nid] = entry, pool
        # demos with passages (a retrieve step's): trimmed before they are embedded and stored
        pools, fitted = fit_pools(out, {n: p for n, p in pools.items() if p}, o["k"], run.scale,
                                  run.max_prompt_tokens)
        for nid, entry in nodes.items():
            pool = pools.get(nid, [])
            if nid in fitted:
                entry["passages"] = fitted[nid]
                if "labels" in entry:  # a demo that could not fit left the pool
                    entry["labels"] = label_counts(site(graph, nid), pool)
            if not pool:
                entry["skipped"] = "no passing teacher run and no labeled demo: the node keeps its demos"
                continue
            vectors = embed_cached(embedder, [render_inputs(site(graph, nid), d["inputs"]) for d in pool], ctx.cache)
            embedded += len(pool)
            site(out, nid)["knn"] = {"k": o["k"], "embedder": o["embedder"], "identity": embedder.identity,
                                     "pool": pool, "vectors": vectors}
            site(out, nid)["demos"] = []  # chosen per row at run time
            entry["pool"] = len(pool)
        sizes = ", ".join(f"`{site(graph, n)['step']}` {e.get('pool', 0)}" for n, e in nodes.items())
        ctx.log(f"{self.name}: pools of demos per step: {sizes}; embedded with {embedder.identity}")
        report = {"seed": seed, "k": o["k"], "embedder": o["embedder"], "embedder_identity": embedder.identity,
                  "dim": embedder.dim, "embedded": embedded, "calls": run.calls, **run.summary(), "nodes": nodes}
        return OptimizeResult(out, report)
