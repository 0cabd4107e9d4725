"""The embedded retrieval index: a corpus (runtime/corpus.py) searched by BM25 (bm25s), dense
vectors (FAISS, inner product on the L2-normalised vectors of runtime/embed.py) or both fused
by reciprocal rank fusion; and `open_retriever`, which opens the retriever a `retrieve` step's
spec names (this index, or a Qdrant collection: runtime/qdrant_store.py).

An index is saved under the cache dir, in a folder named by the corpus's sha256 (a folder
corpus: over its files' names and contents), the text and id columns, the chunking, the mode
and the embedder's identity: it is built once and reopened by every later run without
embedding anything; a changed corpus has another hash, so another folder (a rebuild). The
packages are the optional extra `retrieval`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmpc.runtime.cache import default_cache_dir
from lmpc.runtime.corpus import Corpus, RetrievalError, corpus_digest, read_corpus
from lmpc.runtime.data import DataError
from lmpc.runtime.embed import Embedder
from lmpc.runtime.progress import Progress

__all__ = ["MODES", "Hit", "RetrievalError", "RetrievalIndex", "embed_corpus", "open_retriever", "read_corpus"]

MODES = ("bm25", "dense", "hybrid")
RRF_K = 60  # the constant of reciprocal rank fusion (Cormack et al. 2009)
FORMAT = 2  # bumped when the saved layout or the key changes (part of the folder's key)
IVF_MIN = 50_000  # passages; above, the dense index is an inverted file (dense_index)
NPROBE = 32  # lists an IVF search visits (of about sqrt(n))
_OMP_LOCK = threading.Lock()
EMBED_BATCH = 64  # passages per embedder call while indexing: a step of the progress bar


@dataclass(frozen=True)
class Hit:
    id: str
    text: str
    score: float


def _need(module: str, extra: str = "retrieval") -> Any:
    try:
        return __import__(module)
    except ImportError:
        package = {"faiss": "faiss-cpu", "qdrant_client": "qdrant-client"}.get(module, module)
        raise RetrievalError(f"retrieval needs the `{package}` package: "
                             f"install lmpc's extra with `pip install 'lmpc[{extra}]'`") from None


def embed_corpus(embedder: Embedder, texts: list[str], label: str) -> Any:
    """The passages' vectors (a float32 matrix), embedded in batches; a live progress bar on
    stderr when it is a terminal, nothing otherwise (logs and pipes stay clean)."""
    np = _need("numpy")
    bar = Progress(len(texts), label=label, scored=False) if sys.stderr.isatty() and texts else None
    parts = []
    try:
        for start in range(0, len(texts), EMBED_BATCH):
            parts.append(np.asarray(embedder.embed(texts[start:start + EMBED_BATCH]), dtype="float32"))
            if bar is not None:
                bar.update(min(start + EMBED_BATCH, len(texts)))
    finally:
        if bar is not None:
            bar.close()
    return np.concatenate(parts) if parts else np.zeros((0, 0), dtype="float32")


def _tokens(texts: list[str]) -> list[list[str]]:
    bm25s = _need("bm25s")
    return bm25s.tokenize(texts, stopwords="en", return_ids=False, show_progress=False)


class RetrievalIndex:
    """One corpus's index in one mode. `open` builds it (once) or reopens the saved one."""

    def __init__(self, folder: Path, mode: str, embedder: Embedder | None, ids: list[str], texts: list[str],
                 bm25: Any, dense: Any, built: bool, bad: list[DataError]):
        self.folder, self.mode, self.embedder = folder, mode, embedder
        self.ids, self.texts, self.bm25, self.dense = ids, texts, bm25, dense
        self.built, self.bad = built, bad  # whether this call built it; the skipped rows (build only)
        self.cache_name = folder.name  # what cached searches of this index are keyed by
        self.size = len(ids)  # passages (chunks) searched

    @classmethod
    def open(cls, corpus: Path, text: str, id: str, mode: str, embedder: Embedder | None,
             cache_dir: Path | None = None, chunk: int | None = None, overlap: int = 0,
             skip_bad_rows: bool = False, label: str = "index") -> "RetrievalIndex":
        """chunk/overlap: see runtime/corpus.read_corpus; skip_bad_rows False: a bad row is fatal."""
        if mode not in MODES:
            raise RetrievalError(f"unknown retrieval mode {mode!r}; use one of {', '.join(MODES)}")
        if mode != "bm25" and embedder is None:
            raise RetrievalError(f"a {mode} index needs an embedder")
        key = json.dumps({"format": FORMAT, "corpus": corpus_digest(Path(corpus)), "text": text, "id": id,
                          "mode": mode, "chunk": chunk, "overlap": overlap if chunk else 0,
                          "skip_bad_rows": skip_bad_rows,
                          "embedder": embedder.identity if mode != "bm25" and embedder else None}, sort_keys=True)
        folder = Path(cache_dir or default_cache_dir()) / "indexes" / hashlib.sha256(key.encode()).hexdigest()[:32]
        if (folder / "passages.json").is_file():
            return cls._load(folder, mode, embedder)
        corpus_ = read_corpus(Path(corpus), text, id, chunk, overlap, skip_bad_rows)
        return cls._build(folder, key, mode, embedder, corpus_, label)

    @classmethod
    def _build(cls, folder: Path, key: str, mode: str, embedder: Embedder | None, corpus: Corpus,
               label: str) -> "RetrievalIndex":
        ids, texts, bad = corpus.ids, corpus.texts, corpus.bad
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=folder.parent))
        try:
            bm25 = dense = None
            if mode in ("bm25", "hybrid"):
                bm25s = _need("bm25s")
                tokens = _tokens(texts)
                if not any(tokens):  # bm25s cannot index an empty vocabulary (it fails inside)
                    raise RetrievalError("no passage has a word that BM25 indexes (all are stopwords or "
                                         "punctuation); use mode: \"dense\"")
                bm25 = bm25s.BM25()
                bm25.index(tokens, show_progress=False)
                bm25.save(str(tmp / "bm25"), show_progress=False)
            if mode in ("dense", "hybrid"):
                faiss = _need("faiss")
                assert embedder is not None
                vectors = embed_corpus(embedder, texts, f"{label}: embedding {len(texts)} passages")
                dense = dense_index(vectors)
                faiss.write_index(dense, str(tmp / "dense.faiss"))
            (tmp / "key.json").write_text(key)
            # written last: its presence marks a complete index
            (tmp / "passages.json").write_text(json.dumps({"ids": ids, "texts": texts}))
            try:
                os.replace(tmp, folder)
            except OSError:  # another process finished the same index first: use theirs
                shutil.rmtree(tmp, ignore_errors=True)
                return cls._load(folder, mode, embedder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return cls(folder, mode, embedder, ids, texts, bm25, dense, True, bad)

    @classmethod
    def _load(cls, folder: Path, mode: str, embedder: Embedder | None) -> "RetrievalIndex":
        data = json.loads((folder / "passages.json").read_text())
        bm25 = dense = None
        if mode in ("bm25", "hybrid"):
            bm25 = _need("bm25s").BM25.load(str(folder / "bm25"), show_progress=False)
        if mode in ("dense", "hybrid"):
            dense = _need("faiss").read_index(str(folder / "dense.faiss"))
        return cls(folder, mode, embedder, data["ids"], data["texts"], bm25, dense, False, [])

    # -- search ---------------------------------------------------------------------------
    def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        """The k best passages per query (fewer when the corpus is smaller), best first. The
        queries are embedded together (one embedder call per batch)."""
        if not queries:
            return []
        k = min(k, len(self.ids))
        ranked: list[list[tuple[int, float]]]
        if self.mode == "bm25":
            ranked = self._bm25(queries, k)
        elif self.mode == "dense":
            ranked = self._dense(queries, k)
        else:  # fuse both lists, each searched deeper than k so the fusion has candidates
            depth = min(len(self.ids), max(k * 4, 20))
            ranked = [_rrf(a, b, k) for a, b in zip(self._bm25(queries, depth), self._dense(queries, depth))]
        return [[Hit(self.ids[i], self.texts[i], round(float(s), 6)) for i, s in row] for row in ranked]

    def _bm25(self, queries: list[str], k: int) -> list[list[tuple[int, float]]]:
        vocab = self.bm25.vocab_dict
        # bm25s rejects tokens it has not seen: a query word missing from the corpus scores nothing anyway
        tokens = [[t for t in q if t in vocab] for q in _tokens(queries)]
        out: list[list[tuple[int, float]]] = [[] for _ in queries]  # no known word: nothing matches
        todo = [i for i, t in enumerate(tokens) if t]
        if todo:
            docs, scores = self.bm25.retrieve([tokens[i] for i in todo], k=k, show_progress=False, n_threads=1)
            for i, dr, sr in zip(todo, docs, scores):
                out[i] = [(int(d), float(s)) for d, s in zip(dr, sr) if s > 0]
        return out

    def _dense(self, queries: list[str], k: int) -> list[list[tuple[int, float]]]:
        np = _need("numpy")
        assert self.embedder is not None
        vectors = np.asarray(self.embedder.embed(list(queries)), dtype="float32")
        scores, docs = _search(self.dense, vectors, k)
        return [[(int(d), float(s)) for d, s in zip(dr, sr) if d >= 0] for dr, sr in zip(docs, scores)]


def dense_index(vectors: Any) -> Any:
    """A FAISS inner-product index over the passages' vectors: exact (IndexFlatIP) up to
    IVF_MIN passages; above, an inverted file (IndexIVFFlat, about sqrt(n) lists, NPROBE of
    them searched), because an exact scan of 100k 384-d vectors takes about 40 ms on 2 cores
    (bench/retrieval). The coarse centroids come from FAISS's k-means (fixed seed), so a
    rebuild of the same corpus gives the same index."""
    faiss, np = _need("faiss"), _need("numpy")
    n, dim = vectors.shape
    if n <= IVF_MIN:
        index = faiss.IndexFlatIP(dim)
    else:
        lists = int(round(math.sqrt(n)))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = 1234
        index.train(np.ascontiguousarray(vectors))
        index.nprobe = min(NPROBE, lists)  # saved with the index by faiss.write_index
    index.add(vectors)
    return index


def _search(index: Any, vectors: Any, k: int) -> tuple[Any, Any]:
    """index.search, on one OpenMP thread for a few queries: FAISS's default pool (one thread
    per core) made a single query's search about 3x slower on a busy 2-core machine."""
    faiss = _need("faiss")
    if len(vectors) > 8:
        return index.search(vectors, k)
    with _OMP_LOCK:  # the thread count is process-wide: set and restored by one search at a time
        before = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            return index.search(vectors, k)
        finally:
            faiss.omp_set_num_threads(before)


def _rrf(a: list[tuple[int, float]], b: list[tuple[int, float]], k: int) -> list[tuple[int, float]]:
    fused: dict[int, float] = {}
    for ranking in (a, b):
        for rank, (doc, _) in enumerate(ranking, start=1):
            fused[doc] = fused.get(doc, 0.0) + 1.0 / (RRF_K + rank)
    return sorted(fused.items(), key=lambda p: (-p[1], p[0]))[:k]


def open_retriever(spec: dict, models: dict, base_dir: Path, cache_dir: Path | None) -> Any:
    """The retriever a `retrieve` step's spec (compiler/retrievers.py) names, opened (and built
    or uploaded when needed). It has search(queries, k), cache_name and bad (rows skipped)."""
    from lmpc.runtime.embed import create_embedder

    def local(p: str) -> Path:
        return Path(p) if Path(p).is_absolute() else base_dir / p

    kind = spec.get("kind", "index")
    mode = spec.get("mode", "dense")
    embedder = None if mode == "bm25" else create_embedder(spec["embedder"], models, base_dir)
    label = f"retriever {spec['name']}"
    if kind == "qdrant":
        from lmpc.runtime.qdrant_store import QdrantStore

        assert embedder is not None
        return QdrantStore.open(spec, embedder, corpus=local(spec["corpus"]) if spec.get("corpus") else None,
                                path=local(spec["path"]) if spec.get("path") else None, label=label)
    try:
        return RetrievalIndex.open(local(spec["corpus"]), spec["text"], spec["id"], mode, embedder, cache_dir,
                                   chunk=spec.get("chunk"), overlap=spec.get("overlap", 0),
                                   skip_bad_rows=spec.get("skip_bad_rows", False), label=label)
    except RetrievalError as e:  # the message names the retriever, as a qdrant one's does
        raise RetrievalError(f"retriever `{spec['name']}`: {e}") from None
