"""finetune: DSPy's BootstrapFinetune for local models. Every prompt node on a llama_cpp model
gets its own LoRA adapter, trained offline on the node's own prompts and target outputs, and
shipped with the artifact (runtime/models/adapters.py).

Training data per node: (a) the (inputs, outputs) of teacher runs that earned full marks
(bootstrap_few_shot's run_teacher: intermediate nodes included) and (b) labeled rows where
the node can take labeled demos (`labeled: false` turns them off). Each becomes the prompt
the tuned node will render at run time (runtime/prompt.render_messages, with the node's demos
only under `keep_demos: true`) and its answer as the demo form renders outputs
(render_outputs); the model tokenizes both through its own chat template
(LlamaCppModel.training_tokens), so training sees the runtime's exact prompt tokens.

A killed build resumes: the teacher's calls come from the cache, and an adapter trained before
is found again in the adapter store by the hash of everything its training read (base model,
token ids, options), so only an unfinished node trains again (from the start: no checkpoints).
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import networkx as nx

from lmpc.compiler.ir import calls_per_row, parameter_sites, site
from lmpc.compiler.options import STRATEGY_OPTIONS
from lmpc.optimizers.base import OptimizeContext, Optimizer, OptimizeResult
from lmpc.optimizers.bootstrap import check_teacher, run_teacher
from lmpc.optimizers.demos import copy_graph, rng_for
from lmpc.optimizers.labeled import node_labeled_candidates
from lmpc.runtime.models.adapters import STORE, file_sha256
from lmpc.runtime.prompt import render_messages, render_outputs

TUNABLE_KINDS = ("predict", "chain_of_thought")  # one prompt, one answer; react trains on trajectories: not yet


def tunable(graph: nx.DiGraph, nid: str) -> str | None:
    """Why node `nid` cannot be finetuned, or None."""
    node = site(graph, nid)
    if node["kind"] not in TUNABLE_KINDS:
        return f"a {node['kind']} step (finetune tunes predict and chain_of_thought steps)"
    name = node.get("model") or graph.graph["default_model"]
    if graph.graph["models"][name]["provider"] != "llama_cpp":
        return f"its model `{name}` is not a local llama_cpp model"
    return None


def training_pairs(node: dict, boot: list[dict], labeled: list[dict], limit: int, seed: Any,
                   nid: str) -> tuple[list[dict], dict[str, int]]:
    """Distinct (inputs, outputs) pairs that give every output field (an answer the grammar
    could produce): bootstrapped first, then labeled, sorted by source, shuffled with the seed,
    at most `limit`."""
    seen, pairs, counts = set(), [], {"bootstrapped": 0, "labeled": 0, "incomplete": 0}
    for d in sorted(boot, key=lambda d: d.get("source", "")) + sorted(labeled, key=lambda d: d.get("source", "")):
        if set(node["outputs"]) - set(d["outputs"]):
            counts["incomplete"] += 1  # e.g. a labeled chain_of_thought row: no reasoning to teach
            continue
        key = json.dumps([d["inputs"], d["outputs"]], sort_keys=True, ensure_ascii=False)
        if key in seen:
            continue
        seen.add(key)
        pairs.append(d)
    rng_for("finetune", seed, nid).shuffle(pairs)
    pairs = pairs[:limit]
    for d in pairs:
        counts[d.get("kind", "labeled")] = counts.get(d.get("kind", "labeled"), 0) + 1
    return pairs, counts


def store_dir(ctx: OptimizeContext) -> Path:
    from lmpc.runtime.cache import default_cache_dir

    path = getattr(ctx.cache, "path", None)
    return (Path(path).parent if path else default_cache_dir()) / STORE


class Finetune(Optimizer):
    """A LoRA adapter per local prompt node, trained on teacher traces and labeled rows."""

    name = "finetune"
    options_spec = STRATEGY_OPTIONS["finetune"]

    def planned_calls(self, graph: nx.DiGraph, n_train: int, n_dev: int, judge: int = 0,
                      per_row: int | None = None) -> dict[str, int]:
        per_row = calls_per_row(graph) if per_row is None else per_row
        nodes = [n for n in parameter_sites(graph) if tunable(graph, n) is None]
        # a node trains on at most one bootstrapped and one labeled pair per row
        pairs = min(self.options["max_examples"], n_train * (2 if self.options["labeled"] else 1))
        steps = self.options["epochs"] * pairs
        return {"teacher": n_train * (per_row + judge),
                f"train {len(nodes)} LoRA adapter(s), up to {steps} steps each (no model calls)": 0}

    def compile(self, graph: nx.DiGraph, ctx: OptimizeContext) -> OptimizeResult:
        from lmpc.optimizers.finetune_train import Sample, require, train_lora

        o = self.options
        seed = self.seed(ctx)
        require()  # before any model call: the extra must be installed
        check_teacher(self.name, graph, o["teacher"])
        if not ctx.trainset:
            from lmpc.optimizers.base import OptimizerConfigError

            raise OptimizerConfigError(f"{self.name} needs training examples (`train` in the optimize block)")
        skipped = {n: why for n in parameter_sites(graph) if (why := tunable(graph, n)) is not None}
        run = run_teacher(self.name, graph, ctx, o["teacher"], 1)
        ctx.log(f"{self.name}: {len(run.passed)} of {run.train} training examples passed on the teacher "
                f"({run.errors} errors, {run.calls} calls)")
        out = copy_graph(graph)
        prog = ctx.program(graph)  # the student's models (the teacher may be another one)
        nodes: dict[str, Any] = {nid: {"skipped": why} for nid, why in skipped.items()}
        store = store_dir(ctx)
        for nid in parameter_sites(graph):
            if nid in skipped:
                continue
            node = site(graph, nid)
            labeled = node_labeled_candidates(graph, nid, ctx.trainset)[0] if o["labeled"] else []
            pairs, counts = training_pairs(node, run.candidates.get(nid, []), labeled, o["max_examples"], seed, nid)
            if not pairs:
                nodes[nid] = {"skipped": "no training pairs (no teacher run passed and no labeled rows)", **counts}
                continue
            tuned = copy.deepcopy(node)
            if not o["keep_demos"]:
                tuned["demos"] = []
            name = node.get("model") or graph.graph["default_model"]
            model = prog.pool.get(name)
            samples = [Sample(*model.training_tokens(render_messages(tuned, d["inputs"]),
                                                     render_outputs(tuned, d["outputs"]))) for d in pairs]
            opts = {k: o[k] for k in ("epochs", "lr", "rank", "alpha")}
            key = hashlib.sha256(json.dumps({"base": model.identity, "samples": [[s.prompt, s.answer] for s in samples],
                                             "options": opts, "seed": seed}).encode()).hexdigest()
            path = store / f"{key[:32]}.gguf"
            label = f"{self.name} `{node['step']}`"
            summary = path.with_suffix(".json")  # what its training measured, for a resumed build's report
            if path.exists() and summary.exists():
                ctx.log(f"{label}: the adapter trained on these {len(samples)} examples is in {store} (reused)")
                trained: dict[str, Any] = {**json.loads(summary.read_text(encoding="utf-8")), "reused": True}
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                from lmpc.runtime.models.local import default_threads

                result = train_lora(model.path, samples, path, seed=seed, threads=getattr(model, "n_threads", None)
                                    or default_threads(), log=ctx.log, label=label, **opts)
                trained = {"steps": result.steps, "seconds": result.seconds, "loss_before": result.loss_before,
                           "loss_after": result.loss_after, "epoch_losses": result.losses,
                           "examples_per_s": result.examples_per_s, "peak_rss_mb": result.peak_rss_mb}
                summary.write_text(json.dumps(trained), encoding="utf-8")
            sha = file_sha256(path)
            target = site(out, nid)
            target["adapter"] = {"file": str(path.resolve()), "sha256": sha}
            if not o["keep_demos"]:
                target["demos"] = []
            nodes[nid] = {"examples": len(samples), **counts, "adapter_sha256": sha,
                          "prompt_tokens_mean": round(sum(len(s.prompt) for s in samples) / len(samples), 1),
                          **trained}
        # the report keeps what does not depend on the machine's speed or the store's state
        report_nodes = {n: {k: v for k, v in d.items() if k not in ("seconds", "examples_per_s", "peak_rss_mb",
                                                                   "reused")} for n, d in nodes.items()}
        return OptimizeResult(out, {"seed": seed, **run.summary(), "nodes": report_nodes})
