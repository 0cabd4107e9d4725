"""Eval throughput of `lmpc eval` in one process and with `--executor ray` on 1 and 2 workers.

Each configuration runs `lmpc eval examples/sentiment/sentiment.lmp --limit N --no-cache --json`
in a fresh process (no call cache: every row is a model call on the embedded SmolLM2), and
reports the evaluation's own wall time (the summary's wall_s: the rows, the models' loading on
first use included, Ray's start-up not) as rows/s, the process's whole time (Ray's start-up
and shutdown included), and the 1-minute load average before and after (the machine is shared).

    .venv/bin/python bench/ray/bench_ray.py [--rows 16] [--configs local ray1 ray2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LMPC = [sys.executable, "-m", "lmpc"]
CONFIGS = {"local": [], "ray1": ["--executor", "ray", "--ray-workers", "1"],
           "ray2": ["--executor", "ray", "--ray-workers", "2"]}


def run(config: str, rows: int) -> dict:
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run(LMPC + ["eval", "examples/sentiment/sentiment.lmp", "--limit", str(rows), "--no-cache",
                                  "--json", "--worst", "0"] + CONFIGS[config],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    total = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{config}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
    summary = json.loads(proc.stdout)
    return {"config": config, "rows": summary["examples"], "score": summary["score"], "calls": summary["calls"],
            "eval_s": summary["wall_s"], "rows_per_s": round(summary["examples"] / summary["wall_s"], 3),
            "process_s": round(total, 1), "load_before": round(load_before, 2),
            "load_after": round(os.getloadavg()[0], 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    args = ap.parse_args()
    print(f"{'config':<6} {'rows':>4} {'score':>6} {'calls':>5} {'eval s':>7} {'rows/s':>7} "
          f"{'process s':>9} {'load before/after':>17}")
    for config in args.configs:
        r = run(config, args.rows)
        print(f"{r['config']:<6} {r['rows']:>4} {r['score']:>6.3f} {r['calls']:>5} {r['eval_s']:>7.1f} "
              f"{r['rows_per_s']:>7.3f} {r['process_s']:>9.1f} {r['load_before']:>8} / {r['load_after']:<7}",
              flush=True)


if __name__ == "__main__":
    main()
