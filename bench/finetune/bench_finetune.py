"""finetune vs zero-shot on an example's held-out test split (issue 18's figures).

For EXAMPLE (sentiment, counting): `lmpc eval` of the zero-shot program on the test split,
`lmpc build --strategy "finetune(...)"` (its own fresh cache folder, so every call and the
training are paid for here), then `lmpc eval` of the artifact on the test split. Prints the
scores, the training figures from the build's log (steps, seconds, examples/s, peak memory,
answer loss) and the wall time of both test evaluations without the cache (inference speed
tuned vs base). The best prompt-only figures come from docs/optimizers.md ("Measured").

    .venv/bin/python bench/finetune/bench_finetune.py sentiment [--epochs 3] [--lr 0.001]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = {"sentiment": "examples/sentiment/sentiment.lmp", "counting": "examples/counting/counting.lmp"}
LMPC = [sys.executable, "-m", "lmpc"]


def run(args: list[str]) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.perf_counter()
    out = subprocess.run(LMPC + args, capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        sys.exit(f"lmpc {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return out, time.perf_counter() - t0


def score(out: subprocess.CompletedProcess) -> float:
    return float(json.loads(out.stdout)["score"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("example", choices=sorted(EXAMPLES))
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lr", type=float, default=0.001)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--limit", type=int, help="test rows (default: all)")
    a = ap.parse_args()
    lmp = EXAMPLES[a.example]
    test = str(Path(lmp).parent / "data/test.jsonl")
    limit = ["--limit", str(a.limit)] if a.limit else []
    with tempfile.TemporaryDirectory() as tmp:
        cache = ["--cache-dir", tmp]
        base, base_s = run(["eval", lmp, "--data", test, "--json", "--no-cache", *limit])
        strategy = f"finetune(epochs: {a.epochs}, lr: {a.lr}, rank: {a.rank})"
        built, build_s = run(["build", lmp, "--strategy", strategy, "-o", f"{tmp}/out.lmpc.json", *cache])
        tuned, tuned_s = run(["eval", f"{tmp}/out.lmpc.json", "--data", test, "--json", "--no-cache", *limit])
        report = json.loads(Path(f"{tmp}/out.lmpc.json").read_text())["report"]
    trained = re.findall(r"answer loss ([\d.]+) -> ([\d.]+) in (\d+) s \(([\d.]+) examples/s\), peak memory (\d+) MB",
                         built.stderr)
    node = next(iter(report["strategies"][0]["nodes"].values()))
    print(json.dumps({
        "example": a.example, "strategy": strategy, "test_rows": a.limit or "all",
        "zero_shot_test": score(base), "finetune_test": score(tuned),
        "dev_before": report["score_before"], "dev_after": report["score_after"],
        "train_pairs": node.get("examples"), "bootstrapped": node.get("bootstrapped"), "labeled": node.get("labeled"),
        "steps": node.get("steps"), "answer_loss": trained[0][:2] if trained else None,
        "train_s": float(trained[0][2]) if trained else None,
        "examples_per_s": float(trained[0][3]) if trained else None,
        "peak_rss_mb": float(trained[0][4]) if trained else None,
        "build_s": round(build_s, 1), "test_eval_s_base": round(base_s, 1), "test_eval_s_tuned": round(tuned_s, 1),
        "test_completion_tokens_base": json.loads(base.stdout).get("completion_tokens"),
        "test_completion_tokens_tuned": json.loads(tuned.stdout).get("completion_tokens"),
    }, indent=1))


if __name__ == "__main__":
    main()
