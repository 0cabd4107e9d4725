"""Compiled artifacts: deterministic JSON that holds everything needed to run a pipeline.

Validated against artifact.schema.json (shipped in the package) on write and on load. Loading
never executes code: it is JSON parsing and schema validation, nothing else.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import networkx as nx

from lmpc.compiler.checked import CheckedProgram
from lmpc.compiler.ir import from_json, to_json
from lmpc.compiler.types import describe, to_schema

FORMAT = "lmpc-artifact"
VERSION = 1


class ArtifactError(Exception):
    """An artifact that cannot be read: not JSON, not an artifact, a newer version, invalid."""


@dataclass
class Artifact:
    pipeline: str
    graphs: dict[str, nx.DiGraph]
    base_dir: Path  # absolute after loading
    data: dict[str, Any]  # the whole document as written

    @property
    def graph(self) -> nx.DiGraph:
        return self.graphs[self.pipeline]

    @property
    def optimize(self) -> dict[str, Any]:
        return self.data["optimize"]

    @property
    def report(self) -> dict[str, Any]:
        return self.data["report"]


def _schema() -> dict:
    text = resources.files("lmpc.compiler").joinpath("artifact.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


def _field(t) -> dict:
    return {"type": describe(t), "schema": to_schema(t)}


def make_artifact(checked: CheckedProgram, pipeline: str, graphs: dict[str, nx.DiGraph], artifact_path: Path,
                  optimize: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
    """The artifact document. `graphs` holds the (optimized) pipeline and any judge it needs."""
    from lmpc import __version__

    source = Path(checked.path).resolve()
    out_dir = artifact_path.resolve().parent
    base_dir = os.path.relpath(source.parent, out_dir)
    data = {
        "format": FORMAT,
        "version": VERSION,
        "lmpc_version": __version__,
        "pipeline": pipeline,
        "source": {"file": os.path.relpath(source, out_dir), "sha256": checked.source_hash},
        "base_dir": base_dir,
        "graphs": {name: to_json(g) for name, g in sorted(graphs.items())},
        "signatures": {
            name: {"instructions": sig.instructions,
                   "inputs": {f: {**_field(fi.type), "description": fi.description} for f, fi in sig.inputs.items()},
                   "outputs": {f: {**_field(fi.type), "description": fi.description} for f, fi in sig.outputs.items()}}
            for name, sig in sorted(checked.signatures.items())
        },
        "types": {name: _field(t) for name, t in sorted(checked.types.items())},
        "optimize": optimize,
        "report": report,
    }
    validate(data)
    return data


def validate(data: Any) -> None:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ArtifactError("not an lmpc artifact (no \"format\": \"lmpc-artifact\")")
    version = data.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise ArtifactError(f"this artifact has format version {version!r}; this lmpc reads version {VERSION}: "
                            "upgrade lmpc, or rebuild the artifact with `lmpc build`")
    validator = jsonschema.Draft202012Validator(_schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(data))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top)"
        raise ArtifactError(f"invalid artifact at {where}: {error.message}")


def dumps(data: dict[str, Any]) -> str:
    """Deterministic and diffable: sorted keys, fixed indentation, no timestamps."""
    return json.dumps(data, sort_keys=True, indent=1, ensure_ascii=False) + "\n"


def write_artifact(path: str | Path, data: dict[str, Any]) -> None:
    """Write atomically, so an interrupted build never leaves half an artifact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(dumps(data), encoding="utf-8")
    os.replace(tmp, path)


def load_artifact(path: str | Path) -> Artifact:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ArtifactError(f"no such file: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ArtifactError(f"cannot read {path}: {e}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{path}:{e.lineno}:{e.colno}: not valid JSON: {e.msg}") from None
    try:
        validate(data)
    except ArtifactError as e:
        raise ArtifactError(f"{path}: {e}") from None
    graphs = {name: from_json(g) for name, g in data["graphs"].items()}
    if data["pipeline"] not in graphs:
        raise ArtifactError(f"{path}: its pipeline `{data['pipeline']}` has no graph")
    return Artifact(data["pipeline"], graphs, (path.resolve().parent / data["base_dir"]).resolve(), data)
