"""Run an evaluation's rows on a Ray cluster (`lmpc eval|build --executor ray`).

The driver (the `lmpc` process) splits the rows into chunks; a pool of Ray actors (one per
worker, `RowWorker`) each keep the program's models loaded (a local llama.cpp model is loaded
once per worker; remote endpoints are shared) and run a chunk with the ordinary Executor, so a
row computes exactly what it computes in one process. What comes back per chunk: each row's
outputs, error and trace events (the driver appends them to its trace log, which is what
counts calls and tokens), in row order whatever order the chunks finish in.

The call cache is one store: an actor (`CacheStore`) pinned to the driver's node owns the
driver's SQLite cache file, and every worker's cache reads and writes through it. Each new
entry is committed there before its row goes on, so a build killed or resumed on any worker
repeats no finished call, and a later single-process run finds every call the workers made.
Why not Redis: it needs a server every machine can reach; the actor needs nothing beyond Ray,
and the SQLite file stays the one `lmpc` already uses (a cache lookup is one round trip to the
driver's node, ~1 ms, against a model call of 100 ms and more).

The call budget (--max-calls) is an actor too (`BudgetKeeper`): the driver's programs (a
teacher, a judge metric) and the workers charge the same counter, so the budget is exact.

A worker that dies mid-chunk (killed, out of memory, its node lost) is replaced and its chunk
is run once more (finished calls come from the cache); if it dies again, each of the chunk's
rows is reported as an error naming the worker's death, never dropped.

Ray is an optional extra (`pip install 'lmpc[ray]'`): this module imports it only when a
runner is made.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import uuid
from collections import deque
from pathlib import Path
from typing import Any, Callable, Iterator

from lmpc.cli_common import UsageError
from lmpc.runtime.budget import BudgetExceededError, CallBudget
from lmpc.runtime.cache import CallCache
from lmpc.runtime.errors import ConfigurationError, InvalidArgumentError, LmpcRuntimeError
from lmpc.runtime.trace import TraceEvent, TraceLog

INSTALL_HINT = "pip install 'lmpc[ray]'"
MAX_RETRIES = 1  # times a chunk runs again after its worker died
LOCAL_OBJECT_STORE = 96 * 1024 * 1024  # a local cluster's object store: chunks and traces are small
CONNECT_TIMEOUT_S = 5.0
FINISH_GRACE_S = 60.0  # how long a run stopped early waits for the chunks still running


def require_ray():
    """The ray module, or a usage error (exit 2) naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise UsageError(f"--executor ray needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


# -- the actors (made remote classes when a runner starts: ray is imported only then) ---------

class CacheStore:
    """The driver's call cache, served to the workers; runs on the driver's node."""

    def __init__(self, path: str):
        self.cache = CallCache(path)

    def get(self, key: str) -> dict | None:
        return self.cache.get(key)

    def put(self, key: str, value: dict) -> None:
        self.cache.put(key, value)  # committed (WAL) before the worker's row goes on


class BudgetKeeper:
    """The one call counter of a run: None when a call may go, else the budget's message."""

    def __init__(self, max_calls: int | None, used: int = 0):
        self.budget = CallBudget(max_calls)
        self.budget.used = used

    def charge(self) -> str | None:
        try:
            self.budget.charge()
        except BudgetExceededError as e:
            return str(e)
        return None

    def used(self) -> int:
        return self.budget.used

    def set_used(self, used: int) -> None:
        self.budget.used = used


class _StoreCache(CallCache):
    """A worker's cache: every lookup and insert goes to the CacheStore actor (in-flight
    de-duplication stays local, as in one process)."""

    def __init__(self, store: Any):
        super().__init__(enabled=False)
        self.enabled = True
        self._store = store

    def get(self, key: str) -> dict | None:
        import ray

        return ray.get(self._store.get.remote(key))

    def put(self, key: str, value: dict) -> None:
        import ray

        ray.get(self._store.put.remote(key, value))

    def count(self) -> int:
        return 0

    def close(self) -> None:
        pass


class SharedBudget(CallBudget):
    """A CallBudget whose counter is a BudgetKeeper actor: the driver and every worker charge it."""

    def __init__(self, keeper: Any, max_calls: int | None):  # noqa: super().__init__ would set `used`
        self.max_calls = max_calls
        self.keeper = keeper
        self._lock = threading.Lock()

    def charge(self) -> None:
        import ray

        why = ray.get(self.keeper.charge.remote())
        if why is not None:
            raise BudgetExceededError(why)

    @property
    def used(self) -> int:  # type: ignore[override]
        import ray

        return ray.get(self.keeper.used.remote())


class _Collect(TraceLog):
    """The events a worker's executor logs (finished calls only, as in one process): they go
    back to the driver, which appends them to its own log."""

    def __init__(self) -> None:
        super().__init__(None)
        self.events: list[TraceEvent] = []

    def append(self, events: list[TraceEvent]) -> None:
        self.events.extend(events)


def _portable_error(err: BaseException | None) -> tuple | None:
    """A row's error as plain data (StepError's constructor does not survive pickling)."""
    if err is None:
        return None
    return (str(err), getattr(err, "step", None), getattr(err, "raw_text", None))


def _error_back(data: tuple | None) -> LmpcRuntimeError | None:
    if data is None:
        return None
    from lmpc.runtime.executor import StepError

    message, step, raw = data
    return StepError(message, step, raw) if step is not None else LmpcRuntimeError(message)


def _raised(e: BaseException) -> BaseException:
    """An error that ends the batch, as it can cross to the driver (its class kept when it can)."""
    import pickle

    try:
        return pickle.loads(pickle.dumps(e))
    except Exception:
        return (ConfigurationError if isinstance(e, ConfigurationError) else LmpcRuntimeError)(str(e))


class RowWorker:
    """One worker: loads each model once (ModelPool per model set) and runs chunks of rows."""

    KEEP = 4  # programs (graphs) kept ready: a build's candidates each get their own

    def __init__(self, store: Any):
        self.cache = _StoreCache(store) if store is not None else CallCache(enabled=False)
        self.pools: dict[str, Any] = {}
        self.programs: dict[str, Any] = {}

    def ping(self) -> int:
        return os.getpid()

    def _program(self, job: dict):
        import json

        import ray

        from lmpc.runtime.pool import ModelPool
        from lmpc.runtime.program import Program

        prog = self.programs.get(job["id"])
        if prog is None:
            key = json.dumps([job["specs"], job["base_dir"]], sort_keys=True, default=str)
            pool = self.pools.get(key)
            if pool is None:
                pool = self.pools[key] = ModelPool(job["specs"], Path(job["base_dir"]) if job["base_dir"] else None)
            keeper = job["keeper"]
            budget = SharedBudget(keeper, job["max_calls"]) if keeper is not None else None
            prog = Program(ray.get(job["graph"][0]), base_dir=job["base_dir"], cache=self.cache,
                           trace_log=_Collect(), model=job["model"], budget=budget, pool=pool)
            self.programs[job["id"]] = prog
            while len(self.programs) > self.KEEP:
                self.programs.pop(next(iter(self.programs))).close()
        return prog

    def run(self, job: dict, rows: list[dict], sample: int, temperature: float | None) -> tuple:
        """("ok", rows' results, logged events) or ("raise", error, logged events)."""
        prog = self._program(job)
        prog.trace_log.events = []
        try:
            results = prog.batch(rows, sample=sample, temperature=temperature)
        except (LmpcRuntimeError, ConfigurationError) as e:  # BudgetExceededError among them
            return ("raise", _raised(e), prog.trace_log.events)
        out = [(r.values, r.trace, _portable_error(r.error), r.index, r.checks) for r in results]
        return ("ok", out, prog.trace_log.events)  # one pickle: events shared with traces go once


# -- the driver's side -----------------------------------------------------------------------

def _check_reachable(address: str) -> None:
    """An address that does not answer fails in seconds (Ray itself retries for minutes)."""
    if address == "auto" or "://" in address and not address.startswith("ray://"):
        return
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise UsageError(f"--ray-address takes HOST:PORT, ray://HOST:PORT or auto, got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as e:
        raise ConfigurationError(f"the Ray cluster at {address} cannot be reached ({e}); start it "
                                 f"(`ray start --head`) or give its address with --ray-address") from None


def connect(address: str | None, workers: int | None = None) -> bool:
    """Join the cluster at `address` ("auto": the one running on this machine; $RAY_ADDRESS when
    None and set), else start a local one for this process. True when this call started Ray."""
    ray = require_ray()
    if ray.is_initialized():  # a caller (a test, an application) already joined one
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    options: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
    if address is None:
        # Local: one CPU per worker (a llama.cpp model takes cpu_count // 2 threads by default).
        options.update(num_cpus=max(os.cpu_count() or 2, workers or 0), object_store_memory=LOCAL_OBJECT_STORE)
    else:
        _check_reachable(address)
        options["address"] = address
    try:
        ray.init(**options)
    except ConnectionError as e:
        raise ConfigurationError(f"no Ray cluster at {address}: {e}") from None
    except Exception as e:  # Ray's own start-up failures: one line, exit 1
        raise ConfigurationError(f"Ray did not start: {type(e).__name__}: {e}") from None
    return True


def _cluster_errors_to_stderr(ray: Any) -> None:
    """Ray prints the cluster's error messages (`(raylet) A worker died ...`) on stdout, where
    `lmpc eval --json` writes its one JSON object: send them to stderr (ray==2.60's listener
    looks this function up at each message)."""
    worker = getattr(getattr(ray, "_private", None), "worker", None)
    show = getattr(worker, "print_to_stdstream", None)
    if show is None or getattr(show, "_lmpc", False):
        return

    def to_stderr(data: dict, ignore_prefix: bool) -> None:
        show({**data, "is_err": True}, ignore_prefix)

    to_stderr._lmpc = True  # type: ignore[attr-defined]
    worker.print_to_stdstream = to_stderr


class RayRunner:
    """Runs chunks of rows of a Program on Ray actors; evaluate(..., runner=) drives it."""

    def __init__(self, *, address: str | None = None, workers: int | None = None, cache: CallCache | None = None,
                 log: Callable[[str], None] | None = None):
        self.ray = require_ray()
        self.log = log or (lambda m: print(m, file=sys.stderr, flush=True))
        self._sigterm = signal.getsignal(signal.SIGTERM)  # ray.init installs its own and leaves it
        self._started = connect(address, workers)
        ray = self.ray
        _cluster_errors_to_stderr(ray)
        self._remote = {cls: ray.remote(cls) for cls in (CacheStore, BudgetKeeper, RowWorker)}
        try:
            here = ray.get_runtime_context().get_node_id()
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            pin = NodeAffinitySchedulingStrategy(here, soft=False)  # the cache file is on this machine
            self._store = None
            if cache is not None and cache.enabled:
                self._store = self._remote[CacheStore].options(num_cpus=0, scheduling_strategy=pin,
                                                               max_concurrency=8).remote(str(cache.path))
            self._pin = pin
            cpus = int(ray.cluster_resources().get("CPU", 0))
            n = workers or max(1, min(8, cpus))
            if n > cpus:  # the actors would wait for CPUs forever
                raise ConfigurationError(f"--ray-workers {n}: the Ray cluster has {cpus} CPU(s), and each worker "
                                         f"takes one; ask for fewer workers or add nodes")
            self.workers = [self._new_worker() for _ in range(n)]
            ray.get([w.ping.remote() for w in self.workers] + ([self._store.get.remote("")] if self._store else []))
        except BaseException:
            self.close()
            raise
        self._keepers: dict[int, tuple[Any, CallBudget]] = {}  # id(plain CallBudget) -> its keeper

    def _new_worker(self):
        return self._remote[RowWorker].options(num_cpus=1, max_concurrency=1).remote(self._store)

    def budget(self, max_calls: int | None) -> SharedBudget:
        """A budget the driver's programs and every worker charge alike (give it to the build's programs)."""
        keeper = self._remote[BudgetKeeper].options(num_cpus=0, scheduling_strategy=self._pin).remote(max_calls)
        return SharedBudget(keeper, max_calls)

    def chunk_size(self, n_rows: int, default: int) -> int:
        """Chunks of at most `default` rows, at least two per worker when there are enough rows."""
        return max(1, min(default, -(-n_rows // (2 * len(self.workers)))))

    def _job(self, program: Any) -> dict:
        pool = program.pool
        if getattr(pool, "_shared", None):
            raise InvalidArgumentError("the Ray executor loads the program's declared models on its workers; "
                                       "a program given ready-made model instances runs only in one process")
        budget, keeper = program.budget, None
        if isinstance(budget, SharedBudget):
            keeper = budget.keeper
        elif budget is not None:  # a plain CallBudget (the Python API): a keeper for this run, synced back
            entry = self._keepers.get(id(budget))
            if entry is None:
                entry = (self._remote[BudgetKeeper].options(num_cpus=0).remote(budget.max_calls, budget.used), budget)
                self._keepers[id(budget)] = entry
            keeper = entry[0]
            self.ray.get(keeper.set_used.remote(budget.used))
        base = str(Path(pool.base_dir).resolve()) if pool.base_dir else None  # workers' cwd is not ours
        return {"id": uuid.uuid4().hex, "graph": [self.ray.put(program.graph)], "specs": pool.specs,
                "base_dir": base, "model": program.executor.model_override, "keeper": keeper,
                "max_calls": budget.max_calls if budget is not None else None}

    def run_chunks(self, program: Any, chunks: list[list[dict]], sample: int = 0,
                   temperature: float | None = None) -> Iterator[list]:
        """Yield each chunk's Results, in order; the chunks run on the workers meanwhile."""
        ray = self.ray
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, WorkerCrashedError

        died = (ActorDiedError, ActorUnavailableError, RayActorError, WorkerCrashedError)
        job = self._job(program)
        queue = deque(range(len(chunks)))
        tries = [0] * len(chunks)
        idle = list(self.workers)
        inflight: dict[Any, tuple[int, Any]] = {}
        done: dict[int, tuple] = {}
        nxt = 0
        interrupted = False
        try:
            while nxt < len(chunks):
                while idle and queue:
                    i = queue.popleft()
                    w = idle.pop(0)
                    inflight[w.run.remote(job, chunks[i], sample, temperature)] = (i, w)
                if nxt not in done:
                    ready, _ = ray.wait(list(inflight), num_returns=1)
                    for ref in ready:
                        i, w = inflight.pop(ref)
                        try:
                            done[i] = ray.get(ref)
                            idle.append(w)
                        except died as e:
                            idle.append(self._replace(w))
                            tries[i] += 1
                            why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                            if tries[i] <= MAX_RETRIES:
                                first = sum(len(c) for c in chunks[:i])
                                self.log(f"lmpc: a Ray worker died running rows {first}-{first + len(chunks[i]) - 1} "
                                         f"({why}); running them again on a new worker")
                                queue.appendleft(i)
                            else:
                                done[i] = ("died", why, [])
                while nxt in done:
                    yield self._results(program, done.pop(nxt), len(chunks[nxt]))
                    nxt += 1
        except KeyboardInterrupt:
            interrupted = True
            raise
        finally:
            # Stopped early (max_errors, a spent budget, a configuration error): the chunks
            # running finish (their paid calls reach the cache; after a spent budget or such an
            # error they end at once), unless Ctrl-C asked to stop now.
            if inflight and not interrupted:
                ray.wait(list(inflight), num_returns=len(inflight), timeout=FINISH_GRACE_S)
            for ref in inflight:
                try:
                    ray.cancel(ref)
                except Exception:  # noqa: BLE001 - a task that just ended, a worker that died: nothing to stop
                    pass
            if job["keeper"] is not None and not isinstance(program.budget, SharedBudget):
                program.budget.used = ray.get(job["keeper"].used.remote())

    def _results(self, program: Any, out: tuple, n: int) -> list:
        from lmpc.runtime.program import Result

        status, payload, events = out
        program.trace_log.append(events)  # the driver's log and meters: calls, tokens, traces
        if status == "raise":
            raise payload
        if status == "died":
            err = f"the Ray worker running this row died twice ({payload}); the row was not finished"
            return [Result(None, [], LmpcRuntimeError(err), i) for i in range(n)]
        return [Result(values, trace, _error_back(error), index, checks)
                for values, trace, error, index, checks in payload]

    def _replace(self, dead: Any) -> Any:
        fresh = self._new_worker()
        self.workers = [fresh if w is dead else w for w in self.workers]
        return fresh

    def close(self) -> None:
        """Stop the actors; shut Ray down when this runner started it."""
        ray = self.ray
        for w in getattr(self, "workers", []):
            ray.kill(w)
        if getattr(self, "_store", None) is not None:
            ray.kill(self._store)
        if self._started and ray.is_initialized():
            ray.shutdown()
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, self._sigterm)
