"""Demos shared by the few-shot optimizers: labeled demos from gold data, and selection.

A demo is `{"inputs": {arg: value}, "outputs": {field: value}, "source": str, "kind":
"labeled" | "bootstrapped"}`; runtime/prompt.render_messages renders it as one user/assistant
turn pair, outputs in the node's field order, leaving out fields a demo lacks (a labeled
demo of a chain_of_thought node has no `reasoning`).

Selection: candidates are put in a seeded order that does not depend on the order of the
training list (sorted by source, then shuffled by a per-node generator), and then chosen
with *label coverage*: round-robin over the distinct values of the node's enum and bool
outputs, so one frequent label cannot fill every slot (on tiny models, demos that all carry
one label make the model predict that label for almost every input; see ARCHITECTURE.md).
"""

from __future__ import annotations

import copy
import json
import random
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import networkx as nx

from lmpc.compiler.ir import SITE_SEP, NodeKind, input_id, parameter_sites, refs, site
from lmpc.compiler.kinds import KINDS
from lmpc.runtime.data import Example
from lmpc.runtime.values import evaluate, get_path, validation_error

def copy_graph(graph: nx.DiGraph) -> nx.DiGraph:
    """A deep copy: optimizers never mutate the graph they are given."""
    return copy.deepcopy(graph)


def rng_for(*parts: Any) -> random.Random:
    """A generator seeded by its parts' text (str seeds hash with SHA-512: stable across runs)."""
    return random.Random("lmpc:" + ":".join(str(p) for p in parts))


def answer_fields(node: dict) -> list[str]:
    """The outputs a labeled demo must supply: all but those the kind adds (chain_of_thought's
    `reasoning`)."""
    generated = KINDS[node["kind"]].generated_outputs(node)
    return [n for n in node["outputs"] if n not in generated]


def _is_label_schema(schema: dict) -> bool:
    if "enum" in schema or schema.get("type") == "boolean":
        return True
    # an optional enum/bool: {"anyOf": [{...}, {"type": "null"}]}
    return any(_is_label_schema(s) for s in schema.get("anyOf", ()) if s.get("type") != "null")


def label_fields(node: dict) -> list[str]:
    """The node's enum and bool outputs: their values are the labels selection covers."""
    return [n for n in answer_fields(node) if _is_label_schema(node["outputs"][n]["schema"])]


def label_of(node: dict, outputs: dict[str, Any]) -> str:
    return json.dumps([outputs.get(n) for n in label_fields(node)])


# -- labeled demos -----------------------------------------------------------------------------

@dataclass
class LabelPlan:
    """How to build a node's labeled demo from an example, or why it cannot be built."""

    node: str
    outputs: dict[str, str] = field(default_factory=dict)  # node output -> pipeline output
    reason: str | None = None  # set when the node cannot take labeled demos

    @property
    def ok(self) -> bool:
        return self.reason is None


def label_plan(graph: nx.DiGraph, nid: str) -> LabelPlan:
    """A node takes labeled demos when its inputs are computed from pipeline inputs and
    literals only, and each of its answer fields is returned as is by a pipeline output."""
    node = site(graph, nid)
    if SITE_SEP in nid:
        return LabelPlan(nid, reason="it runs inside a map, per item: the data has no label per item")
    if KINDS[node["kind"]].takes_tools:  # react: a gold answer without a trajectory teaches skipping the tools
        return LabelPlan(nid, reason="its demos are whole trajectories (thoughts, tool calls, observations); "
                                     "gold outputs alone would teach it to answer without its tools")
    for arg, expr in node["bindings"].items():
        for r in refs(expr):
            if graph.nodes[r["ref"]]["kind"] != NodeKind.INPUT:
                return LabelPlan(nid, reason=f"its input `{arg}` comes from step `{r['ref']}`, not from the "
                                             f"pipeline's inputs")
    returned: dict[str, str] = {}
    for oid in sorted(n for n, d in graph.nodes(data=True) if d["kind"] == NodeKind.OUTPUT):
        value = graph.nodes[oid]["bindings"]["value"]
        if value.get("ref") == nid and len(value.get("path", ())) == 1:
            returned.setdefault(value["path"][0], graph.nodes[oid]["name"])
    plan = LabelPlan(nid)
    for name in answer_fields(node):
        if name not in returned:
            return LabelPlan(nid, reason=f"its output `{name}` is not returned as a pipeline output, so the "
                                         f"data has no label for it")
        plan.outputs[name] = returned[name]
    return plan


def labeled_demo(graph: nx.DiGraph, plan: LabelPlan, example: Example) -> dict[str, Any] | None:
    """The node's demo for `example` from its gold values; None when the example lacks gold
    for one of the node's answer fields (or its gold does not fit the field's type)."""
    node = site(graph, plan.node)
    outputs = {}
    for name, pipeline_output in plan.outputs.items():
        if pipeline_output not in example.gold:
            return None
        value = example.gold[pipeline_output]
        if validation_error(value, node["outputs"][name]["schema"]) is not None:
            return None
        outputs[name] = value
    values = {input_id(k): v for k, v in example.inputs.items()}
    try:
        inputs = {arg: evaluate(expr, lambda ref, path: get_path(values[ref], path))
                  for arg, expr in node["bindings"].items()}
    except (KeyError, TypeError, ValueError):  # an input the example lacks, a builtin that rejects it
        return None
    for arg, value in inputs.items():
        if validation_error(value, node["inputs"][arg]["schema"]) is not None:
            return None
    return {"inputs": inputs, "outputs": outputs, "source": example.source, "kind": "labeled"}


def labeled_candidates(graph: nx.DiGraph, plan: LabelPlan, examples: Iterable[Example]) -> list[dict[str, Any]]:
    demos = (labeled_demo(graph, plan, ex) for ex in examples)
    return [d for d in demos if d is not None]


# -- selection ---------------------------------------------------------------------------------

def _key(demo: dict[str, Any]) -> tuple[str, str]:
    return demo["source"], json.dumps(demo["inputs"], sort_keys=True, default=str)


def seeded_order(demos: Sequence[dict[str, Any]], rng: random.Random) -> list[dict[str, Any]]:
    """Sorted by source (so the training list's order does not matter), then shuffled."""
    out = sorted(demos, key=_key)
    rng.shuffle(out)
    return out


def dedupe(demos: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep the first demo of each distinct input (an intermediate node often sees repeats)."""
    seen: set[str] = set()
    out = []
    for d in demos:
        k = json.dumps(d["inputs"], sort_keys=True, default=str)
        if k not in seen:
            seen.add(k)
            out.append(d)
    return out


def cover_labels(node: dict, ordered: Sequence[dict[str, Any]], k: int) -> list[dict[str, Any]]:
    """Up to k demos from `ordered`, round-robin over the labels (in order of first
    appearance), each label's demos in their given order. Without label fields: the first k."""
    if k <= 0:
        return []
    if not label_fields(node):
        return list(ordered[:k])
    groups: dict[str, list[dict[str, Any]]] = {}
    for d in ordered:
        groups.setdefault(label_of(node, d["outputs"]), []).append(d)
    queues = list(groups.values())
    out: list[dict[str, Any]] = []
    depth = 0
    while len(out) < k and any(depth < len(q) for q in queues):
        for q in queues:
            if depth < len(q) and len(out) < k:
                out.append(q[depth])
        depth += 1
    return out


def select(node: dict, candidates: Sequence[dict[str, Any]], k: int, rng: random.Random) -> list[dict[str, Any]]:
    """Seeded order, one demo per distinct input, label coverage, at most k."""
    return cover_labels(node, dedupe(seeded_order(candidates, rng)), k)


def demo_count(graph: nx.DiGraph) -> int:
    return sum(len(site(graph, n).get("demos", [])) for n in parameter_sites(graph))
