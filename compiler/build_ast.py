"""Lark parse tree -> AST dataclasses with spans."""

from __future__ import annotations

import ast as pyast
import inspect
import re
import warnings
from typing import Any

from lark import Token, Transformer, v_args

from lmpc.compiler import ast
from lmpc.compiler.diagnostics import Diagnostic, Span


class BadString(ValueError):
    """A STRING token whose escapes do not decode; `offset` is the bad backslash's index."""

    def __init__(self, message: str, offset: int):
        super().__init__(message)
        self.offset = offset


# The escapes Python accepts in a (non-raw) string literal.
_ESCAPE = re.compile(r"\\(\n|[\\'\"abfnrtv]|[0-7]{1,3}|x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}"
                     r"|U[0-9a-fA-F]{8}|N\{[A-Za-z0-9 -]+\})?")
_LONE_CR = re.compile(r"\r(?!\n)")


def string_value(tok: Token) -> str:
    """Decode a STRING token (Python's escapes); triple-quoted strings are dedented like docstrings.

    Raises BadString for an escape that Python rejects or warns about (instead of letting
    literal_eval raise, or print a SyntaxWarning to the user's terminal).
    """
    raw = str(tok)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            # A NUL byte or a lone CR is text like any other inside a string, but literal_eval
            # refuses the first and ends the line at the second.
            value = pyast.literal_eval(_LONE_CR.sub(r"\\r", raw.replace("\0", "\\x00")))
    except (SyntaxError, ValueError, Warning):
        bad = next((m for m in _ESCAPE.finditer(raw) if m.group(1) is None), None)
        if bad is None:  # e.g. \N{NO SUCH NAME} or \U00110000
            bad = next((m for m in _ESCAPE.finditer(raw) if m.group(1)[0] in "NU"), None)
        offset = bad.start() if bad else 0
        seq = raw[offset:offset + 2] if bad else raw
        raise BadString(f"invalid escape sequence `{seq}` in a string", offset) from None
    if raw.startswith('"""'):
        value = inspect.cleandoc(value)
    return value


def _present(items: list) -> list:
    return [i for i in items if i is not None]


class AstBuilder(Transformer):
    def __init__(self, file: str):
        super().__init__()
        self.file = file
        self.diagnostics: list[Diagnostic] = []  # strings that do not decode

    def text(self, tok: Token) -> str:
        """A STRING token's value; a bad escape is reported and the raw text kept."""
        try:
            return string_value(tok)
        except BadString as e:
            before = str(tok)[: e.offset]
            line = tok.line + before.count("\n")
            col = (len(before) - before.rfind("\n")) if "\n" in before else tok.column + e.offset
            self.diagnostics.append(Diagnostic(
                "bad-escape", Span(self.file, line, col, line, col + 2), str(e),
                "write `\\\\` for a backslash; escapes are those of Python strings (\\n, \\t, \\\", \\u00e9, ...)"))
            q = 3 if str(tok).startswith('"""') else 1
            return str(tok)[q:-q]

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

    @v_args(meta=True)
    def retriever_decl(self, meta, c):
        name, provider, kwargs = c
        return ast.RetrieverDecl(str(name), str(provider), kwargs or [], self.mspan(meta),
                                 self.tspan(name), self.tspan(provider))

    @v_args(meta=True)
    def tool_decl(self, meta, c):
        name, ref, sig = c
        return ast.ToolDecl(str(name), self.text(ref), str(sig) if sig is not None else None, self.mspan(meta),
                            self.tspan(name), self.tspan(ref), self.tspan(sig) if sig is not None else None)

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
        return ast.LiteralType(self.text(c[0]), self.mspan(meta))

    @v_args(meta=True)
    def object_type(self, meta, c):
        return ast.ObjectType(_present(c), self.mspan(meta))

    @v_args(meta=True)
    def object_field(self, meta, c):
        return ast.ObjectField(str(c[0]), c[1], self.mspan(meta))

    # -- signatures --
    def _signature(self, meta, c):
        name, instr, inputs, _arrow, outputs = c
        return ast.SignatureDecl(str(name), self.text(instr) if instr is not None else None,
                                 inputs, outputs, self.mspan(meta), self.tspan(name))

    signature_block = v_args(meta=True)(_signature)
    signature_inline = v_args(meta=True)(_signature)

    def sig_fields(self, c):
        return _present(c)

    inline_fields = sig_fields

    @v_args(meta=True)
    def field(self, meta, c):
        name, t, desc = c
        return ast.Field(str(name), t, self.text(desc) if desc is not None else None,
                         self.mspan(meta))

    # -- pipelines --
    @v_args(meta=True)
    def pipeline_decl(self, meta, c):
        name, params, _arrow, outputs, body = c
        steps, ret = body
        checks = [s for s in steps if isinstance(s, ast.Check)]
        steps = [s for s in steps if not isinstance(s, ast.Check)]
        # `-> ()` arrives as None: `?pipeline_outputs` inlines its single (empty) child
        return ast.PipelineDecl(str(name), params or [], outputs or [], steps, ret, self.mspan(meta),
                                self.tspan(name), checks)

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
        name, call, loop, tools, max_steps, min_steps, samples, reward, threshold, using, when = c
        module, module_tok, ref, (target_tok, args) = call
        return ast.Step(
            name=str(name), module=module, ref=ref, target=str(target_tok), args=args,
            using=str(using) if using is not None else None, span=self.mspan(meta),
            name_span=self.tspan(name),
            module_span=self.tspan(module_tok) if module_tok is not None else None,
            target_span=self.tspan(target_tok),
            using_span=self.tspan(using) if using is not None else None,
            loop=loop, when=when, tools=tools[0] if tools else None, tools_span=tools[1] if tools else None,
            max_steps=max_steps, min_steps=min_steps, samples=samples, reward=reward, threshold=threshold,
        )

    @v_args(meta=True)
    def tools(self, meta, c):
        return [(str(t), self.tspan(t)) for t in c[1:] if t is not None], self.mspan(meta)

    def max_steps(self, c):
        return c[-1]

    min_steps = samples = reward = threshold = max_steps  # the expression after the keyword

    def when(self, c):
        return c[0]

    @v_args(meta=True)
    def loop(self, meta, c):
        var, over = c
        return ast.Loop(str(var), over, self.mspan(meta), self.tspan(var))

    def module_step(self, c):
        return str(c[0]), c[0], None, c[1]

    def module_ref_step(self, c):
        return str(c[0]), c[0], self.text(c[1]), c[2]

    def pipeline_step(self, c):
        return None, None, None, c[0]

    def invocation(self, c):
        return c[0], c[1] or []

    def using(self, c):
        return c[0]

    @v_args(meta=True)
    def check_stmt(self, meta, c):
        cond, message, soft, retries, show = c
        count, count_span = retries if retries is not None else (None, None)
        return ast.Check(cond, self.text(message), soft is not None, count, self.mspan(meta), self.tspan(message),
                         count_span, show is not None)

    def check_retries(self, c):
        text = str(c[0])  # checked by the checker: a whole number from 0 to MAX_CHECK_RETRIES
        return (int(text) if text.lstrip("-").isdigit() else -1), self.tspan(c[0])

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
    # An operator's span is its whole expression; op_span the operator itself (for a
    # keyword, which Lark drops from the children, the gap between the operands).
    def _op(self, meta, op: str, args: list, op_span: Span) -> ast.Op:
        return ast.Op(op, args, self.mspan(meta), op_span)

    def _between(self, left, right) -> Span:
        return Span(self.file, left.span.end_line, left.span.end_col + 1, right.span.line, right.span.col - 1)

    @v_args(meta=True)
    def or_op(self, meta, c):
        return self._op(meta, "or", list(c), self._between(c[0], c[1]))

    @v_args(meta=True)
    def and_op(self, meta, c):
        return self._op(meta, "and", list(c), self._between(c[0], c[1]))

    @v_args(meta=True)
    def not_op(self, meta, c):
        s = self.mspan(meta)
        return self._op(meta, "not", [c[0]], Span(self.file, s.line, s.col, s.line, s.col + 3))

    @v_args(meta=True)
    def compare(self, meta, c):
        left, op, right = c
        return self._op(meta, str(op), [left, right], self.tspan(op))

    @v_args(meta=True)
    def in_op(self, meta, c):
        return self._op(meta, "in", list(c), self._between(c[0], c[1]))

    @v_args(meta=True)
    def not_in_op(self, meta, c):
        return self._op(meta, "not in", list(c), self._between(c[0], c[1]))

    @v_args(meta=True)
    def name(self, meta, c):
        return ast.Name(str(c[0]), self.mspan(meta))

    @v_args(meta=True)
    def attr(self, meta, c):
        return ast.Attr(c[0], str(c[1]), self.mspan(meta), self.tspan(c[1]))

    @v_args(meta=True)
    def string(self, meta, c):
        return ast.Literal(self.text(c[0]), self.mspan(meta))

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
