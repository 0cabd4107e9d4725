"""Lark parse tree -> AST dataclasses with spans."""

from __future__ import annotations

import ast as pyast
import inspect
from typing import Any

from lark import Token, Transformer, v_args

from lmpc.compiler import ast
from lmpc.compiler.diagnostics import Span


def string_value(tok: Token) -> str:
    """Decode a STRING token; triple-quoted strings are dedented like docstrings."""
    raw = str(tok)
    value = pyast.literal_eval(raw)
    if raw.startswith('"""'):
        value = inspect.cleandoc(value)
    return value


def _present(items: list) -> list:
    return [i for i in items if i is not None]


class AstBuilder(Transformer):
    def __init__(self, file: str):
        super().__init__()
        self.file = file

    # -- spans --
    def tspan(self, tok: Token) -> Span:
        return Span(self.file, tok.line, tok.column, tok.end_line, tok.end_column)

    def mspan(self, meta: Any) -> Span:
        return Span(self.file, meta.line, meta.column, meta.end_line, meta.end_column)

    # -- file --
    def start(self, children: list) -> list:
        return children

    # -- models --
    @v_args(meta=True)
    def model_decl(self, meta, c):
        name, provider, kwargs = c
        return ast.ModelDecl(str(name), str(provider), kwargs or [], self.mspan(meta),
                             self.tspan(name), self.tspan(provider))

    def kwargs(self, c):
        return list(c)

    @v_args(meta=True)
    def kwarg(self, meta, c):
        name, value = c
        return ast.KwArg(str(name), value, self.mspan(meta), self.tspan(name))

    # -- types --
    @v_args(meta=True)
    def type_decl(self, meta, c):
        name, t = c
        return ast.TypeDecl(str(name), t, self.mspan(meta), self.tspan(name))

    @v_args(meta=True)
    def union(self, meta, c):
        return ast.UnionType(list(c), self.mspan(meta))

    @v_args(meta=True)
    def optional_type(self, meta, c):
        return ast.OptionalType(c[0], self.mspan(meta))

    @v_args(meta=True)
    def named_type(self, meta, c):
        return ast.NamedType(str(c[0]), self.mspan(meta))

    @v_args(meta=True)
    def generic_type(self, meta, c):
        return ast.GenericType(str(c[0]), c[1], self.mspan(meta))

    @v_args(meta=True)
    def literal_type(self, meta, c):
        return ast.LiteralType(string_value(c[0]), self.mspan(meta))

    @v_args(meta=True)
    def object_type(self, meta, c):
        return ast.ObjectType(_present(c), self.mspan(meta))

    @v_args(meta=True)
    def object_field(self, meta, c):
        return ast.ObjectField(str(c[0]), c[1], self.mspan(meta))

    # -- signatures --
    def _signature(self, meta, c):
        name, instr, inputs, _arrow, outputs = c
        return ast.SignatureDecl(str(name), string_value(instr) if instr is not None else None,
                                 inputs, outputs, self.mspan(meta), self.tspan(name))

    signature_block = v_args(meta=True)(_signature)
    signature_inline = v_args(meta=True)(_signature)

    def sig_fields(self, c):
        return _present(c)

    inline_fields = sig_fields

    @v_args(meta=True)
    def field(self, meta, c):
        name, t, desc = c
        return ast.Field(str(name), t, string_value(desc) if desc is not None else None,
                         self.mspan(meta))

    # -- pipelines --
    @v_args(meta=True)
    def pipeline_decl(self, meta, c):
        name, params, _arrow, outputs, body = c
        steps, ret = body
        return ast.PipelineDecl(str(name), params or [], outputs, steps, ret, self.mspan(meta),
                                self.tspan(name))

    def pipeline_outputs(self, c):
        return c[0] or []

    def bare_outputs(self, c):
        return c[0]

    def params(self, c):
        return list(c)

    @v_args(meta=True)
    def param(self, meta, c):
        return ast.Param(str(c[0]), c[1], self.mspan(meta))

    def pipeline_body(self, c):
        *steps, ret = c
        return _present(steps), ret

    @v_args(meta=True)
    def step(self, meta, c):
        name, call, using = c
        module, module_tok, ref, (target_tok, args) = call
        return ast.Step(
            name=str(name), module=module, ref=ref, target=str(target_tok), args=args,
            using=str(using) if using is not None else None, span=self.mspan(meta),
            name_span=self.tspan(name),
            module_span=self.tspan(module_tok) if module_tok is not None else None,
            target_span=self.tspan(target_tok),
            using_span=self.tspan(using) if using is not None else None,
        )

    def module_step(self, c):
        return str(c[0]), c[0], None, c[1]

    def module_ref_step(self, c):
        return str(c[0]), c[0], string_value(c[1]), c[2]

    def pipeline_step(self, c):
        return None, None, None, c[0]

    def invocation(self, c):
        return c[0], c[1] or []

    def using(self, c):
        return c[0]

    @v_args(meta=True)
    def return_stmt(self, meta, c):
        return ast.Return(c[0], self.mspan(meta))

    # -- optimize --
    @v_args(meta=True)
    def optimize_decl(self, meta, c):
        name, *entries = c
        return ast.OptimizeDecl(str(name), entries, self.mspan(meta), self.tspan(name))

    @v_args(meta=True)
    def opt_entry(self, meta, c):
        key, *values = c
        return ast.OptEntry(str(key), values, self.mspan(meta), self.tspan(key))

    # -- expressions --
    @v_args(meta=True)
    def name(self, meta, c):
        return ast.Name(str(c[0]), self.mspan(meta))

    @v_args(meta=True)
    def attr(self, meta, c):
        return ast.Attr(c[0], str(c[1]), self.mspan(meta), self.tspan(c[1]))

    @v_args(meta=True)
    def string(self, meta, c):
        return ast.Literal(string_value(c[0]), self.mspan(meta))

    @v_args(meta=True)
    def number(self, meta, c):
        text = str(c[0])
        is_float = any(ch in text for ch in ".eE")
        return ast.Literal(float(text) if is_float else int(text), self.mspan(meta))

    @v_args(meta=True)
    def true(self, meta, c):
        return ast.Literal(True, self.mspan(meta))

    @v_args(meta=True)
    def false(self, meta, c):
        return ast.Literal(False, self.mspan(meta))

    @v_args(meta=True)
    def null(self, meta, c):
        return ast.Literal(None, self.mspan(meta))

    @v_args(meta=True)
    def list(self, meta, c):
        return ast.ListExpr(_present(c), self.mspan(meta))

    @v_args(meta=True)
    def call(self, meta, c):
        func, args = c
        args = args or []
        positional = [a for a in args if not isinstance(a, ast.KwArg)]
        kw = [a for a in args if isinstance(a, ast.KwArg)]
        return ast.Call(str(func), positional, kw, self.mspan(meta), self.tspan(func))

    def call_args(self, c):
        return list(c)

    @v_args(meta=True)
    def call_kwarg(self, meta, c):
        return ast.KwArg(str(c[0]), c[1], self.mspan(meta), self.tspan(c[0]))
