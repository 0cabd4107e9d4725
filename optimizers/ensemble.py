"""ensemble: one program that runs the best few programs of a search side by side and votes.

`strategy random_search(candidates: 6) then ensemble(size: 3)` takes the `size` best
distinct candidates of the search before it (ctx.previous.candidates, best first) and builds
ONE graph:

- member k (1 = the best-scoring candidate) contributes a copy of each of its step nodes,
  with id and step name suffixed `#k` (`s` -> `s#1`, an inlined `c/s` -> `c/s#k`), its own
  instructions, demos and model; refs between steps are renamed alike, pipeline inputs are
  shared. Every member is suffixed, the best one too, so a trace names the member of each
  call. `#` cannot appear in a step name written in a .lmp file, so ids stay unique.
- each output `out:NAME` becomes `majority([member 1's expression, member 2's, ...])`, the
  builtin reducer: the most common value, a tie going to the value that reached the top count
  first, members counted best first. (With `size: 2` the two always tie when they differ, so
  the result is member 1's answer: use an odd size.) An output that reads no step (the same
  expression in every member) is kept as it is.

Members are independent, so the annotate pass puts each member's steps on the same levels as
the others': llama.cpp runs them back to back, and remote models concurrently.

The ensemble is scored on the dev set (the training set when there is none) and returned if it
scores at least as well as the best member (ties keep the ensemble: it was asked for, and
voting usually steadies unseen inputs), and fits `max_prompt_tokens` when the block sets it;
otherwise the best member is returned unchanged and the report says why (`chosen`, `why`).

The Python counterpart for programs already built, `lmpc.ensemble([...])`, is EnsembleProgram
(runtime/ensemble.py): it runs each Program and votes per output field with the same reducer.
"""

from __future__ import annotations

import copy
from typing import Sequence

import networkx as nx

from lmpc.compiler.options import STRATEGY_OPTIONS
from lmpc.compiler.ir import calls_per_row, map_refs, prompt_nodes, rebuild_edges, step_nodes, to_json
from lmpc.compiler.passes.annotate import annotate_order
from lmpc.optimizers.base import Candidate, OptimizeContext, Optimizer, OptimizerConfigError, OptimizeResult
from lmpc.optimizers.demos import demo_count
from lmpc.runtime.ensemble import REDUCERS, EnsembleProgram, majority, member_id  # noqa: F401 (re-exported)

NEEDS_SEARCH = ("ensemble needs a search strategy before it in the chain, e.g. "
                "`strategy random_search(candidates: 6) then ensemble(size: 3)`")


def _interface(g: nx.DiGraph) -> tuple:
    return (list(g.graph["inputs"]), g.graph["outputs"])


def ensemble_graph(members: Sequence[nx.DiGraph]) -> nx.DiGraph:
    """One graph running every member (best first) and voting on each output with majority()."""
    if not members:
        raise ValueError("an ensemble needs at least one member")
    base = members[0]
    for m in members[1:]:
        if _interface(m) != _interface(base):
            raise OptimizerConfigError("ensemble: the candidates do not share the pipeline's inputs and outputs")
    g = nx.DiGraph()
    g.graph.update(copy.deepcopy({k: v for k, v in base.graph.items() if k != "order"}))
    for nid, d in base.nodes(data=True):
        if d["kind"] == "input":
            g.add_node(nid, **copy.deepcopy(d))
    renames = []
    for k, m in enumerate(members, 1):
        steps = set(step_nodes(m))

        def rename(ref: dict, steps: set = steps, k: int = k) -> dict:
            src = ref["ref"]
            return {"ref": member_id(src, k) if src in steps else src, "path": list(ref["path"])}

        renames.append(rename)
        for nid in sorted(steps):
            d = copy.deepcopy(m.nodes[nid])
            d["bindings"] = {a: map_refs(e, rename) for a, e in d.get("bindings", {}).items()}
            if "when" in d:  # a conditional step's condition reads the member's own steps
                d["when"] = map_refs(d["when"], rename)
            d["step"] = member_id(d["step"], k)
            g.add_node(member_id(nid, k), **d)
    for nid, d in base.nodes(data=True):
        if d["kind"] != "output":
            continue
        votes = [map_refs(m.nodes[nid]["bindings"]["value"], rename) for m, rename in zip(members, renames)]
        same = all(v == votes[0] for v in votes)
        value = votes[0] if same else {"call": "majority", "args": [{"list": votes}]}
        g.add_node(nid, **{**copy.deepcopy(d), "bindings": {"value": value}})
    rebuild_edges(g)
    return annotate_order(g, None)


def _describe(c: Candidate) -> str:
    if "index" in c.about:
        return f"candidate {c.about['index']}" + (f", {c.about['kind']}" if "kind" in c.about else "")
    return ", ".join(f"{k}: {v}" for k, v in c.about.items()) or "a candidate"


class Ensemble(Optimizer):
    name = "ensemble"
    options_spec = STRATEGY_OPTIONS["ensemble"]

    def planned_calls(self, graph: nx.DiGraph, n_train: int, n_dev: int, judge: int = 0,
                      per_row: int | None = None) -> dict[str, int]:
        per_row = calls_per_row(graph) if per_row is None else per_row
        rows = n_dev or n_train
        size = self.options["size"]
        # The build's final evaluation plans n_dev x P calls for one program; an ensemble
        # result needs size x that, so the extra members are planned here (an upper bound).
        # The metric scores each row once, whatever the number of members.
        return {"ensemble": rows * (size * per_row + judge),
                "final evaluation (extra members)": (size - 1) * rows * per_row}

    def _members(self, ctx: OptimizeContext) -> list[Candidate]:
        previous = ctx.previous
        if previous is None or not previous.candidates:
            raise OptimizerConfigError(NEEDS_SEARCH)
        out: list[Candidate] = []
        seen: set[str] = set()
        for c in previous.candidates:  # best first
            key = repr(to_json(c.graph))
            if key not in seen:
                seen.add(key)
                out.append(c)
        if len(out) < 2:
            raise OptimizerConfigError(f"{self.name} needs at least 2 distinct candidates from the strategy before it; "
                                       f"it gave {len(out)} (give the search more candidates, e.g. "
                                       "`random_search(candidates: 6)`, or drop ensemble)")
        return out[:self.options["size"]]

    def compile(self, graph: nx.DiGraph, ctx: OptimizeContext) -> OptimizeResult:
        size = self.options["size"]
        members = self._members(ctx)
        if len(members) < size:
            ctx.log(f"{self.name}: only {len(members)} distinct candidates; the ensemble has {len(members)} members")
        scored_on, examples = ctx.scoring_set()
        joined = ensemble_graph([c.graph for c in members])
        report = ctx.evaluate(joined, examples, label=f"{self.name}: {len(members)} members")
        score, tokens = round(report.score, 6), report.prompt_tokens_per_example
        # about: what the search says a candidate is (random_search: index, kind; bayesian: choices)
        rows = [{"member": k, **copy.deepcopy(c.about), "score": c.score, "demos": demo_count(c.graph)}
                for k, c in enumerate(members, 1)]
        for r, c in zip(rows, members):
            ctx.log(f"{self.name}: member {r['member']} ({_describe(c)}): {scored_on} score {r['score']:.3f}")
        best = members[0]
        budget = ctx.max_prompt_tokens
        why = None
        if score < best.score:
            why = f"the ensemble scored {score:.3f} on {scored_on}, below its best member's {best.score:.3f}"
        elif budget is not None and tokens > budget:
            why = f"the ensemble's prompts average {tokens:g} tokens per example, over max_prompt_tokens {budget}"
        chosen = "ensemble" if why is None else "member 1"
        ctx.log(f"{self.name}: {len(members)} members voting with {self.options['reduce']}: {scored_on} score "
                f"{score:.3f} ({report.errors} errors, {tokens:g} prompt tokens/example); "
                + (f"best member {best.score:.3f}; keeping the ensemble" if why is None
                   else f"keeping member 1 ({_describe(best)}): {why}"))
        out = {"reduce": self.options["reduce"], "size": len(members), "scored_on": scored_on,
               "members": rows, "score": score, "errors": report.errors, "prompt_tokens": tokens,
               "best_member_score": best.score, "chosen": chosen, "calls": report.calls}
        if why is not None:
            out["why"] = why
        result = joined if why is None else copy.deepcopy(best.graph)
        return OptimizeResult(result, out)
