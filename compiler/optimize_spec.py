"""What an `optimize` block may say: its entries, the metrics and the strategies.

The compiler checks names and arguments here; the runtime and optimizers implement them.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from lmpc.compiler import ast
from lmpc.compiler.diagnostics import did_you_mean
from lmpc.compiler.options import ENTRY_VALUES, METRIC_OPTIONS, MODEL_NAME, STRATEGY_OPTIONS, Option

if TYPE_CHECKING:
    from lmpc.compiler.check import Context
    from lmpc.compiler.checked import PipelineInfo

FUNCTION_REF = re.compile(r"^[\w./-]+\.py:[A-Za-z_]\w*$")
ENTRIES = ("train", "dev", "metric", "strategy", "seed", "max_calls", "max_prompt_tokens")

# metric name -> keyword options it takes. Positional arguments name pipeline outputs.
METRICS: dict[str, tuple[str, ...]] = {name: tuple(opts) for name, opts in METRIC_OPTIONS.items()}

# strategy name -> keyword options it takes (their types and ranges: options.STRATEGY_OPTIONS)
STRATEGIES: dict[str, tuple[str, ...]] = {name: tuple(opts) for name, opts in STRATEGY_OPTIONS.items()}
# what a metric's or strategy's option values may be
OPTION_VALUES: dict[str, dict[str, dict[str, Option]]] = {"metric": METRIC_OPTIONS, "strategy": STRATEGY_OPTIONS}


def _literal(ctx: "Context", e: ast.Expr, what: str) -> Any:
    if isinstance(e, ast.Literal):
        return e.value
    if isinstance(e, ast.Name):  # a bare name (e.g. teacher: big) is kept as a string
        return e.name
    ctx.report("bad-optimize-option", e.span, f"{what} takes a literal value")
    return None


def _call_parts(ctx: "Context", e: ast.Expr, kind: str, known: dict[str, tuple[str, ...]],
                extra: tuple[str, ...] = ()) -> dict | None:
    if isinstance(e, ast.Name):
        name, args, kwargs, span = e.name, [], [], e.span
    elif isinstance(e, ast.Call):
        name, args, kwargs, span = e.func, e.args, e.kwargs, e.func_span
    else:
        ctx.report("bad-optimize-option", e.span, f"a {kind} is a name or a call, e.g. `exact_match(answer)`")
        return None
    if name not in known and name not in extra:
        code = "unknown-metric" if kind == "metric" else "unknown-strategy"
        ctx.report(code, span, f"unknown {kind} `{name}`", did_you_mean(name, list(known) + list(extra)))
        return None
    options: dict[str, Any] = {}
    allowed = known.get(name, ())
    for kw in kwargs:
        if name in known and kw.name not in allowed:
            ctx.report("bad-optimize-option", kw.name_span, f"`{name}` takes no option `{kw.name}`",
                       did_you_mean(kw.name, allowed) if allowed else f"`{name}` takes no options")
            continue
        value = _literal(ctx, kw.value, f"`{kw.name}`")
        spec = OPTION_VALUES[kind].get(name, {}).get(kw.name)
        if value is not None and spec is not None and not _option_ok(ctx, name, kw, value, spec):
            continue
        options[kw.name] = value
    return {"name": name, "args": args, "options": options, "span": span}


def _option_ok(ctx: "Context", owner: str, kw: ast.KwArg, value: Any, spec: Option) -> bool:
    """Report an option value that cannot work (type, range, or a model that is not declared)."""
    why = spec.problem(value)
    if why is not None:
        ctx.report("bad-optimize-option", kw.value.span, f"`{owner}`: `{kw.name}` {why}", spec.hint(kw.name))
        return False
    if spec is MODEL_NAME and ctx.models and value not in ctx.models:
        ctx.report("bad-optimize-option", kw.value.span, f"`{owner}`: `{kw.name}` names no declared model `{value}`",
                   did_you_mean(value, ctx.models))
        return False
    return True


def check_metric(ctx: "Context", value: ast.Expr, pipeline: "PipelineInfo") -> dict[str, Any] | None:
    """A metric: a builtin (`exact_match(label)`), a judge pipeline, or "file.py:function"."""
    if isinstance(value, ast.Literal) and isinstance(value.value, str):
        if not FUNCTION_REF.match(value.value):
            ctx.report("bad-function-ref", value.span, f'"{value.value}" is not a `file.py:function` reference',
                       'e.g. `metric "metrics.py:score"` (the path is relative to the .lmp file)')
            return None
        return {"name": value.value, "kind": "python", "fields": [], "options": {}}
    parts = _call_parts(ctx, value, "metric", METRICS, extra=tuple(ctx.pipeline_decls))
    if parts is None:
        return None
    fields = []
    for arg in parts["args"]:
        if not isinstance(arg, ast.Name):
            ctx.report("bad-optimize-option", arg.span, "a metric's arguments name pipeline outputs")
        elif arg.name not in pipeline.outputs:
            ctx.report("unknown-field", arg.span, f"pipeline `{pipeline.name}` has no output `{arg.name}`",
                       did_you_mean(arg.name, pipeline.outputs))
        else:
            fields.append(arg.name)
    kind = "pipeline" if parts["name"] in ctx.pipeline_decls else "builtin"
    return {"name": parts["name"], "kind": kind, "fields": fields, "options": parts["options"]}


def check_optimize(ctx: "Context", decl: ast.OptimizeDecl, pipeline: "PipelineInfo") -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for entry in decl.entries:
        if entry.key not in ENTRIES:
            ctx.report("bad-optimize-option", entry.key_span, f"unknown optimize entry `{entry.key}`",
                       did_you_mean(entry.key, ENTRIES))
            continue
        if entry.key in settings:
            ctx.report("bad-optimize-option", entry.key_span, f"`{entry.key}` is given twice")
            continue
        if entry.key != "strategy" and len(entry.values) > 1:
            ctx.report("bad-optimize-option", entry.span, "only `strategy` chains steps with `then`")
            continue
        value = entry.values[0]
        if entry.key in ("train", "dev"):
            if not (isinstance(value, ast.Literal) and isinstance(value.value, str)):
                ctx.report("bad-optimize-option", value.span, f"`{entry.key}` takes a file path string",
                           f'e.g. `{entry.key} "data/{entry.key}.jsonl"`')
                continue
            settings[entry.key] = value.value
        elif entry.key in ENTRY_VALUES:
            spec = ENTRY_VALUES[entry.key]
            why = spec.problem(value.value) if isinstance(value, ast.Literal) else f"takes {spec.describe()}"
            if why is not None:
                ctx.report("bad-optimize-option", value.span, f"`{entry.key}` {why}", spec.hint(entry.key, " "))
                continue
            settings[entry.key] = value.value
        elif entry.key == "metric":
            metric = check_metric(ctx, value, pipeline)
            if metric is not None:
                settings["metric"] = metric
        else:  # strategy
            chain = []
            for v in entry.values:
                parts = _call_parts(ctx, v, "strategy", STRATEGIES)
                if parts is not None:
                    if parts["args"]:
                        ctx.report("bad-optimize-option", parts["args"][0].span,
                                   "strategy options are named, e.g. `bootstrap_few_shot(max_demos: 4)`")
                    chain.append({"name": parts["name"], "options": parts["options"]})
            settings["strategy"] = chain
    return settings
