"""Run a pipeline graph over a batch of rows.

Scheduling: nodes run level by level (a level's nodes do not depend on each other). Within a
level, all calls of one prompt node are issued back to back across rows, so llama.cpp reuses
the KV cache of the shared prefix (instructions, demos) and pays only for each row's input.
Calls to a local model go through one lane (its single llama.cpp context, in order); calls
to remote models and Python functions run concurrently on a thread pool.

Thread-safety: one Executor serves concurrent run() calls (Program.batch from many threads);
everything a batch decides (sample, temperature, run id, cancel token) lives in its own _Run,
never on the executor. Interrupts: Ctrl-C in the calling thread cancels the batch's token,
so no new call starts and in-flight HTTP calls end at once; finished calls stay in the cache
and their traces are written. A ConfigurationError (it would fail every row) stops the batch
the same way and is raised once, instead of being recorded on each row.
"""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx

from lmpc.runtime.budget import BudgetExceededError, CallBudget
from lmpc.runtime.cache import CallCache, call_key
from lmpc.runtime.calls import load_function, run_function
from lmpc.runtime.embed import KnnDemos
from lmpc.runtime.errors import ConfigurationError, Interrupted, LmpcRuntimeError, OutputError
from lmpc.runtime.models import CancelToken, GenerationRequest
from lmpc.runtime.outputs import parse_output
from lmpc.runtime.pool import ModelPool
from lmpc.runtime.prompt import (
    MAX_DECODING_TOKENS, decoding_budget, decoding_schema, output_schema, render_messages,
)
from lmpc.runtime.redact import redact_known
from lmpc.runtime.trace import TraceEvent, TraceLog
from lmpc.runtime.values import evaluate, get_path, validation_error

# After Ctrl-C, how long the interrupted batch waits for its lanes to notice (remote calls end
# at once; a local llama.cpp decode cannot be stopped midway and is left to finish alone).
INTERRUPT_GRACE_S = 1.0


class StepError(LmpcRuntimeError):
    """A step failed for one row; names the step and its source line, keeps raw model text."""

    def __init__(self, message: str, step: str, raw_text: str | None = None):
        super().__init__(message)
        self.step = step
        self.raw_text = raw_text


@dataclass
class _Run:
    """One batch's settings and state, shared by its lanes only."""

    run_id: str
    sample: int = 0
    temperature: float | None = None
    cancel: CancelToken = field(default_factory=CancelToken)
    failure: ConfigurationError | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def fail(self, error: ConfigurationError) -> None:
        with self._lock:
            if self.failure is None:
                self.failure = error
        self.cancel.cancel()


@dataclass
class RowState:
    index: int
    values: dict[str, Any] = field(default_factory=dict)
    trace: list[TraceEvent] = field(default_factory=list)
    error: LmpcRuntimeError | None = None
    outputs: dict[str, Any] | None = None


def where(node: dict) -> str:
    span = node.get("span") or {}
    loc = f" ({span['file']}:{span['line']}:{span['col']})" if span else ""
    return f"step `{node['step']}`{loc}"


class Executor:
    def __init__(self, graph: nx.DiGraph, pool: ModelPool, cache: CallCache, trace_log: TraceLog | None,
                 base_dir: Path | None, model_override: str | None = None, max_workers: int = 8,
                 budget: CallBudget | None = None):
        self.g = graph
        self.pool = pool
        self.cache = cache
        self.trace_log = trace_log
        self.base_dir = base_dir or Path.cwd()
        self.model_override = model_override
        self.budget = budget
        self.threads = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="lmpc-step")
        self._knn: dict[str, KnnDemos] = {}  # step -> its kNN demo chooser (knn_few_shot), made on first use
        self._knn_lock = threading.Lock()
        order = graph.graph.get("order") or list(nx.topological_sort(graph))
        steps = [n for n in order if graph.nodes[n]["kind"] not in ("input", "output")]
        levels: dict[int, list[str]] = {}
        for n in steps:
            levels.setdefault(graph.nodes[n]["level"], []).append(n)
        self.levels = [levels[k] for k in sorted(levels)]

    def model_name(self, node: dict) -> str:
        return self.model_override or node.get("model") or self.g.graph["default_model"]

    # -- a batch -------------------------------------------------------------------------
    def run(self, rows: list[dict[str, Any]], sample: int = 0, temperature: float | None = None) -> list[RowState]:
        """Run rows. `sample` > 0 asks for another sample of every call (a distinct cache key);
        `temperature` overrides the models' own (bootstrapping uses both). Raises the first
        ConfigurationError (after stopping the batch), and KeyboardInterrupt at once on Ctrl-C."""
        run = _Run(uuid.uuid4().hex[:8], sample, temperature)
        states = [self._start_row(i, row) for i, row in enumerate(rows)]
        logged = [0] * len(states)
        try:
            for level in self.levels:
                lanes: dict[str, list[tuple[str, RowState]]] = {}
                singles: list[tuple[str, RowState]] = []
                for nid in level:
                    lane = self._lane(nid)
                    for st in states:
                        if st.error is None:
                            (lanes.setdefault(lane, []) if lane else singles).append((nid, st))
                futures = [self.threads.submit(self._run_lane, tasks, run) for tasks in lanes.values()]
                futures += [self.threads.submit(self._run_lane, [t], run) for t in singles]
                try:
                    wait(futures)
                except BaseException:  # Ctrl-C while waiting: start nothing more, stop what runs
                    run.cancel.cancel()
                    for f in futures:
                        f.cancel()
                    wait(futures, timeout=INTERRUPT_GRACE_S)
                    raise
                for f in futures:
                    f.result()  # re-raise internal bugs; user-facing failures are on the rows
                if run.failure is not None:
                    raise run.failure
                logged = self._log_traces(states, logged)  # after each level: a killed run keeps them
        finally:
            self._log_traces(states, logged)  # the calls that finished before an interrupt or failure
        for st in states:
            if st.error is None:
                self._finish_row(st)
        return states

    def _lane(self, nid: str) -> str | None:
        node = self.g.nodes[nid]
        if node["kind"] == "call":
            return None
        name = self.model_name(node)
        try:
            concurrent = self.pool.get(name).supports_concurrency
        except LmpcRuntimeError:
            concurrent = False  # the call itself reports the error, row by row
        return None if concurrent else f"model:{name}"

    def _log_traces(self, states: list[RowState], logged: list[int]) -> list[int]:
        """Append each row's events after its mark `logged` that finished (not the calls an
        interrupt cut short); returns the new marks."""
        if self.trace_log is not None:
            self.trace_log.append([e for st, k in zip(states, logged) for e in st.trace[k:]
                                   if e.latency_s > 0 and not e.extra.get("interrupted")])
        return [len(st.trace) for st in states]

    def _run_lane(self, tasks: list[tuple[str, RowState]], run: _Run) -> None:
        for nid, st in tasks:
            if run.cancel.cancelled:
                return  # interrupted, or a configuration error: send nothing more
            if st.error is not None:
                continue
            try:
                st.values[nid] = self._run_node(nid, st, run)
            except BudgetExceededError:
                raise  # stops the whole run, not just this row
            except Interrupted as e:
                if run.cancel.cancelled:
                    return  # this batch is being abandoned: no row result to record
                # the call was cancelled from elsewhere (its model closed): this row failed
                st.error = StepError(f"{where(self.g.nodes[nid])}: {e}", self.g.nodes[nid]["step"])
            except ConfigurationError as e:  # every row would fail the same way: stop the batch
                run.fail(e)
                return
            except StepError as e:
                st.error = e
            except LmpcRuntimeError as e:
                st.error = StepError(f"{where(self.g.nodes[nid])}: {e}", self.g.nodes[nid]["step"],
                                     getattr(e, "raw_text", None))

    # -- rows ----------------------------------------------------------------------------
    def _start_row(self, index: int, row: dict[str, Any]) -> RowState:
        st = RowState(index)
        declared = self.g.graph["inputs"]
        unknown = sorted(set(row) - set(declared))
        if unknown:
            st.error = LmpcRuntimeError(f"row {index}: unknown input(s) {', '.join(unknown)}; "
                                        f"the pipeline takes {', '.join(declared) or 'no inputs'}")
            return st
        for name, f in declared.items():
            if name not in row:
                if "anyOf" in f["schema"]:
                    row = {**row, name: None}
                else:
                    st.error = LmpcRuntimeError(f"row {index}: missing input `{name}` ({f['type']})")
                    return st
            why = validation_error(row[name], f["schema"])
            if why is not None:
                st.error = LmpcRuntimeError(f"row {index}: input `{name}` should be {f['type']}: {why}")
                return st
            st.values[f"in:{name}"] = row[name]
        return st

    def _finish_row(self, st: RowState) -> None:
        lookup = lambda ref, path: get_path(st.values[ref], path)  # noqa: E731
        outputs = {}
        for nid, d in self.g.nodes(data=True):
            if d["kind"] == "output":
                outputs[d["name"]] = evaluate(d["bindings"]["value"], lookup)
        st.outputs = outputs

    # -- one node for one row --------------------------------------------------------------
    def _run_node(self, nid: str, st: RowState, run: _Run) -> dict[str, Any]:
        node = self.g.nodes[nid]
        lookup = lambda ref, path: get_path(st.values[ref], path)  # noqa: E731
        inputs = {arg: evaluate(expr, lookup) for arg, expr in node["bindings"].items()}
        for arg, value in inputs.items():
            why = validation_error(value, node["inputs"][arg]["schema"])
            if why is not None:
                raise StepError(f"{where(node)}: input `{arg}` should be {node['inputs'][arg]['type']}: {why}",
                                node["step"])
        event = TraceEvent(step=node["step"], kind=node["kind"], span=node.get("span"), model=None, messages=None,
                           inputs=inputs, raw=None, parsed=None, row=st.index, started_at=time.time(),
                           trace_id=f"{run.run_id}-{st.index}-{nid}")
        st.trace.append(event)
        t0 = time.perf_counter()
        try:
            if node["kind"] == "call":
                out = self._run_call(node, inputs)
            else:
                out = self._run_prompt(node, inputs, event, run)
            event.parsed = out
            return out
        except Interrupted:
            event.extra["interrupted"] = True  # not a result: left out of the trace log
            raise
        except OutputError as e:
            event.error = str(e)
            raise StepError(f"{where(node)}: {e}", node["step"], e.raw_text) from e
        except LmpcRuntimeError as e:
            event.error = str(e)
            raise
        except Exception as e:  # a user function raised: keep the run going, name the step
            event.error = f"{type(e).__name__}: {e}"
            raise StepError(f"{where(node)}: {type(e).__name__}: {e}", node["step"]) from e
        finally:
            event.latency_s = time.perf_counter() - t0

    def _run_call(self, node: dict, inputs: dict[str, Any]) -> dict[str, Any]:
        fn = load_function(node["fn"], self.base_dir)
        out = run_function(fn, inputs, list(node["outputs"]))
        for name, value in out.items():
            why = validation_error(value, node["outputs"][name]["schema"])
            if why is not None:
                raise LmpcRuntimeError(f"the function's `{name}` should be {node['outputs'][name]['type']}: {why}")
        return out

    def _run_prompt(self, node: dict, inputs: dict[str, Any], event: TraceEvent, run: _Run) -> dict[str, Any]:
        name = self.model_name(node)
        model = self.pool.get(name)
        options = self.pool.options(name)
        if node.get("knn"):  # demos chosen per row: the pool entries nearest to this row's inputs
            demos, event.extra["knn"] = self._knn_demos(node).choose(inputs)
            node = {**node, "demos": demos}
        messages = render_messages(node, inputs)
        schema = decoding_schema(node)
        request = GenerationRequest(
            messages=messages, json_schema=schema,
            max_tokens=int(options.get("max_tokens", min(decoding_budget(schema), MAX_DECODING_TOKENS))),
            temperature=float(run.temperature if run.temperature is not None
                              else options.get("temperature", 0.0)),
            seed=int(options.get("seed", 0)) + run.sample,
            cancel=run.cancel,
        )
        key = call_key({"model": model.identity, "messages": messages, "schema": schema,
                        "max_tokens": request.max_tokens, "temperature": request.temperature,
                        "seed": request.seed, "sample": run.sample})

        made: list[bool] = []  # whether compute ran here (not in another batch's identical call)

        def compute() -> dict[str, Any]:
            made.append(True)
            if self.budget is not None:
                self.budget.charge()
            c = model.generate(request)
            # a server that puts the key in its answer: masked before the cache, traces and outputs
            return {"text": redact_known(c.text), "prompt_tokens": c.prompt_tokens,
                    "completion_tokens": c.completion_tokens}

        try:
            value, hit = self.cache.get_or_compute(key, compute)
        except Interrupted:
            if run.cancel.cancelled or made:
                raise
            # we waited on an identical call of another batch, and that batch was interrupted
            value, hit = self.cache.get_or_compute(key, compute)
        event.model, event.messages, event.raw, event.cache_hit = name, messages, value["text"], hit
        event.prompt_tokens, event.completion_tokens = value["prompt_tokens"], value["completion_tokens"]
        return parse_output(value["text"], output_schema(node), "the model's output")

    def _knn_demos(self, node: dict) -> KnnDemos:
        with self._knn_lock:
            chooser = self._knn.get(node["step"])
            if chooser is None:
                chooser = KnnDemos(node, self.g.graph["models"], self.base_dir, self.cache)
                self._knn[node["step"]] = chooser
            return chooser

    def close(self) -> None:
        # Lanes of an interrupted batch return at once; queued work of none is left.
        self.threads.shutdown(wait=True, cancel_futures=True)
