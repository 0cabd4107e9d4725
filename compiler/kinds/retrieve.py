"""`retrieve`: the k passages of a declared retriever's corpus nearest to a query
(`ctx = retrieve wiki(query: q.query, k: 3)`), with their ids and scores."""

from __future__ import annotations

from typing import Any

from lmpc.compiler import ast
from lmpc.compiler.diagnostics import did_you_mean
from lmpc.compiler.kinds.base import Execution, Retrieve as RetrieveRequest, StepKind, Target
from lmpc.compiler.types import FLOAT, INT, STR, ListT, OptT, describe, to_schema

DEFAULT_K = 3
INPUTS = {"query": STR, "k": OptT(INT)}
OUTPUTS = {"passages": ListT(STR), "ids": ListT(STR), "scores": ListT(FLOAT)}


def _field(t) -> dict:
    return {"type": describe(t), "schema": to_schema(t), "description": None}


class Retrieve(StepKind):
    name = "retrieve"
    doc = "the k passages of a declared retriever's corpus nearest to a query"
    targets = ("retriever",)
    artifact_keys = ("step", "model", "inputs", "outputs", "bindings", "retriever", "span")
    artifact_required = ("retriever",)

    def check(self, ctx, s) -> None:
        super().check(ctx, s)
        if s.using is not None:
            ctx.report("bad-using", s.using_span, "a `retrieve` step searches an index, not a model",
                       "remove `using` (the retriever's `embedder:` chooses the embedder)")
        for kw in s.args:
            if kw.name == "k":
                v = kw.value
                if not (isinstance(v, ast.Literal) and isinstance(v.value, int) and not isinstance(v.value, bool)
                        and v.value > 0):
                    ctx.report("bad-retrieve-k", v.span, "`k` is a positive whole number written in the file",
                               f"e.g. `k: {DEFAULT_K}` (how many passages to return)")

    def retriever_target(self, ctx, s) -> Target | None:
        if s.target not in ctx.retrievers:
            if s.target not in ctx.suppressed:
                ctx.report("unknown-retriever", s.target_span, f"no retriever named `{s.target}`",
                           did_you_mean(s.target, list(ctx.retrievers))
                           or 'declare one: `retriever NAME = index(corpus: "passages.jsonl")`')
            return None
        return Target("retriever", s.target, dict(INPUTS), dict(OUTPUTS))

    def lower(self, s, spec, lowering) -> dict[str, Any]:
        return {"retriever": dict(spec),
                "inputs": {n: _field(t) for n, t in INPUTS.items()},
                "outputs": {n: _field(t) for n, t in OUTPUTS.items()}}

    def execute(self, node: dict, inputs: dict[str, Any]) -> Execution:
        k = inputs.get("k")
        hits = yield RetrieveRequest(node, inputs["query"], DEFAULT_K if k is None else int(k))
        return {"passages": [h["text"] for h in hits], "ids": [h["id"] for h in hits],
                "scores": [h["score"] for h in hits]}

    def load(self, n: dict, d: dict, where: str, io: Any) -> None:
        r = n["retriever"]
        io.require(isinstance(r, dict) and all(isinstance(r.get(k), str) for k in ("name", "corpus", "text", "id",
                                                                                   "mode", "embedder")),
                   f"{where}/retriever", "the retriever is {name, corpus, text, id, mode, embedder} (strings)")
        d["retriever"] = dict(r)

    def label(self, nid: str, d: dict) -> str:
        r = d.get("retriever", {})
        return f"{nid} = retrieve {r.get('name')} [{r.get('mode')}] -> (passages, ids, scores)"


KIND = Retrieve()
