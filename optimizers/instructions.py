"""Instruction candidates for prompt nodes, written by an LM program (proposer.lmp).

What the proposer sees, for one prompt node (all plain text, written here):
  program:  the pipeline's signature and its steps in run order, each with where its inputs
            come from, the instructed step marked
  step:     the node's input and output fields (types, descriptions) and its current instruction
  data:     a summary of the training data: size, input lengths, the gold label counts or ranges
  examples: up to three demos of the node's set 1 (runs the program got right, and gold rows
            for labels no run got right)
  tip:      one of TIPS, a different one per candidate (MIPRO's "tips")

Candidate 0 is always the node's original instruction. Proposals are cleaned (whitespace,
quotes, a length cap) and deduplicated ignoring case, spacing and punctuation; a proposal
that is empty, too short or a duplicate is dropped, and another sample is drawn (at most
PROPOSAL_ROUNDS rounds), so a node may end with fewer candidates than asked for.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from importlib import resources
from typing import Any

import networkx as nx

from lmpc.compiler.ir import SITE_SEP, expr_text, output_id, parameter_sites, prompt_nodes, site
from lmpc.optimizers.base import OptimizeContext, OptimizerConfigError
from lmpc.runtime.data import Example
from lmpc.runtime.prompt import render_inputs, render_outputs

TIPS = (
    "Be concise: one short, direct sentence.",
    "Be specific about the values each output field may take.",
    "Start with a persona, e.g. 'You are a careful expert ...', then state the task.",
    "Say what in the input the model should pay attention to.",
    "Write it simply, as for a beginner.",
    "Name a common mistake to avoid.",
    "Say why the answer matters: it is used for an important decision.",
    "Be creative: describe the task in a new way.",
)
PROPOSAL_ROUNDS = 2  # draws per wanted candidate, at most (later rounds: a fresh sample)
PROPOSAL_TEMPERATURE = 0.7
INSTRUCTION_MAX_CHARS = 300  # the proposer's output is bounded while decoding
MIN_CHARS = 12
EXAMPLE_MAX_CHARS = 160
SHOWN_EXAMPLES = 3


def proposer_graph(models: dict[str, Any], model: str) -> nx.DiGraph:
    """proposer.lmp's `propose` graph, running on `model` from the optimized program's models."""
    from lmpc.compiler.api import compile_source

    source = resources.files("lmpc.optimizers").joinpath("proposer.lmp").read_text(encoding="utf-8")
    g = compile_source(source, "proposer.lmp").graphs["propose"]
    g.graph["models"] = dict(models)
    g.graph["default_model"] = model
    (nid,) = prompt_nodes(g)
    out = g.nodes[nid]["outputs"]["instruction"]
    out["schema"] = {**out["schema"], "maxLength": INSTRUCTION_MAX_CHARS}
    return g


# -- what the proposer sees ----------------------------------------------------------------

def _expr_text(graph: nx.DiGraph, expr: dict) -> str:
    def name(ref: dict) -> str:
        node = graph.nodes[ref["ref"]]
        base = node["name"] if node["kind"] == "input" else node["step"]
        return ".".join([base, *ref["path"]])

    return expr_text(expr, name)


def describe_program(graph: nx.DiGraph, nid: str) -> str:
    g = graph.graph
    ins = ", ".join(f"{n}: {f['type']}" for n, f in g["inputs"].items())
    outs = ", ".join(f"{n}: {f['type']}" for n, f in g["outputs"].items())
    lines = [f"pipeline {g['name']}({ins}) -> ({outs})"]
    order = g.get("order") or list(nx.topological_sort(graph))
    for n in order:
        d = graph.nodes[n]
        if d["kind"] in ("input", "output"):
            continue
        args = ", ".join(f"{a}: {_expr_text(graph, e)}" for a, e in d["bindings"].items())
        what = d.get("signature") or d.get("fn") or ""
        mark = "   <- the step to instruct" if n == nid.partition(SITE_SEP)[0] else ""  # a map: its body's step
        lines.append(f"  {d['step']} = {d['kind']} {what}({args}){mark}")
    returned = [f"{name}: {_expr_text(graph, graph.nodes[output_id(name)]['bindings']['value'])}"
                for name in g["outputs"] if output_id(name) in graph]
    lines.append("  return " + ", ".join(returned))
    return "\n".join(lines)


def _field_line(name: str, f: dict) -> str:
    kind = " | ".join(json.dumps(v) for v in f["schema"]["enum"]) if "enum" in f["schema"] else f["type"]
    desc = f" - {f['description']}" if f.get("description") else ""
    return f"  {name}: {kind}{desc}"


def describe_step(node: dict) -> str:
    lines = [f"step `{node['step']}` ({node['kind']})", "inputs:"]
    lines += [_field_line(n, f) for n, f in node["inputs"].items()]
    lines.append("outputs:")
    lines += [_field_line(n, f) for n, f in node["outputs"].items()]
    lines.append(f"current instruction: {' '.join(node['instructions'].split())}")
    return "\n".join(lines)


def _short(text: str, limit: int = EXAMPLE_MAX_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def summarize_data(examples: list[Example]) -> str:
    """A few lines a small model can read: size, inputs' lengths, gold label counts or ranges."""
    if not examples:
        return "no training examples"
    lines = [f"{len(examples)} training examples."]
    names = sorted({k for ex in examples for k in ex.inputs})
    for name in names:
        values = [ex.inputs.get(name) for ex in examples if ex.inputs.get(name) is not None]
        texts = [v for v in values if isinstance(v, str)]
        if texts:
            lengths = [len(t) for t in texts]
            lines.append(f"input {name}: text of {min(lengths)}-{max(lengths)} characters "
                         f"(mean {sum(lengths) // len(lengths)}).")
        elif values:
            lines.append(f"input {name}: {type(values[0]).__name__} values.")
    for name in sorted({k for ex in examples for k in ex.gold}):
        values = [ex.gold[name] for ex in examples if name in ex.gold]
        if all(isinstance(v, bool) or isinstance(v, str) and len(v) <= 30 for v in values):
            counts = Counter(str(v) for v in values)
            if len(counts) <= 10:
                shown = ", ".join(f"{k} ({c})" for k, c in sorted(counts.items(), key=lambda kc: (-kc[1], kc[0])))
                lines.append(f"gold {name}: {shown}.")
                continue
        numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if numbers and len(numbers) == len(values):
            lines.append(f"gold {name}: numbers from {min(numbers)} to {max(numbers)}.")
        else:
            lines.append(f"gold {name}: {len(set(map(str, values)))} distinct values, "
                         f"e.g. {_short(str(values[0]), 60)}.")
    return "\n".join(lines)


def describe_examples(node: dict, demos: list[dict[str, Any]]) -> str:
    if not demos:
        return "none yet"
    shown = []
    for d in demos[:SHOWN_EXAMPLES]:
        ins = _short(render_inputs(node, d["inputs"]).replace("\n", "; "))
        shown.append(f"{ins}\n=> {_short(render_outputs(node, d['outputs']), EXAMPLE_MAX_CHARS)}")
    return "\n\n".join(shown)


# -- proposing -----------------------------------------------------------------------------

def clean(text: str) -> str:
    text = " ".join(str(text).split()).strip()
    for q in ('"', "'", "`"):
        if len(text) >= 2 and text[0] == q and text[-1] == q:
            text = text[1:-1].strip()
    if text.lower().startswith("instruction:"):
        text = text[len("instruction:"):].strip()
    return text[:INSTRUCTION_MAX_CHARS]


def dedupe_key(text: str) -> str:
    return re.sub(r"[\W_]+", " ", text.lower()).strip()


def propose_instructions(graph: nx.DiGraph, ctx: OptimizeContext, n: int, proposer: str | None,
                         demos: dict[str, list[dict[str, Any]]], seed: int) -> tuple[dict[str, list[str]], dict]:
    """Up to n instructions per prompt node (the original first). Returns them and a report."""
    models = graph.graph["models"]
    if proposer is not None and proposer not in models:
        raise OptimizerConfigError(f"bayesian: proposer `{proposer}` is not a declared model "
                                   f"(declared: {', '.join(models) or 'none'}); declare it with "
                                   f"`model {proposer} = ...` and pass its name, e.g. `proposer: {proposer}`")
    nodes = parameter_sites(graph)
    out = {nid: [site(graph, nid)["instructions"].strip()] for nid in nodes}
    report: dict[str, Any] = {"calls": 0, "dropped": 0, "model": {}}
    if n <= 1:
        return out, report
    data = summarize_data(ctx.trainset)
    by_model: dict[str, list[str]] = {}
    for nid in nodes:
        name = proposer or site(graph, nid).get("model") or graph.graph["default_model"]
        by_model.setdefault(name, []).append(nid)
        report["model"][nid] = name
    for name, group in sorted(by_model.items()):
        program = ctx.program(proposer_graph(models, name))
        fixed = {nid: {"program": describe_program(graph, nid), "step": describe_step(site(graph, nid)),
                       "data": data, "examples": describe_examples(site(graph, nid), demos.get(nid, []))}
                 for nid in group}
        for r in range(PROPOSAL_ROUNDS):
            # one row per missing candidate; tips rotate, starting where the node's list stands
            rows, owners = [], []
            for nid in group:
                for i in range(len(out[nid]), n):
                    tip = TIPS[(i - 1 + seed) % len(TIPS)]
                    rows.append({**fixed[nid], "tip": tip})
                    owners.append(nid)
            if not rows:
                break
            results = program.batch(rows, sample=r, temperature=PROPOSAL_TEMPERATURE)
            report["calls"] += len(rows)
            for nid, res in zip(owners, results):
                text = clean(res.values["instruction"]) if res.ok and res.values else ""
                keys = {dedupe_key(t) for t in out[nid]}
                if len(text) < MIN_CHARS or dedupe_key(text) in keys or len(out[nid]) >= n:
                    report["dropped"] += 1
                    continue
                out[nid].append(text)
    return out, report
