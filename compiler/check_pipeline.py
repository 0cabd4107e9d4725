"""Semantic analysis of pipelines: steps, arguments, expression types, the DAG, returns."""

from __future__ import annotations

import difflib

import networkx as nx

from lmpc.compiler import ast, operators
from lmpc.compiler.builtins import BUILTINS
from lmpc.compiler.check import Context
from lmpc.compiler.checked import PipelineInfo
from lmpc.compiler.constraints import check_constraints
from lmpc.compiler.kinds.best_of import reject_options as reject_best_of_options
from lmpc.compiler.diagnostics import did_you_mean
from lmpc.compiler.kinds import KINDS, Target, chain_of_thought
from lmpc.compiler.types import (
    ANY, BOOL, FLOAT, INT, STR, AnyT, EnumT, ListT, NullT, ObjT, OptT, Type, assignable, describe, join,
)

# module kind -> what it does (docs/language.md explains each; compiler/kinds/ defines each)
MODULES = {name: kind.doc for name, kind in KINDS.items()}
REASONING = chain_of_thought.REASONING


def check_pipelines(ctx: Context) -> None:
    for decl in ctx.pipeline_decls.values():
        ctx.pipelines[decl.name] = PipelineInfo(decl.name, decl, _params(ctx, decl.inputs), _params(ctx, decl.outputs))
    for info in ctx.pipelines.values():
        _check_body(ctx, info)
    _check_pipeline_cycles(ctx)


def _params(ctx: Context, params: list[ast.Param]) -> dict[str, Type]:
    out: dict[str, Type] = {}
    for p in params:
        if p.name in out:
            ctx.report("duplicate-field", p.span, f"`{p.name}` is declared twice")
            continue
        out[p.name] = ctx.resolve_type(p.type)
    return out


def _fields_hint(fields: dict[str, Type] | None) -> str | None:
    if not fields:
        return None
    return "available: " + ", ".join(f"{n} ({describe(t)})" for n, t in fields.items())


def _step_interface(ctx: Context, info: PipelineInfo, s: ast.Step):
    """(inputs, outputs) of a step; None where unknown, to avoid cascades."""
    if s.module != "best_of":
        reject_best_of_options(ctx, s)
    if s.module is None:
        return _pipeline_call_interface(ctx, info, s)
    kind = KINDS.get(s.module)
    if kind is None:
        ctx.report("unknown-module", s.module_span, f"unknown module `{s.module}`", did_you_mean(s.module, MODULES))
        kind = KINDS["predict"]  # still type the arguments against the signature
    else:
        kind.check(ctx, s)
    target = _target(ctx, info, s, kind)
    return (None, None) if target is None else kind.interface(ctx, s, target)


def _pipeline_call_interface(ctx: Context, info: PipelineInfo, s: ast.Step):
    target_kinds = list(ctx.signature_decls) + list(ctx.pipeline_decls)
    if s.loop is not None:
        ctx.report("bad-loop", s.loop.span, "a pipeline call does not loop over a list",
                   f"write `{s.name} = map {s.target}(...) for x in list` to run it per item")
    if s.target in ctx.pipelines:
        callee = ctx.pipelines[s.target]
        info.calls.add(s.target)
        return callee.inputs, callee.outputs
    if s.target in ctx.signatures:
        ctx.report("unknown-module", s.target_span, f"step `{s.name}` names signature `{s.target}` without a module",
                   f"write `{s.name} = predict {s.target}(...)` (modules: {', '.join(MODULES)})")
        sig = ctx.signatures[s.target]
        return {n: f.type for n, f in sig.inputs.items()}, {n: f.type for n, f in sig.outputs.items()}
    if s.target not in ctx.suppressed:
        ctx.report("unknown-signature", s.target_span, f"no pipeline or signature named `{s.target}`",
                   did_you_mean(s.target, target_kinds))
    return None, None


def _target(ctx: Context, info: PipelineInfo, s: ast.Step, kind) -> Target | None:
    """The signature (or, for kinds that allow it, the pipeline or retriever) a step names."""
    if "retriever" in kind.targets:
        return kind.retriever_target(ctx, s)
    if s.target in ctx.pipelines:
        if "pipeline" in kind.targets:
            info.calls.add(s.target)
            callee = ctx.pipelines[s.target]
            return Target("pipeline", s.target, dict(callee.inputs), dict(callee.outputs))
        ctx.report("unknown-signature", s.target_span, f"`{s.target}` is a pipeline, not a signature",
                   f"call a pipeline without a module: `{s.name} = {s.target}(...)`")
        return None
    if s.target not in ctx.signatures:
        if s.target not in ctx.suppressed:
            known = list(ctx.signature_decls) + (list(ctx.pipeline_decls) if "pipeline" in kind.targets else [])
            ctx.report("unknown-signature", s.target_span, f"unknown signature `{s.target}`",
                       did_you_mean(s.target, known))
        return None
    sig = ctx.signatures[s.target]
    return Target("signature", s.target, {n: f.type for n, f in sig.inputs.items()},
                  {n: f.type for n, f in sig.outputs.items()})


class _Exprs:
    """Types expressions of one pipeline body and records which names each one reads."""

    def __init__(self, ctx: Context, info: PipelineInfo, steps: dict[str, ast.Step]):
        self.ctx, self.info, self.steps = ctx, info, steps
        # names that an undefined name is a near miss of: counted as read, so that a typo is
        # not also reported as an unused input or step
        self.near_misses: set[str] = set()
        self.locals: dict[str, Type] = {}  # a map step's loop variable, while its arguments are typed
        # values a condition proved non-null where the expression being typed is read (the
        # right operand of `x != null and ...`, a conditional step's arguments)
        self.narrowed: set[operators.Path] = set()

    def type_of(self, e: ast.Expr, deps: set[str]) -> Type:
        if isinstance(e, ast.Name):
            return self._name(e, deps)
        if isinstance(e, ast.Attr):
            return self._attr(e, deps)
        if isinstance(e, ast.Literal):
            return _literal_type(e.value)
        if isinstance(e, ast.ListExpr):
            return self._list(e, deps)
        if isinstance(e, ast.Call):
            return self._call(e, deps)
        if isinstance(e, ast.Op):
            return self._op(e, deps)
        raise AssertionError(e)

    def type_of_narrowed(self, e: ast.Expr, deps: set[str], proved: set, keep: bool = True) -> Type:
        """The type of `e` where the values `proved` (and, with `keep`, those already proved)
        are known non-null."""
        before = self.narrowed
        self.narrowed = (before if keep else set()) | proved
        try:
            return self.type_of(e, deps)
        finally:
            self.narrowed = before

    def _narrow(self, e: ast.Expr, t: Type) -> Type:
        if isinstance(t, OptT) and path_of(e) in self.narrowed:
            return t.inner
        return t

    def _op(self, e: ast.Op, deps: set[str]) -> Type:
        if e.op in ("==", "!=") and any(isinstance(a, ast.Literal) and a.value is None for a in e.args):
            # `x == null` asks what x's declaration allows, whatever a condition proved
            types = [self.type_of_narrowed(a, deps, set(), keep=False) for a in e.args]
        elif e.op in ("and", "or"):  # the right operand runs only when the left does not decide
            types = [self.type_of(e.args[0], deps),
                     self.type_of_narrowed(e.args[1], deps, operators.facts(e.args[0], e.op == "and", path_of))]
        else:
            types = [self.type_of(a, deps) for a in e.args]
        bad = operators.check(e.op, types)
        if bad is not None:
            at, message, hint = bad
            self.ctx.report("bad-operand", e.args[at].span, message, hint)
        return BOOL

    def _name(self, e: ast.Name, deps: set[str]) -> Type:
        ctx = self.ctx
        if e.name in self.locals:
            return self._narrow(e, self.locals[e.name])
        if e.name in self.info.inputs:
            deps.add(e.name)
            return self._narrow(e, self.info.inputs[e.name])
        if e.name in self.steps:
            deps.add(e.name)
            outs = self.info.step_outputs.get(e.name)
            ctx.report("missing-field-access", e.span, f"`{e.name}` is a step; use one of its fields",
                       f"e.g. `{e.name}.{next(iter(outs))}`" if outs else None)
            return ANY
        known = list(self.locals) + list(self.info.inputs) + list(self.steps)
        ctx.report("undefined-name", e.span, f"`{e.name}` is not defined", did_you_mean(e.name, known))
        self.near_misses.update(difflib.get_close_matches(e.name, sorted(set(known)), n=1, cutoff=0.6))
        return ANY

    def _attr(self, e: ast.Attr, deps: set[str]) -> Type:
        ctx = self.ctx
        if isinstance(e.value, ast.Name) and e.value.name in self.steps and e.value.name not in self.info.inputs:
            deps.add(e.value.name)
            outs = self.info.step_outputs.get(e.value.name)
            if outs is None:
                return ANY
            if e.attr not in outs:
                ctx.report("unknown-field", e.attr_span, f"step `{e.value.name}` has no output `{e.attr}`",
                           _close_or_available(e.attr, outs))
                return ANY
            return self._narrow(e, outs[e.attr])
        base = self.type_of(e.value, deps)
        optional = isinstance(base, OptT)
        if optional:
            base = base.inner
        if isinstance(base, AnyT):
            return ANY
        if not isinstance(base, ObjT):
            ctx.report("unknown-field", e.attr_span, f"a value of type {describe(base)} has no field `{e.attr}`")
            return ANY
        fields = dict(base.fields)
        if e.attr not in fields:
            ctx.report("unknown-field", e.attr_span, f"type {describe(base)} has no field `{e.attr}`",
                       _fields_hint(fields))
            return ANY
        t = fields[e.attr]
        # A field of an optional object is null when the object is.
        return self._narrow(e, OptT(t) if optional and not isinstance(t, OptT) else t)

    def _list(self, e: ast.ListExpr, deps: set[str]) -> Type:
        items = [self.type_of(i, deps) for i in e.items]
        item = join(items)
        if isinstance(item, AnyT) and not any(isinstance(t, AnyT) for t in items):
            kinds = ", ".join(dict.fromkeys(describe(t) for t in items))
            self.ctx.report("type-mismatch", e.span, f"the items of this list have different types ({kinds})",
                            "a list holds values of one type; convert with str(...) where needed")
        return ListT(item)

    def _call(self, e: ast.Call, deps: set[str]) -> Type:
        ctx = self.ctx
        arg_types = [self.type_of(a, deps) for a in e.args]
        b = BUILTINS.get(e.func)
        if b is None:
            hint = did_you_mean(e.func, BUILTINS)
            if e.func in self.ctx.pipelines or e.func in self.ctx.signatures:
                hint = f"steps are declared on their own line: `x = ... {e.func}(...)`"
            ctx.report("unknown-builtin", e.func_span, f"`{e.func}` is not a builtin function", hint)
            return ANY
        if e.kwargs or len(e.args) < b.min_args or (b.max_args is not None and len(e.args) > b.max_args):
            ctx.report("bad-builtin-call", e.span, f"wrong arguments for `{e.func}`", f"usage: {b.usage}")
            return ANY
        result = b.check(arg_types)
        if isinstance(result, str):
            # a value that may be null (an optional input, a conditional step's output) is
            # tested first; say how, since the usage alone does not
            null = next((path_of(a) for a, t in zip(e.args, arg_types) if isinstance(t, OptT) and path_of(a)), None)
            hint = f"usage: {b.usage}" + (f"; test for null first, e.g. `{'.'.join(null)} != null and ...`"
                                          if null else "")
            ctx.report("bad-builtin-call", e.span, result, hint)
            return ANY
        return result


def path_of(e: ast.Expr) -> operators.Path | None:
    """`x` -> ("x",), `s.f.g` -> ("s", "f", "g"); None for any other expression."""
    if isinstance(e, ast.Name):
        return (e.name,)
    if isinstance(e, ast.Attr):
        base = path_of(e.value)
        return None if base is None else base + (e.attr,)
    return None


def _literal_type(v) -> Type:
    if isinstance(v, bool):
        return BOOL
    if isinstance(v, int):
        return INT
    if isinstance(v, float):
        return FLOAT
    if isinstance(v, str):
        return EnumT((v,))
    return NullT()


def _check_body(ctx: Context, info: PipelineInfo) -> None:
    decl = info.decl
    steps = _collect_steps(ctx, info)
    for s in steps.values():
        ins, outs = _step_interface(ctx, info, s)
        if ins is not None:
            info.step_inputs[s.name] = ins
            # a conditional step's outputs are null when it does not run
            info.step_outputs[s.name] = outs if s.when is None else {n: optional(t) for n, t in outs.items()}

    exprs = _Exprs(ctx, info, steps)
    deps: dict[str, set[str]] = {}
    for s in steps.values():
        deps[s.name] = set()
        # the condition is read outside the loop (no loop variable); what it proves about
        # nulls holds in the step's arguments, which are read only when it holds
        exprs.narrowed = _check_when(ctx, exprs, s, deps[s.name])
        _check_loop(ctx, info, exprs, s, deps[s.name])
        _check_args(ctx, info, exprs, s, deps[s.name])
        if s.module == "best_of":  # its reward reads its own outputs (compiler/kinds/best_of.py)
            KINDS["best_of"].check_reward(ctx, exprs, s)
        exprs.locals, exprs.narrowed = {}, set()
        if s.using is not None and s.module != "call" and s.using not in ctx.models:
            if s.using not in ctx.suppressed:
                ctx.report("unknown-model", s.using_span, f"no model named `{s.using}`", did_you_mean(s.using, ctx.models))

    check_constraints(ctx, info, exprs, steps, deps)
    _check_step_cycles(ctx, steps, deps)
    ret_deps = _check_return(ctx, info, exprs)
    _check_unused(ctx, info, steps, deps, ret_deps | exprs.near_misses)


def _collect_steps(ctx: Context, info: PipelineInfo) -> dict[str, ast.Step]:
    steps: dict[str, ast.Step] = {}
    for s in info.decl.steps:
        if s.name in steps:
            ctx.report("duplicate-step", s.name_span, f"step `{s.name}` is already defined",
                       f"first defined at line {steps[s.name].name_span.line}")
        elif s.name in info.inputs:
            ctx.report("duplicate-step", s.name_span, f"step `{s.name}` has the name of an input of `{info.name}`",
                       "rename the step")
        else:
            steps[s.name] = s
    return steps


def optional(t: Type) -> Type:
    return t if isinstance(t, (OptT, AnyT)) else OptT(t)


def _check_when(ctx: Context, exprs: _Exprs, s: ast.Step, deps: set[str]) -> set:
    """`when COND`: a bool; the values it proves non-null (operators.facts)."""
    if s.when is None:
        return set()
    if s.module is None:
        ctx.report("bad-condition", s.when.span, f"a call of pipeline `{s.target}` cannot be conditional",
                   f"put `when` on the steps inside `{s.target}`, or pass it an optional input")
    t = exprs.type_of(s.when, deps)
    if not isinstance(t, AnyT) and t != BOOL:
        hint = ("compare it: `x == true` is false for null" if isinstance(t, OptT) and t.inner == BOOL
                else "compare the value, e.g. `len(x) < 20`")
        ctx.report("bad-condition", s.when.span, f"the condition of `{s.name}` must be a bool, not {describe(t)}", hint)
    return operators.facts(s.when, True, path_of)


def _report_mismatch(ctx: Context, exprs: _Exprs, value: ast.Expr, t: Type, dst: Type, message: str,
                     why: str) -> None:
    """type-mismatch, or optional-not-handled when the value is a conditional step's output
    that would fit were it not for the null of a skipped step."""
    root = path_of(value)
    step = exprs.steps.get(root[0]) if root is not None and len(root) > 1 else None
    if (step is not None and step.when is not None and root[0] not in exprs.info.inputs and isinstance(t, OptT)
            and assignable(t.inner, dst) is None):
        ctx.report("optional-not-handled", value.span,
                   f"{message}: `{root[0]}` runs only when its condition holds, and is null otherwise",
                   f"pass it where {describe(dst)}? is allowed, or read it under a test, e.g. "
                   f"`when {'.'.join(root)} != null` on the reading step")
        return
    ctx.report("type-mismatch", value.span, message, why)


def _check_loop(ctx: Context, info: PipelineInfo, exprs: _Exprs, s: ast.Step, deps: set[str]) -> None:
    """`for x in list`: the list's type, and the loop variable in scope for the arguments."""
    loop = s.loop
    if loop is None:
        return
    t = exprs.type_of(loop.over, deps)
    if isinstance(t, OptT):
        ctx.report("not-a-list", loop.over.span, f"`{s.name}` loops over a value that may be null ({describe(t)})",
                   "loop over a list that is always there, e.g. a required field")
        item: Type = ANY
    elif isinstance(t, ListT):
        item = t.item
    elif isinstance(t, AnyT):
        item = ANY
    else:
        ctx.report("not-a-list", loop.over.span, f"`{s.name}` loops over a {describe(t)}, not a list",
                   "map runs its target once per item of a list[...] value")
        item = ANY
    if loop.var in info.inputs or loop.var in exprs.steps:
        what = "an input" if loop.var in info.inputs else "a step"
        ctx.report("bad-loop", loop.var_span, f"the loop variable `{loop.var}` has the name of {what}",
                   "give the loop variable its own name, e.g. `item`")
    else:
        exprs.locals = {loop.var: item}
    info.loop_items[s.name] = item


def _check_args(ctx: Context, info: PipelineInfo, exprs: _Exprs, s: ast.Step, deps: set[str]) -> None:
    ins = info.step_inputs.get(s.name)
    given: set[str] = set()
    misspelt: set[str] = set()  # inputs that an unknown argument is a near miss of
    for kw in s.args:
        if kw.name in given:
            ctx.report("duplicate-argument", kw.name_span, f"argument `{kw.name}` is passed twice")
            continue
        given.add(kw.name)
        t = exprs.type_of(kw.value, deps)
        if ins is None:
            continue
        if kw.name not in ins:
            ctx.report("unknown-argument", kw.name_span, f"`{s.target}` has no input `{kw.name}`",
                       _close_or_available(kw.name, ins))
            # A misspelt argument is one mistake: do not also report the input as missing.
            misspelt.update(difflib.get_close_matches(kw.name, sorted(ins), n=1, cutoff=0.6))
            continue
        why = assignable(t, ins[kw.name])
        if why is not None:
            _report_mismatch(ctx, exprs, kw.value, t, ins[kw.name],
                             f"input `{kw.name}` of `{s.target}` is {describe(ins[kw.name])}, but this is {describe(t)}",
                             why)
    for name, t in (ins or {}).items():
        if name not in given and name not in misspelt and not isinstance(t, OptT):
            ctx.report("missing-argument", s.target_span, f"step `{s.name}` does not pass input `{name}` ({describe(t)})",
                       f"add `{name}: ...` to the call")


def _check_return(ctx: Context, info: PipelineInfo, exprs: _Exprs) -> set[str]:
    """Check the return statement; the names it reads."""
    decl = info.decl
    ret_deps: set[str] = set()
    if decl.ret is None:
        if info.outputs:
            ctx.report("missing-return", decl.name_span, f"pipeline `{info.name}` never returns its outputs",
                       "end the body with `return " + ", ".join(f"{o}: ..." for o in info.outputs) + "`")
        return ret_deps
    returned: set[str] = set()
    for kw in decl.ret.fields:
        if kw.name in returned:
            ctx.report("duplicate-field", kw.name_span, f"`{kw.name}` is returned twice")
            continue
        returned.add(kw.name)
        t = exprs.type_of(kw.value, ret_deps)
        if kw.name not in info.outputs:
            ctx.report("unknown-output", kw.name_span, f"pipeline `{info.name}` declares no output `{kw.name}`",
                       did_you_mean(kw.name, info.outputs))
            continue
        why = assignable(t, info.outputs[kw.name])
        if why is not None:
            _report_mismatch(ctx, exprs, kw.value, t, info.outputs[kw.name],
                             f"output `{kw.name}` is {describe(info.outputs[kw.name])}, but this is {describe(t)}", why)
    for name in info.outputs:
        if name not in returned:
            ctx.report("missing-output", decl.ret.span, f"output `{name}` is never returned",
                       f"add `{name}: ...` to the return")
    return ret_deps


def _check_unused(ctx: Context, info: PipelineInfo, steps: dict[str, ast.Step], deps: dict[str, set[str]],
                  roots: set[str]) -> None:
    """What reaches a return (or a near miss of a typo): everything else is unused."""
    decl = info.decl
    reached, todo = set(), list(roots)
    while todo:
        n = todo.pop()
        if n not in reached:
            reached.add(n)
            todo.extend(deps.get(n, ()))
    if decl.ret is not None or not info.outputs:  # a pipeline with no outputs prunes every step
        for s in steps.values():
            if s.name not in reached:
                ctx.report("unused-step", s.name_span, f"the result of step `{s.name}` is never used",
                           "it is removed from the graph; return one of its fields or delete it")
    read = set().union(*deps.values(), roots)
    for p in decl.inputs:
        if p.name not in read:
            ctx.report("unused-input", p.span, f"input `{p.name}` of `{info.name}` is never read")


def _close_or_available(name: str, fields: dict[str, Type]) -> str | None:
    close = did_you_mean(name, fields)
    if close and close.startswith("did you mean"):
        return close
    return _fields_hint(fields)


def _check_step_cycles(ctx: Context, steps: dict[str, ast.Step], deps: dict[str, set[str]]) -> None:
    g = nx.DiGraph()
    g.add_nodes_from(steps)
    g.add_edges_from((d, s) for s, ds in deps.items() for d in ds if d in steps)
    order = list(steps)
    for scc in nx.strongly_connected_components(g):
        if len(scc) == 1 and not g.has_edge(next(iter(scc)), next(iter(scc))):
            continue
        first = min(scc, key=order.index)
        cycle = [first]
        for u, v in nx.find_cycle(g.subgraph(scc), source=first):
            cycle.append(v)
        ctx.report("cycle", steps[first].name_span, "steps depend on each other in a cycle: " + " -> ".join(cycle),
                   "a pipeline is a DAG: break the cycle by removing one of these inputs")


def _check_pipeline_cycles(ctx: Context) -> None:
    g = nx.DiGraph()
    for info in ctx.pipelines.values():
        g.add_node(info.name)
        g.add_edges_from((info.name, c) for c in info.calls)
    order = list(ctx.pipelines)
    for scc in nx.strongly_connected_components(g):
        if len(scc) == 1 and not g.has_edge(next(iter(scc)), next(iter(scc))):
            continue
        first = min(scc, key=order.index)
        cycle = [first] + [v for _, v in nx.find_cycle(g.subgraph(scc), source=first)]
        step = next(s for s in ctx.pipelines[first].decl.steps if s.module is None and s.target in scc)
        ctx.report("cycle", step.target_span, "pipelines call each other in a cycle: " + " -> ".join(cycle),
                   "a pipeline cannot call itself, directly or through others")
