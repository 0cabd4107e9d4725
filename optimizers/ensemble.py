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
below: it runs each Program and votes per output field with the same reducer.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Iterable, Sequence

import networkx as nx

from lmpc.compiler.options import STRATEGY_OPTIONS
from lmpc.compiler.builtins import BUILTINS
from lmpc.compiler.ir import map_refs, prompt_nodes, rebuild_edges, step_nodes, to_json
from lmpc.compiler.passes.annotate import annotate_order
from lmpc.optimizers.base import Candidate, OptimizeContext, Optimizer, OptimizerConfigError, OptimizeResult
from lmpc.optimizers.demos import demo_count
from lmpc.runtime.errors import LmpcRuntimeError

REDUCERS = STRATEGY_OPTIONS["ensemble"]["reduce"].choices  # lmpc.ensemble() accepts the same
NEEDS_SEARCH = ("ensemble needs a search strategy before it in the chain, e.g. "
                "`strategy random_search(candidates: 6) then ensemble(size: 3)`")


def majority(values: list) -> Any:
    """The `majority` builtin's own implementation (one tie rule for graphs and Python)."""
    return BUILTINS["majority"].impl(values)


def member_id(nid: str, k: int) -> str:
    """The id (and step name) of member k's copy of step `nid`."""
    return f"{nid}#{k}"


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

    def planned_calls(self, graph: nx.DiGraph, n_train: int, n_dev: int, judge: int = 0) -> dict[str, int]:
        per_row = len(prompt_nodes(graph))
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


# -- Python: lmpc.ensemble([program, ...]) ---------------------------------------------------


class EnsembleProgram:
    """Programs run side by side on the same rows, voting per output field.

    Each row goes to every member (in the order given: the first breaks ties as the builtin's
    rule says); a member whose run fails casts no vote on that row; a row where every member
    fails is an error. The trace holds every member's events, in member order, each a copy
    whose `step` carries the member's number (`s#1`, `s#2`, as in an ensemble graph) and
    whose `extra["member"]` is that number; `trace_id` still names the logged event.
    """

    def __init__(self, programs: Iterable[Any], reduce: str = "majority"):
        self.programs = list(programs)
        if not self.programs:
            raise LmpcRuntimeError("lmpc.ensemble() needs at least one program (e.g. from lmpc.load)")
        for i, p in enumerate(self.programs, 1):
            if not all(hasattr(p, a) for a in ("batch", "output_fields", "input_fields")):
                raise LmpcRuntimeError(f"lmpc.ensemble(): member {i} is a {type(p).__name__}, not a Program "
                                       "(use lmpc.load, lmpc.compile_file or lmpc.compile_source)")
        if reduce not in REDUCERS:
            raise LmpcRuntimeError(f"lmpc.ensemble(): unknown reducer {reduce!r} (accepted: {', '.join(REDUCERS)})")
        self.reduce = reduce
        first = self.programs[0]
        for i, p in enumerate(self.programs[1:], 2):
            if list(p.output_fields) != list(first.output_fields):
                raise LmpcRuntimeError(
                    f"lmpc.ensemble(): member {i} (`{p.name}`) returns {', '.join(p.output_fields) or 'nothing'}, "
                    f"member 1 (`{first.name}`) returns {', '.join(first.output_fields) or 'nothing'}: "
                    "members must return the same outputs")
            for f, spec in p.output_fields.items():
                if spec["schema"] != first.output_fields[f]["schema"]:
                    raise LmpcRuntimeError(
                        f"lmpc.ensemble(): output `{f}` is {spec['type']} in member {i} (`{p.name}`) but "
                        f"{first.output_fields[f]['type']} in member 1 (`{first.name}`)")

    # What lmpc.evaluate and metrics read off a program (the metric, judges, base_dir) come
    # from member 1.
    _FROM_FIRST = ("graph", "graphs", "base_dir", "optimize_settings", "cache", "trace_log", "budget", "pool")

    def __getattr__(self, name: str) -> Any:
        programs = self.__dict__.get("programs")
        if name in self._FROM_FIRST and programs:
            return getattr(programs[0], name)
        raise AttributeError(name)

    @property
    def name(self) -> str:
        return self.programs[0].name

    @property
    def input_fields(self) -> dict[str, dict]:
        return self.programs[0].input_fields

    @property
    def output_fields(self) -> dict[str, dict]:
        return self.programs[0].output_fields

    def __call__(self, **inputs: Any):
        result = self.batch([inputs])[0]
        if result.error is not None:
            raise result.error
        return result

    def batch(self, rows: Iterable[dict[str, Any]], sample: int = 0, temperature: float | None = None) -> list:
        """Run every member on `rows` (one batch each) and vote; one Result per row."""
        from lmpc.runtime.program import Result

        rows = list(rows)
        runs = [p.batch(rows, sample=sample, temperature=temperature) for p in self.programs]
        out = []
        for i in range(len(rows)):
            trace, ok, failed = [], [], []
            for k, member in enumerate(runs, 1):
                r = member[i]
                trace += [dataclasses.replace(e, step=member_id(e.step, k), extra={**e.extra, "member": k})
                          for e in r.trace]
                (ok if r.error is None else failed).append((k, r))
            if not ok:
                detail = "; ".join(f"member {k}: {r.error}" for k, r in failed)
                error = LmpcRuntimeError(f"row {i}: every member of the ensemble failed ({detail})")
                out.append(Result(None, trace, error, i))
                continue
            values = {f: majority([r.values[f] for _, r in ok]) for f in self.output_fields}
            out.append(Result(values, trace, None, i))
        return out

    def close(self) -> None:
        for p in self.programs:
            p.close()

    def __enter__(self) -> "EnsembleProgram":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
