"""bootstrap_few_shot: run a teacher over the training set, keep the steps of the runs that
pass the metric as demos of every prompt node (intermediate ones included).

The teacher is the same graph (or, with `teacher: NAME`, the same graph with every prompt
node on that declared model). It runs over the whole training set as one batch, so the calls
of each node are issued back to back (llama.cpp prefix reuse). Round r > 0 re-runs only the
examples that still fail, as another sample (its own cache entries) at temperature 0.7.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from lmpc.compiler.options import STRATEGY_OPTIONS
from lmpc.compiler.ir import calls_per_row, event_site, parameter_sites, site, site_step
from lmpc.compiler.kinds import KINDS, PROMPT_KINDS
from lmpc.optimizers.base import OptimizeContext, Optimizer, OptimizerConfigError, OptimizeResult
from lmpc.optimizers.coverage import choose, label_counts, label_name
from lmpc.optimizers.demos import copy_graph, label_fields, rng_for
from lmpc.optimizers.labeled import node_labeled_candidates
from lmpc.optimizers.passages import PromptScale, fit_passages, measure
from lmpc.runtime.data import Example
from lmpc.runtime.errors import LmpcRuntimeError

# A run becomes demos only with full marks: for 0/1 metrics this is DSPy's "truthy"; for graded
# metrics (f1, a judge's 0..1) a partly right answer would teach a partly wrong one.
PASS_SCORE = 1.0
RETRY_TEMPERATURE = 0.7  # rounds after the first draw fresh samples, as DSPy does
TEACHER_CHUNK = 16  # rows per batch: a progress step


class TeacherBrokenError(LmpcRuntimeError):
    """More than half of the training examples failed with an error on the teacher."""


@dataclass
class TeacherRun:
    """What a teacher's run over the training set gives: per node, its bootstrapped candidates."""

    teacher: str | None
    train: int
    rounds: int = 0
    calls: int = 0
    errors: int = 0  # examples whose first run raised (a step error, or the metric raised)
    passed: list[str] = field(default_factory=list)  # sources, in training-set order
    candidates: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    first_errors: list[str] = field(default_factory=list)
    failed_checks: int = 0  # runs that passed the metric but failed a soft check: not taken
    # for demos with passages (passages.py): the build's budget and what the teacher's prompts measured
    max_prompt_tokens: int | None = None
    scale: PromptScale = field(default_factory=PromptScale)

    def summary(self) -> dict[str, Any]:
        return {"teacher": self.teacher, "train": self.train, "rounds": self.rounds, "calls": self.calls,
                "errors": self.errors, "passed": len(self.passed), "error_examples": self.first_errors,
                **({"failed_checks": self.failed_checks} if self.failed_checks else {})}


def check_teacher(name: str, graph: nx.DiGraph, teacher: str | None) -> None:
    models = graph.graph.get("models", {})
    if teacher is not None and teacher not in models:
        raise OptimizerConfigError(f"{name}: teacher `{teacher}` is not a declared model "
                                   f"(declared: {', '.join(models) or 'none'}); declare it with "
                                   f"`model {teacher} = ...` and pass its name, e.g. `teacher: {teacher}`")


def run_teacher(name: str, graph: nx.DiGraph, ctx: OptimizeContext, teacher: str | None,
                max_rounds: int) -> TeacherRun:
    """Run the teacher over ctx.trainset (one batch per round) and collect, per prompt node,
    (inputs, parsed outputs) of every run whose prediction scores PASS_SCORE or more."""
    examples = ctx.trainset
    run = TeacherRun(teacher, len(examples), candidates={n: [] for n in parameter_sites(graph)},
                     max_prompt_tokens=ctx.max_prompt_tokens)
    step_to_node = {site_step(graph, n): n for n in run.candidates}  # body sites: j[*]/Judge
    calls: dict[str, list[Any]] = {n: [] for n in run.candidates}  # every call per node, for the scale
    program = ctx.program(graph, model=teacher)
    pending = list(range(len(examples)))
    passed: set[int] = set()
    for r in range(max_rounds):
        if not pending:
            break
        run.rounds = r + 1
        rows = [examples[i].inputs for i in pending]
        decoding = {} if r == 0 else {"sample": r, "temperature": RETRY_TEMPERATURE}
        bar = ctx.bar(len(rows), f"{name}: teacher round {r + 1}/{max_rounds}")
        results = []
        try:  # in chunks, so that progress shows (calls of a chunk still go back to back)
            for start in range(0, len(rows), TEACHER_CHUNK):
                results += program.batch(rows[start:start + TEACHER_CHUNK], **decoding)
                if bar is not None:
                    bar.update(len(results), None, sum(res.error is not None for res in results))
        finally:
            if bar is not None:
                bar.close()
        still = []
        for i, res in zip(pending, results):
            ex = examples[i]
            run.calls += sum(e.kind in PROMPT_KINDS for e in res.trace)  # attempted: cached, failed included
            if r == 0:
                for e in res.trace:
                    if e.kind in PROMPT_KINDS and event_site(e.step) in step_to_node:
                        calls[step_to_node[event_site(e.step)]].append(e)
            error = str(res.error) if res.error is not None else None
            score = 0.0
            if error is None:
                try:
                    score = float(ctx.metric(ex, res.values or {}))
                except Exception as e:  # a user's metric raised: this example cannot pass
                    error = f"metric raised {type(e).__name__}: {e}"
            if error is not None:
                if r == 0:
                    run.errors += 1
                    if len(run.first_errors) < 3:
                        run.first_errors.append(f"{ex.source}: {error}")
                still.append(i)
                continue
            if score < PASS_SCORE:
                still.append(i)
                continue
            if any(not c["passed"] for c in getattr(res, "checks", ())):  # a soft check failed: not a demo
                run.failed_checks += 1
                still.append(i)
                continue
            passed.add(i)
            for e in res.trace:
                nid = step_to_node.get(event_site(e.step))
                if nid is None or e.kind not in PROMPT_KINDS or e.parsed is None or e.error is not None:
                    continue
                if e.extra.get("checks_failed") or e.extra.get("best_of", {}).get("chosen") is False:
                    continue  # an attempt a check rejected (then repaired), or a sample best_of did not keep
                # the kind makes the demo: a react step's finish action, with its whole trajectory
                demo = KINDS[e.kind].demo(copy.deepcopy(e.inputs), copy.deepcopy(e.parsed), e.extra)
                if demo is not None:
                    run.candidates[nid].append({**demo, "source": ex.source, "kind": "bootstrapped"})
        if r == 0 and examples and run.errors * 2 > len(examples):
            raise TeacherBrokenError(
                f"{name}: the teacher is broken: {run.errors} of {len(examples)} training examples failed "
                f"with an error (more than half), e.g. {run.first_errors[0]}. Fix the model or the program "
                f"(`lmpc run` on one example shows the error) before optimizing.")
        pending = still
    run.passed = [examples[i].source for i in sorted(passed)]
    run.scale = measure(calls, graph)
    return run


def choose_demos(graph: nx.DiGraph, run: TeacherRun, examples: list[Example], max_demos: int,
                 max_labeled: int, seed: Any, balance: bool = True) -> tuple[nx.DiGraph, dict[str, dict[str, Any]]]:
    """A copy of `graph` whose prompt nodes get up to max_demos bootstrapped demos and labeled
    demos from other examples up to max_labeled demos in all, by the coverage rule (with
    balance: labels no teacher run passed get labeled demos too; see coverage.py)."""
    out = copy_graph(graph)
    report: dict[str, dict[str, Any]] = {}
    labeled_of: dict[str, tuple[list[dict[str, Any]], str | None]] = {}
    for nid in parameter_sites(graph):
        node = site(graph, nid)
        labeled_of[nid] = node_labeled_candidates(graph, nid, examples)
        site(out, nid)["demos"] = choose(node, run.candidates.get(nid, []), labeled_of[nid][0], balance=balance,
                                         boot_rng=rng_for("bootstrap", seed, nid),
                                         labeled_rng=rng_for("labeled", seed, nid), max_boot=max_demos,
                                         fill_to=max_labeled)
    # demos with passages (a retrieve step's): trimmed here, so the stored demo is the scored one
    fitted = fit_passages(out, run.scale, run.max_prompt_tokens)
    for nid in parameter_sites(graph):
        node = site(graph, nid)
        boot_candidates = run.candidates.get(nid, [])
        labeled, skipped = labeled_of[nid]
        demos = site(out, nid)["demos"]
        entry: dict[str, Any] = {"candidates": len(boot_candidates),
                                 "bootstrapped": [d["source"] for d in demos if d["kind"] == "bootstrapped"],
                                 "labeled": [d["source"] for d in demos if d["kind"] == "labeled"]}
        if label_fields(node):
            entry["labels"] = label_counts(node, demos)
            passed = {label_name(node, d["outputs"]) for d in boot_candidates}
            data = {label_name(node, d["outputs"]) for d in labeled}
            if data - passed:  # labels of the data that no teacher run got right
                entry["labels_not_passed"] = sorted(data - passed)
        if skipped is not None and (max_labeled > len(entry["bootstrapped"]) or balance):
            entry["labeled_skipped"] = skipped
        if nid in fitted:  # `trimmed`: passages cut to fit max_prompt_tokens; `dropped`: could not fit
            entry["passages"] = fitted[nid]
        report[nid] = entry
    return out, report


class BootstrapFewShot(Optimizer):
    """DSPy's BootstrapFewShot with label coverage, batched teacher runs and an error budget."""

    name = "bootstrap_few_shot"
    options_spec = STRATEGY_OPTIONS["bootstrap_few_shot"]

    def planned_calls(self, graph: nx.DiGraph, n_train: int, n_dev: int, judge: int = 0,
                      per_row: int | None = None) -> dict[str, int]:
        # every teacher run is scored by the metric
        per_row = calls_per_row(graph) if per_row is None else per_row
        return {"teacher": n_train * self.options["max_rounds"] * (per_row + judge)}

    def compile(self, graph: nx.DiGraph, ctx: OptimizeContext) -> OptimizeResult:
        o = self.options
        seed = self.seed(ctx)
        check_teacher(self.name, graph, o["teacher"])
        if not ctx.trainset:
            raise OptimizerConfigError(f"{self.name} needs training examples (`train` in the optimize block)")
        run = run_teacher(self.name, graph, ctx, o["teacher"], o["max_rounds"])
        ctx.log(f"{self.name}: {len(run.passed)} of {run.train} training examples passed on the teacher "
                f"({run.errors} errors, {run.calls} calls, {run.rounds} round(s))")
        out, nodes = choose_demos(graph, run, ctx.trainset, o["max_demos"], o["max_labeled"], seed, o["balance"])
        return OptimizeResult(out, {"seed": seed, "calls": run.calls, **run.summary(), "nodes": nodes})
