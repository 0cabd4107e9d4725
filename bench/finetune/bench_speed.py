"""Inference speed of a finetuned artifact vs its base program: the same rows, no cache,
alternating base and tuned runs (the machine's load changes between runs), best of N.

    .venv/bin/python bench/finetune/bench_speed.py ARTIFACT.lmpc.json FILE.lmp DATA.jsonl [--rows 20] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import lmpc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("artifact")
    ap.add_argument("lmp")
    ap.add_argument("data")
    ap.add_argument("--rows", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tuned-first", action="store_true", help="run the tuned program first in each round")
    a = ap.parse_args()
    programs = {"base": lmpc.compile_file(a.lmp, cache=False), "tuned": lmpc.load(a.artifact, cache=False)}
    if a.tuned_first:
        programs = {"tuned": programs["tuned"], "base": programs["base"]}
    names = list(programs["base"].input_fields)
    rows = [{k: v for k, v in json.loads(line).items() if k in names}
            for line in Path(a.data).read_text().splitlines()[:a.rows]]
    best: dict[str, float] = {}
    tokens: dict[str, int] = {}
    try:
        for name, prog in programs.items():  # warm-up: load the model (and the adapter)
            prog.batch(rows[:1])
        for _ in range(a.repeats):
            for name, prog in programs.items():
                t0 = time.perf_counter()
                results = prog.batch(rows)
                took = time.perf_counter() - t0
                best[name] = min(best.get(name, took), took)
                tokens[name] = sum(e.completion_tokens or 0 for r in results for e in r.trace)
    finally:
        for prog in programs.values():
            prog.close()
    print(json.dumps({"rows": len(rows), "repeats": a.repeats,
                      **{f"{n}_s_per_row": round(best[n] / len(rows), 3) for n in best},
                      **{f"{n}_generated_tokens": tokens[n] for n in tokens},
                      "tuned_over_base": round(best["tuned"] / best["base"], 3)}, indent=1))


if __name__ == "__main__":
    main()
