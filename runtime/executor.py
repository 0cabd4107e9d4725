"""Run a pipeline graph over a batch of rows.

Scheduling: nodes run level by level (a level's nodes do not depend on each other). Each
row's node runs as its kind's generator (compiler/kinds/): it yields requests (a model call,
a Python call, a run of its body over items) and gets their results, any number of times.
The executor gathers the pending requests of all rows of a level and serves them together:
all calls of one prompt node are issued back to back across rows, so llama.cpp reuses the KV
cache of the shared prefix (instructions, demos) and pays only for each row's input. Calls to
a local model go through one lane (its single llama.cpp context, in order); calls to remote
models and Python functions run concurrently on a thread pool. A node's body (map) runs
through a child executor over all items of all rows at once, so its prompt node's calls are
back to back too; its traces name the item (`notes[2]/Summarize`) and keep the row.

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

from lmpc.compiler.ir import NodeKind, input_id, is_step, item_step
from lmpc.compiler.kinds import KINDS, Act, CallFunction, Generate, Retrieve, RunBody, ToolCall
from lmpc.compiler.kinds.base import Annotated
from lmpc.runtime.budget import BudgetExceededError, CallBudget
from lmpc.runtime.checks import CheckLog, failing, feedback_node
from lmpc.runtime.cache import CallCache
from lmpc.runtime.errors import ConfigurationError, Interrupted, LmpcRuntimeError, OutputError
from lmpc.runtime.models import CancelToken
from lmpc.runtime.perform import Performer
from lmpc.runtime.pool import ModelPool
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
    checks: list[dict] = field(default_factory=list)  # outcomes of the checks of its steps (runtime/checks.py)


@dataclass
class _Task:
    """One node for one row: its kind's generator, the request it waits on, the reply."""

    nid: str
    st: RowState
    node: dict
    gen: Any = None
    request: Any = None
    reply: Any = None
    served: int = 0  # requests served so far (the trace ids of later ones are numbered)
    done: bool = False
    inputs: dict[str, Any] | None = None  # the node's inputs (a check's retry runs the kind again on them)
    checks: CheckLog | None = None  # the node's checks: attempts and failures so far
    events: list[TraceEvent] = field(default_factory=list)  # this attempt's trace events


def where(node: dict) -> str:
    span = node.get("span") or {}
    loc = f" ({span['file']}:{span['line']}:{span['col']})" if span else ""
    return f"step `{node['step']}`{loc}"


class Executor:
    def __init__(self, graph: nx.DiGraph, pool: ModelPool, cache: CallCache, trace_log: TraceLog | None,
                 base_dir: Path | None, model_override: str | None = None, max_workers: int = 8,
                 budget: CallBudget | None = None, *, models: dict | None = None,
                 default_model: str | None = None, threads: ThreadPoolExecutor | None = None):
        """`models`, `default_model` and `threads` are given to a body's executor by the one
        that runs it (a body graph has no models of its own)."""
        self.g = graph
        self.pool = pool
        self.cache = cache
        self.trace_log = trace_log
        self.base_dir = base_dir or Path.cwd()
        self.model_override = model_override
        self.budget = budget
        self._owns_threads = threads is None
        self.threads = threads or ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="lmpc-step")
        self.perform = Performer(pool, cache, self.base_dir, models if models is not None else graph.graph["models"],
                                 default_model or graph.graph["default_model"], model_override, budget)
        self._children: dict[str, Executor] = {}  # node -> the executor of its body
        self._children_lock = threading.Lock()
        order = graph.graph.get("order") or list(nx.topological_sort(graph))
        steps = [n for n in order if is_step(graph.nodes[n])]
        levels: dict[int, list[str]] = {}
        for n in steps:
            levels.setdefault(graph.nodes[n]["level"], []).append(n)
        self.levels = [levels[k] for k in sorted(levels)]

    def model_name(self, node: dict) -> str:
        return self.perform.model_name(node)

    # -- a batch -------------------------------------------------------------------------
    def run(self, rows: list[dict[str, Any]], sample: int = 0, temperature: float | None = None,
            *, parent: _Run | None = None) -> list[RowState]:
        """Run rows. `sample` > 0 asks for another sample of every call (a distinct cache key);
        `temperature` overrides the models' own (bootstrapping uses both). Raises the first
        ConfigurationError (after stopping the batch), and KeyboardInterrupt at once on Ctrl-C.
        `parent`: the batch of the executor running this one's graph as a body (its settings,
        cancel token and failure are shared)."""
        run = parent or _Run(uuid.uuid4().hex[:8], sample, temperature)
        states = [self._start_row(i, row) for i, row in enumerate(rows)]
        logged = [0] * len(states)
        try:
            for level in self.levels:
                self._run_level(level, states, run)
                if run.failure is not None:
                    raise run.failure
                logged = self._log_traces(states, logged)  # after each level: a killed run keeps them
        finally:
            self._log_traces(states, logged)  # the calls that finished before an interrupt or failure
        for st in states:
            if st.error is None:
                self._finish_row(st)
        return states

    def _run_level(self, level: list[str], states: list[RowState], run: _Run) -> None:
        """Start every row's generator for the level's nodes, then serve their requests in
        rounds until all have returned (one round for kinds that make one call)."""
        tasks = [self._start(nid, st) for nid in level for st in states if st.error is None]
        pending = [t for t in tasks if not t.done]
        while pending:
            self._serve(pending, run)
            if run.cancel.cancelled:
                return  # interrupted, or a configuration error (run() raises it)
            for t in pending:
                self._advance(t)
            pending = [t for t in pending if not t.done]

    def _serve(self, tasks: list[_Task], run: _Run) -> None:
        """Answer each task's request: bodies first (a child run each, in this thread), then
        model and Python calls in lanes."""
        bodies: dict[str, list[_Task]] = {}
        lanes: dict[str, list[_Task]] = {}
        singles: list[_Task] = []
        for t in tasks:
            if isinstance(t.request, RunBody):
                bodies.setdefault(t.nid, []).append(t)
                continue
            lane = self.perform.lane(t.node, isinstance(t.request, Generate))
            (lanes.setdefault(lane, []) if lane else singles).append(t)
        for nid, group in bodies.items():
            self._run_bodies(nid, group, run)
        searches: dict[str, list[_Task]] = {}
        for t in singles:
            if isinstance(t.request, Retrieve):
                searches.setdefault(t.nid, []).append(t)
        for group in searches.values():  # one search (one embedding batch) for all rows' queries of a node
            try:
                self.perform.prefetch_retrievals(group[0].node, [(t.request.query, t.request.k) for t in group])
            except LmpcRuntimeError:
                pass  # each row's own search reports it
        futures = [self.threads.submit(self._run_lane, group, run) for group in lanes.values()]
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

    def _log_traces(self, states: list[RowState], logged: list[int]) -> list[int]:
        """Append each row's events after its mark `logged` that finished (not the calls an
        interrupt cut short); returns the new marks."""
        if self.trace_log is not None:
            self.trace_log.append([e for st, k in zip(states, logged) for e in st.trace[k:]
                                   if e.latency_s > 0 and not e.extra.get("interrupted")])
        return [len(st.trace) for st in states]

    def _run_lane(self, tasks: list[_Task], run: _Run) -> None:
        for t in tasks:
            if run.cancel.cancelled:
                return  # interrupted, or a configuration error: send nothing more
            st, node = t.st, t.node
            if st.error is not None:
                continue
            try:
                t.reply = self._perform(t, run)
            except BudgetExceededError:
                raise  # stops the whole run, not just this row
            except Interrupted as e:
                if run.cancel.cancelled:
                    return  # this batch is being abandoned: no row result to record
                # the call was cancelled from elsewhere (its model closed): this row failed
                st.error = StepError(f"{where(node)}: {e}", node["step"])
            except ConfigurationError as e:  # every row would fail the same way: stop the batch
                run.fail(e)
                return
            except StepError as e:
                st.error = e
            except LmpcRuntimeError as e:
                st.error = StepError(f"{where(node)}: {e}", node["step"], getattr(e, "raw_text", None))

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
            st.values[input_id(name)] = row[name]
        return st

    def _finish_row(self, st: RowState) -> None:
        lookup = lambda ref, path: get_path(st.values[ref], path)  # noqa: E731
        outputs = {}
        for nid, d in self.g.nodes(data=True):
            if d["kind"] == NodeKind.OUTPUT:
                outputs[d["name"]] = evaluate(d["bindings"]["value"], lookup)
        st.outputs = outputs

    # -- one node for one row --------------------------------------------------------------
    def _start(self, nid: str, st: RowState) -> _Task:
        """The row's inputs of the node, checked, and its kind's generator at its first request."""
        node = self.g.nodes[nid]
        t = _Task(nid, st, node)
        lookup = lambda ref, path: get_path(st.values[ref], path)  # noqa: E731
        if "when" in node:  # a conditional step: when its condition does not hold, no call, outputs null
            try:
                holds = evaluate(node["when"], lookup)
            except (TypeError, KeyError) as e:  # only a graph the checker did not see (an edited artifact)
                st.error = StepError(f"{where(node)}: its condition cannot be evaluated: {e}", node["step"])
                holds = None
            if holds is not True:
                if st.error is None:
                    st.values[nid] = {name: None for name in node["outputs"]}
                t.done = True
                return t
        inputs = {arg: evaluate(expr, lookup) for arg, expr in node["bindings"].items()}
        for arg, value in inputs.items():
            why = validation_error(value, node["inputs"][arg]["schema"])
            if why is not None:
                st.error = StepError(f"{where(node)}: input `{arg}` should be {node['inputs'][arg]['type']}: {why}",
                                     node["step"])
                t.done = True
                return t
        t.inputs = inputs
        if node.get("checks"):
            t.checks = CheckLog(node)
        t.gen = KINDS[node["kind"]].execute(node, inputs)
        self._advance(t)
        return t

    def _advance(self, t: _Task) -> None:
        """Send the reply to the generator; it yields its next request or returns outputs."""
        if t.st.error is not None:  # this row failed (here or in another node of the level)
            t.gen.close()
            t.done = True
            return
        try:
            t.request = t.gen.send(t.reply) if t.request is not None else next(t.gen)
            t.reply = None
        except StopIteration as stop:
            value = stop.value
            if isinstance(value, Annotated):  # the kind's notes on its requests' trace events
                for i, extra in value.notes.items():
                    if i < len(t.events):
                        t.events[i].extra.update(extra)
                value = value.outputs
            if t.checks is not None and self._checked(t, value):
                return  # a retry with feedback started, or the row failed a hard check
            t.st.values[t.nid] = value
            t.done = True
        except Exception as e:  # a kind's own logic failed on this row's values
            t.st.error = StepError(f"{where(t.node)}: {type(e).__name__}: {e}", t.node["step"])
            t.done = True

    def _checked(self, t: _Task, outputs: dict[str, Any]) -> bool:
        """Judge the node's new outputs by its checks (runtime/checks.py); True when handled here:
        a failure with retries left runs the kind again with feedback, and a hard check that
        still fails after them fails the row. Otherwise (passed, or soft) the outputs stand."""
        st, log = t.st, t.checks
        lookup = lambda ref, path: get_path(outputs if ref == t.nid else st.values[ref], path)  # noqa: E731
        failed = failing(t.node, lookup)
        log.record(failed)
        for e in t.events:  # this attempt's calls: never demos when it failed a check
            if failed:
                e.extra["checks_failed"] = [c["id"] for c in failed]
        t.events = []
        if failed and log.may_retry(failed):
            log.attempts += 1
            t.gen = KINDS[t.node["kind"]].execute(feedback_node(t.node, outputs, failed, log.attempts), t.inputs)
            t.request = t.reply = None
            self._advance(t)
            return True
        st.checks.extend(log.outcome(failed))
        hard = [c for c in failed if not c["soft"]]
        if not hard:
            return False
        st.error = StepError(f"{where(t.node)}: check failed after {log.attempts} attempt(s): {hard[0]['message']} "
                             f"(`{hard[0]['text']}`)", t.node["step"])
        t.done = True
        return True

    def _perform(self, t: _Task, run: _Run) -> dict[str, Any]:
        """One model or Python call of a task, with its trace event."""
        req, st, node = t.request, t.st, t.node
        suffix = f"-{t.served}" if t.served else ""  # a node that calls more than once per row
        t.served += 1
        # the request's node names the kind: a best_of's Python reward is a `call`
        event = TraceEvent(step=node["step"], kind=req.node.get("kind", node["kind"]), span=node.get("span"), model=None, messages=None,
                           inputs=req.inputs, raw=None, parsed=None, row=st.index, started_at=time.time(),
                           trace_id=f"{run.run_id}-{st.index}-{t.nid}{suffix}")
        st.trace.append(event)
        t.events.append(event)
        if "feedback" in req.node:  # a check's retry: what it was told
            event.extra.update(attempt=t.checks.attempts if t.checks else 0, feedback=req.node["feedback"])
        t0 = time.perf_counter()
        try:
            if isinstance(req, CallFunction):
                out = self.perform.call(req.node, req.inputs)
            elif isinstance(req, Retrieve):
                out = self.perform.retrieve(req.node, req.query, req.k, event)
            elif isinstance(req, ToolCall):
                out = self.perform.tool(req.node, req.tool, req.args, event)
            elif isinstance(req, Act):
                out = self.perform.act(req.node, req.inputs, req.trajectory, event, run)
            else:
                out = self.perform.generate(req.node, req.inputs, event, run)
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

    # -- bodies ----------------------------------------------------------------------------
    def _child(self, nid: str) -> "Executor":
        with self._children_lock:
            child = self._children.get(nid)
            if child is None:
                child = Executor(self.g.nodes[nid]["body"], self.pool, self.cache, None, self.base_dir,
                                 self.model_override, budget=self.budget, models=self.perform.models,
                                 default_model=self.perform.default_model, threads=self.threads)
                self._children[nid] = child
            return child

    def _run_bodies(self, nid: str, tasks: list[_Task], run: _Run) -> None:
        """One child run over the items of every row waiting on node `nid`'s body; each row
        gets its items' outputs in order, or fails with the first failing item's error."""
        node = self.g.nodes[nid]
        rows: list[dict[str, Any]] = []
        spans = []
        for t in tasks:
            spans.append((len(rows), len(t.request.rows)))
            rows += t.request.rows
        results = self._child(nid).run(rows, parent=run)
        for t, (start, n) in zip(tasks, spans):
            items = results[start:start + n]
            for i, sub in enumerate(items, start=t.request.first):
                for e in sub.trace:  # named from the outer graph: notes[2]/Summarize, the outer row
                    e.step = item_step(node["step"], i, e.step)
                    e.trace_id = f"{run.run_id}-{t.st.index}-{item_step(t.nid, i, e.trace_id.split('-', 2)[-1])}"
                    e.row = t.st.index
                t.st.trace.extend(sub.trace)
                t.st.checks.extend(sub.checks)
            failed = next(((i, sub.error) for i, sub in enumerate(items, start=t.request.first)
                           if sub.error is not None), None)
            if failed is None:
                t.reply = [sub.outputs for sub in items]
                continue
            i, err = failed
            inner = item_step(node["step"], i, getattr(err, "step", "") or "")
            t.st.error = StepError(f"{where(node)}: item {i}: {err}", inner, getattr(err, "raw_text", None))

    def close(self) -> None:
        # Lanes of an interrupted batch return at once; queued work of none is left.
        if self._owns_threads:
            self.threads.shutdown(wait=True, cancel_futures=True)
