#!/usr/bin/env python3
"""Recall@k of the example's retriever in each mode (bm25, dense, hybrid) on its questions,
through lmpc's real index (runtime/retrieval.RetrievalIndex): the share of each question's
gold passage ids among the k ids the index returns, averaged over the questions.

The corpus is embedded once for the dense and hybrid indexes (a shared in-memory memo of
the vectors; the embedder's identity, hence the index folders, are those of `lmpc run`).

    python examples/rag/scripts/measure_recall.py                 # dev split, k 5
    python examples/rag/scripts/measure_recall.py --split train --k 3 --cache-dir /tmp/idx
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from lmpc.runtime.embed import Embedder, create_embedder
from lmpc.runtime.retrieval import RetrievalIndex

EXAMPLE = Path(__file__).resolve().parent.parent
MODES = ("bm25", "dense", "hybrid")


class MemoEmbedder(Embedder):
    """An embedder that embeds each distinct text once per process (same identity, so the
    index folders are the ones lmpc itself would use)."""

    def __init__(self, inner: Embedder) -> None:
        self.inner, self.memo = inner, {}

    @property
    def identity(self) -> str:
        return self.inner.identity

    @property
    def dim(self) -> int:
        return self.inner.dim

    def embed(self, texts: list[str]) -> list[list[float]]:
        todo = [t for t in dict.fromkeys(texts) if t not in self.memo]
        if todo:
            self.memo.update(zip(todo, self.inner.embed(todo)))
        return [self.memo[t] for t in texts]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def recall_at_k(index: RetrievalIndex, rows: list[dict], k: int) -> float:
    hits = index.search([r["question"] for r in rows], k)
    total = 0.0
    for row, found in zip(rows, hits):
        gold = set(row["sources"])
        total += len(gold & {h.id for h in found[:k]}) / len(gold)
    return total / len(rows)


def measure(cache_dir: Path, split: str = "dev", k: int = 5, embedder: Embedder | None = None) -> dict[str, float]:
    """{mode: recall@k} on examples/rag/data/<split>.jsonl, indexes under cache_dir."""
    rows = read_jsonl(EXAMPLE / "data" / f"{split}.jsonl")
    embedder = embedder or MemoEmbedder(create_embedder("e5-small", {}))
    out = {}
    for mode in MODES:
        index = RetrievalIndex.open(EXAMPLE / "data" / "passages.jsonl", "text", "id", mode,
                                    None if mode == "bm25" else embedder, cache_dir)
        out[mode] = round(recall_at_k(index, rows, k), 4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", default="dev")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--cache-dir", help="where the indexes go (default: a temporary folder, so they are built)")
    args = ap.parse_args()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        figures = measure(Path(args.cache_dir or tmp), args.split, args.k)
    for mode, value in figures.items():
        print(f"recall@{args.k} {mode:<6} {value:.3f}")
    print(f"({args.split} split, {time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
