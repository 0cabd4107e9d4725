"""The checked program: what semantic analysis produces and lowering consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from lmpc.compiler import ast
from lmpc.compiler.diagnostics import Diagnostic, Span
from lmpc.compiler.errors import PipelineChoiceError
from lmpc.compiler.types import Type

# The embedded default model, used when a file declares none.
DEFAULT_MODEL_NAME = "default"
DEFAULT_MODEL = {"provider": "llama_cpp", "options": {"builtin": "smollm2-135m", "temperature": 0}}


@dataclass
class FieldInfo:
    name: str
    type: Type
    description: str | None
    span: Span


@dataclass
class SignatureInfo:
    name: str
    instructions: str | None
    inputs: dict[str, FieldInfo]
    outputs: dict[str, FieldInfo]
    span: Span


@dataclass
class ModelInfo:
    name: str
    provider: str
    options: dict[str, Any]  # literal values; env("X") becomes {"env": "X"}
    span: Span | None


@dataclass
class PipelineInfo:
    name: str
    decl: ast.PipelineDecl
    inputs: dict[str, Type]
    outputs: dict[str, Type]
    step_outputs: dict[str, dict[str, Type]] = field(default_factory=dict)
    step_inputs: dict[str, dict[str, Type]] = field(default_factory=dict)
    calls: set[str] = field(default_factory=set)  # pipelines this one calls
    loop_items: dict[str, Type] = field(default_factory=dict)  # map step -> its loop variable's type
    checks: dict[str, list[ast.Check]] = field(default_factory=dict)  # step -> the checks constraining it


@dataclass
class OptimizeInfo:
    pipeline: str
    settings: dict[str, Any]  # train, dev, metric, strategy, seed, max_calls
    span: Span


@dataclass
class CheckedProgram:
    path: str
    source: str
    source_hash: str
    models: dict[str, ModelInfo]
    default_model: str
    types: dict[str, Type]
    signatures: dict[str, SignatureInfo]
    pipelines: dict[str, PipelineInfo]
    optimize: dict[str, OptimizeInfo]
    diagnostics: list[Diagnostic]  # warnings (a program with errors raises instead)
    graphs: dict[str, nx.DiGraph] = field(default_factory=dict)
    retrievers: dict[str, dict] = field(default_factory=dict)  # name -> spec (compiler/retrievers.py)
    tools: dict[str, dict] = field(default_factory=dict)  # name -> spec (compiler/tools.py)

    def entry_pipelines(self) -> list[str]:
        """Pipelines no other pipeline calls: the candidates to run."""
        called = set().union(*(p.calls for p in self.pipelines.values())) if self.pipelines else set()
        # A pipeline used as an optimize metric (an LM judge) is not a program to run.
        judges = {o.settings.get("metric", {}).get("name") for o in self.optimize.values()
                  if o.settings.get("metric", {}).get("kind") == "pipeline"}
        return [n for n in self.pipelines if n not in called and n not in judges]

    def choose_pipeline(self, name: str | None = None) -> str:
        """The pipeline to run: `name`, else the single entry pipeline (PipelineChoiceError)."""
        return choose_pipeline(self.path, list(self.pipelines), self.entry_pipelines(), name)


def choose_pipeline(where: str, pipelines: list[str], entries: list[str], name: str | None = None) -> str:
    """The one rule for the pipeline to run, of a program or an artifact: `name` when given,
    else the single entry pipeline. PipelineChoiceError (exit 2) says why there is none."""
    if name is not None:
        if name not in pipelines:
            raise PipelineChoiceError(f"{where} has no pipeline `{name}` (it has: {', '.join(pipelines) or 'none'})")
        return name
    if len(entries) == 1:
        return entries[0]
    if not pipelines:
        raise PipelineChoiceError(f"{where} declares no pipeline")
    raise PipelineChoiceError(f"{where} has several pipelines ({', '.join(entries)}); choose one with --pipeline")
