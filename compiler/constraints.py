"""`check` statements: which step each one constrains, and the checks of their form.

    check len(a.answer) <= 120 else "Answer in one short phrase"            # hard, 2 retries
    check a.confidence >= 0.5 else "Say how sure you are" soft retries 1

A check's condition is a bool expression over step outputs (and pipeline inputs). It
constrains the step it reads that runs last: every other step it reads must run before that
one (be among its inputs' producers), so that the retry of that one step can repair it. The
constrained step must be a model step (a kind whose prompt can carry the feedback). Lowering
puts the checks on the constrained step's node (`checks`); the runtime (runtime/checks.py)
re-runs the step with the failed output and the message in its prompt.
"""

from __future__ import annotations

from pathlib import PurePath
from typing import TYPE_CHECKING

from lmpc.compiler import ast
from lmpc.compiler.kinds import KINDS
from lmpc.compiler.types import AnyT, Prim, describe

if TYPE_CHECKING:
    from lmpc.compiler.check import Context
    from lmpc.compiler.checked import PipelineInfo

CHECK_RETRIES = 2  # retries of a check that does not say `retries N`
MAX_CHECK_RETRIES = 10


def _ancestors(step: str, deps: dict[str, set[str]]) -> set[str]:
    seen: set[str] = set()
    todo = list(deps.get(step, ()))
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo.extend(deps.get(n, ()))
    return seen


def check_constraints(ctx: "Context", info: "PipelineInfo", exprs, steps: dict[str, ast.Step],
                      deps: dict[str, set[str]]) -> None:
    """Type each check of the pipeline, choose the step it constrains (info.checks), and add
    what it reads to that step's dependencies (so inputs it reads count as read)."""
    for c in info.decl.checks:
        read: set[str] = set()
        errors = len(ctx.diagnostics)
        t = exprs.type_of(c.cond, read)
        typed = len(ctx.diagnostics) == errors  # a mistake inside the condition is reported once
        if typed and not isinstance(t, AnyT) and t != Prim("bool"):
            ctx.report("check-not-bool", c.cond.span, f"a check's condition is a bool, but this is {describe(t)}",
                       "compare it, e.g. `len(a.answer) <= 120`, or read a bool output")
        if not c.message.strip():
            ctx.report("bad-check", c.message_span, "a check's message is empty",
                       "say what a good output is: it is shown to the model when it retries")
        if c.retries is not None and not 0 <= c.retries <= MAX_CHECK_RETRIES:
            ctx.report("bad-check", c.retries_span or c.span,
                       f"`retries` is a whole number from 0 to {MAX_CHECK_RETRIES}",
                       f"e.g. `retries {CHECK_RETRIES}` (the default)")
        read_steps = [s for s in read if s in steps]
        if not read_steps:
            if typed:
                ctx.report("check-reads-no-step", c.cond.span, "this check reads no step output",
                           "a check constrains a step: read one of its outputs, e.g. `len(a.answer) <= 120`")
            continue
        last = [s for s in read_steps if set(read_steps) - {s} <= _ancestors(s, deps)]
        if not last:
            names = ", ".join(f"`{s}`" for s in sorted(read_steps))
            ctx.report("ambiguous-check", c.cond.span,
                       f"this check reads {names}, which do not depend on one another: it cannot say which to retry",
                       "write one check per step")
            continue
        step = steps[last[0]]
        if step.module is not None and step.module not in KINDS:
            continue  # unknown-module is reported
        kind = KINDS.get(step.module) if step.module else None
        if kind is None or not kind.accepts_feedback:
            what = f"a `{step.module}` step" if step.module else "a pipeline call"
            hint = ("to check each item, map a pipeline whose model step has the check" if step.module == "map"
                    else "check the output of a model step (predict, chain_of_thought, best_of)")
            ctx.report("bad-check", c.cond.span,
                       f"this check constrains `{step.name}`, {what}, which a retry with feedback cannot change", hint)
            continue
        info.checks.setdefault(step.name, []).append(c)
        deps[step.name] |= read - {step.name}


def _source_text(source: str, span) -> str:
    lines = source.splitlines()
    if span.line == span.end_line:
        return lines[span.line - 1][span.col - 1:span.end_col - 1]
    parts = [lines[span.line - 1][span.col - 1:], *lines[span.line:span.end_line - 1],
             lines[span.end_line - 1][:span.end_col - 1]]
    return " ".join(p.strip() for p in parts)


def lower_checks(g, source: str, info: "PipelineInfo", lower_expr) -> None:
    """Each check as the `checks` attribute of the node it constrains (IR form):
    {"id": "file:line", "cond": EXPR, "text": the condition as written, "message", "soft", "retries",
    "show_previous", "span"}."""
    for step, checks in info.checks.items():
        if step not in g:
            continue
        g.nodes[step]["checks"] = [
            {"id": f"{PurePath(c.span.file).name}:{c.span.line}", "cond": lower_expr(c.cond, info), "text": _source_text(source, c.cond.span),
             "message": c.message, "soft": c.soft, "retries": CHECK_RETRIES if c.retries is None else c.retries,
             "show_previous": c.show_previous, "span": c.span.to_json()}
            for c in checks]
