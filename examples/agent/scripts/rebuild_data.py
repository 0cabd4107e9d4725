#!/usr/bin/env python3
"""Rebuild examples/agent/data/{train,dev}.jsonl from the bigbench sdist.

The rows are BIG-bench's `arithmetic` task (Apache-2.0, Google LLC), its 3-digit subtasks:
"What is 697 times 205?" with an integer answer, for addition, subtraction, multiplication and
division. A 135M model cannot multiply 3-digit numbers in its head; with a calculator tool it
only has to turn the question into an expression. Read from the bigbench 1.0.0 sdist; stdlib
only; nothing is extracted to disk or installed. See ../data/LICENSE-DATA.md (it carries the
task's canary string).

    python examples/agent/scripts/rebuild_data.py --sdist bigbench-1.0.0.tar.gz

Without --sdist the script runs `pip download` (~360 MB; pip 24 and later refuse this sdist,
use pip<24 in a scratch virtualenv: see examples/intents/scripts/rebuild_data.py).
"""
import argparse
import hashlib
import json
import random
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PKG, VERSION = "bigbench", "1.0.0"
SDIST_SHA256 = "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2"
OPS = ("addition", "subtraction", "multiplication", "division")
TASK_JSON = "bigbench-1.0.0/bigbench/benchmark_tasks/arithmetic/3_digit_{op}/task.json"
SEED = 0
SPLITS = (("train", 3), ("dev", 5))  # rows per operation: 12 train, 20 dev


def fetch_sdist(dest):
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                    "-d", dest, f"{PKG}=={VERSION}"], check=True, stdout=subprocess.DEVNULL)
    return next(Path(dest).glob(f"{PKG}-{VERSION}.tar.gz"))


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_tasks(sdist):
    digest = sha256(sdist)
    if digest != SDIST_SHA256:
        sys.exit(f"{sdist}: sha256 {digest} != pinned {SDIST_SHA256}")
    wanted = {TASK_JSON.format(op=op): op for op in OPS}
    tasks = {}
    with tarfile.open(sdist, "r|gz") as tar:  # stream: random access would index the whole archive
        for member in tar:
            if member.name in wanted:
                tasks[wanted[member.name]] = json.load(tar.extractfile(member))
    missing = set(OPS) - set(tasks)
    if missing:
        sys.exit(f"not found in {sdist}: {', '.join(sorted(missing))}")
    return tasks


def build(tasks):
    rng = random.Random(SEED)
    splits = {name: [] for name, _ in SPLITS}
    for op in OPS:  # each operation equally often in each split
        rows = [{"question": ex["input"], "answer": int(ex["target"]), "op": op} for ex in tasks[op]["examples"]]
        picked = rng.sample(rows, sum(n for _, n in SPLITS))
        start = 0
        for name, n in SPLITS:
            splits[name] += picked[start:start + n]
            start += n
    for rows in splits.values():
        rng.shuffle(rows)
    return splits


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sdist", help=f"local {PKG}-{VERSION}.tar.gz (default: pip download it)")
    ap.add_argument("--out", default=Path(__file__).resolve().parents[1] / "data", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tasks = read_tasks(args.sdist or fetch_sdist(tmp))
    splits = build(tasks)
    questions = [r["question"] for rows in splits.values() for r in rows]
    assert len(questions) == len(set(questions))
    args.out.mkdir(parents=True, exist_ok=True)
    for name, rows in splits.items():
        (args.out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        print(f"{name}: {len(rows)} rows")


if __name__ == "__main__":
    main()
