"""How the openai provider keeps many requests in flight: one asyncio loop per model (what
runtime/models/remote.py does) against a bounded pool of threads each making a blocking call.

A stub OpenAI-compatible server (a separate process, stdlib ThreadingHTTPServer on 127.0.0.1)
answers every chat request after --latency seconds; N calls are made at concurrency C by
  async:   OpenAIModel.generate called from C threads (as the executor calls it); the HTTP
           requests all run on the model's one event loop (openai.AsyncOpenAI)
  threads: openai.OpenAI (blocking) called from a ThreadPoolExecutor of C threads
Prints wall time, calls/s, and client CPU seconds per 100 calls (this process only: the CPU
left to llama.cpp servers on the same machine).

    .venv/bin/python bench/remote/bench_transport.py [--calls 400] [--latency 0.05] [--concurrency 8 64]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

STUB = r'''
import json, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
LATENCY = float(sys.argv[2])
BODY = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                   "choices": [{"index": 0, "finish_reason": "stop",
                                "message": {"role": "assistant", "content": "{\"label\": \"positive\"}"}}],
                   "usage": {"prompt_tokens": 50, "completion_tokens": 5, "total_tokens": 55}}).encode()
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers
    def log_message(self, *a): pass
    def _send(self, body):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        self._send(json.dumps({"object": "list", "data": [{"id": "m"}]}).encode())
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        time.sleep(LATENCY)
        self._send(BODY)
class S(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # the listen backlog: 64 clients connecting at once
    def handle_error(self, request, client_address):  # a client that closed its connection
        pass
S(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
'''


def messages(i: int) -> list[dict]:
    return [{"role": "system", "content": "Classify the sentiment of a short text."},
            {"role": "user", "content": f"row {i}: what a lovely day"}]


def bench_async(url: str, calls: int, concurrency: int) -> tuple[float, float]:
    from lmpc.runtime.models import GenerationRequest, create_model

    model = create_model("srv", "openai", {"model": "m", "base_url": url, "structured_output": "none"})
    model.generate(GenerationRequest(messages(0), None, max_tokens=8))  # start the loop, connect
    with ThreadPoolExecutor(concurrency) as ex:
        c0, t0 = time.process_time(), time.perf_counter()
        list(ex.map(lambda i: model.generate(GenerationRequest(messages(i), None, max_tokens=8)), range(calls)))
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    model.close()
    return wall, cpu


def bench_threads(url: str, calls: int, concurrency: int) -> tuple[float, float]:
    import openai

    client = openai.OpenAI(api_key="sk-no-key", base_url=url, max_retries=0, timeout=60)

    def one(i: int) -> str:
        r = client.chat.completions.create(model="m", messages=messages(i), max_tokens=8)
        return r.choices[0].message.content

    one(0)
    with ThreadPoolExecutor(concurrency) as ex:
        c0, t0 = time.process_time(), time.perf_counter()
        list(ex.map(one, range(calls)))
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    client.close()
    return wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=400)
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[8, 64])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    port = 18531
    stub = subprocess.Popen([sys.executable, "-c", STUB, str(port), str(args.latency)])
    url = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{url}/models", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        print(f"{args.calls} calls, server latency {args.latency:g} s, load average {os.getloadavg()[0]:.2f}")
        print("| concurrency | transport | wall s | calls/s | ideal calls/s | client CPU s per 100 calls |")
        print("|---|---|---|---|---|---|")
        for c in args.concurrency:
            for name, fn in (("async", bench_async), ("threads", bench_threads)):
                runs = sorted(fn(url, args.calls, c) for _ in range(args.repeats))
                wall, cpu = runs[len(runs) // 2]
                ideal = c / args.latency
                print(f"| {c} | {name} | {wall:.2f} | {args.calls / wall:.0f} | {ideal:.0f} | "
                      f"{100 * cpu / args.calls:.2f} |", flush=True)
    finally:
        stub.terminate()
        stub.wait()


if __name__ == "__main__":
    main()
