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
        d["retriever"] = load_spec(n["retriever"], f"{where}/retriever", io)

    def label(self, nid: str, d: dict) -> str:
        r = d.get("retriever", {})
        how = f"qdrant {r.get('collection')}" if r.get("kind") == "qdrant" else r.get("mode")
        return f"{nid} = retrieve {r.get('name')} [{how}] -> (passages, ids, scores)"


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _opt_str(v: Any) -> bool:
    return v is None or isinstance(v, str)


_KEY_OK = {  # an artifact's retriever key -> whether its value is of the right type
    **dict.fromkeys(("kind", "name", "text", "id", "mode", "embedder", "collection"), lambda v: isinstance(v, str)),
    **dict.fromkeys(("corpus", "path", "api_key_env"), _opt_str),
    "url": lambda v: _opt_str(v) or (isinstance(v, dict) and set(v) == {"env"} and isinstance(v["env"], str)),
    "chunk": lambda v: v is None or (_int(v) and v > 0),
    "overlap": lambda v: _int(v) and v >= 0,
    "skip_bad_rows": lambda v: isinstance(v, bool),
    "timeout": lambda v: v is None or ((_int(v) or isinstance(v, float)) and v > 0),
}


def load_spec(r: Any, where: str, io: Any) -> dict:
    """An artifact's retriever spec, checked key by key like `lmpc check` checks the
    declaration: exactly the keys of its kind, each of its type (an artifact built before
    chunking and kinds existed has only the index's first six keys)."""
    from lmpc.compiler.retrievers import MODES, OPTIONS, default_spec

    io.require(isinstance(r, dict), where, "the retriever is an object")
    kind = r.get("kind", "index")
    io.require(isinstance(kind, str) and kind in OPTIONS, f"{where}/kind", f"the retriever kind is one of {', '.join(OPTIONS)}")
    spec = default_spec(str(r.get("name")), kind)
    legacy = "kind" not in r
    keys = set(spec) - ({"kind", "chunk", "overlap", "skip_bad_rows"} if legacy else set())
    io.require(set(r) == keys, where, f"a {kind} retriever is {{{', '.join(sorted(keys))}}}")
    for key, value in r.items():
        io.require(_KEY_OK[key](value) and (key != "corpus" or kind == "qdrant" or value is not None),
                   f"{where}/{key}", f"`{key}` has the wrong type")
    io.require(r["mode"] in MODES and (kind == "index" or r["mode"] == "dense"), f"{where}/mode",
               f"the mode is one of {', '.join(MODES)}")
    if kind == "qdrant":
        io.require((r["url"] is None) != (r["path"] is None), where, "a qdrant retriever has exactly one of url, path")
    return {**spec, **r}  # a legacy spec gains the index's defaults (kind, no chunking, strict rows)


KIND = Retrieve()
