"""Readable renderings of a pipeline graph: Mermaid, Graphviz dot, JSON."""

from __future__ import annotations

import json

import networkx as nx

from lmpc.compiler.ir import NodeKind, expr_text, site_id, to_json
from lmpc.compiler.kinds import KINDS


def _label(nid: str, d: dict) -> str:
    kind = d["kind"]
    if kind in (NodeKind.INPUT, NodeKind.OUTPUT):
        return f"{kind} {d['name']}: {d['type']}"
    label = KINDS[kind].label(nid, d)  # each kind says how it reads
    if "when" in d:  # a conditional step: drawn dashed, its condition in the label
        label += f" when {expr_text(d['when'])}"
    return label


def _body_title(d: dict) -> str:
    """What a node's body is: run per item (map), or best_of's judge run per sample."""
    return "the judge of each sample" if d["kind"] == "best_of" else "each item"


def _check_label(c: dict) -> str:
    mode = "soft" if c["soft"] else "hard"
    return f"check {c['text']} ({mode}, retries {c['retries']}) else {c['message']}"


def _edge_label(d: dict) -> str:
    return ", ".join(
        (".".join(u["path"]) + " → " if u["path"] else "") + f"{u['arg']}: {u['type']}" for u in d["uses"]
    )


def _mermaid_id(nid: str) -> str:
    """A Mermaid-safe id, one per node id: `_` is written `__` and any other character that is
    not an ASCII letter or digit `_HEX_`, so `k/c` (an inlined step) and `k_c` stay apart."""
    def part(c: str) -> str:
        if c.isascii() and c.isalnum():
            return c
        return "__" if c == "_" else f"_{ord(c):x}_"
    return "n_" + "".join(part(c) for c in nid)


def _mermaid_nodes(g: nx.DiGraph, prefix: str, indent: str) -> list[str]:
    esc = lambda s: s.replace('"', "#quot;")  # noqa: E731
    lines = []
    for nid in g.graph.get("order", g.nodes):
        d = g.nodes[nid]
        shape = ("([", "])") if d["kind"] in (NodeKind.INPUT, NodeKind.OUTPUT) else ("[", "]")
        lines.append(f'{indent}{_mermaid_id(prefix + nid)}{shape[0]}"{esc(_label(nid, d))}"{shape[1]}')
        if "when" in d:
            lines.append(f"{indent}class {_mermaid_id(prefix + nid)} conditional")
        for i, c in enumerate(d.get("checks", ())):  # a check: a hexagon on a dotted edge from its step
            cid = _mermaid_id(f"{prefix}{nid}#check{i}")
            lines.append(f'{indent}{cid}{{{{"{esc(_check_label(c))}"}}}}')
            lines.append(f'{indent}{_mermaid_id(prefix + nid)} -.-> {cid}')
        if "body" in d:  # a node's body: a subgraph, run once per item
            sub = site_id(prefix + nid, "")
            lines.append(f'{indent}subgraph {_mermaid_id(sub)}["{esc(f"{nid}: {_body_title(d)}")}"]')
            lines += _mermaid_nodes(d["body"], sub, indent + "  ")
            lines += _mermaid_edges(d["body"], sub, indent + "  ")
            lines.append(f"{indent}end")
    return lines


def _mermaid_edges(g: nx.DiGraph, prefix: str, indent: str) -> list[str]:
    esc = lambda s: s.replace('"', "#quot;")  # noqa: E731
    return [f'{indent}{_mermaid_id(prefix + u)} -->|"{esc(_edge_label(d))}"| {_mermaid_id(prefix + v)}'
            for u, v, d in sorted(g.edges(data=True))]


def to_mermaid(g: nx.DiGraph) -> str:
    lines = ["flowchart TD", f"  %% pipeline {g.graph['name']}"]
    lines += _mermaid_nodes(g, "", "  ") + _mermaid_edges(g, "", "  ")
    if any(line.lstrip().startswith("class ") for line in lines):
        lines.append("  classDef conditional stroke-dasharray: 5 5")
    return "\n".join(lines) + "\n"


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _dot_lines(g: nx.DiGraph, prefix: str, indent: str) -> list[str]:
    lines = []
    for nid in g.graph.get("order", g.nodes):
        d = g.nodes[nid]
        shape = "ellipse" if d["kind"] in (NodeKind.INPUT, NodeKind.OUTPUT) else "box"
        style = ", style=dashed" if "when" in d else ""  # a conditional step
        lines.append(f"{indent}{_q(prefix + nid)} [shape={shape}{style}, label={_q(_label(nid, d))}];")
        for i, c in enumerate(d.get("checks", ())):
            cid = _q(f"{prefix}{nid}#check{i}")
            lines.append(f"{indent}{cid} [shape=hexagon, label={_q(_check_label(c))}];")
            lines.append(f"{indent}{_q(prefix + nid)} -> {cid} [style=dashed];")
        if "body" in d:  # a node's body: a cluster, run once per item
            sub = site_id(prefix + nid, "")
            lines.append(f"{indent}subgraph {_q('cluster_' + sub)} {{")
            lines.append(f"{indent}  label={_q(f'{nid}: {_body_title(d)}')};")
            lines += _dot_lines(d["body"], sub, indent + "  ")
            lines.append(f"{indent}}}")
    for u, v, d in sorted(g.edges(data=True)):
        lines.append(f"{indent}{_q(prefix + u)} -> {_q(prefix + v)} [label={_q(_edge_label(d))}];")
    return lines


def to_dot(g: nx.DiGraph) -> str:
    lines = [f"digraph {_q(g.graph['name'])} {{", "  rankdir=TB;", "  node [fontname=Helvetica];"]
    return "\n".join(lines + _dot_lines(g, "", "  ") + ["}"]) + "\n"


def to_json_text(g: nx.DiGraph) -> str:
    # not sort_keys: fields and object types read in their declared (prompt and decoding) order
    return json.dumps(to_json(g), indent=2) + "\n"


FORMATS = {"mermaid": to_mermaid, "dot": to_dot, "json": to_json_text}
