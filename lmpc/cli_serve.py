"""`lmpc serve ARTIFACT|FILE`: one compiled program as an HTTP service (FastAPI + uvicorn).

The app is serve_app.py, batching and counters serve_gather.py. This module opens the program
(an artifact under the same trust rules as `lmpc run` and lmpc.load), loads its local models
before listening, and runs uvicorn with lmpc's own signal rule:
- the first SIGTERM or Ctrl-C stops accepting connections and finishes the requests in flight,
  for at most --grace seconds; then the program is closed (exit 0 after SIGTERM, 130 after
  Ctrl-C, 1 when the grace period ran out with requests unanswered);
- a second signal exits at once (what finished is already in the cache and the trace log).
uvicorn's own handler would re-raise the signal after its shutdown and let a second SIGTERM
wait on the model thread; lmpc's replaces it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys
from typing import Any

from lmpc.cli_common import EXIT_INTERRUPTED, EXIT_OK, CommandInterrupted, UsageError, int_flag

EXIT_GRACE_EXCEEDED = 1


def open_serving_program(args: argparse.Namespace):
    """The Program to serve (None when the .lmp file has errors, printed), its trace log tagging
    each call with its batch. Same rules as `lmpc run` (cli_run.open_program)."""
    from lmpc.cli_run import open_program
    from lmpc.serve_gather import BatchTaggedLog

    return open_program(args, trace_log=BatchTaggedLog)


def warm_up(prog: Any, only: str | None) -> None:
    """Load the local models now, so the first request does not wait for them (errors such as a
    missing model file end the command here, before the port is opened)."""
    for name, spec in prog.graph.graph["models"].items():
        if spec.get("provider") == "llama_cpp" and (only is None or name == only):
            prog.pool.get(name).has_chat_template  # noqa: B018 - loads the model on its thread


def bind(host: str, port: int) -> socket.socket:
    """The listening socket (port 0: a free one), or a usage error saying why not."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise UsageError(f"--host {host}: {e.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock.set_inheritable(True)
    return sock


def _server_class():
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server with lmpc's signal rule (see the module's docstring)."""

        def __init__(self, config: Any, state: dict[str, Any], metrics: Any, url: str, grace: float):
            super().__init__(config)
            self.state, self.metrics, self.url, self.grace = state, metrics, url, grace
            self.stop_signal: int | None = None

        @contextlib.contextmanager
        def capture_signals(self):
            handled = (signal.SIGINT, signal.SIGTERM)
            original = {sig: signal.signal(sig, self.on_signal) for sig in handled}
            try:
                yield
            finally:
                for sig, handler in original.items():
                    signal.signal(sig, handler)

        def on_signal(self, sig: int, frame: Any) -> None:
            if self.stop_signal is not None:
                try:
                    sys.stderr.write("lmpc: interrupted again; exiting now\n")
                    sys.stderr.flush()
                finally:
                    os._exit(EXIT_INTERRUPTED if sig == signal.SIGINT else 128 + sig)
            self.stop_signal = sig
            self.state["draining"] = True
            self.should_exit = True
            sys.stderr.write(f"lmpc serve: stopping: no new connections; finishing {self.metrics.in_flight} "
                             f"request(s) in flight (at most {self.grace:g} s; signal again to exit now)\n")
            sys.stderr.flush()

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started:
                sys.stderr.write(f"lmpc serve: `{self.metrics.program.name}` on {self.url} "
                                 f"(API docs: {self.url}/docs; SIGTERM or Ctrl-C stops)\n")
                sys.stderr.flush()

    return Server


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        raise UsageError("`lmpc serve` needs FastAPI and uvicorn: pip install 'lmpc[serve]'") from None
    from lmpc.serve_app import build_app
    from lmpc.serve_gather import Gatherer, Metrics

    if args.grace < 0:
        raise UsageError(f"--grace must be 0 or more seconds, not {args.grace:g}")
    prog = open_serving_program(args)
    if prog is None:
        return 1
    try:
        if not args.no_warmup:
            warm_up(prog, args.model)
        sock = bind(args.host, args.port)
    except BaseException:
        prog.close()
        raise
    host, port = sock.getsockname()[:2]
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
    metrics = Metrics(prog)
    gatherer = Gatherer(prog, metrics, window_s=args.batch_window_ms / 1000, max_batch=args.max_batch,
                        concurrency=args.concurrency)
    state: dict[str, Any] = {"draining": False}

    @contextlib.asynccontextmanager
    async def lifespan(app: Any):
        gatherer.start()
        yield
        await gatherer.stop()

    app = build_app(prog, gatherer, metrics, state=state, lifespan=lifespan, max_queue=args.max_queue)
    config = uvicorn.Config(app, log_level=args.log_level, access_log=args.access_log,
                            timeout_graceful_shutdown=args.grace, lifespan="on")
    server = _server_class()(config, state, metrics, url, args.grace)
    try:
        asyncio.run(server.serve(sockets=[sock]))
    finally:
        sock.close()
    if gatherer.busy or metrics.in_flight or metrics.unanswered:
        # The grace period ran out: a local decode cannot be stopped midway, so do not wait on it.
        sys.stderr.write(f"lmpc serve: the grace period ({args.grace:g} s) ran out with "
                         f"{metrics.in_flight + metrics.unanswered} request(s) unanswered; exiting\n")
        sys.stderr.flush()
        os._exit(EXIT_GRACE_EXCEEDED)
    gatherer.close()
    prog.close()
    answered = metrics.requests - metrics.in_flight - metrics.unanswered
    if server.stop_signal == signal.SIGINT:
        raise CommandInterrupted(f"served {answered} request(s)")
    sys.stderr.write(f"lmpc serve: stopped; served {answered} request(s)\n")
    return EXIT_OK


def add_serve_command(sub: argparse._SubParsersAction) -> None:
    from lmpc.cli_run import add_program_options

    s = sub.add_parser("serve", help="serve a compiled program over HTTP",
                       description="Serve one pipeline of a built artifact (.json) or a .lmp file over HTTP: "
                                   "POST /run (its inputs -> its outputs), POST /batch, GET /health, GET /metrics, "
                                   "and its OpenAPI page at /docs. Concurrent requests are gathered into batches. "
                                   "SIGTERM or Ctrl-C stops accepting and finishes the requests in flight "
                                   "(--grace); a second signal exits at once. Needs the `serve` extra.")
    s.add_argument("file", metavar="ARTIFACT|FILE", help="built artifact (.json) or .lmp file")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0: all)")
    s.add_argument("--port", type=int_flag(0), default=8000, help="port (default 8000; 0: a free one, printed)")
    s.add_argument("--max-batch", type=int_flag(1), default=32, metavar="N",
                   help="most rows run as one batch (default 32)")
    s.add_argument("--batch-window-ms", type=int_flag(0), default=10, metavar="MS",
                   help="how long a batch's first row waits for others (default 10)")
    s.add_argument("--concurrency", type=int_flag(1), default=1, metavar="N",
                   help="batches running at once (default 1: right for a local model; more for remote ones)")
    s.add_argument("--max-queue", type=int_flag(1), default=1024, metavar="N",
                   help="rows waiting past which requests get 503 and Retry-After (default 1024)")
    s.add_argument("--grace", type=float, default=30.0, metavar="SECONDS",
                   help="on SIGTERM/Ctrl-C, how long to finish the requests in flight (default 30)")
    s.add_argument("--no-warmup", action="store_true", help="load local models on the first request, not before")
    s.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"],
                   help="uvicorn's log level (default warning)")
    s.add_argument("--access-log", action="store_true", help="log every request (uvicorn's access log)")
    add_program_options(s)
    s.set_defaults(func=cmd_serve)
