"""`lmpc serve` in a real subprocess on 127.0.0.1 (a free port, read from its ready line)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

DATA = Path(__file__).parent / "data"
PROGRAM = DATA / "review.lmp"


class Served:
    def __init__(self, cache_dir: Path, *args: str, program: Path = PROGRAM):
        self.cache_dir = cache_dir
        self.args = [str(program), "--port", "0", "--cache-dir", str(cache_dir), *args]
        self.lines: list[str] = []
        self.url = ""

    def __enter__(self) -> "Served":
        env = {k: v for k, v in os.environ.items() if not k.startswith("LMPC_")}
        self.proc = subprocess.Popen([sys.executable, "-m", "lmpc", "serve", *self.args], env={**env, "PYTHONUNBUFFERED": "1"},
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                     text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + 180
        while not self.url:
            assert self.proc.poll() is None, f"lmpc serve exited {self.proc.returncode}:\n{self.stderr}"
            assert time.monotonic() < deadline, f"lmpc serve did not start:\n{self.stderr}"
            for line in list(self.lines):
                m = re.search(r" on (http://127\.0\.0\.1:\d+) ", line)
                if m:
                    self.url = m.group(1)
            time.sleep(0.05)
        return self

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def wait(self, timeout: float) -> int:
        rc = self.proc.wait(timeout)
        self._reader.join(5)
        return rc

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    # -- requests -------------------------------------------------------------------------
    def request(self, method: str, path: str, body: object = None, raw: bytes | None = None,
                timeout: float = 300) -> tuple[int, object]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                status, text = r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read().decode()
        try:
            return status, json.loads(text)
        except json.JSONDecodeError:
            return status, text

    def metrics(self) -> dict:
        status, body = self.request("GET", "/metrics")
        assert status == 200, body
        return body

    def traces(self) -> list[dict]:
        path = self.cache_dir / "traces.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
