"""Lower a checked program to one typed networkx.DiGraph per pipeline, then run the passes.

What a step's node holds is its kind's business (compiler/kinds/); this module builds the
graph around them: input and output nodes, expressions, and the common step attributes."""

from __future__ import annotations

import networkx as nx

from lmpc.compiler import ast
from lmpc.compiler.checked import CheckedProgram, PipelineInfo
from lmpc.compiler.constraints import lower_checks
from lmpc.compiler.ir import NodeKind, input_id, output_id, rebuild_edges, value_schema, value_type
from lmpc.compiler.kinds import KINDS
from lmpc.compiler.kinds.predict import default_instructions  # noqa: F401  (kept importable here)
from lmpc.compiler.types import Type, describe, to_schema


def field(t: Type, description: str | None = None) -> dict:
    return {"type": describe(t), "schema": to_schema(t), "description": description}


def lower_expr(e: ast.Expr, info: PipelineInfo, local: str | None = None) -> dict:
    """An expression as IR; `local` is a loop variable (a body input), read as `in:local`."""
    if isinstance(e, ast.Name):
        return {"ref": input_id(e.name), "path": []}
    if isinstance(e, ast.Attr):
        path = [e.attr]
        base = e.value
        while isinstance(base, ast.Attr):
            path.insert(0, base.attr)
            base = base.value
        if isinstance(base, ast.Name):
            if base.name in info.inputs or base.name == local:
                return {"ref": input_id(base.name), "path": path}
            return {"ref": base.name, "path": path}
        raise AssertionError("attribute access on a non-name is rejected by the checker")
    if isinstance(e, ast.Literal):
        return {"lit": e.value}
    if isinstance(e, ast.ListExpr):
        return {"list": [lower_expr(i, info, local) for i in e.items]}
    if isinstance(e, ast.Call):
        return {"call": e.func, "args": [lower_expr(a, info, local) for a in e.args]}
    if isinstance(e, ast.Op):
        return {"op": e.op, "args": [lower_expr(a, info, local) for a in e.args]}
    raise AssertionError(e)


class Lowering:
    """What a kind's `lower` may use: fields, expressions and the step's target."""

    def __init__(self, program: CheckedProgram, info: PipelineInfo):
        self.program, self.info = program, info

    field = staticmethod(field)

    def expr(self, e: ast.Expr, local: str | None = None) -> dict:
        return lower_expr(e, self.info, local)

    def field_of_ref(self, g: nx.DiGraph, ref: dict) -> dict:
        from lmpc.compiler.types import from_schema

        return {"type": value_type(g, ref), "schema": to_schema(from_schema(value_schema(g, ref))),
                "description": None}

    def loop_item(self, s: ast.Step) -> Type:
        return self.info.loop_items[s.name]

    def targets_pipeline(self, s: ast.Step) -> bool:
        return s.target in self.program.pipelines

    def target_outputs(self, s: ast.Step) -> dict[str, Type]:
        if self.targets_pipeline(s):
            return dict(self.program.pipelines[s.target].outputs)
        return {n: f.type for n, f in self.program.signatures[s.target].outputs.items()}

    def target_fields(self, s: ast.Step) -> tuple[dict, dict]:
        if self.targets_pipeline(s):
            callee = self.program.pipelines[s.target]
            return ({n: field(t) for n, t in callee.inputs.items()}, {n: field(t) for n, t in callee.outputs.items()})
        sig = self.program.signatures[s.target]
        return ({n: field(f.type, f.description) for n, f in sig.inputs.items()},
                {n: field(f.type, f.description) for n, f in sig.outputs.items()})

    def target_attrs(self, s: ast.Step, kind: str, bindings: dict) -> dict:
        """The attributes of a node running `s`'s target as `kind` (a pipeline call, or a
        signature's step); fills optional inputs not passed with null."""
        if kind == NodeKind.PIPELINE:
            inputs, outputs = self.target_fields(s)
            return {"pipeline": s.target, "inputs": inputs, "outputs": outputs}
        target = (self.program.retrievers[s.target] if "retriever" in KINDS[kind].targets
                  else self.program.signatures[s.target])
        attrs = KINDS[kind].lower(s, target, self)
        for name in attrs["inputs"]:
            bindings.setdefault(name, {"lit": None})  # optional inputs not passed get null
        return attrs


def lower_pipeline(program: CheckedProgram, info: PipelineInfo) -> nx.DiGraph:
    g = nx.DiGraph()
    decl = info.decl
    lowering = Lowering(program, info)
    g.graph.update(
        name=info.name,
        inputs={n: field(t) for n, t in info.inputs.items()},
        outputs={n: field(t) for n, t in info.outputs.items()},
        span=decl.span.to_json(),
    )
    for p in decl.inputs:
        t = info.inputs[p.name]
        g.add_node(input_id(p.name), kind=NodeKind.INPUT.value, name=p.name, type=describe(t), schema=to_schema(t),
                   span=p.span.to_json())
    for s in decl.steps:
        kind = s.module or NodeKind.PIPELINE.value
        bindings = {kw.name: lower_expr(kw.value, info) for kw in s.args}
        node = {"kind": kind, "step": s.name, "bindings": bindings, "model": s.using, "span": s.span.to_json()}
        if s.when is not None:  # a conditional step: read in this graph, before any loop
            node["when"] = lower_expr(s.when, info)
        if kind in KINDS and KINDS[kind].loops:
            node.update(KINDS[kind].lower(s, None, lowering))
        else:
            # A pipeline call keeps the callee's interface, so refs to its fields have a type
            # before inlining.
            node.update(lowering.target_attrs(s, kind, bindings))
        g.add_node(s.name, **node)
    for s in decl.steps:  # kinds whose attributes need the types of the other nodes
        if s.module in KINDS and hasattr(KINDS[s.module], "complete"):
            KINDS[s.module].complete(g, s.name, s, lowering)
    lower_checks(g, program.source, info, lower_expr)  # `check` statements, on the steps they constrain
    if decl.ret is not None:
        for kw in decl.ret.fields:
            t = info.outputs[kw.name]
            g.add_node(output_id(kw.name), kind=NodeKind.OUTPUT.value, name=kw.name, type=describe(t),
                       schema=to_schema(t), bindings={"value": lower_expr(kw.value, info)}, span=kw.span.to_json())
    rebuild_edges(g)
    return g


def lower_program(program: CheckedProgram) -> dict[str, nx.DiGraph]:
    from lmpc.compiler.passes import run_passes

    raw = {name: lower_pipeline(program, info) for name, info in program.pipelines.items()}
    models = {n: {"provider": m.provider, "options": m.options} for n, m in program.models.items()}
    graphs = {}
    for name in raw:
        g = run_passes(name, raw)
        g.graph.update(models=models, default_model=program.default_model,
                       source={"file": program.path, "sha256": program.source_hash})
        graphs[name] = g
    return graphs
