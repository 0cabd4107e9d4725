"""Semantic analysis of declarations: names, types, signatures, models, optimize blocks.

Pipeline bodies are checked in check_pipeline.py. Every check collects diagnostics and goes
on, so all independent errors of a file are reported in one run; an erroneous type becomes
AnyT so that one mistake is reported once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from lmpc.compiler import ast
from lmpc.compiler.checked import (
    DEFAULT_MODEL,
    DEFAULT_MODEL_NAME,
    CheckedProgram,
    FieldInfo,
    ModelInfo,
    OptimizeInfo,
    PipelineInfo,
    SignatureInfo,
)
from lmpc.compiler.diagnostics import Diagnostic, Span, did_you_mean
from lmpc.compiler.optimize_spec import check_optimize
from lmpc.compiler.options import (
    BUILTIN_MODELS,
    MODEL_OPTION_VALUES,
    PROVIDER_OPTIONS,
    STRUCTURED_OUTPUT_MODES,
    base_url_list_problems,
    base_url_problem,
)
from lmpc.compiler.types import (
    ANY, GENERICS, MAX_NESTING, PRIMITIVES, STR, TOO_DEEP, EnumT, ListT, ObjT, OptT, Prim, Type,
    built_on_too_deep, nesting, with_alias,
)

SECRET_OPTION_NAMES = ("api_key", "key", "token", "secret", "password", "auth")


@dataclass
class Context:
    module: ast.Module
    suppressed: set[str]  # names declared by declarations that did not parse
    diagnostics: list[Diagnostic] = field(default_factory=list)
    type_decls: dict[str, ast.TypeDecl] = field(default_factory=dict)
    types: dict[str, Type] = field(default_factory=dict)
    resolving: list[str] = field(default_factory=list)
    signatures: dict[str, SignatureInfo] = field(default_factory=dict)
    signature_decls: dict[str, ast.SignatureDecl] = field(default_factory=dict)
    pipeline_decls: dict[str, ast.PipelineDecl] = field(default_factory=dict)
    pipelines: dict[str, PipelineInfo] = field(default_factory=dict)
    models: dict[str, ModelInfo] = field(default_factory=dict)
    retrievers: dict[str, dict] = field(default_factory=dict)  # name -> spec (compiler/retrievers.py)
    retriever_decls: dict[str, ast.RetrieverDecl] = field(default_factory=dict)
    tools: dict[str, dict | None] = field(default_factory=dict)  # name -> spec, None if bad (compiler/tools.py)
    tool_decls: dict[str, ast.ToolDecl] = field(default_factory=dict)

    def report(self, code: str, span: Span, message: str, hint: str | None = None) -> None:
        self.diagnostics.append(Diagnostic(code, span, message, hint))

    # -- types --------------------------------------------------------------------------
    def resolve_type(self, t: ast.TypeExpr | None) -> Type:
        if t is None:
            return STR
        if isinstance(t, ast.NamedType):
            return self.resolve_named(t.name, t.span)
        if isinstance(t, ast.OptionalType):
            inner = self.resolve_type(t.inner)
            return inner if isinstance(inner, OptT) else OptT(inner)
        if isinstance(t, ast.LiteralType):
            return EnumT((t.value,))
        if isinstance(t, ast.UnionType):
            if all(isinstance(m, ast.LiteralType) for m in t.members):
                values: list[str] = []
                for m in t.members:
                    if m.value not in values:
                        values.append(m.value)
                return EnumT(tuple(values))
            bad = next(m for m in t.members if not isinstance(m, ast.LiteralType))
            self.report("bad-union", bad.span, "a union may only combine string literals",
                        'write labels like `"yes" | "no"`; for an optional value use `T?`')
            return ANY
        if isinstance(t, ast.GenericType):
            if t.name != "list":
                self.report("bad-type-argument", t.span, f"`{t.name}` takes no type argument",
                            "only `list[T]` is generic")
                return ANY
            return self.bounded(ListT(self.resolve_type(t.arg)), t.span)
        if isinstance(t, ast.ObjectType):
            seen: dict[str, Type] = {}
            for f in t.fields:
                if f.name in seen:
                    self.report("duplicate-field", f.span, f"field `{f.name}` appears twice in this object")
                    continue
                seen[f.name] = self.resolve_type(f.type)
            return self.bounded(ObjT(tuple(seen.items())), t.span)
        raise AssertionError(t)

    def bounded(self, t: Type, span: Span) -> Type:
        """The type, or TOO_DEEP (reported once) past the one nesting limit; named types count their levels."""
        depth = nesting(t)
        if depth <= MAX_NESTING:
            return t
        if built_on_too_deep(t):  # reported where the limit was passed
            return TOO_DEEP
        self.report("type-too-deep", span, f"this type nests {depth} levels of `list[...]` and `{{...}}`; "
                    f"at most {MAX_NESTING} are allowed", f"flatten the value: types nest at most {MAX_NESTING} "
                    "levels, so that every value can be validated, generated and read from data files")
        return TOO_DEEP

    def resolve_named(self, name: str, span: Span) -> Type:
        if name in PRIMITIVES:
            return Prim(name)
        if name in GENERICS:
            self.report("bad-type-argument", span, f"`{name}` needs an item type", f"write `{name}[str]`")
            return ANY
        if name in self.types:
            return self.types[name]
        if name in self.type_decls:
            if name in self.resolving:
                chain = " -> ".join(self.resolving[self.resolving.index(name):] + [name])
                self.report("recursive-type", span, f"type `{name}` refers to itself ({chain})",
                            "types cannot be recursive; give the inner value a plain type")
                return ANY
            self.resolving.append(name)
            resolved = with_alias(self.resolve_type(self.type_decls[name].type), name)
            self.resolving.pop()
            self.types[name] = resolved
            return resolved
        if name in self.suppressed:
            return ANY
        what = ("signature" if name in self.signature_decls else "pipeline" if name in self.pipeline_decls
                else "model" if name in self.models else None)
        hint = (f"`{name}` is a {what}, not a type" if what
                else did_you_mean(name, list(PRIMITIVES) + ["list"] + list(self.type_decls)))
        self.report("unknown-type", span, f"unknown type `{name}`", hint)
        return ANY


def check_module(module: ast.Module, suppressed: set[str]) -> tuple[CheckedProgram, list[Diagnostic]]:
    from lmpc.compiler.check_pipeline import check_pipelines
    from lmpc.compiler.retrievers import check_retrievers
    from lmpc.compiler.tools import check_tools

    ctx = Context(module, suppressed)
    _collect_names(ctx)
    for name, decl in ctx.type_decls.items():
        ctx.resolve_named(name, decl.name_span)
    for decl in ctx.signature_decls.values():
        ctx.signatures[decl.name] = _check_signature(ctx, decl)
    default_model = _check_models(ctx)
    check_retrievers(ctx)
    check_tools(ctx)
    check_pipelines(ctx)
    optimize = _check_optimize_blocks(ctx)
    program = CheckedProgram(
        path=module.path,
        source=module.source,
        source_hash=hashlib.sha256(module.source.encode("utf-8")).hexdigest(),
        models=ctx.models,
        default_model=default_model,
        types=ctx.types,
        signatures=ctx.signatures,
        pipelines=ctx.pipelines,
        optimize=optimize,
        diagnostics=[],
        retrievers=ctx.retrievers,
        tools={n: spec for n, spec in ctx.tools.items() if spec is not None},
    )
    return program, ctx.diagnostics


def _collect_names(ctx: Context) -> None:
    first: dict[str, ast.Decl] = {}
    for decl in ctx.module.decls:
        if isinstance(decl, ast.OptimizeDecl):
            continue
        if decl.name in first:
            prev = first[decl.name]
            ctx.report("duplicate-name", decl.name_span, f"`{decl.name}` is already declared",
                       f"first declared at line {prev.name_span.line}; every top-level name must be unique")
            continue
        first[decl.name] = decl
        if isinstance(decl, ast.TypeDecl):
            if decl.name in PRIMITIVES or decl.name in GENERICS:
                ctx.report("duplicate-name", decl.name_span, f"`{decl.name}` is a built-in type",
                           "choose another name")
                continue
            ctx.type_decls[decl.name] = decl
        elif isinstance(decl, ast.SignatureDecl):
            ctx.signature_decls[decl.name] = decl
        elif isinstance(decl, ast.PipelineDecl):
            ctx.pipeline_decls[decl.name] = decl
        elif isinstance(decl, ast.ModelDecl):
            ctx.models[decl.name] = ModelInfo(decl.name, decl.provider, {}, decl.span)
        elif isinstance(decl, ast.RetrieverDecl):
            ctx.retriever_decls[decl.name] = decl
        elif isinstance(decl, ast.ToolDecl):
            ctx.tool_decls[decl.name] = decl


def _type_like(ctx: Context, name: str) -> bool:
    return name in PRIMITIVES or name in GENERICS or name in ctx.type_decls


def _check_fields(ctx: Context, fields: list[ast.Field], seen: dict[str, ast.Field]) -> dict[str, FieldInfo]:
    out: dict[str, FieldInfo] = {}
    prev: ast.Field | None = None
    for f in fields:
        if f.type is None and prev is not None and prev.type is None and _type_like(ctx, f.name):
            ctx.report("missing-colon", f.span, f"`{f.name}` reads as a field name",
                       f"did you mean `{prev.name}: {f.name}`?")
            # Read it as meant (`prev: f`), so that uses of `prev` are not reported as well.
            if prev.name in out:
                t = ANY if f.name in GENERICS else ctx.resolve_named(f.name, f.span)
                out[prev.name] = FieldInfo(prev.name, t, f.description or prev.description, prev.span)
            prev = None
            continue
        if f.name in seen:
            ctx.report("duplicate-field", f.span, f"field `{f.name}` is already declared",
                       f"first declared at line {seen[f.name].span.line}")
            continue
        seen[f.name] = f
        out[f.name] = FieldInfo(f.name, ctx.resolve_type(f.type), f.description, f.span)
        prev = f
    return out


def _check_signature(ctx: Context, decl: ast.SignatureDecl) -> SignatureInfo:
    seen: dict[str, ast.Field] = {}
    inputs = _check_fields(ctx, decl.inputs, seen)
    outputs = _check_fields(ctx, decl.outputs, seen)
    if not decl.outputs:
        ctx.report("empty-signature", decl.name_span, f"signature `{decl.name}` has no outputs",
                   "name at least one field after `->`")
    return SignatureInfo(decl.name, decl.instructions, inputs, outputs, decl.span)


def _option_value(ctx: Context, kw: ast.KwArg) -> tuple[bool, Any]:
    """A model option's value: a literal, or env("NAME") kept as a reference (or, for
    base_url, a list of them: a pool of endpoints)."""
    v = kw.value
    if isinstance(v, ast.Literal):
        return True, v.value
    if isinstance(v, ast.ListExpr) and kw.name == "base_url":
        items = []
        for item in v.items:
            ok, value = _option_value(ctx, ast.KwArg(kw.name, item, item.span, kw.name_span))
            if not ok:
                return False, None
            items.append(value)
        return True, items
    if (isinstance(v, ast.Call) and v.func == "env" and len(v.args) == 1 and not v.kwargs
            and isinstance(v.args[0], ast.Literal) and isinstance(v.args[0].value, str)):
        return True, {"env": v.args[0].value}
    ctx.report("bad-model-option", v.span, f"option `{kw.name}` takes a literal value or env(\"NAME\")",
               'e.g. `temperature: 0` or `base_url: env("OPENAI_BASE_URL")`')
    return False, None


def _check_model_value(ctx: Context, kw: ast.KwArg, value: Any) -> None:
    """Builtin model names and the ranges of numeric options (tables in compiler/options.py)."""
    if kw.name == "builtin" and value not in BUILTIN_MODELS:
        close = did_you_mean(value, BUILTIN_MODELS) or ""
        ctx.report("unknown-builtin-model", kw.value.span, f"no builtin model named \"{value}\"",
                   (close + " " if close.startswith("did") else "") + f"the builtin models are "
                   f"{', '.join(BUILTIN_MODELS)}; for another GGUF file use `path:` or `hf:`")
        return
    spec = MODEL_OPTION_VALUES.get(kw.name)
    why = spec.problem(value) if spec is not None else None
    if why is not None:
        ranged = spec.low is not None or spec.high is not None
        hint = "; ".join(h for h in (spec.hint(kw.name), None if "must be" in why or not ranged
                                     else f"it must be {spec.range()}") if h)
        ctx.report("bad-model-option", kw.value.span, f"`{kw.name}` {why}", hint or None)


def _bad_base_url(ctx: Context, kw: ast.KwArg, value: Any) -> bool:
    """Report a base_url that cannot work, at the entry that is wrong; whether one was."""
    hint = 'e.g. `base_url: ["http://10.0.0.1:8000/v1", "http://10.0.0.2:8000/v1"]` or `base_url: env("OPENAI_BASE_URL")`'
    if isinstance(value, str):
        why = base_url_problem(value)
        if why is not None:
            ctx.report("bad-model-option", kw.value.span, f"`base_url` {value!r} {why}", hint)
        return why is not None
    if not isinstance(value, list):
        return False
    problems = base_url_list_problems(value)
    items = kw.value.items if isinstance(kw.value, ast.ListExpr) else []
    for index, why in problems:
        span = items[index].span if index is not None and index < len(items) else kw.value.span
        ctx.report("bad-model-option", span, f"`base_url` {why}", hint)
    return bool(problems)


def _check_models(ctx: Context) -> str:
    decls = [d for d in ctx.module.decls if isinstance(d, ast.ModelDecl) and ctx.models.get(d.name)
             and ctx.models[d.name].span is d.span]
    for decl in decls:
        info = ctx.models[decl.name]
        spec = PROVIDER_OPTIONS.get(decl.provider)
        if spec is None:
            ctx.report("unknown-provider", decl.provider_span, f"unknown model provider `{decl.provider}`",
                       did_you_mean(decl.provider, PROVIDER_OPTIONS))
            continue
        for kw in decl.options:
            if kw.name in info.options:
                ctx.report("duplicate-argument", kw.name_span, f"option `{kw.name}` is given twice")
                continue
            ok, value = _option_value(ctx, kw)
            if not ok:
                continue
            # env("NAME") names a variable, it holds no secret; the option name is then checked below
            if not isinstance(value, dict) and (kw.name.lower() in SECRET_OPTION_NAMES
                                                or (isinstance(value, str) and value.startswith("sk-"))):
                ctx.report("secret-literal", kw.span, "secrets must not be written into a .lmp file",
                           'name the environment variable that holds it: `api_key_env: "OPENAI_API_KEY"`')
                continue
            if kw.name not in spec:
                ctx.report("bad-model-option", kw.name_span,
                           f"`{decl.provider}` models take no option `{kw.name}`", did_you_mean(kw.name, spec))
                continue
            if isinstance(value, dict):
                if kw.name == "api_key_env" or str not in spec[kw.name]:
                    ctx.report("bad-model-option", kw.value.span, f"`{kw.name}` cannot come from env()",
                               "api_key_env takes the variable's name itself" if kw.name == "api_key_env" else None)
                    continue
            elif (isinstance(value, bool) and bool not in spec[kw.name]) or not isinstance(value, spec[kw.name]):
                want = " or ".join(t.__name__ for t in spec[kw.name])
                article = "an" if want[0] in "aeiou" else "a"
                ctx.report("bad-model-option", kw.value.span, f"`{kw.name}` takes {article} {want}")
                continue
            if kw.name == "base_url" and _bad_base_url(ctx, kw, value):
                continue
            if not isinstance(value, dict):
                _check_model_value(ctx, kw, value)  # the value is kept: a bad builtin is still a source
            if kw.name == "structured_output" and value not in STRUCTURED_OUTPUT_MODES:
                ctx.report("bad-model-option", kw.value.span, f"structured_output is one of {', '.join(STRUCTURED_OUTPUT_MODES)}")
                continue
            if kw.name == "extra_buffers" and isinstance(value, str) and value != "auto":
                ctx.report("bad-model-option", kw.value.span, 'extra_buffers is "auto", true or false',
                           "true/false force llama.cpp's extra buffer types on/off; see docs/runtime.md")
                continue
            info.options[kw.name] = value
        if decl.provider == "llama_cpp":
            sources = [k for k in ("builtin", "path", "hf") if k in info.options]
            if len(sources) != 1:
                ctx.report("missing-model-source", decl.name_span,
                           f"llama_cpp model `{decl.name}` needs exactly one of builtin, path, hf"
                           + (f" (it has {', '.join(sources)})" if sources else ""),
                           'e.g. `builtin: "smollm2-135m"` or `path: "models/x.gguf"`')
        elif decl.provider == "openai" and "model" not in info.options:
            ctx.report("bad-model-option", decl.name_span, f"openai model `{decl.name}` needs `model:`",
                       'e.g. `model: "gpt-4o-mini"`')
    if ctx.models:
        return next(iter(ctx.models))
    ctx.models[DEFAULT_MODEL_NAME] = ModelInfo(DEFAULT_MODEL_NAME, DEFAULT_MODEL["provider"],
                                               dict(DEFAULT_MODEL["options"]), None)
    return DEFAULT_MODEL_NAME


def _check_optimize_blocks(ctx: Context) -> dict[str, OptimizeInfo]:
    out: dict[str, OptimizeInfo] = {}
    for decl in ctx.module.decls:
        if not isinstance(decl, ast.OptimizeDecl):
            continue
        if decl.pipeline not in ctx.pipelines:
            if decl.pipeline not in ctx.suppressed:
                ctx.report("unknown-pipeline", decl.name_span, f"no pipeline named `{decl.pipeline}`",
                           did_you_mean(decl.pipeline, ctx.pipeline_decls))
            continue
        if decl.pipeline in out:
            ctx.report("duplicate-optimize", decl.name_span,
                       f"pipeline `{decl.pipeline}` already has an optimize block",
                       f"see line {out[decl.pipeline].span.line}; merge the two")
            continue
        settings = check_optimize(ctx, decl, ctx.pipelines[decl.pipeline])
        out[decl.pipeline] = OptimizeInfo(decl.pipeline, settings, decl.span)
    return out
