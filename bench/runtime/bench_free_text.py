"""Runaway free text: score, time per call and tokens of a chain_of_thought example with the
DRY repetition guard off, on (the default: 0.8, its history restarted at each JSON string,
runtime/models/sampling.py), and the default on the batched engine.

The example's pipeline runs zero-shot on SmolLM2-135M with the cache off; for each
configuration the file gets one model declaration (the same builtin, temperature 0):

    .venv/bin/python bench/runtime/bench_free_text.py [--example counting] [--n 50] [--slots 4]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import lmpc

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = {
    "dry off": "dry_multiplier: 0",
    "dry 0.8, history per field (the default)": "dry_multiplier: 0.8",
    "the default, batched engine": "engine: \"batched\", slots: {slots}",
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--example", default="counting")
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--slots", type=int, default=4)
    args = ap.parse_args()
    path = ROOT / "examples" / args.example / f"{args.example}.lmp"
    rows = [json.loads(line) for line in (path.parent / "data" / "dev.jsonl").read_text().splitlines()][:args.n]
    print(f"| {args.example}, {len(rows)} dev rows, zero-shot | score | wall (s) | s/call | completion tokens/call |"
          f"\n|---|---:|---:|---:|---:|")
    for name, options in CONFIGS.items():
        decl = f'model bench = llama_cpp(builtin: "smollm2-135m", temperature: 0, {options.format(slots=args.slots)})\n'
        prog = lmpc.compile_source(decl + path.read_text(), str(path), base_dir=path.parent, cache=False,
                                   trace_log=False)
        t0 = time.perf_counter()
        report = lmpc.evaluate(prog, rows)
        wall = time.perf_counter() - t0
        calls = max(report.calls, 1)
        print(f"| {name} | {report.score:.3f} | {wall:.1f} | {wall / calls:.2f} | {report.completion_tokens / calls:.0f} |",
              flush=True)
        prog.close()


if __name__ == "__main__":
    main()
