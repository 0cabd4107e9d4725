"""Lower a checked program to one typed networkx.DiGraph per pipeline, then run the passes."""

from __future__ import annotations

import networkx as nx

from lmpc.compiler import ast
from lmpc.compiler.checked import CheckedProgram, PipelineInfo, SignatureInfo
from lmpc.compiler.ir import input_id, output_id, rebuild_edges
from lmpc.compiler.types import STR, Type, describe, to_schema


def default_instructions(inputs: list[str], outputs: list[str]) -> str:
    """What a prompt node says when its signature gives no instructions (DSPy's convention)."""
    ins = ", ".join(f"`{n}`" for n in inputs)
    outs = ", ".join(f"`{n}`" for n in outputs)
    return f"Given the fields {ins}, produce the fields {outs}." if ins else f"Produce the fields {outs}."


def _field(t: Type, description: str | None = None) -> dict:
    return {"type": describe(t), "schema": to_schema(t), "description": description}


def lower_expr(e: ast.Expr, info: PipelineInfo) -> dict:
    if isinstance(e, ast.Name):
        return {"ref": input_id(e.name), "path": []}
    if isinstance(e, ast.Attr):
        path = [e.attr]
        base = e.value
        while isinstance(base, ast.Attr):
            path.insert(0, base.attr)
            base = base.value
        if isinstance(base, ast.Name):
            if base.name in info.inputs:
                return {"ref": input_id(base.name), "path": path}
            return {"ref": base.name, "path": path}
        raise AssertionError("attribute access on a non-name is rejected by the checker")
    if isinstance(e, ast.Literal):
        return {"lit": e.value}
    if isinstance(e, ast.ListExpr):
        return {"list": [lower_expr(i, info) for i in e.items]}
    if isinstance(e, ast.Call):
        return {"call": e.func, "args": [lower_expr(a, info) for a in e.args]}
    raise AssertionError(e)


def _signature_fields(sig: SignatureInfo, kind: str) -> tuple[dict, dict]:
    inputs = {n: _field(f.type, f.description) for n, f in sig.inputs.items()}
    outputs = {n: _field(f.type, f.description) for n, f in sig.outputs.items()}
    if kind == "chain_of_thought":
        outputs = {"reasoning": _field(STR, "think step by step, briefly"), **outputs}
    return inputs, outputs


def lower_pipeline(program: CheckedProgram, info: PipelineInfo) -> nx.DiGraph:
    g = nx.DiGraph()
    decl = info.decl
    g.graph.update(
        name=info.name,
        inputs={n: _field(t) for n, t in info.inputs.items()},
        outputs={n: _field(t) for n, t in info.outputs.items()},
        span=decl.span.to_json(),
    )
    for p in decl.inputs:
        t = info.inputs[p.name]
        g.add_node(input_id(p.name), kind="input", name=p.name, type=describe(t), schema=to_schema(t),
                   span=p.span.to_json())
    for s in decl.steps:
        bindings = {kw.name: lower_expr(kw.value, info) for kw in s.args}
        node = {"kind": s.module or "pipeline", "step": s.name, "bindings": bindings,
                "model": s.using, "span": s.span.to_json()}
        if s.module is None:
            # The callee's interface, so refs to this node's fields have a type before inlining.
            callee = program.pipelines[s.target]
            node.update(pipeline=s.target,
                        inputs={n: _field(t) for n, t in callee.inputs.items()},
                        outputs={n: _field(t) for n, t in callee.outputs.items()})
        else:
            sig = program.signatures[s.target]
            inputs, outputs = _signature_fields(sig, s.module)
            for name, t in info.step_inputs[s.name].items():  # optional inputs not passed get null
                if name not in bindings and name in inputs:
                    bindings[name] = {"lit": None}
            node.update(signature=s.target, inputs=inputs, outputs=outputs)
            if s.module == "call":
                node.update(fn=s.ref)
            else:
                node.update(
                    instructions=sig.instructions or default_instructions(list(sig.inputs), list(sig.outputs)),
                    demos=[],
                )
        g.add_node(s.name, **node)
    if decl.ret is not None:
        for kw in decl.ret.fields:
            t = info.outputs[kw.name]
            g.add_node(output_id(kw.name), kind="output", name=kw.name, type=describe(t), schema=to_schema(t),
                       bindings={"value": lower_expr(kw.value, info)}, span=kw.span.to_json())
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
