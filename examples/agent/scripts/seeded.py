#!/usr/bin/env python3
"""agent.lmp with three trajectory demos written by hand (the training set's first question
of three operations, solved with the calculator), evaluated on the dev split.

Zero-shot, SmolLM2-135M never calls the calculator, so bootstrap_few_shot finds no passing
trajectory to make a demo of (README.md). This measures what trajectory demos do once a
program has them: the same artifact form a bootstrapped build stores.

    python examples/agent/scripts/seeded.py [--out results.json]
"""
import argparse
import json
import time
from pathlib import Path

import lmpc

HERE = Path(__file__).resolve().parents[1]


def trajectory_demo(question: str, expression: str, answer: int) -> dict:
    return {"inputs": {"question": question}, "outputs": {"answer": answer},
            "thought": f"The result is {answer}.", "source": "hand-written", "kind": "labeled",
            "trajectory": [{"thought": f"Compute {expression}.", "tool": "calculator",
                            "args": {"expression": expression}, "observation": str(float(answer))}]}


def seed_demos() -> list[dict]:
    train = [json.loads(line) for line in (HERE / "data" / "train.jsonl").read_text().splitlines()]
    symbol = {"addition": "+", "subtraction": "-", "multiplication": "*", "division": "/"}
    demos = []
    for op in ("multiplication", "addition", "division"):
        row = next(r for r in train if r["op"] == op)
        a, b = (int(w.rstrip("?")) for w in row["question"].split() if w.rstrip("?").lstrip("-").isdigit())
        demos.append(trajectory_demo(row["question"], f"{a} {symbol[op]} {b}", row["answer"]))
    return demos


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache-dir", help="call cache folder (default lmpc's)")
    ap.add_argument("--bootstrap", action="store_true",
                    help="then run bootstrap_few_shot with the seeded program as its teacher: its own passing "
                         "trajectories on the training set replace the hand-written demos")
    args = ap.parse_args()
    cache = {"cache": Path(args.cache_dir) / "calls.sqlite"} if args.cache_dir else {}
    prog = lmpc.compile_file(HERE / "agent.lmp", **cache)
    prog.graph.nodes["a"]["demos"] = seed_demos()
    if args.bootstrap:
        from lmpc.optimizers import BootstrapFewShot, OptimizeContext
        from lmpc.runtime.metrics import BUILTIN_METRICS

        from lmpc.api import load_data
        from lmpc.runtime.cache import CallCache

        train = load_data(prog, HERE / "data" / "train.jsonl")
        ctx = OptimizeContext(trainset=train, devset=[], metric=BUILTIN_METRICS["exact_match"](["answer"]),
                              log=lambda _: None, base_dir=HERE,
                              cache=CallCache(Path(args.cache_dir) / "calls.sqlite" if args.cache_dir else None))
        result = BootstrapFewShot(max_demos=3, seed=0).compile(prog.graph, ctx)
        ctx.close()
        demos = result.graph.nodes["a"]["demos"]
        print(json.dumps({"teacher_passed": result.report["passed"], "train": result.report["train"],
                          "demos": [d["source"] for d in demos]}))
        prog.graph.nodes["a"]["demos"] = demos
    dev = [json.loads(line) for line in (HERE / "data" / "dev.jsonl").read_text().splitlines()]
    t0 = time.perf_counter()
    results = prog.batch([{"question": r["question"]} for r in dev])
    wall = time.perf_counter() - t0
    right = sum((res.values or {}).get("answer") == r["answer"] for res, r in zip(results, dev))
    calls = sum(e.kind == "react" for res in results for e in res.trace)
    tools = [e for res in results for e in res.trace if e.kind == "tool"]
    print(json.dumps({"dev": len(dev), "right": right, "accuracy": round(right / len(dev), 3),
                      "errors": sum(res.error is not None for res in results),
                      "model_calls": calls, "tool_calls": len(tools),
                      "tool_calls_accepted": sum(e.error is None for e in tools),
                      "rows_finished": sum(res.error is None for res in results), "wall_s": round(wall, 1)}))


if __name__ == "__main__":
    main()
