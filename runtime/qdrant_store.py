"""A `qdrant(...)` retriever: a collection of a Qdrant vector database, through the official
`qdrant-client` (a server at `url:`, or the client's embedded local mode in a `path:` folder),
searched with query vectors that lmpc embeds (runtime/embed.py), cosine similarity.

With `corpus:` lmpc owns the collection: it creates it when missing and uploads the corpus
(chunked and embedded as for the embedded index), each point carrying the fingerprint of what
was uploaded (corpus hash, columns, chunking, embedder). A later run finds every point with
the current fingerprint and uploads nothing; a changed corpus (or an interrupted upload) makes
lmpc recreate the collection. A collection holding points lmpc did not upload is never
modified: with `corpus:` that is an error; without `corpus:` lmpc only searches it, reading
the passage and its id from the payload fields named by `text:` and `id:`.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import sys
import threading
import warnings
from pathlib import Path
from typing import Any, Callable

from lmpc.runtime.corpus import RetrievalError, corpus_digest, read_corpus
from lmpc.runtime.embed import Embedder
from lmpc.runtime.redact import redact, register_secret, register_url, safe_url

FORMAT = 1  # bumped when the uploaded points' layout changes (part of the fingerprint)
FINGERPRINT = "lmpc_key"  # the payload field holding the fingerprint of an lmpc upload
UPLOAD_BATCH = 256  # points per upsert request
DEFAULT_TIMEOUT = 10  # seconds per request to a server
START_SERVER = "start one with `docker run -p 6333:6333 qdrant/qdrant`"

_local: dict[str, Any] = {}  # resolved folder -> its QdrantClient: a local folder admits one client per process
_local_lock = threading.Lock()
_warned: set[tuple[str, str]] = set()  # (retriever, url) already warned about a key sent in clear


def _client_module() -> Any:
    try:
        import qdrant_client
    except ImportError:
        raise RetrievalError("a qdrant retriever needs the `qdrant-client` package: install lmpc's extra with "
                             "`pip install 'lmpc[retrieval]'`") from None
    return qdrant_client


class QdrantStore:
    def __init__(self, client: Any, where: str, spec: dict, embedder: Embedder, cache_name: str,
                 built: bool, bad: list, lock: threading.Lock):
        self.client, self.where, self.spec, self.embedder = client, where, spec, embedder
        self.collection = spec["collection"]
        self.cache_name, self.built, self.bad, self._lock = cache_name, built, bad, lock
        self.size = 0  # the points searched

    # -- opening ----------------------------------------------------------------------------
    @classmethod
    def open(cls, spec: dict, embedder: Embedder, corpus: Path | None, path: Path | None,
             label: str = "qdrant") -> "QdrantStore":
        """Connect, check the collection (and upload the corpus when lmpc owns it and it is
        not there yet). Every failure is a RetrievalError naming the retriever."""
        name, collection = spec["name"], spec["collection"]
        client, where, lock = _connect(spec, path)
        store = cls(client, where, spec, embedder, "", False, [], lock)
        exists = store._call("check the collection", lambda: client.collection_exists(collection))
        if corpus is None:
            if not exists:
                raise RetrievalError(f"retriever `{name}`: {where} has no collection \"{collection}\"; give the "
                                     "retriever `corpus:` to let lmpc create it and upload the passages")
            count = store._call("count the points", lambda: client.count(collection, exact=True).count)
            store._check_size()
            store.cache_name = _digest({"qdrant": where, "collection": collection, "points": count,
                                        "embedder": embedder.identity})
            store.size = count
            return store
        key = _digest({"format": FORMAT, "corpus": corpus_digest(corpus), "text": spec["text"], "id": spec["id"],
                       "chunk": spec.get("chunk"), "overlap": spec.get("overlap", 0) if spec.get("chunk") else 0,
                       "skip_bad_rows": spec.get("skip_bad_rows", False), "embedder": embedder.identity})
        store.cache_name = key
        passages = read_corpus(corpus, spec["text"], spec["id"], spec.get("chunk"), spec.get("overlap", 0),
                               spec.get("skip_bad_rows", False))
        if exists:
            total, ours, mine = store._counts(key)
            store.size = len(passages.ids)
            if total == mine == len(passages.ids):
                store._check_size()
                return store
            if total and ours < total:
                raise RetrievalError(f"retriever `{name}`: the collection \"{collection}\" at {where} holds points "
                                     "that lmpc did not upload, and lmpc never changes such a collection; remove "
                                     "`corpus:` to search it as it is, or name another collection")
            print(f"lmpc: {label}: the collection \"{collection}\" holds another corpus (or an interrupted "
                  "upload): uploading it again", file=sys.stderr)
            store._call("delete the old collection", lambda: client.delete_collection(collection))
        store._upload(key, passages.ids, passages.texts, label)
        store.built, store.bad, store.size = True, passages.bad, len(passages.ids)
        return store

    def _counts(self, key: str) -> tuple[int, int, int]:
        """(points, points uploaded by lmpc, points of this exact upload)."""
        models = _client_module().models
        c, coll = self.client, self.collection

        def count(flt: Any) -> int:
            return self._call("count the points", lambda: c.count(coll, count_filter=flt, exact=True).count)

        ours = models.Filter(must_not=[models.IsEmptyCondition(is_empty=models.PayloadField(key=FINGERPRINT))])
        mine = models.Filter(must=[models.FieldCondition(key=FINGERPRINT, match=models.MatchValue(value=key))])
        return count(None), count(ours), count(mine)

    def _check_size(self) -> None:
        params = self._call("read the collection", lambda: self.client.get_collection(self.collection)).config.params
        vectors = params.vectors
        size = getattr(vectors, "size", None)
        if size is None:
            raise RetrievalError(f"retriever `{self.spec['name']}`: the collection \"{self.collection}\" has named "
                                 "vectors; lmpc searches collections with one unnamed vector per point")
        dim = getattr(self.embedder, "dim", None)
        if dim is not None and int(dim) != int(size):
            raise RetrievalError(f"retriever `{self.spec['name']}`: the collection \"{self.collection}\" holds "
                                 f"vectors of size {size}, but the embedder {self.spec['embedder']} makes vectors of "
                                 f"size {dim}; use the embedder the collection was made with")

    def _upload(self, key: str, ids: list[str], texts: list[str], label: str) -> None:
        from lmpc.runtime.retrieval import embed_corpus

        models = _client_module().models
        vectors = embed_corpus(self.embedder, texts, f"{label}: embedding {len(texts)} passages")
        c, coll = self.client, self.collection
        self._call("create the collection", lambda: c.create_collection(
            coll, vectors_config=models.VectorParams(size=int(vectors.shape[1]), distance=models.Distance.COSINE)))
        text_field, id_field = self.spec["text"], self.spec["id"]
        for start in range(0, len(ids), UPLOAD_BATCH):
            points = [models.PointStruct(id=i, vector=vectors[i].tolist(),
                                         payload={text_field: texts[i], id_field: ids[i], FINGERPRINT: key})
                      for i in range(start, min(start + UPLOAD_BATCH, len(ids)))]
            self._call("upload the passages", lambda: c.upsert(coll, points=points, wait=True))

    # -- searching --------------------------------------------------------------------------
    def search(self, queries: list[str], k: int) -> list[list[Any]]:
        """The k nearest passages per query, best first; the queries embedded together."""
        from lmpc.runtime.retrieval import Hit

        if not queries:
            return []
        models = _client_module().models
        vectors = self.embedder.embed(list(queries))
        requests = [models.QueryRequest(query=list(map(float, v)), limit=k, with_payload=True) for v in vectors]
        answers = self._call("search", lambda: self.client.query_batch_points(self.collection, requests=requests))
        text_field, id_field = self.spec["text"], self.spec["id"]
        out = []
        for answer in answers:
            hits = []
            for p in answer.points:
                payload = p.payload or {}
                text = payload.get(text_field)
                if not isinstance(text, str):
                    raise RetrievalError(f"retriever `{self.spec['name']}`: point {p.id} of the collection "
                                         f"\"{self.collection}\" has no text field `{text_field}` in its payload; "
                                         "name the field with `text:`")
                hits.append(Hit(str(payload.get(id_field, p.id)), text, round(float(p.score), 6)))
            out.append(hits)
        return out

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        """fn() with any client failure turned into a RetrievalError that says where and why."""
        try:
            with self._lock:
                return fn()
        except RetrievalError:
            raise
        except Exception as e:  # the client raises many kinds (HTTP, gRPC, local storage): all mean the same here
            raise RetrievalError(f"retriever `{self.spec['name']}`: could not {what} at {self.where}: "
                                 f"{_reason(e)}") from None


def _close_local() -> None:
    """Close the local folders' clients before the interpreter tears its modules down (a
    client closed by its __del__ at that point prints an ImportError)."""
    with _local_lock:
        for client, _ in _local.values():
            try:
                client.close()
            except Exception:  # closing at exit: nothing left to report to
                pass
        _local.clear()


atexit.register(_close_local)


def _connect(spec: dict, path: Path | None) -> tuple[Any, str, threading.Lock]:
    """(client, where it is for messages, the lock its calls take)."""
    qc = _client_module()
    name = spec["name"]
    if path is not None:
        folder = str(Path(path).resolve())
        with _local_lock:
            if folder not in _local:
                try:
                    # calls are serialised by the lock below; the client may be reached from several threads
                    _local[folder] = (qc.QdrantClient(path=folder, force_disable_check_same_thread=True),
                                      threading.Lock())
                except Exception as e:
                    raise RetrievalError(f"retriever `{name}`: could not open the Qdrant folder {folder}: "
                                         f"{_reason(e)}") from None
            client, lock = _local[folder]
        return client, f"the local Qdrant folder {folder}", lock
    url = spec["url"]
    if isinstance(url, dict):
        var = url["env"]
        if not os.environ.get(var):
            raise RetrievalError(f"retriever `{name}`: its url comes from the environment variable {var}, which is "
                                 f"not set; set it, e.g. `export {var}=http://localhost:6333` ({START_SERVER})")
        url = os.environ[var]
    register_url(url)
    api_key = None
    var = spec.get("api_key_env")
    if var:
        api_key = os.environ.get(var)
        if not api_key:
            raise RetrievalError(f"retriever `{name}`: its API key comes from the environment variable {var} "
                                 f"(api_key_env), which is not set; set it, e.g. `export {var}=...`")
        register_secret(api_key)
    timeout = spec.get("timeout") or DEFAULT_TIMEOUT
    if api_key and url.startswith("http://") and (name, url) not in _warned:
        _warned.add((name, url))
        print(f"lmpc: warning: retriever `{name}`: its API key is sent over plain http:// to {safe_url(url)}",
              file=sys.stderr)
    try:
        with warnings.catch_warnings():  # the client's own warning about that, said above in lmpc's words
            warnings.simplefilter("ignore", UserWarning)
            # check_compatibility=False: no version request (and no warning) before the first real call
            client = qc.QdrantClient(url=url, api_key=api_key, timeout=int(max(1, timeout)),
                                     check_compatibility=False)
    except Exception as e:
        raise RetrievalError(f"retriever `{name}`: bad Qdrant url {safe_url(url)}: {_reason(e)}") from None
    return client, f"the Qdrant server {safe_url(url)}", threading.Lock()


def _reason(e: Exception) -> str:
    text = redact(str(e) or type(e).__name__)
    status = getattr(e, "status_code", None)
    if status in (401, 403):
        return f"HTTP {status}: the server refused the API key (api_key_env)"
    if "refused" in text.lower() or "connect" in text.lower() or "timed out" in text.lower():
        return f"{text.strip()} (is the server running? {START_SERVER})"
    if "already accessed by another instance" in text:
        return "another process has the folder open (a local Qdrant folder serves one process at a time)"
    return text.strip().splitlines()[0][:300] if text.strip() else type(e).__name__


def _digest(value: dict) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:32]
