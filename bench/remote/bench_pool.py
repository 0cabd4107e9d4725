"""Evaluation throughput on remote llama.cpp servers: one endpoint against a pool of two.

Starts llama-cpp-python's OpenAI-compatible server (lmpc's launcher, SmolLM2-135M) on
127.0.0.1 and evaluates the sentiment example's classifier (exact_match on VADER tweets,
cache off) three ways, interleaved, median of --repeats:
  1 endpoint, 1 thread    one server with --n_threads 1
  1 endpoint, 2 threads   one server with --n_threads 2 (all the machine's cores in one)
  2 endpoints, 1 thread   a pool of two servers with --n_threads 1 each (base_url: [a, b])
Prints rows/s, the score, how the pool spread its calls, and the load average.

    .venv/bin/python bench/remote/bench_pool.py [--n 40] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import lmpc
from lmpc.runtime.cache import CallCache
from lmpc.runtime.data import Example
from lmpc.runtime.evaluate import evaluate
from lmpc.runtime.models.resolve import resolve_builtin

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "examples" / "sentiment" / "data"
SRC = '''
model srv = openai(model: "smollm2", base_url: {urls}, timeout: 120, max_retries: 2)
type Label = "positive" | "negative"
signature Sentiment {{
    "Classify the sentiment of a short text."
    text: str            "a tweet"
    ->
    label: Label
}}
pipeline classify(text: str) -> (label: Label) {{
    s = predict Sentiment(text: text)
    return label: s.label
}}
'''


def start(port: int, threads: int, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "lmpc.runtime.models.llama_server", "--model", str(resolve_builtin("smollm2-135m")),
           "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "1024",
           "--n_threads", str(threads), "--n_threads_batch", str(threads)]
    with log.open("wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def wait_ready(url: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"a server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=2):
                return
        except OSError:
            time.sleep(0.25)
    raise SystemExit("a server did not start within 120 s")


def load(n: int) -> list[Example]:
    rows = [json.loads(line) for line in (DATA / "dev.jsonl").read_text().splitlines()]
    rows += [json.loads(line) for line in (DATA / "test.jsonl").read_text().splitlines()]
    return [Example({"text": r["text"]}, {"label": r["label"]}, f"row {i}", r) for i, r in enumerate(rows[:n])]


def run(urls: list[str], rows: list[Example]) -> tuple[float, float, dict[str, int]]:
    prog = lmpc.compile_source(SRC.format(urls=json.dumps(urls)), cache=CallCache(enabled=False), trace_log=False)
    prog.batch([rows[0].inputs])  # warm: the pool's startup check, the format probe, connections
    t0 = time.perf_counter()
    report = evaluate(prog, rows, lambda ex, pred: float(pred.get("label") == ex.gold["label"]))
    wall = time.perf_counter() - t0
    spread = {s["url"]: s["answered"] for s in prog.pool.get("srv").endpoint_stats()}
    prog.close()
    assert report.errors == 0, [r.error for r in report.results if r.error]
    return wall, report.score, spread


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    rows = load(args.n)
    logs = Path(tempfile.mkdtemp(prefix="lmpc-bench-pool-"))
    ports = {"a1": 18431, "b1": 18432, "a2": 18433}
    procs = {name: start(port, 2 if name == "a2" else 1, logs / f"{name}.log") for name, port in ports.items()}
    url = {name: f"http://127.0.0.1:{port}/v1" for name, port in ports.items()}
    configs = {"1 endpoint, 1 thread": [url["a1"]], "1 endpoint, 2 threads": [url["a2"]],
               "2 endpoints, 1 thread each": [url["a1"], url["b1"]]}
    try:
        for name, proc in procs.items():
            wait_ready(url[name], proc)
        walls: dict[str, list[float]] = {c: [] for c in configs}
        loads: list[float] = []
        for _ in range(args.repeats):
            for config, urls in configs.items():
                loads.append(os.getloadavg()[0])
                wall, score, spread = run(urls, rows)
                walls[config].append(wall)
                print(f"{config}: {wall:.1f} s, {len(rows) / wall:.2f} rows/s, score {score:.2f}, "
                      f"answered per endpoint {list(spread.values())}", flush=True)
        print(f"\n{len(rows)} rows, median of {args.repeats}; load average (1 min) before the runs: "
              f"{min(loads):.2f} to {max(loads):.2f} (the servers' own load included)")
        base = statistics.median(walls["1 endpoint, 1 thread"])
        for config, ws in walls.items():
            m = statistics.median(ws)
            print(f"| {config} | {m:.1f} s | {len(rows) / m:.2f} | {base / m:.2f}x |")
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
