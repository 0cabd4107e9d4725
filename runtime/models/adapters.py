"""LoRA adapters of local models: what a prompt node's `adapter` attribute names, its SHA-256
check, where an artifact keeps the file, and llama.cpp's handle on it.

A tuned node (optimizers/finetune.py) carries `adapter: {"file": PATH, "sha256": HEX}`: a
GGUF LoRA adapter (general.type "adapter") for the node's llama_cpp model. In a build PATH is
absolute (the adapter store in the cache folder); in an artifact it is relative to the
artifact's folder (`adapters/<first 16 hex of the hash>.gguf`, content-addressed, so two
builds never overwrite each other's file). The file is checked against its hash when an
artifact loads and again when a model first applies it: a changed or missing adapter is
refused, never silently replaced by the base model.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from pathlib import Path
from typing import Any

import networkx as nx

from lmpc.runtime.errors import LmpcRuntimeError

ADAPTER_KEYS = frozenset({"file", "sha256"})
STORE = "adapters"  # the folder beside an artifact (and in the cache folder) that holds them


class AdapterError(LmpcRuntimeError):
    """A node's adapter file is missing, changed since the build, or not one llama.cpp loads."""


_verified: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> its SHA-256
_lock = threading.Lock()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def adapter_path(adapter: dict[str, Any], base_dir: Path | None) -> Path:
    path = Path(adapter["file"])
    return path if path.is_absolute() or base_dir is None else Path(base_dir) / path


def verified(adapter: dict[str, Any], base_dir: Path | None, step: str = "") -> Path:
    """The adapter's file, after checking that it is there and has the recorded SHA-256
    (hashed once per file version in this process). Raises AdapterError."""
    path = adapter_path(adapter, base_dir)
    who = f"step `{step}`'s LoRA adapter" if step else "the LoRA adapter"
    try:
        st = path.stat()
    except OSError:
        raise AdapterError(f"{who} {path} is missing: it ships beside the artifact (folder `{STORE}/`); copy "
                           "it along with the artifact, or rebuild with `lmpc build`") from None
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _lock:
        digest = _verified.get(key)
    if digest is None:
        digest = file_sha256(path)
        with _lock:
            _verified[key] = digest
    if digest != adapter["sha256"]:
        raise AdapterError(f"{who} {path} has changed since the build (its SHA-256 is {digest[:16]}..., the "
                           f"program records {adapter['sha256'][:16]}...): restore the file or rebuild with "
                           "`lmpc build`")
    return path


def adapter_sites(graph: nx.DiGraph) -> list[tuple[str, dict]]:
    """(site id, node) of every node carrying an adapter, bodies included."""
    from lmpc.compiler.ir import walk

    return [(sid, d) for sid, d in walk(graph) if d.get("adapter")]


def check_adapters(graphs: dict[str, nx.DiGraph], folder: Path) -> None:
    """Every adapter an artifact's graphs name, checked against its hash (lmpc.load)."""
    for g in graphs.values():
        for _, d in adapter_sites(graph=g):
            verified(d["adapter"], folder, d.get("step", ""))


def place_adapters(graphs: dict[str, nx.DiGraph], artifact_path: Path) -> dict[str, nx.DiGraph]:
    """Copies of the graphs whose adapters are copied beside the artifact and named relative
    to its folder (`adapters/<hash>.gguf`); graphs without adapters are returned as they are."""
    import copy

    folder = artifact_path.resolve().parent
    out = {}
    for name, g in graphs.items():
        if not adapter_sites(g):
            out[name] = g
            continue
        g = copy.deepcopy(g)
        for _, d in adapter_sites(g):
            a = d["adapter"]
            rel = f"{STORE}/{a['sha256'][:16]}.gguf"
            src, dst = verified(a, None, d.get("step", "")), folder / rel
            if not dst.exists() or file_sha256(dst) != a["sha256"]:
                dst.parent.mkdir(parents=True, exist_ok=True)
                tmp = dst.with_name(dst.name + ".tmp")
                shutil.copyfile(src, tmp)
                os.replace(tmp, dst)
            d["adapter"] = {"file": rel, "sha256": a["sha256"]}
        out[name] = g
    return out


class LoadedAdapters:
    """llama.cpp handles of the adapters one model has applied (on its owner thread only)."""

    def __init__(self) -> None:
        self.handles: dict[str, Any] = {}  # sha256 -> llama_adapter_lora pointer

    def handle(self, llm: Any, path: Path, sha256: str) -> Any:
        import llama_cpp

        h = self.handles.get(sha256)
        if h is None:
            h = llama_cpp.llama_adapter_lora_init(llm._model.model, str(path).encode("utf-8"))
            if not h:
                raise AdapterError(f"llama.cpp could not load the LoRA adapter {path} for this model "
                                   "(another architecture or shape than the base model's?)")
            self.handles[sha256] = h
        return h

    def apply(self, ctx: Any, handle: Any) -> None:
        """Set `handle` (None: no adapter) as the context's only adapter, scale 1."""
        import ctypes

        import llama_cpp

        if handle is None:
            rc = llama_cpp.llama_set_adapters_lora(ctx, None, 0, None)
        else:
            arr = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(handle)
            rc = llama_cpp.llama_set_adapters_lora(ctx, arr, 1, (ctypes.c_float * 1)(1.0))
        if rc != 0:
            raise AdapterError(f"llama.cpp could not set the LoRA adapter on the context ({rc})")
