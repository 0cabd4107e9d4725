#!/usr/bin/env python3
"""Rebuild examples/intents/data/{train,dev,test}.jsonl from the bigbench sdist.

The rows are BIG-bench's intent_recognition task (Apache-2.0, Google LLC): short requests to a
voice assistant, each with one of seven intents. They are read from the bigbench 1.0.0 sdist.
Stdlib only; nothing is extracted to disk or installed. See ../data/LICENSE-DATA.md (it also
carries the task's canary string).

    python examples/intents/scripts/rebuild_data.py --sdist bigbench-1.0.0.tar.gz
    python examples/intents/scripts/rebuild_data.py --sdist X.tar.gz --out /tmp/check

Without --sdist the script runs `pip download` (~360 MB). pip 24 and later refuse to download
this sdist ("Distributions from PyPI cannot declare direct URL dependencies": its setup.py
names a zip inside itself); pip 23 downloads it, e.g. `pip install 'pip<24'` in a scratch
virtualenv, then pass the file with --sdist.
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
TASK_JSON = "bigbench-1.0.0/bigbench/benchmark_tasks/intent_recognition/task.json"
PREFIX = "Utterance: "

SEED = 0
# Rows per intent in each split: every split has each of the 7 intents equally often, so the
# majority rate is 1/7 and a program that answers one intent for every row scores 0.143.
SPLITS = (("train", 6), ("dev", 9), ("test", 9))


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
    pools, seen = collections.defaultdict(list), set()
    for ex in task["examples"]:
        text = ex["input"]
        assert text.startswith(PREFIX), text
        text = " ".join(text[len(PREFIX):].split())
        (intent,) = [k for k, v in ex["target_scores"].items() if v == 1]
        key = text.lower()
        if key in seen:
            continue
        seen.add(key)
        pools[intent].append({"text": text, "intent": intent})
    rng = random.Random(SEED)
    per_split = {name: [] for name, _ in SPLITS}
    for intent in sorted(pools):  # each intent's rows in task.json order, sampled once
        picked = rng.sample(pools[intent], sum(n for _, n in SPLITS))
        start = 0
        for name, n in SPLITS:
            per_split[name] += picked[start:start + n]
            start += n
    for rows in per_split.values():  # mixed, so a file read top to bottom is not sorted by intent
        rng.shuffle(rows)
    return per_split


def check(splits):
    seen = set()
    for rows in splits.values():
        for r in rows:
            assert r["text"].strip() and r["intent"], r
            assert r["text"].lower() not in seen, r
            seen.add(r["text"].lower())


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
        hist = collections.Counter(r["intent"] for r in rows)
        print(f"{name}: {len(rows)} rows, intents", dict(sorted(hist.items())))


if __name__ == "__main__":
    main()
