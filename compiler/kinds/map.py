"""`map`: run a signature (one predict per item) or a sub-pipeline for each item of a list.

    notes = map Summarize(passage: p) for p in ctx.passages
    facts = map extract(text: t, topic: topic) for t in texts

The node holds its body as a graph: the loop variable and every outer value the arguments
read ("captures", named like `ctx.passages`) are the body's inputs, then the signature's
prompt node (or the sub-pipeline, inlined), then one output node per output field. The map
node binds the loop variable to the list and each capture to its outer value; each output
becomes `list[T]`, in item order. At run time the body runs once per item through the same
executor, all items of all rows of a batch together.
"""

from __future__ import annotations

from typing import Any

import networkx as nx

from lmpc.compiler.ir import NodeKind, input_id, input_name, map_refs, output_id, rebuild_edges, site_id
from lmpc.compiler.kinds.base import Execution, RunBody, StepKind, Target
from lmpc.compiler.types import ListT


def capture_name(ref: dict) -> str:
    """The body input that carries an outer value: `question`, `ctx.passages`."""
    base = input_name(ref["ref"]) or ref["ref"]
    return ".".join([base, *ref["path"]])


class Map(StepKind):
    name = "map"
    doc = "a signature (predict per item) or a sub-pipeline run for each item of a list"
    targets = ("signature", "pipeline")
    loops = True
    artifact_keys = ("step", "target", "item", "model", "inputs", "outputs", "bindings", "body", "span")
    artifact_required = ("target", "item", "body")

    def check(self, ctx, s) -> None:
        if s.ref is not None:
            ctx.report("bad-function-ref", s.module_span, "`map` takes no function reference",
                       "only `call` steps name a Python function")
        if s.loop is None:
            ctx.report("bad-loop", s.target_span, "a `map` step says what it loops over",
                       f"write `{s.name} = map {s.target}(...) for x in list`")
        self.check_no_tools(ctx, s)

    def interface(self, ctx, s, target: Target) -> tuple[dict, dict]:
        return dict(target.inputs), {n: ListT(t) for n, t in target.outputs.items()}

    # -- lowering ---------------------------------------------------------------------------
    def lower(self, s, target, lowering) -> dict[str, Any]:
        """The node without its body: the body's inputs need the outer graph's types
        (`complete`, once every node of the pipeline exists)."""
        var = s.loop.var
        args = {kw.name: lowering.expr(kw.value, local=var) for kw in s.args}
        outputs = {n: lowering.field(ListT(t)) for n, t in lowering.target_outputs(s).items()}
        return {"target": s.target, "item": var, "outputs": outputs, "inputs": {},
                "bindings": {var: lowering.expr(s.loop.over)}, "args": args}

    def complete(self, g: nx.DiGraph, nid: str, s, lowering) -> None:
        node = g.nodes[nid]
        var = node["item"]
        captures: dict[str, dict] = {}

        def capture(ref: dict) -> dict:
            if ref["ref"] == input_id(var):  # the checker keeps the loop variable apart from inputs
                return {"ref": ref["ref"], "path": list(ref["path"])}
            name = capture_name(ref)
            captures[name] = {"ref": ref["ref"], "path": list(ref["path"])}
            return {"ref": input_id(name), "path": []}

        args = {a: map_refs(e, capture) for a, e in node.pop("args").items()}
        item = lowering.field(lowering.loop_item(s))
        fields = {var: item, **{n: lowering.field_of_ref(g, r) for n, r in captures.items()}}
        node["inputs"] = {var: lowering.field(ListT(lowering.loop_item(s))),
                          **{n: fields[n] for n in captures}}
        node["bindings"].update(captures)
        node["body"] = self._body(s, node, fields, args, lowering)

    def _body(self, s, node: dict, fields: dict, args: dict, lowering) -> nx.DiGraph:
        body = nx.DiGraph()
        inner = s.target
        target_fields = lowering.target_fields(s)
        body.graph.update(name=f"{s.name}[*]", inputs=fields,
                          outputs={n: f for n, f in target_fields[1].items()}, span=s.span.to_json())
        for name, f in fields.items():
            body.add_node(input_id(name), kind=NodeKind.INPUT.value, name=name, type=f["type"], schema=f["schema"],
                          span=s.span.to_json())
        step = {"kind": NodeKind.PIPELINE.value if lowering.targets_pipeline(s) else NodeKind.PREDICT.value,
                "step": inner, "bindings": args, "model": s.using, "span": s.span.to_json()}
        step.update(lowering.target_attrs(s, step["kind"], args))
        body.add_node(inner, **step)
        for name, f in target_fields[1].items():
            body.add_node(output_id(name), kind=NodeKind.OUTPUT.value, name=name, type=f["type"], schema=f["schema"],
                          bindings={"value": {"ref": inner, "path": [name]}}, span=s.span.to_json())
        rebuild_edges(body)
        return body

    # -- runtime ----------------------------------------------------------------------------
    def execute(self, node: dict, inputs: dict[str, Any]) -> Execution:
        var = node["item"]
        shared = {k: v for k, v in inputs.items() if k != var}
        results = yield RunBody(node, [{**shared, var: item} for item in inputs[var]])
        return {name: [r[name] for r in results] for name in node["outputs"]}

    # -- artifact ---------------------------------------------------------------------------
    def load(self, n: dict, d: dict, where: str, io: Any) -> None:
        io.require(io.is_str(n["target"]) and io.is_str(n["item"]), where, "target and item are names")
        io.require(n["item"] in d["inputs"], f"{where}/item", "the loop variable is one of the node's inputs")
        io.require(d["inputs"][n["item"]]["schema"].get("type") == "array", f"{where}/item",
                   "the loop variable is bound to a list")
        body = io.body_from_json(n["body"], f"{where}/body", io_models=d)
        io.require(set(body.graph["inputs"]) == set(d["inputs"]), f"{where}/body/inputs",
                   "the body's inputs are the node's inputs")
        io.require(list(body.graph["outputs"]) == list(d["outputs"]), f"{where}/body/outputs",
                   "the body's outputs are the node's outputs")
        d.update(target=n["target"], item=n["item"], body=body)

    def label(self, nid: str, d: dict) -> str:
        outs = ", ".join(f"{n}: {f['type']}" for n, f in d.get("outputs", {}).items())
        model = f" using {d['model']}" if d.get("model") else ""
        return f"{nid} = map {d.get('target')} for {d.get('item')}{model} -> ({outs})"


KIND = Map()
