"""A pool of two real llama.cpp servers (llama-cpp-python's OpenAI-compatible server with the
embedded SmolLM2, started here on 127.0.0.1, one thread each): calls spread over both, and an
evaluation during which one server is killed still accounts for every row, with the answers
the survivor gives, and its finished calls in the cache."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

import lmpc
from lmpc.runtime.cache import CallCache
from lmpc.runtime.data import Example
from lmpc.runtime.evaluate import evaluate
from lmpc.runtime.models import create_model
from lmpc.runtime.models.remote import OpenAIModel

from .conftest import free_port, wait_for_llama_server

SRC = '''
model srv = openai(model: "smollm2", base_url: [env("LMPC_POOL_A"), env("LMPC_POOL_B")], max_retries: 2, timeout: 60)
type Label = "positive" | "negative"
signature Sentiment = text -> label: Label
pipeline classify(text: str) -> (label: Label) {
    s = predict Sentiment(text: text)
    return label: s.label
}
'''
TEXTS = ["I love it", "This is awful", "Great!", "Terrible service", "What a lovely day", "I hate waiting",
         "Best purchase ever", "It broke at once", "Wonderful staff", "Never again"]


class Server:
    """One llama.cpp server process (through lmpc's launcher), killable mid-test."""

    def __init__(self, model_path: Path, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        cmd = [sys.executable, "-m", "lmpc.runtime.models.llama_server", "--model", str(model_path),
               "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", "1024",
               "--n_threads", "1", "--n_threads_batch", "1"]  # 2 cores shared: one each
        with log.open("wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.log = log

    def wait_ready(self) -> None:
        wait_for_llama_server(self.proc, self.url, self.log)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)  # a crash, not a clean shutdown
            self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="module")
def two_servers(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Server]]:
    folder = tmp_path_factory.mktemp("pool")
    servers = [Server(smollm2_path, folder / f"server{i}.log") for i in range(2)]
    try:
        for s in servers:
            s.wait_ready()
        yield servers
    finally:
        for s in servers:
            s.stop()


def pool_model(a: str, b: str) -> OpenAIModel:
    model = create_model("srv", "openai", {"model": "smollm2", "base_url": [a, b], "max_retries": 2,
                                           "timeout": 60})
    assert isinstance(model, OpenAIModel)
    return model


def examples(n: int) -> list[Example]:
    return [Example({"text": t}, {}, f"row {i}", {"text": t}) for i, t in enumerate(TEXTS[:n])]


def test_calls_spread_over_two_real_servers(two_servers, monkeypatch):
    a, b = two_servers
    monkeypatch.setenv("LMPC_POOL_A", a.url)
    monkeypatch.setenv("LMPC_POOL_B", b.url)
    prog = lmpc.compile_source(SRC, cache=CallCache(enabled=False), trace_log=False)
    results = prog.batch([{"text": t} for t in TEXTS[:6]])
    assert all(r.ok for r in results), [str(r.error) for r in results]
    assert {r.label for r in results} <= {"positive", "negative"}
    per_endpoint: dict[str, int] = {}
    for r in results:  # from lmpc's own traces: which server answered each call
        per_endpoint[r.trace[0].extra["endpoint"]] = per_endpoint.get(r.trace[0].extra["endpoint"], 0) + 1
    assert set(per_endpoint) == {a.url, b.url} and min(per_endpoint.values()) >= 2, per_endpoint
    stats = {s["url"]: s for s in prog.pool.get("srv").endpoint_stats()}
    assert stats[a.url]["answered"] + stats[b.url]["answered"] == 6  # the model's stats agree
    prog.close()


def test_one_server_killed_mid_evaluation_every_row_is_accounted_for(two_servers, tmp_path):
    a, b = two_servers
    rows = examples(10)
    # What the survivor answers, row by row (same weights, same settings, temperature 0).
    ref_prog = lmpc.compile_source(SRC.replace('[env("LMPC_POOL_A"), env("LMPC_POOL_B")]', f'"{a.url}"'),
                                   cache=CallCache(enabled=False), trace_log=False)
    expected = [r.label for r in ref_prog.batch([ex.inputs for ex in rows])]
    ref_prog.close()

    model = pool_model(a.url, b.url)
    cache = CallCache(tmp_path / "calls.sqlite")
    prog = lmpc.compile_source(SRC, cache=cache, trace_log=False, models={"srv": model})

    def kill_b_once_it_answered() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            s = {x["url"]: x for x in model.endpoint_stats()}[b.url]
            if s["answered"] >= 1 and s["in_flight"] >= 1:  # killed with a request in flight
                b.kill()
                return
            time.sleep(0.01)

    killer = threading.Thread(target=kill_b_once_it_answered, daemon=True)
    killer.start()
    report = evaluate(prog, rows, lambda ex, pred: 1.0, chunk_size=10)
    killer.join(timeout=5)
    assert b.proc.poll() is not None, "the server was never killed: the test proved nothing"

    assert len(report.results) == len(rows) and report.errors == 0, [r.error for r in report.results]
    got = [r.prediction["label"] for r in report.results]
    assert got == expected  # every row, in order, with the answer the live server gives
    stats = {s["url"]: s for s in model.endpoint_stats()}
    assert stats[b.url]["down"] and stats[b.url]["failed"] >= 1  # its in-flight call was retried on a
    assert stats[a.url]["answered"] + stats[b.url]["answered"] == len(rows)
    assert stats[b.url]["answered"] >= 1

    # nothing finished is lost: a rerun is answered from the cache alone (a pool's cache
    # entries do not depend on which server answered), even with b still dead
    sent = model.requests_sent
    again = evaluate(prog, rows, lambda ex, pred: 1.0, chunk_size=10)
    assert [r.prediction["label"] for r in again.results] == expected
    assert again.cache_hits == len(rows) and model.requests_sent == sent
    prog.close()
    model.close()
