"""The one small interface every optimizer implements.

An optimizer takes a pipeline graph (prompt nodes are its parameter sites: `instructions`
and `demos`) and returns a new graph plus a report. It runs programs only through
`OptimizeContext`, which shares one cache, one call budget and the models between all the
programs of a build, so an interrupted build resumes from the cache.
"""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import networkx as nx

from lmpc.compiler.errors import EXIT_USAGE, LmpcError
from lmpc.compiler.options import Option
from lmpc.runtime.budget import CallBudget
from lmpc.runtime.cache import CallCache
from lmpc.runtime.data import Example
from lmpc.runtime.evaluate import EvalReport, evaluate
from lmpc.runtime.metrics import Metric
from lmpc.runtime.models import Model
from lmpc.runtime.pool import ModelPool
from lmpc.runtime.program import Program
from lmpc.runtime.progress import Progress
from lmpc.runtime.trace import TraceLog


class OptimizerConfigError(LmpcError):
    """A strategy given options it does not take, or values that cannot work. A mistake in the
    build's configuration, not a run-time failure: not an LmpcRuntimeError (exit 2)."""

    exit_code = EXIT_USAGE


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class OptimizeContext:
    trainset: list[Example]
    devset: list[Example]
    metric: Metric
    seed: int = 0
    cache: CallCache = field(default_factory=lambda: CallCache(enabled=False))
    budget: CallBudget = field(default_factory=CallBudget)
    base_dir: Path | None = None
    models: dict[str, Model] = field(default_factory=dict)  # shared instances (tests: a fake model)
    log: Callable[[str], None] = _stderr
    # Budgets the optimize block states; search strategies never choose a candidate over them.
    max_prompt_tokens: int | None = None  # mean prompt tokens per example, all prompt nodes summed
    previous: "OptimizeResult | None" = None  # the result of the previous strategy in the chain
    trace_log: TraceLog | None = None  # where every program of the build records its calls
    progress: bool = False  # a bar (terminal) or periodic lines on stderr for each evaluation
    runner: Any = None  # where evaluations run their rows (lmpc/ray_executor.RayRunner); None: here
    _programs: list[Program] = field(default_factory=list)
    _pool: ModelPool | None = None

    def program(self, graph: nx.DiGraph, model: str | None = None) -> Program:
        """A Program for `graph` sharing this build's cache, budget and loaded models.

        model: run every prompt node on this declared model (a teacher)."""
        if self._pool is None:  # every graph of a build declares the same models
            self._pool = ModelPool(graph.graph["models"], self.base_dir, instances=self.models)
        prog = Program(graph, base_dir=self.base_dir, cache=self.cache, trace_log=self.trace_log or False,
                       model=model, budget=self.budget, pool=self._pool)
        self._programs.append(prog)
        return prog

    def scoring_set(self) -> tuple[str, list[Example]]:
        """Where candidates are scored: ("dev", devset), or ("train", trainset) without dev data."""
        return ("dev", self.devset) if self.devset else ("train", self.trainset)

    def evaluate(self, graph: nx.DiGraph, examples: list[Example], model: str | None = None,
                 label: str = "evaluate") -> EvalReport:
        """Score `graph` on `examples`; label names the stage in the progress shown (e.g. `trial 3/12`)."""
        return evaluate(self.program(graph, model), examples, self.metric, progress=self.bar(len(examples), label),
                        runner=self.runner)

    def bar(self, total: int, label: str) -> Progress | None:
        return Progress(total, label=label) if self.progress and total else None

    def close(self) -> None:
        for p in self._programs:
            p.close()
        self._programs.clear()
        if self._pool is not None:
            self._pool.close()
            self._pool = None


@dataclass
class Candidate:
    """A program a search strategy scored: what later strategies (ensemble) can build on."""

    graph: nx.DiGraph
    score: float
    about: dict[str, Any] = field(default_factory=dict)  # JSON-able: index, kind, demos, ...


@dataclass
class OptimizeResult:
    graph: nx.DiGraph
    report: dict[str, Any]  # JSON-able: what was tried, scores, calls; goes into the artifact
    candidates: list[Candidate] = field(default_factory=list)  # search strategies: scored programs, best first


class Optimizer(ABC):
    name: ClassVar[str]
    # option name -> its types, default and range: compiler/options.STRATEGY_OPTIONS[name], the
    # table `lmpc check` reads too, so a chain the checker passes is one the optimizers accept.
    options_spec: ClassVar[dict[str, Option]]

    def __init__(self, **options: Any):
        unknown = sorted(set(options) - set(self.options_spec))
        if unknown:
            raise OptimizerConfigError(f"{self.name} takes no option(s) {', '.join(unknown)} "
                                       f"(it takes: {', '.join(self.options_spec)})")
        self.options: dict[str, Any] = {}
        for key, spec in self.options_spec.items():
            value = options.get(key)
            value = spec.default if value is None else value
            why = None if value is None else spec.problem(value)
            if why is not None:
                raise OptimizerConfigError(f"{self.name}: `{key}` {why}")
            self.options[key] = value

    def seed(self, ctx: "OptimizeContext") -> int:
        """The strategy's `seed` option, else the build's."""
        return self.options["seed"] if self.options.get("seed") is not None else ctx.seed

    @abstractmethod
    def planned_calls(self, graph: nx.DiGraph, n_train: int, n_dev: int, judge: int = 0,
                      per_row: int | None = None) -> dict[str, int]:
        """Upper bound of model calls per stage (for --dry-run), before any cache hits.

        judge: the calls the metric makes per example it scores (a judge pipeline's prompt
        nodes; 0 for other metrics): count them for every row whose prediction is scored.
        per_row: what one run of the program on a row costs, in place of its model calls
        (ir.calls_per_row): build.plan passes its retrieve steps to count searches, so a stage
        that runs no program (bayesian's proposer) counts 0 then."""

    @abstractmethod
    def compile(self, graph: nx.DiGraph, ctx: OptimizeContext) -> OptimizeResult:
        """Return a new graph (never mutate the input) and a report."""
