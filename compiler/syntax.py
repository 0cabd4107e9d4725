"""Parse a .lmp file into an AST, turning Lark's exceptions into diagnostics.

A file with syntax errors is split into top-level declarations (a keyword at column 0) and each
is parsed on its own, so independent syntax errors are all reported in one run and the
declarations that do parse are still checked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from lmpc.compiler import ast
from lmpc.compiler.build_ast import AstBuilder
from lmpc.compiler.diagnostics import Diagnostic, Span
from lmpc.compiler.types import MAX_NESTING
from lmpc.grammar import get_parser

TOP_KEYWORDS = ("model", "retriever", "type", "signature", "pipeline", "optimize")
_DECL_START = re.compile(r"(model|retriever|type|signature|pipeline|optimize)\b")
_DECL_NAME = re.compile(r"(model|retriever|type|signature|pipeline|optimize)\s+([A-Za-z_]\w*)")

# How terminals read in "expected ..." hints.
_TERMINAL_WORDS = {
    "NAME": "a name",
    "STRING": "a string",
    "SIGNED_NUMBER": "a number",
    "ARROW": "`->`",
    "$END": "end of file",
}


@dataclass
class ParseResult:
    module: ast.Module
    diagnostics: list[Diagnostic]
    failed_names: set[str]  # names declared by declarations that did not parse


def parse_module(text: str, file: str) -> ParseResult:
    parser = get_parser()
    try:
        tree = parser.parse(text, start="start")
    except UnexpectedInput:
        return _parse_by_declaration(text, file)
    builder = AstBuilder(file)
    decls = builder.transform(tree)
    return ParseResult(ast.Module(file, text, decls), builder.diagnostics, set())


def _parse_by_declaration(text: str, file: str) -> ParseResult:
    parser = get_parser()
    decls: list = []
    diags: list[Diagnostic] = []
    failed: set[str] = set()
    chunks = _declaration_chunks(text)
    for k, (start, end, line) in enumerate(chunks):
        chunk = text[start:end]
        padded = "\n" * (line - 1) + chunk  # keeps line and column numbers true
        try:
            tree = parser.parse(padded, start="start")
        except UnexpectedInput as e:
            next_line = chunks[k + 1][2] if k + 1 < len(chunks) else None
            diags.append(_diagnose(e, padded, file, next_line))
            m = _DECL_NAME.match(chunk)
            if m:
                failed.add(m.group(2))
            continue
        builder = AstBuilder(file)
        decls.extend(builder.transform(tree))
        diags.extend(builder.diagnostics)
    return ParseResult(ast.Module(file, text, decls), diags, failed)


def _declaration_chunks(text: str) -> list[tuple[int, int, int]]:
    """(start, end, line) of each top-level declaration: a keyword at column 0 outside strings."""
    starts: list[tuple[int, int]] = []
    i, line, n = 0, 1, len(text)
    at_line_start = True
    while i < n:
        ch = text[i]
        if at_line_start and _DECL_START.match(text, i):
            starts.append((i, line))
        at_line_start = False
        if ch == "\n":
            line += 1
            at_line_start = True
            i += 1
        elif ch == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith('"""', i):
            j = text.find('"""', i + 3)
            j = n if j < 0 else j + 3
            line += text.count("\n", i, j)
            i = j
        elif ch == '"':
            j = i + 1
            while j < n and text[j] not in '"\n':
                j += 2 if text[j] == "\\" else 1
            i = j + 1 if j < n and text[j] == '"' else j
        else:
            i += 1
    if not starts or starts[0][0] != 0:
        # Text before the first declaration (stray tokens) is a chunk of its own.
        starts.insert(0, (0, 1))
    bounds = [s for s, _ in starts] + [n]
    return [(s, bounds[k + 1], ln) for k, (s, ln) in enumerate(starts)]


def _readable(terminal: str) -> str:
    if terminal in _TERMINAL_WORDS:
        return _TERMINAL_WORDS[terminal]
    try:
        pattern = get_parser().get_terminal(terminal).pattern
    except KeyError:
        return terminal
    if pattern.type == "str":
        return f"`{pattern.value}`"
    return terminal.lower()


def _expected(e: UnexpectedInput) -> str:
    names = sorted({_readable(t) for t in (getattr(e, "expected", None) or [])})
    if not names:
        return ""
    return "expected " + (names[0] if len(names) == 1 else "one of: " + ", ".join(names))


def _prev_code(text: str, line: int, col: int) -> str:
    """The last non-blank line of code before (line, col): comments removed, strings as `"`."""
    lines = text.split("\n")
    head = lines[: line - 1] + [lines[line - 1][: col - 1]] if line <= len(lines) else lines
    for raw in reversed(head):
        code = re.sub(r'"(?:[^"\\\n]|\\.)*"|#.*', lambda m: '"' if m.group(0)[0] == '"' else "", raw)
        code = code.rstrip()
        if code:
            return code
    return ""


def _prev_char(text: str, line: int, col: int) -> str:
    """The last non-blank, non-comment character before (line, col)."""
    return _prev_code(text, line, col)[-1:]


def _prev_name(text: str, line: int, col: int) -> str | None:
    """The name token directly before (line, col), if the previous token is a name."""
    m = re.search(r"(?<![\w.])([A-Za-z_]\w*)$", _prev_code(text, line, col))
    return m.group(1) if m else None


def _diagnose(e: UnexpectedInput, text: str, file: str, next_line: int | None = None) -> Diagnostic:
    """`text` is one declaration (padded to its place); `next_line`: where the next one starts."""
    if isinstance(e, UnexpectedCharacters):
        span = Span(file, e.line, e.column, e.line, e.column + 1)
        ch = text[e.pos_in_stream] if e.pos_in_stream < len(text) else ""
        if ch == '"':
            return Diagnostic("unterminated-string", span, "this string is not closed on its line",
                              'close it with `"`, or use """triple quotes""" for text over several lines')
        hint = 'strings are written in double quotes: "..."' if ch == "'" else _expected(e) or None
        return Diagnostic("unexpected-character", span, f"unexpected character `{ch}`", hint)
    if isinstance(e, UnexpectedEOF) or (isinstance(e, UnexpectedToken) and e.token.type == "$END"):
        lines = text.rstrip().split("\n")
        line = len(lines)
        col = len(lines[-1]) + 1 if lines else 1
        span = Span(file, line, max(1, col - 1), line, col)
        hint = "a `{` or `(` is not closed" if text.count("{") > text.count("}") or text.count("(") > text.count(")") else _expected(e)
        message = ("the file ends in the middle of a declaration" if next_line is None
                   else f"this declaration is not finished when the next one starts (line {next_line})")
        return Diagnostic("unexpected-eof", span, message, hint or None)
    assert isinstance(e, UnexpectedToken)
    tok = e.token
    span = Span(file, tok.line, tok.column, tok.end_line or tok.line, tok.end_column or tok.column + 1)
    value = str(tok)
    expected = set(e.expected or ())
    if value in (")", "]", "}") and _prev_char(text, tok.line, tok.column) == ",":
        return Diagnostic("trailing-comma", span, f"a comma before `{value}`", "remove the trailing `,`")
    if "ARROW" in expected and (value in ("}", "{") or expected == {"ARROW"}):
        return Diagnostic("missing-arrow", span, f"expected `->` before `{value}`",
                          "inputs and outputs are separated by `->`, e.g. `question -> answer`")
    prev = _prev_name(text, tok.line, tok.column)
    if "COLON" in expected and prev is not None and tok.type in ("NAME", "STRING", "SIGNED_NUMBER"):
        return Diagnostic("missing-colon", span, f"expected `:` between `{prev}` and `{value}`",
                          f"did you mean `{prev}: {value}`?")
    return Diagnostic("syntax-error", span, f"unexpected `{value}`", _expected(e) or None)


_STRING = re.compile(r'"""(?:[^"\\]|\\.|"(?!""))*"""|"(?:[^"\\\n]|\\.)*"', re.S)


def _bracket_depth(text: str, limit: int) -> tuple[int, tuple[int, int] | None]:
    """(deepest bracket nesting outside strings and comments, (line, col) of the first bracket
    deeper than `limit`, or None)."""
    depth, deepest, at = 0, 0, None
    line, col, i, n = 1, 1, 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "#":
            j = text.find("\n", i)
            j = n if j < 0 else j
            col += j - i
            i = j
            continue
        if ch == '"':  # skip a string (single- or triple-quoted)
            m = _STRING.match(text, i)
            if m:
                body = m.group(0)
                if "\n" in body:
                    line += body.count("\n")
                    col = len(body) - body.rfind("\n")
                else:
                    col += len(body)
                i = m.end()
                continue
        if ch in "([{":
            depth += 1
            deepest = max(deepest, depth)
            if depth > limit and at is None:
                at = (line, col)
        elif ch in ")]}":
            depth = max(0, depth - 1)
        if ch == "\n":
            line, col = line + 1, 1
        else:
            col += 1
        i += 1
    return deepest, at


# Brackets may nest a little deeper than types (types.MAX_NESTING), so that a type (or a list
# value) at the limit can be written inside a declaration's own brackets: a pipeline's `(...)`
# and `{...}`, a call's `(...)`.
MAX_BRACKETS = MAX_NESTING + 4


def nesting_error(text: str, file: str) -> Diagnostic | None:
    """A syntax error at the first bracket nested deeper than MAX_BRACKETS, else None.

    Checked before parsing, like CPython's "too many nested parentheses": the parse tree is
    walked recursively, and what nests deeper than this could not be a valid type anyway."""
    if text.count("(") + text.count("[") + text.count("{") <= MAX_BRACKETS:
        return None  # cannot nest too deeply: skip the scan
    deepest, at = _bracket_depth(text, MAX_BRACKETS)
    if at is None:
        return None
    return Diagnostic("syntax-error", Span(file, at[0], at[1], at[0], at[1] + 1),
                      f"too many nested brackets ({deepest} levels; at most {MAX_BRACKETS})",
                      "name the inner parts: a `type` for a nested type, a step for a nested value")


def too_deep(text: str, file: str) -> Diagnostic:
    """The diagnostic for a file that nests deeper than the compiler's recursion allows (brackets
    are bounded before parsing, so this is a long chain of types, or of pipelines calling the next)."""
    return nesting_error(text, file) or Diagnostic(
        "syntax-error", Span(file, 1, 1, 1, 2), "the declarations of this file nest too deeply",
        "a chain of types, of pipelines calling the next one, or of `.field`s is too long for the compiler")
