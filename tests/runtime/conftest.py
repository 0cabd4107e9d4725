"""Fixtures for the runtime tests: the builtin SmolLM2 model, the real llama.cpp OpenAI-
compatible server on 127.0.0.1, and small loopback HTTP servers for failure modes.

Nothing here is mocked: models run through llama.cpp, and servers are real HTTP servers
bound to the loopback interface.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from lmpc.runtime.errors import ModelNotFoundError
from lmpc.runtime.models.resolve import resolve_builtin

SERVER_START_TIMEOUT_S = 120


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (right now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """The builtin model's GGUF file. Fails (never skips) when its package is missing."""
    try:
        return resolve_builtin("smollm2-135m")
    except ModelNotFoundError as e:
        pytest.fail(f"{e}  (the runtime tests need the embedded default model)", pytrace=False)


def wait_for_llama_server(proc: subprocess.Popen, base_url: str, log_path: Path) -> None:
    """Until the server answers GET /models; a test failure (its log's tail) if it exits or is late."""
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-3000:]
            pytest.fail(f"the llama.cpp server exited with {proc.returncode}:\n{tail}", pytrace=False)
        try:
            with urllib.request.urlopen(f"{base_url}/models", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"the llama.cpp server did not answer within {SERVER_START_TIMEOUT_S} s", pytrace=False)
        time.sleep(0.25)


@contextmanager
def running_llama_server(model_path: Path, log_path: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """llama-cpp-python's OpenAI-compatible server, started through lmpc's launcher (which
    applies the extra-buffer decision, see llama_system.py); yields its /v1 base URL. Its
    output (llama.cpp's load log included) goes to log_path."""
    port = free_port()
    threads = str(max(1, (os.cpu_count() or 2) // 2))  # see local.default_threads
    cmd = [
        sys.executable, "-m", "lmpc.runtime.models.llama_server", "--model", str(model_path),
        "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048",
        "--n_threads", threads, "--n_threads_batch", threads,
    ]
    base_url = f"http://127.0.0.1:{port}/v1"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, **(env or {})})
    try:
        wait_for_llama_server(proc, base_url, log_path)
        yield base_url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def llama_server(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The OpenAI-compatible server with SmolLM2 (through lmpc's launcher); its /v1 base URL."""
    log_path = tmp_path_factory.mktemp("llama_server") / "server.log"
    with running_llama_server(smollm2_path, log_path) as base_url:
        yield base_url


def chat_completion(content: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": "test",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
    }


class LoopbackServer:
    """A tiny OpenAI-compatible chat server on 127.0.0.1 whose failures are scripted.

    fail_first: answer the first N chat requests with `fail_status`.
    reject_response_format: answer 400 to any request that carries response_format, like a
      server without structured output.
    content: the assistant message of successful answers.
    delay_s: wait this long before answering each chat request.
    Records each request's JSON body and Authorization header.
    """

    def __init__(self, *, fail_first: int = 0, fail_status: int = 503,
                 reject_response_format: bool = False, content: str = '{"label": "positive"}',
                 delay_s: float = 0.0) -> None:
        self.fail_first = fail_first
        self.delay_s = delay_s
        self.fail_status = fail_status
        self.reject_response_format = reject_response_format
        self.content = content
        self.bodies: list[dict[str, Any]] = []
        self.auth_headers: list[str | None] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up first (the timeout test)

            def do_GET(self) -> None:
                self._send(200, {"object": "list", "data": [{"id": "test", "object": "model"}]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
                with server._lock:
                    server.bodies.append(body)
                    server.auth_headers.append(self.headers.get("Authorization"))
                    n = len(server.bodies)
                time.sleep(server.delay_s)
                if server.reject_response_format and "response_format" in body:
                    self._send(400, {"error": {"message": "response_format is not supported by this server",
                                               "type": "invalid_request_error", "param": "response_format"}})
                elif n <= server.fail_first:
                    self._send(server.fail_status, {"error": {"message": "try again later",
                                                              "type": "server_error"}})
                else:
                    self._send(200, chat_completion(server.content))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def flaky_server() -> Iterator[Callable[..., LoopbackServer]]:
    """Factory of loopback servers: flaky_server(fail_first=2) answers 503 twice, then 200."""
    servers: list[LoopbackServer] = []

    def make(**kw: Any) -> LoopbackServer:
        servers.append(LoopbackServer(**kw))
        return servers[-1]

    yield make
    for s in servers:
        s.stop()


@pytest.fixture
def garbage_server() -> Iterator[LoopbackServer]:
    """A server without structured output (400 on response_format) that answers non-JSON."""
    s = LoopbackServer(reject_response_format=True, content="Sure! The label is: positive :)")
    yield s
    s.stop()
