"""Demos that carry passages (an input holding a list of texts, e.g. a `retrieve` step's
`passages`), trimmed so the program's prompts fit `max_prompt_tokens`.

Why here, at selection time: the trimmed demo is what the strategy stores in the graph, so the
program a build scores renders the very prompts the artifact renders later (nothing is cut at
run time). Everything is deterministic: the same demos and budget give the same cuts.

How the budget is shared. `max_prompt_tokens` is a mean per example, all prompt nodes summed
(OptimizeContext). Each prompt node's own cost (its system message and a typical input: the
mean of the teacher's inputs for it, untrimmed, as the row's own input will be at run time) is
taken first; demos without passages next, as they are; what is left is shared equally among
the demos with passages. A demo over its share loses passages from the end of its lists (the
last ranked first, one list at a time, the longest first; a passage that holds the demo's
answer text goes last; at least one stays; the passage that would go is cut instead when
cutting it is enough), then the longest passage is cut at a word boundary and marked with
TRIM_MARKER. A demo that cannot fit even with every passage cut to MIN_PASSAGE_CHARS is
dropped, and the share of the others is worked out again. knn_few_shot's pools (fit_pools):
a row shows k pool demos, any k, so each pool demo fits the share of one of k shown demos
(one that cannot leaves the pool).

Tokens are estimated from characters with the ratio the teacher's own prompts showed (their
characters over the prompt tokens the model reported, chat template included, so the estimate
errs long), else DEFAULT_CHARS_PER_TOKEN.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from lmpc.compiler.ir import parameter_sites, site
from lmpc.runtime.prompt import render_inputs, render_outputs, system_message

TRIM_MARKER = " [...]"
MIN_PASSAGE_CHARS = 40  # below this a passage says nothing: drop the demo instead
TURN_TOKENS = 10  # chat-template tokens around one user/assistant turn pair (SmolLM2: 10)
DEFAULT_CHARS_PER_TOKEN = 3.0  # no measurement: errs towards cutting more


@dataclass
class PromptScale:
    """What a teacher run measured for sharing the budget."""

    chars_per_token: float = DEFAULT_CHARS_PER_TOKEN
    input_chars: dict[str, float] = field(default_factory=dict)  # site -> mean rendered input length

    def tokens(self, chars: float) -> int:
        return math.ceil(chars / self.chars_per_token)


def measure(events_by_site: dict[str, list[Any]], graph: nx.DiGraph) -> PromptScale:
    """The scale from the teacher's trace events (every call, passing or not), per site."""
    chars = tokens = 0
    inputs: dict[str, float] = {}
    for sid, events in events_by_site.items():
        node = site(graph, sid)
        lengths = [len(render_inputs(node, e.inputs)) for e in events if e.inputs is not None]
        if lengths:
            inputs[sid] = sum(lengths) / len(lengths)
        for e in events:
            if e.messages and e.prompt_tokens:
                chars += sum(len(m.get("content") or "") for m in e.messages)
                tokens += e.prompt_tokens
    cpt = chars / tokens if tokens and chars else DEFAULT_CHARS_PER_TOKEN
    return PromptScale(round(cpt, 4), inputs)


def passage_fields(demo: dict[str, Any]) -> list[str]:
    """The demo's inputs that hold a non-empty list of texts."""
    return [name for name, v in demo["inputs"].items()
            if isinstance(v, list) and v and all(isinstance(p, str) for p in v)]


def demo_chars(node: dict, demo: dict[str, Any]) -> int:
    return len(render_inputs(node, demo["inputs"])) + len(render_outputs(node, demo["outputs"]))


def _answers(demo: dict[str, Any]) -> list[str]:
    return [v.lower() for v in demo["outputs"].values() if isinstance(v, str) and len(v.strip()) > 1]


def _cut(text: str, length: int) -> str:
    """text shortened to at most `length` characters (marker included, never under
    MIN_PASSAGE_CHARS of text), at a word boundary, marked."""
    keep = max(MIN_PASSAGE_CHARS, length - len(TRIM_MARKER))
    head = text[:keep]
    space = head.rfind(" ")
    if space > keep // 2:
        head = head[:space]
    return head.rstrip() + TRIM_MARKER


def trim_demo(node: dict, demo: dict[str, Any], max_chars: float) -> dict[str, Any] | None:
    """A copy of `demo` whose passages fit max_chars rendered characters (the demo itself when
    it fits already); None when it cannot fit."""
    if demo_chars(node, demo) <= max_chars:
        return demo
    out = copy.deepcopy(demo)
    names = passage_fields(out)
    answers = _answers(out)

    def holds_answer(p: str) -> bool:
        return any(a in p.lower() for a in answers)

    # 1. fewer passages: the longest list first, its last passage that does not hold the answer
    #    (cut instead when cutting it alone is enough and leaves MIN_PASSAGE_CHARS of it)
    while (excess := demo_chars(node, out) - max_chars) > 0:
        lists = [n for n in names if len(out["inputs"][n]) > 1]
        if not lists:
            break
        name = max(lists, key=lambda n: (len(out["inputs"][n]), -names.index(n)))
        items = out["inputs"][name]
        plain = [i for i, p in enumerate(items) if not holds_answer(p)]
        i = plain[-1] if plain else len(items) - 1
        if len(items[i]) - math.ceil(excess) - len(TRIM_MARKER) >= MIN_PASSAGE_CHARS:
            items[i] = _cut(items[i], len(items[i]) - math.ceil(excess))
            break
        del items[i]
    # 2. shorter passages: the longest first, cut by what is still over (marker included)
    while (excess := demo_chars(node, out) - max_chars) > 0:
        spots = [(len(p), -names.index(n), -i, n, i) for n in names for i, p in enumerate(out["inputs"][n])
                 if len(p.removesuffix(TRIM_MARKER)) > MIN_PASSAGE_CHARS]
        if not spots:
            return None
        _, _, _, name, i = max(spots)
        p = out["inputs"][name][i]
        base = p.removesuffix(TRIM_MARKER)
        shorter = _cut(base, len(p) - math.ceil(excess))
        if len(shorter) >= len(p):
            return None
        out["inputs"][name][i] = shorter
    return out


def _slack(graph: nx.DiGraph, scale: PromptScale, budget: int,
           demos_of: dict[str, list[dict[str, Any]]]) -> tuple[float, list[tuple[str, int]]]:
    """What the budget leaves for the demos with passages once every node's own part and the
    demos without passages are paid, and where those demos are (site, index in demos_of)."""
    slack = float(budget)
    trimmable: list[tuple[str, int]] = []
    for sid in parameter_sites(graph):
        node = site(graph, sid)
        slack -= scale.tokens(len(system_message(node)) + scale.input_chars.get(sid, 0)) + TURN_TOKENS // 2
        for i, d in enumerate(demos_of.get(sid, node.get("demos", []))):
            if passage_fields(d):
                trimmable.append((sid, i))
            else:
                slack -= scale.tokens(demo_chars(node, d)) + TURN_TOKENS
    return slack, trimmable


def _max_chars(slack: float, demos: int, scale: PromptScale) -> float:
    share = slack / demos if demos else 0
    return (share - TURN_TOKENS) * scale.chars_per_token


def fit_passages(graph: nx.DiGraph, scale: PromptScale, budget: int | None) -> dict[str, dict[str, list[str]]]:
    """Trim (in place) the demos with passages of every prompt node of `graph` so its prompts fit
    `budget` mean tokens per example; returns per node the sources of the demos `trimmed` and
    `dropped`. No budget, or no demo with passages: nothing changes."""
    if budget is None:
        return {}
    sites = parameter_sites(graph)
    slack, trimmable = _slack(graph, scale, budget, {})
    if not trimmable:
        return {}
    dropped: set[tuple[str, int]] = set()
    while True:
        kept = [t for t in trimmable if t not in dropped]
        max_chars = _max_chars(slack, len(kept), scale)
        fitted = {(sid, i): trim_demo(site(graph, sid), site(graph, sid)["demos"][i], max_chars) for sid, i in kept}
        failed = [t for t in kept if fitted[t] is None]
        if not failed:
            break
        dropped.add(failed[-1])  # the last one that cannot fit: the others' share grows
    report: dict[str, dict[str, list[str]]] = {}
    for sid in sites:
        node = site(graph, sid)
        demos = []
        for i, d in enumerate(node.get("demos", [])):
            if (sid, i) in dropped:
                report.setdefault(sid, {}).setdefault("dropped", []).append(d["source"])
                continue
            new = fitted.get((sid, i), d)
            if new is not d:
                report.setdefault(sid, {}).setdefault("trimmed", []).append(d["source"])
            demos.append(new)
        node["demos"] = demos
    return report


def fit_pools(graph: nx.DiGraph, pools: dict[str, list[dict[str, Any]]], k: int, scale: PromptScale,
              budget: int | None) -> tuple[dict[str, list[dict[str, Any]]], dict[str, dict[str, list[str]]]]:
    """knn_few_shot: each node in `pools` shows k of its pool per row, whichever k, so every pool
    demo with passages is trimmed to the share of one of k shown demos; one that cannot fit
    leaves the pool. Returns the pools and, per node, the `trimmed` and `dropped` sources."""
    if budget is None:
        return pools, {}
    slack, trimmable = _slack(graph, scale, budget, {sid: pool[:k] for sid, pool in pools.items()})
    if not trimmable:
        return pools, {}
    max_chars = _max_chars(slack, len(trimmable), scale)
    out: dict[str, list[dict[str, Any]]] = {}
    report: dict[str, dict[str, list[str]]] = {}
    for sid, pool in pools.items():
        node = site(graph, sid)
        out[sid] = []
        for d in pool:
            new = trim_demo(node, d, max_chars) if passage_fields(d) else d
            if new is None:
                report.setdefault(sid, {}).setdefault("dropped", []).append(d["source"])
                continue
            if new is not d:
                report.setdefault(sid, {}).setdefault("trimmed", []).append(d["source"])
            out[sid].append(new)
    return out, report
