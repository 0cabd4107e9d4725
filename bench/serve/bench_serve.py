"""`lmpc serve` under 1, 8 and 64 concurrent clients on the embedded model.

Starts `lmpc serve examples/sentiment/sentiment.lmp --no-cache` on 127.0.0.1 (a free port) and,
for each number of clients, has every client (a thread with its own keep-alive connection) send
its share of POST /run requests back to back, each with a different VADER tweet from the
example's data. Reports requests/s (all requests over the wall time of the level), latency
p50/p95 as the clients saw it, and the batches the server gathered (from /metrics). With
--compare, the same levels again with gathering off (`--max-batch 1`: one row per batch); with
--slots N, again on the batched engine (a copy of the example with `engine: "batched", slots: N`).

    .venv/bin/python bench/serve/bench_serve.py [--clients 1 8 64] [--requests 16 48 128] [--compare] [--slots 4]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "sentiment" / "sentiment.lmp"


def load_texts() -> list[str]:
    rows = []
    for split in ("dev", "test", "train"):
        for line in (ROOT / "examples" / "sentiment" / "data" / f"{split}.jsonl").read_text().splitlines():
            rows.append(json.loads(line)["text"])
    return rows


def batched_copy(folder: str, slots: int) -> Path:
    text = EXAMPLE.read_text().replace('temperature: 0)', f'temperature: 0, engine: "batched", slots: {slots})')
    assert "batched" in text
    path = Path(folder) / "sentiment_batched.lmp"
    path.write_text(text)
    return path


class Server:
    def __init__(self, *args: str, program: Path = EXAMPLE):
        self.dir = tempfile.TemporaryDirectory()
        self.proc = subprocess.Popen([sys.executable, "-m", "lmpc", "serve", str(program), "--port", "0", "--no-cache",
                                      "--cache-dir", self.dir.name, *args],
                                     stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        for line in self.proc.stderr:
            m = re.search(r" on http://([\d.]+):(\d+) ", line)
            if m:
                self.host, self.port = m.group(1), int(m.group(2))
                break
        else:
            raise SystemExit(f"lmpc serve did not start (exit {self.proc.wait()})")
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()  # keep its pipe drained

    def get(self, path: str) -> dict:
        c = http.client.HTTPConnection(self.host, self.port, timeout=600)
        c.request("GET", path)
        return json.loads(c.getresponse().read())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(120)
        self.dir.cleanup()


def level(server: Server, clients: int, total: int, texts: list[str]) -> dict:
    """`total` requests from `clients` clients; each client sends its share back to back."""
    shares = [list(range(i, total, clients)) for i in range(clients)]
    latencies: list[float] = []
    lock = threading.Lock()

    def client(indexes: list[int]) -> None:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=600)
        for i in indexes:
            body = json.dumps({"text": texts[i % len(texts)]})
            t0 = time.perf_counter()
            conn.request("POST", "/run", body, {"content-type": "application/json"})
            r = conn.getresponse()
            r.read()
            took = time.perf_counter() - t0
            if r.status != 200:
                raise RuntimeError(f"request {i}: HTTP {r.status}")
            with lock:
                latencies.append(took)
        conn.close()

    before = server.get("/metrics")
    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, shares))
    wall = time.perf_counter() - t0
    after = server.get("/metrics")
    batches = after["batches"] - before["batches"]
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return {"clients": clients, "requests": total, "wall_s": round(wall, 2), "rps": round(total / wall, 2),
            "p50_s": round(q[49], 3), "p95_s": round(q[94], 3), "batches": batches,
            "mean_batch": round(total / batches, 1) if batches else None,
            "evaluated_per_request": round((after["prompt_tokens_evaluated"] - before["prompt_tokens_evaluated"]) / total, 1),
            "prompt_per_request": round((after["prompt_tokens"] - before["prompt_tokens"]) / total, 1)}


def run(label: str, args: list[str], clients: list[int], totals: list[int], texts: list[str],
        program: Path = EXAMPLE) -> list[dict]:
    server = Server(*args, program=program)
    try:
        level(server, 1, 2, texts[-2:])  # warm: the first call's prompt has nothing cached
        offset, out = 0, []
        for c, n in zip(clients, totals):
            row = level(server, c, n, texts[offset:offset + n])
            offset += n
            row["setting"] = label
            out.append(row)
            print(json.dumps(row), flush=True)
        return out
    finally:
        server.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--requests", type=int, nargs="+", default=[16, 48, 128])
    ap.add_argument("--compare", action="store_true", help="also with gathering off (--max-batch 1)")
    ap.add_argument("--slots", type=int, default=0, help="also on the batched engine with this many slots")
    ap.add_argument("--no-default", action="store_true", help="skip the default run (with --compare or --slots)")
    args = ap.parse_args()
    texts = load_texts()
    print(f"load average before: {os.getloadavg()}", flush=True)
    rows = [] if args.no_default else run("gathered (defaults)", [], args.clients, args.requests, texts)
    if args.compare:
        rows += run("gathering off (--max-batch 1)", ["--max-batch", "1"], args.clients, args.requests, texts)
    if args.slots:
        with tempfile.TemporaryDirectory() as folder:
            rows += run(f"batched engine, {args.slots} slots", [], args.clients, args.requests, texts,
                        program=batched_copy(folder, args.slots))
    print(f"load average after: {os.getloadavg()}")
    print("\n| setting | clients | requests | req/s | p50 s | p95 s | batches | mean batch | prompt tok/req | evaluated tok/req |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['setting']} | {r['clients']} | {r['requests']} | {r['rps']} | {r['p50_s']} | {r['p95_s']} | "
              f"{r['batches']} | {r['mean_batch']} | {r['prompt_per_request']} | {r['evaluated_per_request']} |")


if __name__ == "__main__":
    main()
