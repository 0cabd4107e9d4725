"""Readable renderings of a pipeline graph: Mermaid, Graphviz dot, JSON."""

from __future__ import annotations

import json

import networkx as nx

from lmpc.compiler.ir import to_json


def _label(nid: str, d: dict) -> str:
    kind = d["kind"]
    if kind in ("input", "output"):
        return f"{kind} {d['name']}: {d['type']}"
    outs = ", ".join(f"{n}: {f['type']}" for n, f in d.get("outputs", {}).items())
    target = d.get("signature") or d.get("pipeline")
    model = f" using {d['model']}" if d.get("model") else ""
    demos = f" [{len(d['demos'])} demos]" if d.get("demos") else ""
    return f"{nid} = {kind} {target}{model}{demos} -> ({outs})"


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


def to_mermaid(g: nx.DiGraph) -> str:
    esc = lambda s: s.replace('"', "#quot;")  # noqa: E731
    lines = ["flowchart TD", f"  %% pipeline {g.graph['name']}"]
    for nid in g.graph.get("order", g.nodes):
        d = g.nodes[nid]
        shape = ("([", "])") if d["kind"] in ("input", "output") else ("[", "]")
        lines.append(f'  {_mermaid_id(nid)}{shape[0]}"{esc(_label(nid, d))}"{shape[1]}')
    for u, v, d in sorted(g.edges(data=True)):
        lines.append(f'  {_mermaid_id(u)} -->|"{esc(_edge_label(d))}"| {_mermaid_id(v)}')
    return "\n".join(lines) + "\n"


def to_dot(g: nx.DiGraph) -> str:
    q = lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'  # noqa: E731
    lines = [f"digraph {q(g.graph['name'])} {{", "  rankdir=TB;", "  node [fontname=Helvetica];"]
    for nid in g.graph.get("order", g.nodes):
        d = g.nodes[nid]
        shape = "ellipse" if d["kind"] in ("input", "output") else "box"
        lines.append(f"  {q(nid)} [shape={shape}, label={q(_label(nid, d))}];")
    for u, v, d in sorted(g.edges(data=True)):
        lines.append(f"  {q(u)} -> {q(v)} [label={q(_edge_label(d))}];")
    return "\n".join(lines + ["}"]) + "\n"


def to_json_text(g: nx.DiGraph) -> str:
    # not sort_keys: fields and object types read in their declared (prompt and decoding) order
    return json.dumps(to_json(g), indent=2) + "\n"


FORMATS = {"mermaid": to_mermaid, "dot": to_dot, "json": to_json_text}
