"""A hostile OpenAI-compatible server on 127.0.0.1, written at the socket level so that it can
misbehave in ways a well-behaved HTTP library would not let it: hang, trickle a body one byte
at a time, cut a body short, answer invalid JSON, echo the caller's API key, ask to retry later.

Each connection's request is parsed, recorded (arrival time, headers, JSON body), and answered
as `plan(n, request)` says, n being the 1-based number of the request.
"""

from __future__ import annotations

import json
import socket
import socketserver
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class Request:
    n: int
    at: float  # time.monotonic() on arrival
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class Reply:
    """What to do with one request (kind: json | raw | hang | trickle | cut)."""

    kind: str = "json"
    status: int = 200
    payload: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes = b""
    interval_s: float = 0.5  # trickle: seconds between bytes


def completion(content: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-hostile", "object": "chat.completion", "created": 0, "model": "hostile",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
    }


def ok(content: str = '{"label": "positive"}') -> Reply:
    return Reply(payload=completion(content))


REASONS = {200: "OK", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests", 500: "Internal Server Error",
           503: "Service Unavailable"}


class HostileServer:
    def __init__(self, plan: Callable[[int, Request], Reply]):
        self.plan = plan
        self.requests: list[Request] = []
        self.stopped = threading.Event()
        self._lock = threading.Lock()
        server = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                try:
                    server._handle(self.request)
                except OSError:
                    pass  # the client went away: that is what several tests are about

        class TCP(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.tcp = TCP(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.tcp.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.tcp.server_address[1]}/v1"

    def times(self) -> list[float]:
        with self._lock:
            return [r.at for r in self.requests]

    def stop(self) -> None:
        self.stopped.set()
        self.tcp.shutdown()
        self.tcp.server_close()

    def __enter__(self) -> "HostileServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- one connection (keep-alive: several requests) -------------------------------------
    def _handle(self, sock: socket.socket) -> None:
        f = sock.makefile("rb")
        while not self.stopped.is_set():
            line = f.readline()
            if not line:
                return
            headers: dict[str, str] = {}
            while True:
                h = f.readline()
                if h in (b"\r\n", b"\n", b""):
                    break
                k, _, v = h.decode("latin-1").partition(":")
                headers[k.strip().lower()] = v.strip()
            data = f.read(int(headers.get("content-length", "0") or 0))
            try:
                body = json.loads(data) if data else {}
            except ValueError:
                body = {}
            with self._lock:
                req = Request(len(self.requests) + 1, time.monotonic(), headers, body)
                self.requests.append(req)
            if line.startswith(b"GET"):
                self._send(sock, Reply(payload={"object": "list", "data": []}))
                continue
            if not self._send(sock, self.plan(req.n, req)):
                return

    def _send(self, sock: socket.socket, r: Reply) -> bool:
        """Answer; False when the connection is finished (closed or abandoned)."""
        if r.kind == "hang":
            self.stopped.wait()
            return False
        body = r.raw if r.kind in ("raw", "cut", "trickle") else json.dumps(r.payload).encode()
        declared = len(body) * (10 if r.kind == "cut" else 1)
        head = [f"HTTP/1.1 {r.status} {REASONS.get(r.status, 'Status')}",
                f"Content-Type: {r.headers.pop('Content-Type', 'application/json')}",
                f"Content-Length: {declared}"]
        head += [f"{k}: {v}" for k, v in r.headers.items()]
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        if r.kind == "trickle":
            for i in range(len(body)):
                if self.stopped.wait(r.interval_s):
                    return False
                sock.sendall(body[i:i + 1])
            return True
        sock.sendall(body)
        if r.kind == "cut":  # promised ten times more than it sent: close mid-body
            sock.shutdown(socket.SHUT_RDWR)
            return False
        return True
