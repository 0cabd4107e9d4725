"""Compiled artifacts: deterministic JSON that holds everything needed to run a pipeline.

Format 2 (see docs/runtime.md, "Artifacts"). The top level is checked against
artifact.schema.json (shipped in the package); each graph is then checked in full by
artifact_graph.graph_from_json, which rebuilds schemas from types and derived data (edges,
run order, levels) from the bindings. Loading is JSON parsing and checking, nothing else: it
never runs code, reads environment variables or opens other files. What an artifact may do
when it runs (Python files, model endpoints and key variables) is decided by runtime/trust.py.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import networkx as nx

from lmpc.compiler.artifact_graph import GraphFormatError, graph_from_json, graph_to_json, safe_relative_file
from lmpc.compiler.checked import CheckedProgram
from lmpc.compiler.ir import NodeKind, walk
from lmpc.compiler.errors import EXIT_USAGE, LmpcError

FORMAT = "lmpc-artifact"
# 2: fields are ordered lists, types instead of JSON Schemas, no derived data, Python files
#    beside the artifact with their hashes, paths relative to the artifact. 1 is not read: its
#    fields were re-ordered alphabetically on write (the artifact was not the scored program).
VERSION = 2
# 3: format 2 plus LoRA adapters on prompt nodes (`adapter: {file, sha256}`, the file beside the
#    artifact). Written only when a node has one, so an lmpc that reads only 2 refuses it
#    clearly ("upgrade lmpc") instead of running the base model; adapter-free artifacts stay 2.
ADAPTERS_VERSION = 3
READS = (VERSION, ADAPTERS_VERSION)
MAX_JSON_DEPTH = 200  # deeper documents are refused before anything recurses into them


class ArtifactError(LmpcError):
    """An artifact that cannot be read: not JSON, not an artifact, another version, invalid."""

    exit_code = EXIT_USAGE


class ArtifactTrustError(ArtifactError):
    """An artifact that would run Python code, or use model endpoints, key variables or model
    files, that the user has not approved (trust_code / trust_models, or their own options)."""


@dataclass
class Artifact:
    pipeline: str
    graphs: dict[str, nx.DiGraph]
    folder: Path  # absolute: the artifact's folder, where its Python files and relative paths resolve
    data: dict[str, Any]  # the whole document as written
    path: Path | None = None
    trusted: set[str] = field(default_factory=set)  # what the loader allowed: "code", "models"

    @property
    def graph(self) -> nx.DiGraph:
        return self.graphs[self.pipeline]

    @property
    def optimize(self) -> dict[str, Any]:
        return self.data["optimize"]

    @property
    def report(self) -> dict[str, Any]:
        return self.data["report"]

    @property
    def code(self) -> list[dict[str, str]]:
        return self.data["code"]


def _schema() -> dict:
    text = resources.files("lmpc.compiler").joinpath("artifact.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def code_refs(graphs: dict[str, nx.DiGraph], optimize: dict[str, Any]) -> dict[str, list[str]]:
    """Python files an artifact names -> what uses them (call steps, react tools, a Python metric)."""
    files: dict[str, list[str]] = {}
    for name in sorted(graphs):
        for _, d in sorted(walk(graphs[name]), key=lambda item: item[0]):  # bodies (map) included
            if d["kind"] == NodeKind.CALL:
                files.setdefault(d["fn"].partition(":")[0], []).append(f"step `{d['step']}` of `{name}`")
            if d["kind"] == "best_of" and "fn" in d.get("reward", {}):
                files.setdefault(d["reward"]["fn"].partition(":")[0], []).append(
                    f"the reward of step `{d['step']}` of `{name}`")
            for tool, spec in (d.get("tools") or {}).items() if d["kind"] == "react" else ():
                files.setdefault(spec["fn"].partition(":")[0], []).append(
                    f"tool `{tool}` of step `{d['step']}` of `{name}`")
    metric = optimize.get("metric")
    if isinstance(metric, dict) and metric.get("kind") == "python":
        files.setdefault(str(metric["name"]).partition(":")[0], []).append("the metric")
    return files


def place_code(graphs: dict[str, nx.DiGraph], optimize: dict[str, Any], source_dir: Path,
               artifact_path: Path, check_only: bool = False) -> list[Path]:
    """Copy the Python files the artifact names from the .lmp file's folder to the artifact's.

    Paths keep their place relative to the folder (helpers/x.py stays helpers/x.py). A file
    outside the .lmp's folder (`..`) cannot be named by an artifact, and a different file
    already at the destination is never overwritten. Returns the files copied (check_only:
    raises the same errors, copies nothing: a build checks this before its first model call)."""
    import shutil

    folder = artifact_path.resolve().parent
    copied = []
    for file, users in sorted(code_refs(graphs, optimize).items()):
        if not safe_relative_file(file):
            raise ArtifactError(f"{users[0]} names the Python file `{file}`, outside the .lmp file's folder; an "
                                "artifact runs only Python files beside it: move the file under the .lmp's folder")
        src, dst = (source_dir / file).resolve(), folder / file
        if not src.is_file():
            raise ArtifactError(f"{users[0]} names the Python file {src}, which does not exist")
        if dst.resolve() == src:
            continue
        if dst.exists():
            if dst.read_bytes() != src.read_bytes():
                raise ArtifactError(f"{dst} exists and differs from {src}, which the artifact needs beside it; "
                                    "write the artifact to another folder (-o) or remove that file")
            continue
        if check_only:
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(dst.name + ".tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
        copied.append(dst)
    return copied


def relocate_paths(graphs: dict[str, nx.DiGraph], optimize: dict[str, Any], source_dir: Path,
                   artifact_path: Path) -> tuple[dict[str, nx.DiGraph], dict[str, Any]]:
    """Paths as the artifact reads them: relative to its own folder (model files, data files,
    the corpora of retrieve steps).

    Returns copies of the graphs and of the optimize settings with relative paths moved."""
    folder = artifact_path.resolve().parent

    def rel(p: str | Path) -> str:
        return Path(os.path.relpath(Path(p).resolve(), folder)).as_posix()

    def moved(spec: dict) -> dict:
        path = spec["options"].get("path")
        if isinstance(path, str) and not Path(path).expanduser().is_absolute():
            return {**spec, "options": {**spec["options"], "path": rel(source_dir / path)}}
        return spec

    def corpora(g: nx.DiGraph) -> nx.DiGraph:
        """A copy whose retrieve steps (bodies included) name their corpus from the artifact."""
        g = g.copy()
        for nid, d in g.nodes(data=True):
            if "body" in d:
                g.nodes[nid]["body"] = corpora(d["body"])
            spec = d.get("retriever")
            if d.get("kind") == "retrieve":  # its corpus file or folder, and a qdrant retriever's local folder
                g.nodes[nid]["retriever"] = {**spec, **{
                    k: rel(source_dir / spec[k]) for k in ("corpus", "path")
                    if isinstance(spec.get(k), str) and not Path(spec[k]).expanduser().is_absolute()}}
        return g

    out = {}
    for name, g in graphs.items():
        g = corpora(g)
        g.graph["models"] = {n: moved(spec) for n, spec in g.graph["models"].items()}
        out[name] = g
    optimize = {**optimize, **{k: rel(optimize[k]) for k in ("train", "dev")
                               if isinstance(optimize.get(k), str) and "://" not in optimize[k]}}
    return out, optimize


def make_artifact(checked: CheckedProgram, pipeline: str, graphs: dict[str, nx.DiGraph], artifact_path: Path,
                  optimize: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
    """The artifact document. `graphs` holds the (optimized) pipeline and any judge it needs.

    Python files it names must already be beside `artifact_path` (place_code puts them there);
    their hashes are recorded so a changed file is noticed before it runs."""
    from lmpc import __version__

    source = Path(checked.path).resolve()
    folder = artifact_path.resolve().parent
    code = []
    for file in sorted(code_refs(graphs, optimize)):
        code.append({"file": file, "sha256": sha256_file(folder / file)})
    adapters = any(d.get("adapter") for g in graphs.values() for _, d in walk(g))
    data = {
        "format": FORMAT,
        "version": ADAPTERS_VERSION if adapters else VERSION,
        "lmpc_version": __version__,
        "pipeline": pipeline,
        "source": {"file": Path(os.path.relpath(source, folder)).as_posix(), "sha256": checked.source_hash},
        "code": code,
        "graphs": {name: graph_to_json(g) for name, g in sorted(graphs.items())},
        "optimize": optimize,
        "report": report,
    }
    check_document(data)
    return data


def _depth_ok(value: Any, limit: int) -> bool:
    """Whether `value` nests at most `limit` deep (iteratively: no recursion to overflow)."""
    stack = [(value, 0)]
    while stack:
        v, d = stack.pop()
        if d > limit:
            return False
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v)
    return True


def check_document(data: Any) -> dict[str, nx.DiGraph]:
    """Check a whole artifact document; returns its graphs, ready to run. Raises ArtifactError."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ArtifactError("not an lmpc artifact (no \"format\": \"lmpc-artifact\")")
    version = data.get("version")
    if version not in READS or isinstance(version, bool):
        newer = isinstance(version, int) and not isinstance(version, bool) and version > VERSION
        raise ArtifactError(
            f"this artifact has format version {version!r}; this lmpc reads versions {VERSION} and {ADAPTERS_VERSION}: "
            + ("upgrade lmpc, or rebuild the artifact with `lmpc build`" if newer
               else "rebuild it with `lmpc build` (format 1 re-ordered fields alphabetically, so its prompts "
                    "were not the ones the build scored)"))
    if not _depth_ok(data, MAX_JSON_DEPTH):
        raise ArtifactError(f"the document is nested more than {MAX_JSON_DEPTH} deep")
    validator = jsonschema.Draft202012Validator(_schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(data))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top)"
        raise ArtifactError(f"invalid artifact at {where}: {error.message[:300]}")
    graphs = {}
    for name, g in data["graphs"].items():
        try:
            graphs[name] = graph_from_json(g, f"graphs/{name}")
        except GraphFormatError as e:
            raise ArtifactError(f"invalid artifact at {e}") from None
        if graphs[name].graph["name"] != name:
            raise ArtifactError(f"invalid artifact at graphs/{name}/name: the graph is named "
                                f"`{graphs[name].graph['name']}`")
    if data["pipeline"] not in graphs:
        raise ArtifactError(f"its pipeline `{data['pipeline']}` has no graph")
    if version == VERSION and any(d.get("adapter") for g in graphs.values() for _, d in walk(g)):
        raise ArtifactError("a node carries a LoRA adapter, which needs format version 3 (this document says 2)")
    _check_optimize(data["optimize"], graphs)
    listed = {c["file"] for c in data["code"]}
    for file, users in code_refs(graphs, data["optimize"]).items():
        if not safe_relative_file(file):
            raise ArtifactError(f"{users[0]} names the Python file `{file}`, outside the artifact's folder")
        if file not in listed:
            raise ArtifactError(f"{users[0]} names the Python file `{file}`, which the artifact's `code` list "
                                "does not record")
    return graphs


def _check_optimize(opt: dict[str, Any], graphs: dict[str, nx.DiGraph]) -> None:
    metric = opt.get("metric")
    if metric is None:
        return
    kind, name = metric["kind"], metric["name"]
    if kind == "python":
        file, sep, fn = name.partition(":")
        if not sep or not file.endswith(".py") or not fn.isidentifier() or not safe_relative_file(file):
            raise ArtifactError(f"invalid artifact at optimize/metric/name: a Python metric is \"file.py:function\" "
                                "with the file beside the artifact")
    elif kind == "pipeline" and name not in graphs:
        raise ArtifactError(f"invalid artifact at optimize/metric/name: the judge pipeline `{name}` has no graph")


def dumps(data: dict[str, Any]) -> str:
    """Deterministic and diffable: the document is built in a fixed order (maps whose order means
    nothing are sorted when built), fixed indentation, no timestamps. Keys are NOT sorted on
    write: field order and the key order of values (demo objects) are meaning."""
    return json.dumps(data, indent=1, ensure_ascii=False) + "\n"


def write_artifact(path: str | Path, data: dict[str, Any]) -> None:
    """Write atomically, so an interrupted build never leaves half an artifact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(dumps(data), encoding="utf-8")
    os.replace(tmp, path)


def read_artifact_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ArtifactError(f"no such file: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ArtifactError(f"cannot read {path}: {e}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{path}:{e.lineno}:{e.colno}: not valid JSON: {e.msg}") from None
    except RecursionError:
        raise ArtifactError(f"{path}: not a usable artifact: the JSON is nested too deeply") from None


def load_artifact(path: str | Path) -> Artifact:
    """Read and check an artifact; nothing in it runs. Raises ArtifactError."""
    path = Path(path)
    data = read_artifact_json(path)
    try:
        graphs = check_document(data)
    except ArtifactError as e:
        raise ArtifactError(f"{path}: {e}") from None
    return Artifact(data["pipeline"], graphs, path.resolve().parent, data, path)
