"""RunnableProgram: what every runnable program offers, a compiled one (runtime/program.py
Program) or an ensemble of them (runtime/ensemble.py EnsembleProgram).

lmpc.evaluate, metrics, judges and the CLI read only these members, so anything that has
them can be scored or run. Everything is given at construction: nothing is attached later.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Protocol, runtime_checkable

import networkx as nx

if TYPE_CHECKING:
    from lmpc.compiler.artifact import Artifact
    from lmpc.runtime.budget import CallBudget
    from lmpc.runtime.cache import CallCache
    from lmpc.runtime.pool import ModelPool
    from lmpc.runtime.program import Result
    from lmpc.runtime.trace import TraceLog


@runtime_checkable
class RunnableProgram(Protocol):
    """A program that runs rows into Results (isinstance works: the protocol is runtime-checkable)."""

    graph: nx.DiGraph  # the pipeline that runs (an ensemble: its first member's)
    graphs: dict[str, nx.DiGraph]  # every pipeline it knows by name: judges of a pipeline metric
    base_dir: Path | None  # where `call` files, Python metrics and relative paths resolve
    optimize_settings: dict[str, Any]  # the optimize block's (or artifact's) train, dev, metric, ...
    cache: CallCache
    trace_log: TraceLog
    budget: CallBudget | None
    pool: ModelPool  # the loaded models, shared with a judge pipeline
    artifact: Artifact | None  # the artifact it was loaded from: what its trust allows (runtime/trust.py)

    @property
    def name(self) -> str: ...

    @property
    def input_fields(self) -> dict[str, dict]: ...

    @property
    def output_fields(self) -> dict[str, dict]: ...

    def __call__(self, **inputs: Any) -> Result: ...

    def batch(self, rows: Iterable[dict[str, Any]], sample: int = 0,
              temperature: float | None = None) -> list[Result]: ...

    def close(self) -> None: ...

    def __enter__(self) -> Any: ...

    def __exit__(self, *exc: object) -> None: ...
