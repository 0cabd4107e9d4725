"""`best_of`: sample a signature n times and keep the output a reward scores highest.

    b = best_of Answer(question: q) n 4 reward len(b.answer) <= 60 threshold 1
    c = best_of Answer(question: q) n 3 reward "rewards.py:score"

The reward is an expression over the step's own outputs (`b.answer`; a bool counts 1 or 0,
a number as it is), a Python function `"file.py:function"` named in the file (called
with the step's inputs and outputs as keyword arguments, returning a bool or a number; the
same trust rules as `call` steps), or a judge pipeline by name (`reward judge`: the node's
body, run on each sample with the step's inputs and outputs by name; its first output). Samples are drawn one by one: the first at the model's
own settings (so `n 1` is `predict`), the others at SAMPLE_TEMPERATURE with their own seed
(each its own cache entry). Sampling stops early once a sample scores `threshold` or more;
ties keep the earlier sample. Every sample is traced with its reward; bootstrapping takes
the kept one only. The node is a prompt node like predict (instructions and demos tuned).
"""

from __future__ import annotations

import math
from typing import Any

import networkx as nx

from lmpc.compiler import ast, operators
from lmpc.compiler.ir import NodeKind, input_id, map_refs, output_id, rebuild_edges, refs
from lmpc.compiler.kinds.base import Annotated, CallFunction, Execution, Generate, RunBody
from lmpc.compiler.kinds.predict import Predict
from lmpc.compiler.optimize_spec import FUNCTION_REF
from lmpc.compiler.types import AnyT, OptT, Prim, describe

MAX_SAMPLES = 20
SAMPLE_TEMPERATURE = 0.7  # samples after the first: the first is the model's own answer
SAMPLE = "sample"  # how a reward expression's refs name the sample being scored
OPTIONS = ("samples", "reward", "threshold")
WORDS = {"samples": "n", "reward": "reward", "threshold": "threshold"}


def reject_options(ctx, s: ast.Step) -> None:
    """`n`, `reward` and `threshold` belong to best_of steps only (any other kind, or a call)."""
    for opt in OPTIONS:
        e = getattr(s, opt, None)
        if e is not None:
            what = f"a `{s.module}` step" if s.module else "a pipeline call"
            ctx.report("bad-best-of", e.span, f"{what} takes no `{WORDS[opt]}`",
                       f"write `{s.name} = best_of {s.target}(...) n 4 reward ...` to keep the best of n samples")


def _literal_number(e: Any) -> float | None:
    if isinstance(e, ast.Literal) and isinstance(e.value, (int, float)) and not isinstance(e.value, bool):
        return float(e.value)
    return None


class BestOf(Predict):
    name = "best_of"
    doc = "a signature sampled n times; the output a reward scores highest is kept"
    artifact_keys = Predict.artifact_keys[:-1] + ("n", "reward", "threshold", "body", "span")
    artifact_required = Predict.artifact_required + ("n", "reward")

    # -- checker ----------------------------------------------------------------------------
    def check(self, ctx, s) -> None:
        super().check(ctx, s)
        n = _literal_number(s.samples)
        if s.samples is None:
            ctx.report("bad-best-of", s.target_span, "a `best_of` step says how many samples to draw",
                       f"e.g. `{s.name} = best_of {s.target}(...) n 4 reward ...`")
        elif n is None or n != int(n) or not 1 <= n <= MAX_SAMPLES:
            ctx.report("bad-best-of", s.samples.span, f"`n` is a whole number from 1 to {MAX_SAMPLES} written in the file",
                       "e.g. `n 4`")
        if s.reward is None:
            ctx.report("bad-best-of", s.target_span, "a `best_of` step says what scores a sample",
                       f"e.g. `reward len({s.name}.answer) <= 60`, or `reward \"rewards.py:score\"`")
        if s.threshold is not None and (_literal_number(s.threshold) is None
                                        or not math.isfinite(_literal_number(s.threshold))):
            ctx.report("bad-best-of", s.threshold.span, "`threshold` is a number written in the file",
                       "sampling stops once a sample's reward reaches it, e.g. `threshold 1`")

    def check_reward(self, ctx, exprs, s: ast.Step) -> None:
        """Type the reward: a function reference, or a bool or number over the step's own outputs."""
        r = s.reward
        if r is None:
            return
        if isinstance(r, ast.Literal) and isinstance(r.value, str):
            if not FUNCTION_REF.match(r.value):
                ctx.report("bad-best-of", r.span, f'"{r.value}" is not a `file.py:function` reference',
                           'e.g. reward "rewards.py:score" (the path is relative to the .lmp file)')
            return
        if isinstance(r, ast.Name) and r.name in ctx.pipelines and r.name not in exprs.steps \
                and r.name not in exprs.info.inputs:
            self._check_judge(ctx, exprs.info, s, r)
            return
        reads: set[str] = set()
        errors = len(ctx.diagnostics)
        t = exprs.type_of(r, reads)
        if len(ctx.diagnostics) > errors:
            return
        others = sorted(reads - {s.name})
        if others:
            ctx.report("bad-best-of", r.span, f"a reward reads the step's own outputs (`{s.name}.field`), not "
                       + ", ".join(f"`{o}`" for o in others),
                       "pass other values to the step as arguments, or score with a Python function")
        elif s.name not in reads:
            ctx.report("bad-best-of", r.span, "this reward reads none of the step's outputs",
                       f"score the sample, e.g. `reward len({s.name}.answer) <= 60`")
        elif not isinstance(t, AnyT) and t not in (Prim("bool"), Prim("int"), Prim("float")):
            ctx.report("bad-best-of", r.span, f"a reward is a bool or a number, but this is {describe(t)}",
                       f"e.g. `reward len({s.name}.answer) <= 60`")

    def _check_judge(self, ctx, info, s: ast.Step, r: ast.Name) -> None:
        """A judge pipeline: its inputs come from the step's inputs and outputs by name; its
        first output is the score."""
        judge = ctx.pipelines[r.name]
        info.calls.add(r.name)  # a judge calling this pipeline back is a cycle
        available = {**info.step_inputs.get(s.name, {}), **info.step_outputs.get(s.name, {})}
        missing = [n for n, t in judge.inputs.items() if n not in available and not isinstance(t, OptT)]
        if missing:
            ctx.report("bad-best-of", r.span, f"the judge pipeline `{r.name}` takes `{missing[0]}`, which is neither "
                       f"an input nor an output of `{s.name}`",
                       "available: " + ", ".join(available) if available else None)
        first = next(iter(judge.outputs.values()), None)
        if first is None or (not isinstance(first, AnyT) and first not in (Prim("bool"), Prim("int"), Prim("float"))):
            ctx.report("bad-best-of", r.span, f"the judge pipeline `{r.name}`'s first output is the reward: a bool or a "
                       f"number, not {describe(first) if first is not None else 'nothing'}",
                       "make its first output e.g. `good: bool` or `score: float`")

    # -- lowering ---------------------------------------------------------------------------
    def lower(self, s, sig, lowering) -> dict[str, Any]:
        attrs = super().lower(s, sig, lowering)
        r = s.reward
        if isinstance(r, ast.Literal) and isinstance(r.value, str):
            reward = {"fn": r.value}
        elif isinstance(r, ast.Name) and r.name in lowering.program.pipelines and r.name not in lowering.info.inputs:
            reward = {"judge": r.name}
            attrs["body"] = _judge_body(s, r.name, lowering)
        else:
            def own(ref: dict) -> dict:
                return {"ref": SAMPLE, "path": list(ref["path"])} if ref["ref"] == s.name else ref

            reward = {"expr": map_refs(lowering.expr(r), own)}
        threshold = _literal_number(s.threshold)
        attrs.update(n=int(_literal_number(s.samples)), reward=reward, threshold=threshold)
        return attrs

    # -- runtime ----------------------------------------------------------------------------
    def max_calls(self, node: dict) -> int:
        """n samples; a judge's calls are counted once in its body (ir.calls_per_row): n - 1 more."""
        from lmpc.compiler.ir import calls_per_row

        judge = calls_per_row(node["body"]) if "body" in node else 0
        return int(node["n"]) * (1 + judge) - judge

    def execute(self, node: dict, inputs: dict[str, Any]) -> Execution:
        best, best_score, best_i = None, -math.inf, 0
        notes: dict[int, dict] = {}
        served = 0  # requests that make trace events, in order
        scores: list[float] = []
        for i in range(int(node["n"])):
            sample = node if i == 0 else {**node, "draw": {"sample": i, "temperature": SAMPLE_TEMPERATURE}}
            out = yield Generate(sample, inputs)
            at = served
            served += 1
            if "fn" in node["reward"]:
                value = (yield CallFunction(_reward_node(node), {**inputs, **out}))["reward"]
                served += 1
            elif "judge" in node["reward"]:
                given = {**inputs, **out}  # the sample wins over an input of the same name
                row = {name: given.get(name) for name in node["body"].graph["inputs"]}
                (judged,) = yield RunBody(node, [row], first=i)
                value = _judge_value(next(iter(judged.values())), node["reward"]["judge"])
            else:
                value = _evaluate(node["reward"]["expr"], out)
            score = _score(value)
            scores.append(score)
            notes[at] = {"best_of": {"sample": i, "reward": score}}
            if score > best_score:
                best, best_score, best_i = out, score, i
            if node.get("threshold") is not None and score >= node["threshold"]:
                break
        for note in notes.values():
            note["best_of"]["chosen"] = note["best_of"]["sample"] == best_i
        return Annotated(best, notes)

    # -- artifact ---------------------------------------------------------------------------
    def load(self, n: dict, d: dict, where: str, io: Any) -> None:
        super().load(n, d, where, io)
        k = n["n"]
        io.require(isinstance(k, int) and not isinstance(k, bool) and 1 <= k <= MAX_SAMPLES, f"{where}/n",
                   f"n is a whole number from 1 to {MAX_SAMPLES}")
        t = n.get("threshold")
        io.require(t is None or (isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t)),
                   f"{where}/threshold", "threshold is a number or null")
        r = n["reward"]
        io.require(isinstance(r, dict) and len(r) == 1 and set(r) <= {"expr", "fn", "judge"}, f"{where}/reward",
                   'a reward is {"expr": EXPR}, {"fn": "file.py:function"} or {"judge": PIPELINE}')
        io.require(("judge" in r) == ("body" in n), f"{where}/body", "a judge reward, and only one, has a body")
        if "fn" in r:
            io.check_fn(r["fn"], f"{where}/reward/fn")
        elif "judge" in r:
            io.require(io.is_str(r["judge"]), f"{where}/reward/judge", "the judge is a pipeline name")
            body = io.body_from_json(n["body"], f"{where}/body")
            io.require(len(body.graph["outputs"]) >= 1, f"{where}/body/outputs", "the judge has an output (the reward)")
            d["body"] = body
        else:
            io.check_expr(r["expr"], f"{where}/reward/expr")
            for ref in refs(r["expr"]):
                io.require(ref["ref"] == SAMPLE and bool(ref["path"]) and ref["path"][0] in d["outputs"],
                           f"{where}/reward/expr", f"a reward reads the sample's outputs ({SAMPLE}.FIELD)")
        d.update(n=k, reward=r, threshold=t)

    def label(self, nid: str, d: dict) -> str:
        r = d.get("reward", {})
        scored = f'"{r["fn"]}"' if "fn" in r else f"judge `{r['judge']}`" if "judge" in r else "an expression"
        until = f", until {d['threshold']}" if d.get("threshold") is not None else ""
        return super().label(nid, d) + f" [best of {d.get('n')} by {scored}{until}]"


def _reward_node(node: dict) -> dict:
    """The CallFunction node of a Python reward: the step's inputs and outputs in, `reward` out."""
    return {"step": node["step"], "kind": "call", "fn": node["reward"]["fn"], "span": node.get("span"),
            "outputs": {"reward": {"type": "float", "schema": {"type": ["number", "boolean"]}, "description": None}}}


def _judge_body(s: ast.Step, judge: str, lowering) -> nx.DiGraph:
    """The judge pipeline as the node's body: its inputs, a call of it (inlined by the passes),
    its outputs. Its prompt nodes are parameter sites like the program's own."""
    info = lowering.program.pipelines[judge]
    fields = {n: lowering.field(t) for n, t in info.inputs.items()}
    outputs = {n: lowering.field(t) for n, t in info.outputs.items()}
    span = s.span.to_json()
    body = nx.DiGraph()
    body.graph.update(name=f"{s.name}[*]", inputs=fields, outputs=outputs, span=span)
    for name, f in fields.items():
        body.add_node(input_id(name), kind=NodeKind.INPUT.value, name=name, type=f["type"], schema=f["schema"], span=span)
    body.add_node(judge, kind=NodeKind.PIPELINE.value, step=judge, pipeline=judge, inputs=fields, outputs=outputs,
                  bindings={n: {"ref": input_id(n), "path": []} for n in fields}, model=s.using, span=span)
    for name, f in outputs.items():
        body.add_node(output_id(name), kind=NodeKind.OUTPUT.value, name=name, type=f["type"], schema=f["schema"],
                      bindings={"value": {"ref": judge, "path": [name]}}, span=span)
    rebuild_edges(body)
    return body


def _judge_value(value: Any, judge: str) -> Any:
    if isinstance(value, str) and value.strip().lower() in ("yes", "true", "no", "false"):
        return value.strip().lower() in ("yes", "true")
    return value


def _evaluate(e: dict, sample: dict[str, Any]) -> Any:
    """A reward expression on one sample's outputs (its refs name SAMPLE)."""

    def read(_ref: str, path: list) -> Any:
        value: Any = sample
        for name in path:
            value = None if value is None else value[name]
        return value

    return operators.evaluate_expr(e, read)


def _score(value: Any) -> float:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)) and math.isfinite(float(value)):
        return float(value)
    raise ValueError(f"the reward gave {value!r}; a reward is a bool or a finite number")


KIND = BestOf()
