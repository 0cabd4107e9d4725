#!/usr/bin/env python3
"""Rebuild examples/sentiment/data/{train,dev,test}.jsonl from the vaderSentiment sdist.

The rows are human-rated tweets from the VADER paper (Hutto & Gilbert, ICWSM 2014),
shipped inside the MIT-licensed vaderSentiment 3.3.2 sdist as a nested tarball.
Stdlib only; nothing is extracted to disk or installed. See ../data/LICENSE-DATA.md.

    python examples/sentiment/scripts/rebuild_data.py                  # pip download + rebuild
    python examples/sentiment/scripts/rebuild_data.py --sdist X.tar.gz --out /tmp/check
"""
import argparse
import collections
import hashlib
import html
import io
import json
import random
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PKG, VERSION = "vaderSentiment", "3.3.2"
# Pinned so a rebuild can only ever come from the exact artifact the data was cut from.
SDIST_SHA256 = "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"
INNER_TARBALL = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
SOURCE_FILE = "hutto_ICWSM_2014/tweets_GroundTruth.txt"

POS_MIN, NEG_MAX = 1.0, -1.0   # mean ratings in (-1, 1) are too ambiguous to be gold labels
MAX_CHARS = 160                # keeps prompts cheap for a 135M model on a 2-core CPU
SEED = 0
SPLITS = (("train", 40), ("dev", 60), ("test", 60))   # each split half positive, half negative


def fetch_sdist(dest):
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                    "-d", dest, f"{PKG}=={VERSION}"], check=True, stdout=subprocess.DEVNULL)
    return next(Path(dest).glob(f"{PKG}-{VERSION}.tar.gz"))


def read_source(sdist):
    digest = hashlib.sha256(Path(sdist).read_bytes()).hexdigest()
    if digest != SDIST_SHA256:
        sys.exit(f"{sdist}: sha256 {digest} != pinned {SDIST_SHA256}")
    with tarfile.open(sdist) as outer:
        inner = outer.extractfile(INNER_TARBALL).read()
    with tarfile.open(fileobj=io.BytesIO(inner)) as tar:
        return tar.extractfile(SOURCE_FILE).read().decode("utf-8")


def parse(raw):
    """Yield (id, rating, text) for usable rows, one row per group of near-duplicates."""
    seen = set()
    # Split on "\n" only: str.splitlines() would also break on exotic separators inside tweets.
    for line in raw.split("\n"):
        line = line.rstrip("\r")
        if not line:
            continue
        tid, rating, text = line.split("\t", 2)
        # The file keeps Twitter's HTML escaping (&amp;, &lt;, &gt;) and ragged spacing.
        text = " ".join(html.unescape(text).split())
        # ~200 contrived rows re-state an earlier tweet with only case/punctuation changed
        # ("YAY!!! Another good phone interview!!!"); keep the first so splits can't leak.
        key = re.sub(r"[^a-z0-9]", "", text.lower())
        if not text or key in seen:
            continue
        seen.add(key)
        yield int(tid), float(rating), text


def build(raw):
    pools = {"positive": [], "negative": []}
    for tid, rating, text in parse(raw):
        if len(text) > MAX_CHARS:
            continue
        label = "positive" if rating >= POS_MIN else "negative" if rating <= NEG_MAX else None
        if label:
            pools[label].append({"text": text, "label": label,
                                 "source_id": f"tweets_GroundTruth:{tid}"})
    rng = random.Random(SEED)
    for label in sorted(pools):
        rng.shuffle(pools[label])
    splits, start = {}, 0
    for name, size in SPLITS:
        half = size // 2
        rows = pools["positive"][start:start + half] + pools["negative"][start:start + half]
        rng.shuffle(rows)   # interleave labels so no prefix of a split is one-sided
        splits[name] = rows
        start += half
    return splits


def check(splits):
    ids, texts = set(), set()
    for rows in splits.values():
        for r in rows:
            assert r["text"].strip() and r["label"] in ("positive", "negative"), r
            assert r["source_id"] not in ids and r["text"].lower() not in texts, r
            ids.add(r["source_id"])
            texts.add(r["text"].lower())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sdist", help=f"local {PKG}-{VERSION}.tar.gz (default: pip download it)")
    ap.add_argument("--out", default=Path(__file__).resolve().parents[1] / "data", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        raw = read_source(args.sdist or fetch_sdist(tmp))
    splits = build(raw)
    check(splits)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, rows in splits.items():
        body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        (args.out / f"{name}.jsonl").write_bytes(body.encode("utf-8"))
        print(f"{name}: {len(rows)} rows", dict(sorted(collections.Counter(r['label'] for r in rows).items())))


if __name__ == "__main__":
    main()
