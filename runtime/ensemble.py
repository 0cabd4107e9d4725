"""lmpc.ensemble([...]): programs already built, run side by side on each row, voting per
output field with the `majority` builtin (the same reducer and tie rule as the graph that the
`ensemble` strategy builds, optimizers/ensemble.py). A run-time construct: it lives here so
that lmpc.api takes it from the runtime, not from the optimizers."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import networkx as nx

from lmpc.compiler.builtins import BUILTINS
from lmpc.compiler.options import STRATEGY_OPTIONS
from lmpc.runtime.errors import LmpcRuntimeError
from lmpc.runtime.program import Result
from lmpc.runtime.protocol import RunnableProgram

if TYPE_CHECKING:
    from lmpc.compiler.artifact import Artifact
    from lmpc.runtime.budget import CallBudget
    from lmpc.runtime.cache import CallCache
    from lmpc.runtime.pool import ModelPool
    from lmpc.runtime.trace import TraceLog

REDUCERS = STRATEGY_OPTIONS["ensemble"]["reduce"].choices  # the ensemble strategy accepts the same


def majority(values: list) -> Any:
    """The `majority` builtin's own implementation (one tie rule for graphs and Python)."""
    return BUILTINS["majority"].impl(values)


def member_id(nid: str, k: int) -> str:
    """The id (and step name) of member k's copy of step `nid`."""
    return f"{nid}#{k}"


class EnsembleProgram:
    """Programs run side by side on the same rows, voting per output field.

    Each row goes to every member (in the order given: the first breaks ties as the builtin's
    rule says); a member whose run fails casts no vote on that row; a row where every member
    fails is an error. The trace holds every member's events, in member order, each a copy
    whose `step` carries the member's number (`s#1`, `s#2`, as in an ensemble graph) and
    whose `extra["member"]` is that number; `trace_id` still names the logged event.
    """

    def __init__(self, programs: Iterable[Any], reduce: str = "majority"):
        self.programs = list(programs)
        if not self.programs:
            raise LmpcRuntimeError("lmpc.ensemble() needs at least one program (e.g. from lmpc.load)")
        for i, p in enumerate(self.programs, 1):
            if not isinstance(p, RunnableProgram):
                raise LmpcRuntimeError(f"lmpc.ensemble(): member {i} is a {type(p).__name__}, not a Program "
                                       "(use lmpc.load, lmpc.compile_file or lmpc.compile_source)")
        if reduce not in REDUCERS:
            raise LmpcRuntimeError(f"lmpc.ensemble(): unknown reducer {reduce!r} (accepted: {', '.join(REDUCERS)})")
        self.reduce = reduce
        first = self.programs[0]
        for i, p in enumerate(self.programs[1:], 2):
            if list(p.output_fields) != list(first.output_fields):
                raise LmpcRuntimeError(
                    f"lmpc.ensemble(): member {i} (`{p.name}`) returns {', '.join(p.output_fields) or 'nothing'}, "
                    f"member 1 (`{first.name}`) returns {', '.join(first.output_fields) or 'nothing'}: "
                    "members must return the same outputs")
            for f, spec in p.output_fields.items():
                if spec["schema"] != first.output_fields[f]["schema"]:
                    raise LmpcRuntimeError(
                        f"lmpc.ensemble(): output `{f}` is {spec['type']} in member {i} (`{p.name}`) but "
                        f"{first.output_fields[f]['type']} in member 1 (`{first.name}`)")

    # What lmpc.evaluate and metrics read off a program (the metric, judges, base_dir, the
    # artifact's trust) come from member 1.
    @property
    def graph(self) -> nx.DiGraph:
        return self.programs[0].graph

    @property
    def graphs(self) -> dict[str, nx.DiGraph]:
        return self.programs[0].graphs

    @property
    def base_dir(self) -> Path | None:
        return self.programs[0].base_dir

    @property
    def optimize_settings(self) -> dict[str, Any]:
        return self.programs[0].optimize_settings

    @property
    def cache(self) -> CallCache:
        return self.programs[0].cache

    @property
    def trace_log(self) -> TraceLog:
        return self.programs[0].trace_log

    @property
    def budget(self) -> CallBudget | None:
        return self.programs[0].budget

    @property
    def pool(self) -> ModelPool:
        return self.programs[0].pool

    @property
    def artifact(self) -> Artifact | None:
        return self.programs[0].artifact

    @property
    def name(self) -> str:
        return self.programs[0].name

    @property
    def input_fields(self) -> dict[str, dict]:
        return self.programs[0].input_fields

    @property
    def output_fields(self) -> dict[str, dict]:
        return self.programs[0].output_fields

    def __call__(self, **inputs: Any):
        result = self.batch([inputs])[0]
        if result.error is not None:
            raise result.error
        return result

    def batch(self, rows: Iterable[dict[str, Any]], sample: int = 0, temperature: float | None = None) -> list:
        """Run every member on `rows` (one batch each) and vote; one Result per row."""
        rows = list(rows)
        runs = [p.batch(rows, sample=sample, temperature=temperature) for p in self.programs]
        out = []
        for i in range(len(rows)):
            trace, ok, failed = [], [], []
            for k, member in enumerate(runs, 1):
                r = member[i]
                trace += [dataclasses.replace(e, step=member_id(e.step, k), extra={**e.extra, "member": k})
                          for e in r.trace]
                (ok if r.error is None else failed).append((k, r))
            if not ok:
                detail = "; ".join(f"member {k}: {r.error}" for k, r in failed)
                error = LmpcRuntimeError(f"row {i}: every member of the ensemble failed ({detail})")
                out.append(Result(None, trace, error, i))
                continue
            values = {f: majority([r.values[f] for _, r in ok]) for f in self.output_fields}
            out.append(Result(values, trace, None, i))
        return out

    def close(self) -> None:
        for p in self.programs:
            p.close()

    def __enter__(self) -> "EnsembleProgram":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
