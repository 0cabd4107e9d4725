"""A pipeline graph in an artifact (format 2): how it is written, and how it is read back.

Three rules make a loaded graph the program that was scored, and keep a tampered one harmless:

- Field order is meaning (prompt order and decoding order), so fields are JSON lists, never
  maps whose key order a JSON tool may change.
- Types are stored, JSON Schemas are not: each field keeps its type in a small JSON form and
  the schema is rebuilt on load by lmpc's own `to_schema`. An artifact cannot bring a `$ref`
  (a download, a local file), a `pattern` (exponential matching) or any keyword lmpc does not emit.
- What can be derived is not stored: edges, run order and levels are rebuilt from the
  bindings on load, by the same passes the compiler runs.

`graph_from_json` checks everything a run relies on (references, fields, bindings, models,
demos, kNN pools) and raises GraphFormatError naming the place; nothing in it runs code.
"""

from __future__ import annotations

import math
from pathlib import PurePosixPath
from typing import Any

import networkx as nx

from lmpc.compiler.builtins import BUILTINS
from lmpc.compiler.operators import ARITY
from lmpc.compiler.check import SECRET_OPTION_NAMES
from lmpc.compiler.options import PROVIDER_OPTIONS, model_option_problems
from lmpc.compiler.ir import WHEN_ARG, NodeKind, input_id, is_step, node_exprs, output_id, rebuild_edges, refs
from lmpc.compiler.kinds import KINDS
from lmpc.compiler.types import (
    ANY, BOOL, FLOAT, INT, STR, AnyT, EnumT, ListT, NeverT, NullT, ObjT, OptT, Prim, Type, from_schema, to_schema,
)

# The deepest type and expression an artifact may hold. Deeper than any .lmp program the
# compiler accepts, shallow enough that nothing recursive on them comes near Python's limit.
MAX_DEPTH = 64
PROVIDERS = tuple(PROVIDER_OPTIONS)  # the model providers lmpc knows, from the one option table
# Node attributes that are derived (rebuilt on load) or that the top level already holds.
_DERIVED = {"level"}
_GRAPH_DERIVED = {"order", "source"}


class GraphFormatError(ValueError):
    """A graph in an artifact that lmpc cannot run as written; `where` is a JSON path."""

    def __init__(self, where: str, message: str):
        super().__init__(f"{where}: {message}")
        self.where = where


# -- types ------------------------------------------------------------------------------------
_PRIMS = {"str": STR, "int": INT, "float": FLOAT, "bool": BOOL, "null": NullT(), "any": ANY, "never": NeverT()}


def type_to_json(t: Type) -> Any:
    if isinstance(t, Prim):
        return t.name
    if isinstance(t, NullT):
        return "null"
    if isinstance(t, NeverT):
        return "never"
    if isinstance(t, AnyT):
        return "any"
    if isinstance(t, ListT):
        return {"list": type_to_json(t.item)}
    if isinstance(t, OptT):
        return {"optional": type_to_json(t.inner)}
    if isinstance(t, EnumT):
        return {"enum": list(t.values)}
    if isinstance(t, ObjT):
        return {"object": [{"name": n, "type": type_to_json(ft)} for n, ft in t.fields]}
    raise AssertionError(t)


def type_from_json(data: Any, where: str, depth: int = 0) -> Type:
    if depth > MAX_DEPTH:
        raise GraphFormatError(where, f"the type is nested more than {MAX_DEPTH} deep")
    if isinstance(data, str):
        if data not in _PRIMS:
            raise GraphFormatError(where, f"unknown type `{data}` (one of {', '.join(_PRIMS)})")
        return _PRIMS[data]
    if not isinstance(data, dict) or len(data) != 1:
        raise GraphFormatError(where, "a type is a name or an object with one key: list, optional, enum, object")
    (kind, value), = data.items()
    if kind == "list":
        return ListT(type_from_json(value, f"{where}/list", depth + 1))
    if kind == "optional":
        return OptT(type_from_json(value, f"{where}/optional", depth + 1))
    if kind == "enum":
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value) \
                or len(set(value)) != len(value):
            raise GraphFormatError(f"{where}/enum", "an enum is a non-empty list of distinct strings")
        return EnumT(tuple(value))
    if kind == "object":
        if not isinstance(value, list):
            raise GraphFormatError(f"{where}/object", "an object type is a list of {name, type} fields")
        fields = []
        for i, f in enumerate(value):
            at = f"{where}/object/{i}"
            if not isinstance(f, dict) or set(f) != {"name", "type"} or not isinstance(f["name"], str):
                raise GraphFormatError(at, "an object field is {\"name\": ..., \"type\": ...}")
            fields.append((f["name"], type_from_json(f["type"], f"{at}/type", depth + 1)))
        if len({n for n, _ in fields}) != len(fields):
            raise GraphFormatError(f"{where}/object", "duplicate field names")
        return ObjT(tuple(fields))
    raise GraphFormatError(where, f"unknown type form `{kind}` (list, optional, enum or object)")


# -- fields -----------------------------------------------------------------------------------
def fields_to_json(fields: dict[str, dict]) -> list[dict]:
    return [{"name": name, "type": f["type"], "t": type_to_json(from_schema(f["schema"])),
             **({"description": f["description"]} if f.get("description") is not None else {})}
            for name, f in fields.items()]


def fields_from_json(data: Any, where: str) -> dict[str, dict]:
    if not isinstance(data, list):
        raise GraphFormatError(where, "fields are a list of {name, type, t[, description]}")
    out: dict[str, dict] = {}
    for i, f in enumerate(data):
        at = f"{where}/{i}"
        if not isinstance(f, dict) or not {"name", "type", "t"} <= set(f) <= {"name", "type", "t", "description"}:
            raise GraphFormatError(at, "a field is {\"name\", \"type\", \"t\"} and an optional \"description\"")
        name, shown, desc = f["name"], f["type"], f.get("description")
        if not isinstance(name, str) or not name or not isinstance(shown, str) \
                or not (desc is None or isinstance(desc, str)):
            raise GraphFormatError(at, "a field's name and type are strings, its description a string")
        if name in out:
            raise GraphFormatError(at, f"duplicate field `{name}`")
        out[name] = {"type": shown, "schema": to_schema(type_from_json(f["t"], f"{at}/t")), "description": desc}
    return out


# -- writing ----------------------------------------------------------------------------------
# The attributes each kind of node stores, in order: a step kind declares its own
# (compiler/kinds/), so a new kind adds a new `kind` value and the format stays version 2.
_NODE_KEYS = {
    NodeKind.INPUT.value: ("name", "type", "schema", "span"),
    NodeKind.OUTPUT.value: ("name", "type", "schema", "bindings", "span"),
    # `checks` (compiler/constraints.py) on the kinds a check may retry
    **{name: kind.artifact_keys + (("checks",) if kind.accepts_feedback else ()) for name, kind in KINDS.items()},
}
_STEP_COMMON = ("step", "inputs", "outputs", "bindings")  # every step kind has these
_STEP_WHEN = ("when",)  # any step kind may be conditional: its condition, an EXPR
# a finetuned prompt node's LoRA adapter {file, sha256} (runtime/models/adapters.py): format 3
_STEP_ADAPTER = ("adapter",)


def _node_to_json(nid: str, d: dict) -> dict:
    kind = d["kind"]
    known = _NODE_KEYS.get(kind)
    if known is None:
        raise AssertionError(f"node `{nid}` of kind `{kind}` has no artifact form")
    if kind in KINDS:
        known = tuple(known) + _STEP_WHEN + (_STEP_ADAPTER if KINDS[kind].prompt else ())
    unknown = set(d) - set(known) - _DERIVED - {"kind"}
    if unknown:  # an attribute the artifact would drop: the artifact would not be the program
        raise AssertionError(f"node `{nid}` has attributes the artifact does not carry: {sorted(unknown)}")
    out: dict[str, Any] = {"id": nid, "kind": kind}
    for key in known:
        if key not in d:
            continue
        value = d[key]
        if key in ("inputs", "outputs"):
            value = fields_to_json(value)
        elif key == "schema":
            key, value = "t", type_to_json(from_schema(value))
        elif key == "body":
            value = body_to_json(value)
        out[key] = value
    return out


def body_to_json(g: nx.DiGraph) -> dict[str, Any]:
    """A node's body (a sub-graph): a graph without models (the outer graph's hold)."""
    a = g.graph
    unknown = set(a) - {"name", "inputs", "outputs", "span"} - _GRAPH_DERIVED
    if unknown:
        raise AssertionError(f"body `{a.get('name')}` has attributes the artifact does not carry: {sorted(unknown)}")
    return {"name": a["name"], "inputs": fields_to_json(a["inputs"]), "outputs": fields_to_json(a["outputs"]),
            "span": a.get("span"), "nodes": [_node_to_json(n, g.nodes[n]) for n in sorted(g.nodes)]}


def graph_to_json(g: nx.DiGraph) -> dict[str, Any]:
    a = g.graph
    unknown = set(a) - {"name", "inputs", "outputs", "span", "models", "default_model"} - _GRAPH_DERIVED
    if unknown:
        raise AssertionError(f"graph `{a.get('name')}` has attributes the artifact does not carry: {sorted(unknown)}")
    return {
        "name": a["name"],
        "inputs": fields_to_json(a["inputs"]),
        "outputs": fields_to_json(a["outputs"]),
        "span": a.get("span"),
        "models": {n: a["models"][n] for n in sorted(a["models"])},
        "default_model": a["default_model"],
        "nodes": [_node_to_json(n, g.nodes[n]) for n in sorted(g.nodes)],
    }


# -- reading ----------------------------------------------------------------------------------
def _require(cond: bool, where: str, message: str) -> None:
    if not cond:
        raise GraphFormatError(where, message)


def _is_str(v: Any) -> bool:
    return isinstance(v, str) and v != ""


def _check_expr(e: Any, where: str, depth: int = 0) -> None:
    _require(depth <= MAX_DEPTH, where, f"the expression is nested more than {MAX_DEPTH} deep")
    _require(isinstance(e, dict) and len(e) in (1, 2), where,
             "an expression is {ref, path}, {lit}, {list}, {call, args} or {op, args}")
    if "ref" in e:
        _require(set(e) == {"ref", "path"} and _is_str(e["ref"]) and isinstance(e["path"], list)
                 and all(_is_str(p) for p in e["path"]), where, "a reference is {\"ref\": NODE, \"path\": [FIELD, ...]}")
    elif "lit" in e:
        _require(len(e) == 1, where, "a literal is {\"lit\": VALUE}")
    elif "list" in e:
        _require(len(e) == 1 and isinstance(e["list"], list), where, "a list expression is {\"list\": [EXPR, ...]}")
        for i, item in enumerate(e["list"]):
            _check_expr(item, f"{where}/list/{i}", depth + 1)
    elif "call" in e:
        _require(set(e) == {"call", "args"} and e["call"] in BUILTINS and isinstance(e["args"], list), where,
                 f"a builtin call is {{\"call\": NAME, \"args\": [...]}} with NAME one of {', '.join(sorted(BUILTINS))}")
        for i, item in enumerate(e["args"]):
            _check_expr(item, f"{where}/args/{i}", depth + 1)
    elif "op" in e:
        _require(set(e) == {"op", "args"} and isinstance(e["op"], str) and e["op"] in ARITY, where,
                 f"an operator is {{\"op\": OP, \"args\": [...]}} with OP one of {', '.join(ARITY)}")
        _require(isinstance(e["args"], list) and len(e["args"]) == ARITY[e["op"]], where,
                 f"`{e['op']}` takes {ARITY[e['op']]} operand{'s' if ARITY[e['op']] > 1 else ''}")
        for i, item in enumerate(e["args"]):
            _check_expr(item, f"{where}/args/{i}", depth + 1)
    else:
        raise GraphFormatError(where, "an expression is {ref, path}, {lit}, {list}, {call, args} or {op, args}")


def safe_relative_file(ref: str) -> bool:
    """A path inside the artifact's folder: relative, no `..`, no backslashes or drive letters."""
    if "\\" in ref or ":" in ref:
        return False
    p = PurePosixPath(ref)
    return bool(ref) and not p.is_absolute() and ".." not in p.parts


def _check_fn(fn: Any, where: str) -> None:
    _require(isinstance(fn, str) and fn.count(":") == 1, where, "a function reference is \"file.py:function\"")
    file, _, name = fn.partition(":")
    _require(file.endswith(".py") and name.isidentifier(), where, "a function reference is \"file.py:function\"")
    _require(safe_relative_file(file), where,
             f"`{file}` is outside the artifact's folder: Python files must be beside the artifact "
             "(a relative path without `..`)")


def _check_demos(demos: Any, where: str) -> None:
    _require(isinstance(demos, list), where, "demos are a list")
    for i, d in enumerate(demos):
        at = f"{where}/{i}"
        _require(isinstance(d, dict) and {"inputs", "outputs"} <= set(d) <= {"inputs", "outputs", "source", "kind"}
                 and isinstance(d["inputs"], dict) and isinstance(d["outputs"], dict)
                 and all(isinstance(d.get(k, ""), str) for k in ("source", "kind")),
                 at, "a demo is {\"inputs\": {...}, \"outputs\": {...}} with optional \"source\" and \"kind\" strings")


def _check_knn(knn: Any, where: str) -> None:
    _require(isinstance(knn, dict) and {"k", "embedder", "pool", "vectors"} <= set(knn)
             <= {"k", "embedder", "identity", "pool", "vectors"}, where,
             "knn is {k, embedder, identity, pool, vectors}")
    _require(isinstance(knn["k"], int) and not isinstance(knn["k"], bool) and knn["k"] >= 1, f"{where}/k",
             "k is a positive integer")
    _require(_is_str(knn["embedder"]) and isinstance(knn.get("identity", ""), str), f"{where}/embedder",
             "the embedder is a name")
    _check_demos(knn["pool"], f"{where}/pool")
    vectors = knn["vectors"]
    _require(isinstance(vectors, list) and len(vectors) == len(knn["pool"]), f"{where}/vectors",
             "one vector per pool demo")
    dims = {len(v) if isinstance(v, list) else -1 for v in vectors}
    _require(len(dims) <= 1 and -1 not in dims and 0 not in dims, f"{where}/vectors",
             "vectors are non-empty lists of numbers, all of one length")
    for i, v in enumerate(vectors):
        _require(all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v),
                 f"{where}/vectors/{i}", "a vector holds finite numbers")


def _check_models(models: Any, where: str) -> None:
    _require(isinstance(models, dict) and models, where, "models is a non-empty map of name -> {provider, options}")
    for name, spec in models.items():
        at = f"{where}/{name}"
        _require(isinstance(spec, dict) and set(spec) == {"provider", "options"} and spec["provider"] in PROVIDERS
                 and isinstance(spec["options"], dict), at,
                 f"a model is {{\"provider\": {' or '.join(PROVIDERS)}, \"options\": {{...}}}}")
        for key, value in spec["options"].items():
            # the value is never echoed: it may be a secret
            _require(key.lower() not in SECRET_OPTION_NAMES, f"{at}/options/{key}",
                     "artifacts never carry secrets; a remote model names its key's variable with api_key_env")
            env_ref = isinstance(value, dict) and set(value) == {"env"} and _is_str(value["env"])
            _require(value is None or isinstance(value, (str, int, float, bool)) or env_ref, f"{at}/options/{key}",
                     "an option is a string, number, boolean or {\"env\": NAME}")
        problems = model_option_problems(name, spec["options"])  # what `lmpc check` refuses
        _require(not problems, f"{at}/options", "; ".join(problems))


def _node_from_json(n: Any, where: str, models: dict) -> tuple[str, dict]:
    _require(isinstance(n, dict) and _is_str(n.get("id")) and n.get("kind") in _NODE_KEYS, where,
             f"a node has an \"id\" and a \"kind\" ({', '.join(_NODE_KEYS)}); a kind this lmpc does not know "
             "needs a newer lmpc")
    kind = n["kind"]
    allowed = set(_NODE_KEYS[kind]) - {"schema"} | {"id", "kind"} | ({"t"} if kind in ("input", "output") else set(_STEP_WHEN))
    if kind in KINDS and KINDS[kind].prompt:
        allowed |= set(_STEP_ADAPTER)
    extra = set(n) - allowed
    _require(not extra, where, f"unknown attribute(s) for a {kind} node: {', '.join(sorted(extra))}")
    d: dict[str, Any] = {"kind": kind}
    if "span" in n and n["span"] is not None:
        s = n["span"]
        _require(isinstance(s, dict) and _is_str(s.get("file")) and all(
            isinstance(s.get(k), int) and not isinstance(s.get(k), bool) for k in ("line", "col")),
            f"{where}/span", "a span is {file, line, col, ...}")
        d["span"] = s
    if kind in ("input", "output"):
        _require(_is_str(n.get("name")) and isinstance(n.get("type"), str) and "t" in n, where,
                 f"a{'n' if kind == 'input' else ''} {kind} node has a name, a type and its \"t\"")
        want = (input_id if kind == "input" else output_id)(n["name"])
        _require(n["id"] == want, where, f"the {kind} `{n['name']}` must have the id `{want}`")
        d.update(name=n["name"], type=n["type"], schema=to_schema(type_from_json(n["t"], f"{where}/t")))
        if kind == "output":
            b = n.get("bindings")
            _require(isinstance(b, dict) and set(b) == {"value"}, where, "an output node binds exactly `value`")
            _check_expr(b["value"], f"{where}/bindings/value")
            d["bindings"] = b
        return n["id"], d
    kind_def = KINDS[kind]
    missing = (set(_STEP_COMMON) | set(kind_def.artifact_required)) - set(n)
    _require(not missing, where, f"a {kind} node needs {', '.join(sorted(missing))}")
    _require(_is_str(n["step"]), where, "step is a name")
    d.update(step=n["step"], model=n.get("model"),
             inputs=fields_from_json(n["inputs"], f"{where}/inputs"),
             outputs=fields_from_json(n["outputs"], f"{where}/outputs"))
    _require(d["model"] is None or d["model"] in models, f"{where}/model",
             f"no model named `{d['model']}` in the graph's models")
    b = n["bindings"]
    _require(isinstance(b, dict) and set(b) == set(d["inputs"]), f"{where}/bindings",
             f"a step binds exactly its inputs ({', '.join(d['inputs']) or 'none'})")
    for arg, e in b.items():
        _check_expr(e, f"{where}/bindings/{arg}")
    d["bindings"] = b
    kind_def.load(n, d, where, _Checks(models))  # the kind's own attributes
    if "when" in n:  # a conditional step (its refs are checked with the bindings')
        _check_expr(n["when"], f"{where}/when")
        d["when"] = n["when"]
    if "checks" in n:
        d["checks"] = _load_checks(n["checks"], f"{where}/checks")
    if "adapter" in n:
        a = n["adapter"]
        _require(isinstance(a, dict) and set(a) == {"file", "sha256"} and _is_str(a["file"])
                 and safe_relative_file(a["file"]) and isinstance(a["sha256"], str)
                 and len(a["sha256"]) == 64 and all(c in "0123456789abcdef" for c in a["sha256"]),
                 f"{where}/adapter", "an adapter is {\"file\": a path inside the artifact's folder, "
                 "\"sha256\": 64 lowercase hex digits}")
        d["adapter"] = a
    return n["id"], d


class _Checks:
    """What a kind's `load` uses to check its attributes (every check raises GraphFormatError)."""

    def __init__(self, models: dict):
        self.models = models

    require = staticmethod(_require)
    is_str = staticmethod(_is_str)
    check_demos = staticmethod(_check_demos)
    check_knn = staticmethod(_check_knn)
    check_fn = staticmethod(_check_fn)
    check_expr = staticmethod(_check_expr)

    def body_from_json(self, data: Any, where: str, io_models: Any = None) -> nx.DiGraph:
        return body_from_json(data, where, self.models)


_CHECK_KEYS = {"id", "cond", "text", "message", "soft", "retries", "show_previous", "span"}


def _load_checks(checks: Any, where: str) -> list[dict]:
    from lmpc.compiler.constraints import MAX_CHECK_RETRIES

    _require(isinstance(checks, list) and checks, where, "checks are a non-empty list")
    for i, c in enumerate(checks):
        at = f"{where}/{i}"
        _require(isinstance(c, dict) and set(c) == _CHECK_KEYS, at, f"a check has exactly {', '.join(sorted(_CHECK_KEYS))}")
        _require(all(_is_str(c[k]) for k in ("id", "text", "message"))
                 and all(isinstance(c[k], bool) for k in ("soft", "show_previous")), at,
                 "a check's id, text and message are strings, soft and show_previous bools")
        r = c["retries"]
        _require(isinstance(r, int) and not isinstance(r, bool) and 0 <= r <= MAX_CHECK_RETRIES, f"{at}/retries",
                 f"retries is a whole number from 0 to {MAX_CHECK_RETRIES}")
        _require(c["span"] is None or isinstance(c["span"], dict), f"{at}/span", "a span is an object")
        _check_expr(c["cond"], f"{at}/cond")
    return checks


def _check_check_refs(g: nx.DiGraph, where: str) -> None:
    """A check reads its own node's outputs, and inputs or steps that run before it."""
    for nid, d in g.nodes(data=True):
        for i, c in enumerate(d.get("checks", ())):
            before = nx.ancestors(g, nid)
            for r in refs(c["cond"]):
                src = g.nodes.get(r["ref"])
                at = f"{where}/nodes/{nid}/checks/{i}/cond"
                _require(src is not None and (r["ref"] == nid or r["ref"] in before), at,
                         f"refers to `{r['ref']}`, which is neither the checked step nor a node it depends on")
                if src["kind"] != "input":
                    _require(bool(r["path"]) and r["path"][0] in src["outputs"], at,
                             f"refers to `{r['ref']}.{'.'.join(r['path'])}`, which `{r['ref']}` does not output")


def _check_refs(g: nx.DiGraph, where: str) -> None:
    for nid, d in g.nodes(data=True):
        for arg, e in node_exprs(d):
            for r in refs(e):
                at = f"{where}/nodes/{nid}/" + ("when" if arg == WHEN_ARG else f"bindings/{arg}")
                src = g.nodes.get(r["ref"])
                _require(src is not None, at, f"refers to `{r['ref']}`, which is not a node of the graph")
                _require(src["kind"] != "output", at, f"refers to the output node `{r['ref']}`")
                if src["kind"] != "input":
                    _require(bool(r["path"]) and r["path"][0] in src["outputs"], at,
                             f"refers to `{r['ref']}.{'.'.join(r['path'])}`, which `{r['ref']}` does not output")


def graph_from_json(data: Any, where: str) -> nx.DiGraph:
    """The runnable graph of an artifact's graph, or GraphFormatError naming the first problem."""
    keys = {"name", "inputs", "outputs", "span", "models", "default_model", "nodes"}
    _require(isinstance(data, dict) and set(data) == keys, where, f"a graph has exactly the keys {', '.join(sorted(keys))}")
    _require(_is_str(data["name"]), f"{where}/name", "a graph has a name")
    _require(data["span"] is None or isinstance(data["span"], dict), f"{where}/span", "a span is an object")
    _check_models(data["models"], f"{where}/models")
    _require(data["default_model"] in data["models"], f"{where}/default_model", "the default model must be declared")
    g = _nodes_from_json(data, where, data["models"])
    g.graph.update(models=data["models"], default_model=data["default_model"])
    return g


def body_from_json(data: Any, where: str, models: dict, depth: int = 0) -> nx.DiGraph:
    """A node's body: the same checks as a pipeline's graph, with the outer graph's models."""
    keys = {"name", "inputs", "outputs", "span", "nodes"}
    _require(isinstance(data, dict) and set(data) == keys, where, f"a body has exactly the keys {', '.join(sorted(keys))}")
    _require(_is_str(data["name"]), f"{where}/name", "a body has a name")
    _require(data["span"] is None or isinstance(data["span"], dict), f"{where}/span", "a span is an object")
    _require(where.count("/body") <= MAX_DEPTH, where, f"bodies are nested more than {MAX_DEPTH} deep")
    return _nodes_from_json(data, where, models)


def _nodes_from_json(data: dict, where: str, models: dict) -> nx.DiGraph:
    from lmpc.compiler.passes.annotate import annotate_order

    g = nx.DiGraph()
    g.graph.update(name=data["name"], inputs=fields_from_json(data["inputs"], f"{where}/inputs"),
                   outputs=fields_from_json(data["outputs"], f"{where}/outputs"), span=data["span"])
    _require(isinstance(data["nodes"], list), f"{where}/nodes", "nodes are a list")
    for i, n in enumerate(data["nodes"]):
        nid, d = _node_from_json(n, f"{where}/nodes/{i}", models)
        _require(nid not in g, f"{where}/nodes/{i}", f"duplicate node id `{nid}`")
        g.add_node(nid, **d)
    for kind, declared in (("input", g.graph["inputs"]), ("output", g.graph["outputs"])):
        have = {d["name"] for _, d in g.nodes(data=True) if d["kind"] == kind}
        _require(have == set(declared), f"{where}/{kind}s",
                 f"the graph's {kind}s ({', '.join(declared) or 'none'}) and its {kind} nodes "
                 f"({', '.join(sorted(have)) or 'none'}) differ")
    steps = [d["step"] for _, d in g.nodes(data=True) if is_step(d)]
    _require(len(steps) == len(set(steps)), f"{where}/nodes", "two nodes run the same step")
    _check_refs(g, where)
    rebuild_edges(g)
    if not nx.is_directed_acyclic_graph(g):
        cycle = " -> ".join(u for u, _ in nx.find_cycle(g))
        raise GraphFormatError(f"{where}/nodes", f"the steps form a cycle ({cycle})")
    _check_check_refs(g, where)
    return annotate_order(g, None)
