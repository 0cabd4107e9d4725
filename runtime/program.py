"""Program: a runnable pipeline graph. `prog(text=...)`, `prog.batch(rows)`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import networkx as nx

from lmpc.runtime.budget import CallBudget
from lmpc.runtime.cache import CallCache, default_cache_dir
from lmpc.runtime.errors import InvalidArgumentError, LmpcRuntimeError
from lmpc.runtime.executor import Executor
from lmpc.runtime.models import Model
from lmpc.runtime.pool import ModelPool
from lmpc.runtime.trace import TraceEvent, TraceLog

if TYPE_CHECKING:
    from lmpc.compiler.artifact import Artifact
    from lmpc.compiler.checked import CheckedProgram


@dataclass
class Result:
    """One row's outputs (as attributes and items), its trace, and its error if it failed."""

    values: dict[str, Any] | None
    trace: list[TraceEvent] = field(default_factory=list)
    error: LmpcRuntimeError | None = None
    index: int = 0
    checks: list[dict] = field(default_factory=list)  # outcomes of the pipeline's checks (runtime/checks.py)

    def __getattr__(self, name: str) -> Any:
        values = self.__dict__.get("values")
        if values is not None and name in values:
            return values[name]
        raise AttributeError(name)

    def __getitem__(self, name: str) -> Any:
        if self.values is None:
            raise KeyError(name)
        return self.values[name]

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        return {"outputs": self.values, "error": str(self.error) if self.error else None,
                "trace_ids": [e.trace_id for e in self.trace]}


class Program:
    """Runs one pipeline graph on its models, with a call cache and traces (a RunnableProgram,
    runtime/protocol.py).

    graphs: every pipeline of its file or artifact by name (judge pipelines of a metric; by
    default just this one); optimize_settings: its optimize block's or artifact's settings
    (train, dev, metric, ...); checked: the CheckedProgram it was compiled from; artifact: the
    Artifact it was loaded from, whose `trusted` set decides what its code may do."""

    def __init__(self, graph: nx.DiGraph, *, base_dir: str | Path | None = None,
                 cache: CallCache | bool | str | Path = True, trace_log: TraceLog | bool | str | Path = True,
                 model: str | None = None, max_workers: int = 8, budget: CallBudget | None = None,
                 models: dict[str, Model] | None = None, pool: ModelPool | None = None,
                 graphs: dict[str, nx.DiGraph] | None = None, optimize_settings: dict[str, Any] | None = None,
                 checked: CheckedProgram | None = None, artifact: Artifact | None = None):
        self.graph = graph
        self.graphs = dict(graphs) if graphs is not None else {graph.graph["name"]: graph}
        self.optimize_settings = dict(optimize_settings or {})
        self.checked = checked
        self.artifact = artifact
        self.base_dir = Path(base_dir) if base_dir else None
        if isinstance(cache, CallCache):
            self.cache = cache
        elif cache is True or cache is False:
            self.cache = CallCache(enabled=bool(cache))
        else:
            self.cache = CallCache(cache)
        if trace_log is True:
            trace_log = TraceLog(default_cache_dir() / "traces.jsonl")
        elif isinstance(trace_log, (str, Path)):
            trace_log = TraceLog(trace_log)
        # Without a file the log still counts: call counts come from the log (trace.start_meter).
        self.trace_log = trace_log or TraceLog(None)
        specs = graph.graph["models"]
        if model is not None and model not in specs:
            raise InvalidArgumentError(f"no model named `{model}` (declared: {', '.join(specs)})")
        # A shared pool (one per build) keeps each model loaded once across many programs.
        self._owns_pool = pool is None
        self.pool = pool if pool is not None else ModelPool(specs, self.base_dir, instances=models)
        self.budget = budget
        self.executor = Executor(graph, self.pool, self.cache, self.trace_log, self.base_dir,
                                 model_override=model, max_workers=max_workers, budget=budget)

    @property
    def name(self) -> str:
        return self.graph.graph["name"]

    @property
    def input_fields(self) -> dict[str, dict]:
        return self.graph.graph["inputs"]

    @property
    def output_fields(self) -> dict[str, dict]:
        return self.graph.graph["outputs"]

    def __call__(self, **inputs: Any) -> Result:
        result = self.batch([inputs])[0]
        if result.error is not None:
            raise result.error
        return result

    def batch(self, rows: Iterable[dict[str, Any]], sample: int = 0, temperature: float | None = None) -> list[Result]:
        """Run many rows; a failing row records its error and the others go on.

        sample > 0 asks for another sample of each call (its own cache entry); temperature
        overrides the models' (bootstrapping retries failed examples this way). Both hold for
        this batch only: threads may call batch() on one Program at once with different ones.
        Raises a ConfigurationError (e.g. an unset key variable) once instead of failing every
        row, and KeyboardInterrupt at once on Ctrl-C (in-flight HTTP calls are cancelled)."""
        states = self.executor.run(list(rows), sample=sample, temperature=temperature)
        return [Result(st.outputs, st.trace, st.error, st.index, st.checks) for st in states]

    def close(self) -> None:
        self.executor.close()
        if self._owns_pool:
            self.pool.close()
            self.cache.close()

    def __enter__(self) -> "Program":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
