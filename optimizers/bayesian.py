"""bayesian: MIPRO-style search over instructions and demo sets, per prompt node.

1. Demo sets: a teacher runs once over the training set (bootstrap_few_shot's machinery);
   per node, set 0 is the demos the node has now, sets 1.. are seeded selections of the
   bootstrapped demos (set 1 with max_demos, later sets with a seeded size in [1, max_demos]).
2. Instructions: per node, candidate 0 is the original instruction, the others come from
   the proposer program (instructions.py, proposer.lmp), shown the bootstrapped demos.
3. Search: one categorical dimension per node for its instruction and one for its demo set.
   scikit-optimize's ask/tell Optimizer (a Gaussian process with a Hamming kernel on these
   categorical dimensions, expected improvement, seeded) proposes a combination per trial;
   each trial is scored on a seeded minibatch of the dev set and told back. Every
   `full_eval_every` trials (and after the last) the best-looking combination not yet
   scored on the whole dev set (highest mean minibatch score) is, and that score is told
   back too. The input program is scored on the whole dev set first (its calls are the
   zero-shot evaluation `lmpc build` has already made: cache hits).
4. Choice: the best whole-dev score among the combinations scored on all of it, ties going
   to fewer prompt tokens per example, then to the earlier one (so the input program is kept
   unless something beats it). With a `max_prompt_tokens` budget, a combination whose prompts
   average more tokens per example is never chosen (and is told back as the worst score).
"""

from __future__ import annotations

import copy
import json
import warnings
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from lmpc.compiler.options import STRATEGY_OPTIONS
from lmpc.compiler.ir import calls_per_row, parameter_sites, site
from lmpc.optimizers.base import Candidate, OptimizeContext, Optimizer, OptimizerConfigError, OptimizeResult
from lmpc.optimizers.bootstrap import check_teacher, choose_demos, run_teacher
from lmpc.optimizers.demos import copy_graph, rng_for
from lmpc.optimizers.instructions import PROPOSAL_ROUNDS, propose_instructions

OVER_BUDGET = 1.0  # told to the optimizer for a combination over max_prompt_tokens (scores are -1..0)


def _set_key(demos: list[dict[str, Any]]) -> str:
    """Demo sets with the same demos in the same order are the same choice."""
    return json.dumps([[d.get("source"), d["inputs"]] for d in demos], sort_keys=True, default=str)


@dataclass
class Combo:
    """One combination of choices and what is known of it."""

    key: tuple[int, ...]
    first_trial: int
    minibatch: list[float] = field(default_factory=list)
    full: float | None = None
    tokens: float | None = None  # mean prompt tokens per example (all prompt nodes)

    @property
    def mean_minibatch(self) -> float:
        return sum(self.minibatch) / len(self.minibatch) if self.minibatch else 0.0


class Bayesian(Optimizer):
    name = "bayesian"
    options_spec = STRATEGY_OPTIONS["bayesian"]

    # -- planning ------------------------------------------------------------------------
    def planned_calls(self, graph: nx.DiGraph, n_train: int, n_dev: int, judge: int = 0,
                      per_row: int | None = None) -> dict[str, int]:
        o = self.options
        proposals = len(parameter_sites(graph)) if per_row is None else 0  # one per prompt node; no search
        # a row whose prediction the metric scores
        scored = (calls_per_row(graph) if per_row is None else per_row) + judge
        scored_on = n_dev or n_train
        minibatch = min(o["minibatch"], scored_on)
        full_evals = 1 + (-(-o["trials"] // o["full_eval_every"]) if minibatch < scored_on else 0)
        return {
            "teacher": n_train * scored if o["demo_sets"] > 1 else 0,
            "proposer": PROPOSAL_ROUNDS * (o["instructions"] - 1) * proposals,
            "trials": o["trials"] * minibatch * scored,
            "full dev evaluations": full_evals * scored_on * scored,
        }

    # -- the search space ----------------------------------------------------------------
    def _demo_sets(self, graph: nx.DiGraph, ctx: OptimizeContext, seed: int) -> tuple[dict[str, list[list[dict]]], dict, dict]:
        """Per node: its demo sets (set 0: the demos it has). Also the teacher's summary and,
        per node, the bootstrapped demos to show the proposer."""
        o = self.options
        nodes = parameter_sites(graph)
        sets = {nid: [list(site(graph, nid).get("demos", []))] for nid in nodes}
        if o["demo_sets"] <= 1:
            return sets, {}, {nid: list(site(graph, nid).get("demos", [])) for nid in nodes}
        run = run_teacher(self.name, graph, ctx, o["teacher"], max_rounds=1)
        ctx.log(f"{self.name}: {len(run.passed)} of {run.train} training examples passed on the teacher "
                f"({run.errors} errors, {run.calls} calls)")
        shown = {}
        for j in range(1, o["demo_sets"]):
            size = o["max_demos"] if j == 1 else rng_for(self.name, "size", seed, j).randint(1, o["max_demos"])
            g, _ = choose_demos(graph, run, ctx.trainset, size, o["max_labeled"], f"{seed}:{j}", o["balance"])
            for nid in nodes:
                demos = site(g, nid)["demos"]
                if j == 1:
                    shown[nid] = demos
                if _set_key(demos) not in {_set_key(s) for s in sets[nid]}:
                    sets[nid].append(demos)
        return sets, run.summary(), shown

    # -- the search ----------------------------------------------------------------------
    def compile(self, graph: nx.DiGraph, ctx: OptimizeContext) -> OptimizeResult:
        from skopt import Optimizer as SkOptimizer
        from skopt.space import Categorical, Space
        from skopt.utils import cook_estimator

        o = self.options
        seed = self.seed(ctx)
        check_teacher(self.name, graph, o["teacher"])
        if not ctx.trainset and (o["demo_sets"] > 1 or o["instructions"] > 1):
            raise OptimizerConfigError(f"{self.name} needs training examples (`train` in the optimize block)")
        scored_on, examples = ctx.scoring_set()
        if not examples:
            raise OptimizerConfigError(f"{self.name} needs dev examples to score candidates (`dev` in the optimize block)")
        if not ctx.devset:
            ctx.log(f"{self.name}: no dev set; scoring on the training set (optimistic)")
        nodes = parameter_sites(graph)
        sets, teacher, shown = self._demo_sets(graph, ctx, seed)
        instructions, proposer = propose_instructions(graph, ctx, o["instructions"], o["proposer"], shown, seed)
        for nid in nodes:
            ctx.log(f"{self.name}: `{site(graph, nid)['step']}`: {len(instructions[nid])} instruction(s), "
                    f"{len(sets[nid])} demo set(s)")

        # dimensions: (node, "instruction" | "demos") with more than one choice
        dims: list[tuple[str, str]] = []
        for nid in nodes:
            if len(instructions[nid]) > 1:
                dims.append((nid, "instruction"))
            if len(sets[nid]) > 1:
                dims.append((nid, "demos"))

        def choices(key: tuple[int, ...]) -> dict[str, dict[str, int]]:
            out = {nid: {"instruction": 0, "demos": 0} for nid in nodes}
            for (nid, what), v in zip(dims, key):
                out[nid][what] = v
            return out

        def program_for(key: tuple[int, ...]) -> nx.DiGraph:
            g = copy_graph(graph)
            for nid, c in choices(key).items():
                site(g, nid)["instructions"] = instructions[nid][c["instruction"]]
                if c["demos"]:
                    site(g, nid)["demos"] = copy.deepcopy(sets[nid][c["demos"]])
            return g

        budget = ctx.max_prompt_tokens
        combos: dict[tuple[int, ...], Combo] = {}
        calls = {"trials": 0, "full": 0}
        trials: list[dict[str, Any]] = []
        minibatch = min(o["minibatch"], len(examples))
        whole = minibatch >= len(examples)

        def over(c: Combo) -> bool:
            return budget is not None and c.tokens is not None and c.tokens > budget

        def full_eval(key: tuple[int, ...], trial: int) -> Combo:
            c = combos.setdefault(key, Combo(key, trial))
            report = ctx.evaluate(program_for(key), examples, label=f"{self.name}: full {scored_on} evaluation")
            c.full, c.tokens = round(report.score, 6), report.prompt_tokens_per_example
            calls["full"] += report.calls
            ctx.log(f"{self.name}: {self._show(choices(key))}: full {scored_on} score {c.full:.3f} "
                    f"({c.tokens:g} prompt tokens/example)")
            return c

        default = tuple(0 for _ in dims)
        full_eval(default, 0)
        space = [Categorical(list(range(len(instructions[nid]) if what == "instruction" else len(sets[nid]))),
                             name=f"{nid}/{what}") for nid, what in dims]
        opt = None
        if dims:
            # A GP without hyper-parameter restarts and 1,000 sampled candidates per ask: the spaces
            # are small (tens to hundreds of combinations) and this halves the time per trial.
            gp = cook_estimator("GP", space=Space(space), random_state=seed, n_restarts_optimizer=0)
            opt = SkOptimizer(space, base_estimator=gp, acq_func="EI", random_state=seed,
                              acq_optimizer_kwargs={"n_points": 1000},
                              n_initial_points=min(o["trials"], max(3, o["trials"] // 3)))
            opt.tell(list(default), OVER_BUDGET if over(combos[default]) else -combos[default].full)

        for t in range(1, o["trials"] + 1 if dims else 1):
            with warnings.catch_warnings():  # "evaluated at this point before": it then asks a random one
                warnings.simplefilter("ignore")
                key = tuple(int(v) for v in opt.ask())
            idx = sorted(rng_for(self.name, "minibatch", seed, t).sample(range(len(examples)), minibatch))
            report = ctx.evaluate(program_for(key), [examples[i] for i in idx],
                                  label=f"{self.name}: trial {t}/{o['trials']}")
            c = combos.setdefault(key, Combo(key, t))
            score = round(report.score, 6)
            c.minibatch.append(score)
            c.tokens = report.prompt_tokens_per_example if c.tokens is None else c.tokens
            if whole:
                c.full = score
            calls["trials"] += report.calls
            opt.tell(list(key), OVER_BUDGET if over(c) else -score)
            row = {"trial": t, "choices": choices(key), "minibatch_score": score, "minibatch": minibatch,
                   "calls": report.calls, "errors": report.errors, "prompt_tokens": report.prompt_tokens_per_example}
            if over(c):
                row["over_budget"] = True
            ctx.log(f"{self.name}: trial {t}/{o['trials']}: {self._show(row['choices'])}: minibatch "
                    f"{score:.3f} ({row['prompt_tokens']:g} prompt tokens/example)"
                    + (" over max_prompt_tokens" if over(c) else ""))
            if not whole and (t % o["full_eval_every"] == 0 or t == o["trials"]):
                pending = [x for x in combos.values() if x.full is None and x.minibatch and not over(x)]
                if pending:
                    best = min(pending, key=lambda x: (-x.mean_minibatch, x.tokens or 0, x.first_trial))
                    full_eval(best.key, best.first_trial)
                    row["promoted"] = {"choices": choices(best.key), "full_score": best.full}
                    opt.tell(list(best.key), OVER_BUDGET if over(best) else -best.full)
            trials.append(row)

        scored = [c for c in combos.values() if c.full is not None]
        eligible = [c for c in scored if not over(c)]
        if not eligible:
            ctx.log(f"{self.name}: no combination fits max_prompt_tokens {budget}; keeping the one with the "
                    f"fewest prompt tokens")
            eligible = sorted(scored, key=lambda c: (c.tokens or 0, c.first_trial))[:1]
        ranked = sorted(eligible, key=lambda c: (-c.full, c.tokens or 0, c.first_trial))
        best = ranked[0]
        ctx.log(f"{self.name}: best {self._show(choices(best.key))}, {scored_on} score {best.full:.3f}")
        report = {
            "seed": seed, "scored_on": scored_on,
            "calls": teacher.get("calls", 0) + proposer["calls"] + calls["trials"] + calls["full"],
            "teacher": teacher,
            "proposer": proposer,
            "instructions": instructions,
            "demo_sets": {nid: [[d.get("source") for d in s] for s in sets[nid]] for nid in nodes},
            "trials": trials,
            "best": {"choices": choices(best.key), "score": best.full, "prompt_tokens": best.tokens},
            "best_score": best.full,
            "max_prompt_tokens": budget,
            "score_vs_tokens": [{"choices": choices(c.key), "score": c.full, "prompt_tokens": c.tokens,
                                 "over_budget": over(c)} for c in sorted(scored, key=lambda c: c.first_trial)],
        }
        candidates = [Candidate(program_for(c.key), c.full, {"choices": choices(c.key)}) for c in ranked]
        return OptimizeResult(program_for(best.key), report, candidates)

    @staticmethod
    def _show(choices: dict[str, dict[str, int]]) -> str:
        return ", ".join(f"{nid}: instruction {c['instruction']}, demos {c['demos']}" for nid, c in choices.items())
