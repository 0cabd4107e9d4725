"""`lmpc serve`'s batching and counters: concurrent requests gathered into batches, and /metrics.

Requests to one program are gathered for a short window (or until a batch is full) and run as
one Program.batch: the executor then issues the calls of a prompt node back to back, so
llama.cpp reuses the KV cache of the shared prefix (instructions, demos), and a model with
the batched engine decodes them together. While a batch runs, the next one gathers; with one
batch at a time (the default, right for a local model's single context) a busy server's
batches grow by themselves. Every trace event of a batch records {"id", "size"} under
extra["batch"] (BatchTaggedLog), in the trace log and in the results.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from lmpc.compiler.errors import LmpcError
from lmpc.runtime.trace import TraceEvent, TraceLog

# The batch the calling thread runs: the executor appends a batch's events to the log from the
# thread that called Program.batch (child executors hand theirs up), so this tags them all.
_CURRENT_BATCH: ContextVar[dict[str, Any] | None] = ContextVar("lmpc_serve_batch", default=None)


class BatchTaggedLog(TraceLog):
    """A TraceLog that records, on each event, the serve batch it ran in."""

    def append(self, events: list[TraceEvent]) -> None:
        tag = _CURRENT_BATCH.get()
        if tag is not None:
            for e in events:
                e.extra.setdefault("batch", dict(tag))
        super().append(events)


class ServeError(Exception):
    """An answer that is no row's result: a batch that failed as a whole (a configuration error,
    a bug of ours), a full queue. status: the HTTP status its requests answer with. Not an
    LmpcError: it never leaves the service (lmpc/errors.py registers those)."""

    def __init__(self, message: str, status: int = 500):
        super().__init__(message)
        self.status = status


@dataclass
class _Pending:
    row: dict[str, Any]
    future: asyncio.Future
    queued_at: float = field(default_factory=time.perf_counter)


class Gatherer:
    """Gathers rows into batches and runs them on `program` in worker threads.

    window_s: how long the first row of a batch waits for others; max_batch: rows per batch;
    concurrency: batches running at once (1 for a local model: its context is one lane)."""

    def __init__(self, program: Any, metrics: "Metrics", *, window_s: float = 0.01, max_batch: int = 32,
                 concurrency: int = 1):
        self.program = program
        self.metrics = metrics
        self.window_s = window_s
        self.max_batch = max_batch
        self.concurrency = concurrency
        self._queue: asyncio.Queue[_Pending] | None = None
        self._slots: asyncio.Semaphore | None = None
        self._task: asyncio.Task | None = None
        self._running: set[asyncio.Task] = set()
        self._threads = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="lmpc-serve")
        self._active = 0
        self._active_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._prefix = f"{int(time.time()) % 100000:05d}"  # batch ids stay distinct across restarts

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._slots = asyncio.Semaphore(self.concurrency)
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="lmpc-serve-gather")

    @property
    def queued(self) -> int:
        """Rows waiting for a batch."""
        return self._queue.qsize() if self._queue is not None else 0

    @property
    def busy(self) -> int:
        """Batches running now in the worker threads (a batch whose request was cancelled at the
        end of the grace period still runs there: a local decode cannot be stopped midway)."""
        with self._active_lock:
            return self._active

    async def submit(self, rows: list[dict[str, Any]]) -> list[Any]:
        """Each row's Result (in order), or a ServeError for a row whose batch failed as a whole."""
        assert self._queue is not None, "Gatherer.start() first"
        loop = asyncio.get_running_loop()
        pending = [_Pending(row, loop.create_future()) for row in rows]
        for p in pending:
            self._queue.put_nowait(p)
        return list(await asyncio.gather(*(p.future for p in pending), return_exceptions=True))

    async def _loop(self) -> None:
        assert self._queue is not None and self._slots is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._slots.acquire()  # gather while the previous batch runs; start when a slot is free
            items = [await self._queue.get()]
            deadline = loop.time() + self.window_s
            while len(items) < self.max_batch:
                try:
                    items.append(self._queue.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    items.append(await asyncio.wait_for(self._queue.get(), left))
                except asyncio.TimeoutError:
                    break
            task = loop.create_task(self._run(items))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, items: list[_Pending]) -> None:
        assert self._slots is not None
        batch = {"id": f"b{self._prefix}-{next(self._ids)}", "size": len(items)}
        started = time.perf_counter()
        try:
            results = await asyncio.get_running_loop().run_in_executor(
                self._threads, self._run_sync, batch, [p.row for p in items])
        except LmpcError as e:  # a ConfigurationError: every row would fail alike
            results = [ServeError(str(e)) for _ in items]
        except Exception as e:  # noqa: BLE001 - a bug of ours: answer, keep serving
            results = [ServeError(f"internal error: {type(e).__name__}: {e}") for _ in items]
        finally:
            self._slots.release()
        self.metrics.batch_done(len(items), time.perf_counter() - started, [started - p.queued_at for p in items])
        for p, r in zip(items, results):
            if not p.future.done():  # a request cancelled meanwhile (client gone, grace over)
                p.future.set_result(r)

    def _run_sync(self, batch: dict[str, Any], rows: list[dict[str, Any]]) -> list[Any]:
        token = _CURRENT_BATCH.set(batch)
        with self._active_lock:
            self._active += 1
        try:
            results = self.program.batch(rows)
        finally:
            _CURRENT_BATCH.reset(token)
            with self._active_lock:
                self._active -= 1
        for r in results:  # events the log did not see (none today) carry the batch too
            for e in r.trace:
                e.extra.setdefault("batch", dict(batch))
        return results

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        # rows still queued (the grace period ran out before they were gathered)
        while self._queue is not None and not self._queue.empty():
            p = self._queue.get_nowait()
            if not p.future.done():
                p.future.set_result(ServeError("the server stopped before this row ran", 503))

    def close(self, wait: bool = True) -> None:
        self._threads.shutdown(wait=wait, cancel_futures=True)


SUMMED = ("prompt_tokens_evaluated", "prompt_tokens_copied", "prompt_rounds", "steps")
WIDEST = ("widest", "widest_prompt")


def engine_counters(model: Any) -> dict[str, int]:
    """The batched engines' counters of a local model (batch_engine.BatchEngine: one per LoRA
    adapter, or a single one in older layouts); {} when it has none. Read defensively: the
    engine is being improved, and metrics must never fail a request."""
    worker = getattr(model, "_worker", None)
    engines = list((getattr(worker, "engines", None) or {}).values())
    single = getattr(worker, "engine", None)
    if single is not None and not isinstance(single, str):
        engines.append(single)
    out: dict[str, int] = {}
    for engine in engines:
        for key in SUMMED + WIDEST:
            value = getattr(engine, key, None)
            if isinstance(value, int):
                out[key] = max(out.get(key, 0), value) if key in WIDEST else out.get(key, 0) + value
    return out


def percentiles(values: list[float], qs: tuple[int, ...] = (50, 95, 99)) -> dict[str, float | None]:
    """Nearest-rank percentiles (None when there are no values)."""
    ordered = sorted(values)
    out: dict[str, float | None] = {}
    for q in qs:
        if not ordered:
            out[f"p{q}"] = None
        else:
            k = max(0, min(len(ordered) - 1, -(-q * len(ordered) // 100) - 1))
            out[f"p{q}"] = round(ordered[k], 6)
    return out


class Metrics:
    """What /metrics reports. Counters only grow; latencies are the last `window` requests'."""

    def __init__(self, program: Any, window: int = 10000):
        self.program = program
        self.started = time.time()
        self._lock = threading.Lock()
        self.requests = 0  # HTTP requests to /run and /batch, whatever their answer
        self.rows = 0
        self.rows_ok = 0
        self.rows_failed = 0  # a row's error (500/502 on /run)
        self.rejected = 0  # 4xx: malformed requests
        self.in_flight = 0
        self.unanswered = 0  # requests cancelled before their answer (the grace period ran out)
        self.calls = 0  # model calls made by the rows (cached ones included)
        self.cache_hits = 0
        self.prompt_tokens = 0  # prompt tokens of the calls that reached a model
        self.completion_tokens = 0
        self.batches = 0
        self.batch_sizes: dict[int, int] = {}
        self.max_batch_size = 0
        self.latency: deque[float] = deque(maxlen=window)  # request latency, seconds
        self.queue_wait: deque[float] = deque(maxlen=window)  # a row's wait for its batch
        self.batch_time: deque[float] = deque(maxlen=window)

    def request_started(self) -> None:
        with self._lock:
            self.requests += 1
            self.in_flight += 1

    def request_done(self, seconds: float, answered: bool = True) -> None:
        with self._lock:
            self.in_flight -= 1
            if answered:
                self.latency.append(seconds)
            else:
                self.unanswered += 1

    def rejected_request(self) -> None:
        with self._lock:
            self.rejected += 1

    def batch_done(self, size: int, seconds: float, waits: list[float]) -> None:
        with self._lock:
            self.batches += 1
            self.batch_sizes[size] = self.batch_sizes.get(size, 0) + 1
            self.max_batch_size = max(self.max_batch_size, size)
            self.batch_time.append(seconds)
            self.queue_wait.extend(waits)

    def rows_done(self, results: list[Any]) -> None:
        with self._lock:
            for r in results:
                self.rows += 1
                if getattr(r, "ok", False):
                    self.rows_ok += 1
                else:
                    self.rows_failed += 1
                for e in getattr(r, "trace", ()):
                    if e.model is None:
                        continue
                    self.calls += 1
                    self.cache_hits += e.cache_hit
                    if not e.cache_hit:
                        self.prompt_tokens += e.prompt_tokens
                    self.completion_tokens += e.completion_tokens

    def model_counters(self) -> dict[str, dict[str, Any]]:
        """The public counters of the program's loaded models (local llama.cpp ones: prompt
        tokens evaluated; the batched engine's too). Read without their lock: a snapshot."""
        out: dict[str, dict[str, Any]] = {}
        pool = getattr(self.program, "pool", None)
        loaded = dict(getattr(pool, "_models", {}) or {})
        loaded.update(getattr(pool, "_shared", {}) or {})
        for name, model in loaded.items():
            counters: dict[str, Any] = {}
            value = getattr(model, "prompt_tokens_evaluated", None)
            if isinstance(value, int):
                counters["prompt_tokens_evaluated"] = value
            for key, value in engine_counters(model).items():
                counters[f"engine_{key}"] = value
            if counters:
                out[name] = counters
        return out

    def snapshot(self, state: str) -> dict[str, Any]:
        with self._lock:
            lat = list(self.latency)
            waits = list(self.queue_wait)
            batch_time = list(self.batch_time)
            data = {
                "state": state,
                "pipeline": self.program.name,
                "uptime_s": round(time.time() - self.started, 3),
                "requests": self.requests,
                "in_flight": self.in_flight,
                "rejected": self.rejected,
                "unanswered": self.unanswered,
                "rows": self.rows,
                "rows_ok": self.rows_ok,
                "errors": self.rows_failed,
                "calls": self.calls,
                "cache_hits": self.cache_hits,
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "batches": self.batches,
                "max_batch_size": self.max_batch_size,
                "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
            }
        data["latency_s"] = percentiles(lat)
        data["queue_wait_s"] = percentiles(waits)
        data["batch_time_s"] = percentiles(batch_time)
        try:
            models = self.model_counters()
        except Exception:  # noqa: BLE001 - a model's layout we do not know: no counters, never a failed /metrics
            models = {}
        data["models"] = models
        data["prompt_tokens_evaluated"] = sum(c.get("prompt_tokens_evaluated", 0) + c.get("engine_prompt_tokens_evaluated", 0)
                                              for c in models.values())
        return data


def prometheus(data: dict[str, Any]) -> str:
    """The snapshot in Prometheus' text format (counters, gauges, and latency quantiles)."""
    lines = []

    def metric(name: str, kind: str, value: Any, labels: str = "") -> None:
        if value is None:
            return
        if not any(line.startswith(f"# TYPE lmpc_serve_{name} ") for line in lines):
            lines.append(f"# TYPE lmpc_serve_{name} {kind}")
        lines.append(f"lmpc_serve_{name}{labels} {value}")

    for key in ("requests", "rejected", "unanswered", "rows", "rows_ok", "errors", "calls", "cache_hits", "prompt_tokens",
                "completion_tokens", "batches", "prompt_tokens_evaluated"):
        metric(f"{key}_total", "counter", data[key])
    metric("in_flight", "gauge", data["in_flight"])
    metric("max_batch_size", "gauge", data["max_batch_size"])
    for key in ("latency_s", "queue_wait_s", "batch_time_s"):
        for q, v in data[key].items():
            metric(key, "summary", v, f'{{quantile="0.{q[1:]}"}}')
    return "\n".join(lines) + "\n"
