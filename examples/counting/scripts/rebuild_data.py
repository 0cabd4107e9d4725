#!/usr/bin/env python3
"""Rebuild examples/counting/data/{train,dev,test}.jsonl from the bigbench sdist.

The rows are BIG-bench's object_counting task (Apache-2.0, Google LLC), read from the
bigbench 1.0.0 sdist. Stdlib only; nothing is extracted to disk or installed.
See ../data/LICENSE-DATA.md (it also carries the task's canary string).

    python examples/counting/scripts/rebuild_data.py                  # pip download (~360 MB) + rebuild
    python examples/counting/scripts/rebuild_data.py --sdist X.tar.gz --out /tmp/check
"""
import argparse
import collections
import hashlib
import json
import random
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PKG, VERSION = "bigbench", "1.0.0"
# Pinned so a rebuild can only ever come from the exact artifact the data was cut from.
SDIST_SHA256 = "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2"
TASK_JSON = "bigbench-1.0.0/bigbench/benchmark_tasks/object_counting/task.json"

MAX_CHARS = 120   # 641 of 1000 questions; keeps prompts short yet answers still span 2..17
SEED = 0
SPLITS = (("train", 30), ("dev", 50), ("test", 50))


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


def read_task(sdist):
    digest = sha256(sdist)
    if digest != SDIST_SHA256:
        sys.exit(f"{sdist}: sha256 {digest} != pinned {SDIST_SHA256}")
    # Stream mode and stop at the member: random access would index the whole 360 MB archive.
    with tarfile.open(sdist, "r|gz") as tar:
        for member in tar:
            if member.name == TASK_JSON:
                return json.load(tar.extractfile(member))
    sys.exit(f"{TASK_JSON} not found in {sdist}")


def build(task):
    pool, seen = [], set()
    for ex in task["examples"]:
        question = ex["input"]
        digits = ex["target"][1]   # target is e.g. ["nine", "9"]; keep the digit form
        if len(question) > MAX_CHARS or question in seen:
            continue
        seen.add(question)
        pool.append({"question": question, "answer": int(digits)})
    picked = random.Random(SEED).sample(pool, sum(size for _, size in SPLITS))
    splits, start = {}, 0
    for name, size in SPLITS:
        splits[name] = picked[start:start + size]
        start += size
    return splits


def check(splits):
    seen = set()
    for rows in splits.values():
        for r in rows:
            assert r["question"].strip() and type(r["answer"]) is int and r["answer"] > 0, r
            assert r["question"] not in seen, r
            seen.add(r["question"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sdist", help=f"local {PKG}-{VERSION}.tar.gz (default: pip download it)")
    ap.add_argument("--out", default=Path(__file__).resolve().parents[1] / "data", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        task = read_task(args.sdist or fetch_sdist(tmp))
    splits = build(task)
    check(splits)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, rows in splits.items():
        body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        (args.out / f"{name}.jsonl").write_bytes(body.encode("utf-8"))
        hist = collections.Counter(r["answer"] for r in rows)
        print(f"{name}: {len(rows)} rows, answers", dict(sorted(hist.items())))


if __name__ == "__main__":
    main()
