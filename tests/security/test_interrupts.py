"""Ctrl-C against a hanging server: stop sending at once, cancel in-flight requests, keep what
finished, exit 130 within a second or two, never a traceback (CLI in a real subprocess, and
the Python API with a real SIGINT to the main thread)."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import pytest

import lmpc
from lmpc.runtime.cache import CallCache

from .hostile import HostileServer, Reply, ok
from .programs import lmpc_env, source, start_lmpc, write_project

FIRST = 16  # the first chunk of `lmpc eval` (chunk_size 16) is answered; every later request hangs


def first_chunk_then_hang(n: int, r) -> Reply:
    return ok() if n <= FIRST else Reply(kind="hang")


def wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


@pytest.mark.parametrize("presses", [1, 3])
def test_ctrl_c_during_lmpc_eval_against_a_hanging_server(tmp_path: Path, presses: int):
    prog, data = write_project(tmp_path, rows=40, timeout=30, retries=3)
    out = tmp_path / "results.jsonl"
    with HostileServer(first_chunk_then_hang) as server:
        p = start_lmpc(["eval", str(prog), "--data", str(data), "--metric", "exact_match(label)", "--out", str(out),
                        "--cache-dir", str(tmp_path / "cache")], lmpc_env(server.base_url))
        try:
            # the first chunk is written, and the second chunk's requests hang in flight
            wait_for(lambda: out.exists() and len(out.read_text().splitlines()) == FIRST
                     and len(server.requests) >= FIRST + 8)
            time.sleep(0.3)
            sent = time.monotonic()
            for _ in range(presses):
                p.send_signal(signal.SIGINT)
                time.sleep(0.05)
            stdout, stderr = p.communicate(timeout=20)
            took = time.monotonic() - sent
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        after = [t for t in server.times() if t > sent]
    # 130, or (a later press landing after lmpc's cleanup, once Python's finalization restored
    # the default handler) ended by SIGINT itself, which a shell also reports as 130
    assert p.returncode == 130 or (presses > 1 and p.returncode == -signal.SIGINT), (p.returncode, stderr)
    assert took < 3.0, took
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    assert "interrupted" in stderr
    assert after == [], f"{len(after)} request(s) sent after Ctrl-C"
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == FIRST and all(r["score"] == 1.0 for r in rows)  # what finished is kept
    traces = (tmp_path / "cache" / "traces.jsonl").read_text().splitlines()
    assert len(traces) >= FIRST and all(json.loads(t)["error"] is None for t in traces)


@pytest.fixture(autouse=True)
def _python_sigint_handler():
    """Python's own SIGINT handler (KeyboardInterrupt), even when the run was started with
    SIGINT ignored (in the background of a script), then what was there before."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def _interrupt_main_when(condition) -> list[float]:
    """A real SIGINT to the main thread (where Python raises KeyboardInterrupt) once condition();
    the list gets the time it was sent."""
    sent: list[float] = []

    def fire() -> None:
        wait_for(condition)
        time.sleep(0.2)
        sent.append(time.monotonic())
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    threading.Thread(target=fire, daemon=True).start()
    return sent


def test_keyboard_interrupt_leaves_program_batch_at_once_and_sends_nothing_more(monkeypatch):
    with HostileServer(lambda n, r: Reply(kind="hang")) as server:
        monkeypatch.setenv("LMPC_TEST_BASE_URL", server.base_url)
        prog = lmpc.compile_source(source(timeout=30), cache=CallCache(enabled=False), trace_log=False)
        sent = _interrupt_main_when(lambda: len(server.requests) >= 8)  # max_workers calls hang
        with pytest.raises(KeyboardInterrupt):
            prog.batch([{"text": f"row {i}"} for i in range(20)])
        took = time.monotonic() - sent[0]
        n = len(server.requests)
        time.sleep(0.5)
        assert len(server.requests) == n == 8  # max_workers in flight; the queued 12 never sent
        t1 = time.monotonic()
        prog.close()
        assert time.monotonic() - t1 < 1.0  # nothing left in flight to wait for
    assert took < 2.0, took


def test_keyboard_interrupt_leaves_lmpc_evaluate_and_the_program_stays_usable(monkeypatch):
    hang = threading.Event()
    with HostileServer(lambda n, r: Reply(kind="hang") if hang.is_set() else ok()) as server:
        monkeypatch.setenv("LMPC_TEST_BASE_URL", server.base_url)
        prog = lmpc.compile_source(source(timeout=30), cache=CallCache(enabled=False), trace_log=False)
        rows = [{"text": f"row {i}", "label": "positive"} for i in range(20)]
        hang.set()
        sent = _interrupt_main_when(lambda: len(server.requests) >= 8)
        with pytest.raises(KeyboardInterrupt):
            lmpc.evaluate(prog, rows, "exact_match(label)")
        assert time.monotonic() - sent[0] < 2.0
        n = len(server.requests)
        hang.clear()  # as after Ctrl-C in a notebook: the same program runs the next batch at once,
        t0 = time.monotonic()  # its threads not held by the interrupted calls
        report = lmpc.evaluate(prog, rows[:3], "exact_match(label)")
        assert report.score == 1.0 and report.errors == 0
        assert time.monotonic() - t0 < 3.0 and len(server.requests) == n + 3
        prog.close()


def test_a_batch_sharing_an_interrupted_batchs_call_makes_the_call_itself(monkeypatch, tmp_path: Path):
    # two threads ask for the same call; the cache makes it once. When the batch that makes it
    # is interrupted, the other batch is not: it makes the call itself.
    with HostileServer(lambda n, r: Reply(kind="hang") if n == 1 else ok()) as server:
        monkeypatch.setenv("LMPC_TEST_BASE_URL", server.base_url)
        prog = lmpc.compile_source(source(timeout=30), cache=CallCache(tmp_path / "calls.sqlite"), trace_log=False)
        other: dict[str, list] = {}

        def run_other() -> None:
            wait_for(lambda: len(server.requests) >= 1)
            other["results"] = prog.batch([{"text": "same"}])

        thread = threading.Thread(target=run_other)
        thread.start()
        _interrupt_main_when(lambda: prog.cache.stats.deduplicated >= 1)
        with pytest.raises(KeyboardInterrupt):
            prog.batch([{"text": "same"}])
        thread.join(timeout=20)
        prog.close()
    [result] = other["results"]
    assert result.ok and result.label == "positive" and len(server.requests) == 2


def test_closing_the_models_under_a_running_batch_fails_its_rows_cleanly(monkeypatch):
    with HostileServer(lambda n, r: Reply(kind="hang")) as server:
        monkeypatch.setenv("LMPC_TEST_BASE_URL", server.base_url)
        prog = lmpc.compile_source(source(timeout=30), cache=CallCache(enabled=False), trace_log=False)

        def close_models() -> None:
            wait_for(lambda: len(server.requests) >= 2)
            prog.pool.close()  # cancels the calls in flight

        threading.Thread(target=close_models).start()
        t0 = time.monotonic()
        results = prog.batch([{"text": "a"}, {"text": "b"}])
        assert time.monotonic() - t0 < 5
        prog.close()
    assert [r.ok for r in results] == [False, False]
    assert all("cancelled" in str(r.error) and "step `s`" in str(r.error) for r in results)
