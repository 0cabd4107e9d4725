"""The embedded retrieval index: a corpus file searched by BM25 (bm25s), dense vectors
(FAISS, inner product on the L2-normalised vectors of runtime/embed.py) or both fused by
reciprocal rank fusion.

An index is saved under the cache dir, in a folder named by the corpus file's sha256, the
text and id columns, the mode and the embedder's identity: it is built once and reopened by
every later run without embedding anything; a changed corpus has another hash, so another
folder (a rebuild). The packages are the optional extra `retrieval`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmpc.runtime.cache import default_cache_dir
from lmpc.runtime.data import DataError, read_rows
from lmpc.runtime.embed import Embedder
from lmpc.runtime.errors import ConfigurationError

MODES = ("bm25", "dense", "hybrid")
RRF_K = 60  # the constant of reciprocal rank fusion (Cormack et al. 2009)
FORMAT = 1  # bumped when the saved layout changes (part of the folder's key)


class RetrievalError(ConfigurationError):
    """A corpus that cannot be read, a missing package, a bad mode: every row would fail."""


@dataclass(frozen=True)
class Hit:
    id: str
    text: str
    score: float


def _need(module: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise RetrievalError(f"retrieval needs the `{'faiss-cpu' if module == 'faiss' else module}` package: "
                             "install lmpc's extra with `pip install 'lmpc[retrieval]'`") from None


def read_corpus(path: Path, text: str, id: str) -> tuple[list[str], list[str], list[DataError]]:
    """(ids, texts, bad rows): a row that is not an object, lacks a column or has a non-text
    value is skipped and reported by file:line; duplicate ids too."""
    ids: list[str] = []
    texts: list[str] = []
    bad: list[DataError] = []
    seen: set[str] = set()
    try:
        rows = read_rows(path)
        for line, row in rows:
            if isinstance(row, DataError):
                bad.append(row)
                continue
            for col in (text, id):
                if col not in row:
                    bad.append(DataError(f"the row has no `{col}` column", str(path), line))
                    break
            else:
                t, i = row[text], row[id]
                if not isinstance(t, str) or not t.strip():
                    bad.append(DataError(f"`{text}` should be non-empty text", str(path), line))
                elif not isinstance(i, (str, int)) or isinstance(i, bool):
                    bad.append(DataError(f"`{id}` should be text or an integer", str(path), line))
                elif str(i) in seen:
                    bad.append(DataError(f"duplicate id {str(i)!r}", str(path), line))
                else:
                    seen.add(str(i))
                    ids.append(str(i))
                    texts.append(t)
    except DataError as e:
        raise RetrievalError(f"corpus: {e}") from None
    if not ids:
        raise RetrievalError(f"corpus {path}: no usable passages" + (f" ({bad[0]})" if bad else ""))
    return ids, texts, bad


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

    @classmethod
    def open(cls, corpus: Path, text: str, id: str, mode: str, embedder: Embedder | None,
             cache_dir: Path | None = None) -> "RetrievalIndex":
        if mode not in MODES:
            raise RetrievalError(f"unknown retrieval mode {mode!r}; use one of {', '.join(MODES)}")
        if mode != "bm25" and embedder is None:
            raise RetrievalError(f"a {mode} index needs an embedder")
        try:
            digest = hashlib.sha256(Path(corpus).read_bytes()).hexdigest()
        except OSError as e:
            raise RetrievalError(f"corpus {corpus}: {e.strerror or e}") from None
        key = json.dumps({"format": FORMAT, "corpus": digest, "text": text, "id": id, "mode": mode,
                          "embedder": embedder.identity if mode != "bm25" and embedder else None}, sort_keys=True)
        folder = Path(cache_dir or default_cache_dir()) / "indexes" / hashlib.sha256(key.encode()).hexdigest()[:32]
        if (folder / "passages.json").is_file():
            return cls._load(folder, mode, embedder)
        ids, texts, bad = read_corpus(Path(corpus), text, id)
        return cls._build(folder, key, mode, embedder, ids, texts, bad)

    @classmethod
    def _build(cls, folder: Path, key: str, mode: str, embedder: Embedder | None, ids: list[str],
               texts: list[str], bad: list[DataError]) -> "RetrievalIndex":
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=folder.parent))
        try:
            bm25 = dense = None
            if mode in ("bm25", "hybrid"):
                bm25s = _need("bm25s")
                bm25 = bm25s.BM25()
                bm25.index(_tokens(texts), show_progress=False)
                bm25.save(str(tmp / "bm25"), show_progress=False)
            if mode in ("dense", "hybrid"):
                faiss, np = _need("faiss"), _need("numpy")
                assert embedder is not None
                vectors = np.asarray(embedder.embed(texts), dtype="float32")
                dense = faiss.IndexFlatIP(vectors.shape[1])  # exact search: a corpus that fits one machine
                dense.add(vectors)
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
        scores, docs = self.dense.search(vectors, k)
        return [[(int(d), float(s)) for d, s in zip(dr, sr) if d >= 0] for dr, sr in zip(docs, scores)]


def _rrf(a: list[tuple[int, float]], b: list[tuple[int, float]], k: int) -> list[tuple[int, float]]:
    fused: dict[int, float] = {}
    for ranking in (a, b):
        for rank, (doc, _) in enumerate(ranking, start=1):
            fused[doc] = fused.get(doc, 0.0) + 1.0 / (RRF_K + rank)
    return sorted(fused.items(), key=lambda p: (-p[1], p[0]))[:k]
