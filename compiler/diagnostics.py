"""Diagnostics are data: a stable code, a severity, a span, a message and a hint.

Every code lives in CODES (the one registry); docs/diagnostics.md documents each one and a
test checks that the two agree.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Iterable

from lmpc.compiler.errors import EXIT_USAGE, LmpcError

ERROR = "error"
WARNING = "warning"


# Characters that must not reach a terminal raw: C0 controls (ESC starts escape sequences, CR
# rewrites the line), DEL, C1 controls (U+009B is CSI to some terminals) and the bidirectional
# overrides and isolates that make text display in another order than it reads ("Trojan Source").
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# In a quoted source line each character keeps one column, so the caret stays under its
# place: C0 controls and DEL as their Unicode control pictures (as rustc shows them), the
# others as U+FFFD.
_PICTURES = {**{c: chr(0x2400 + c) for c in range(0x20)}, 0x7F: "\u2421", 0x09: " "}


def printable(text: str) -> str:
    """`text` with the characters above escaped as \\xNN / \\uNNNN (newlines and tabs kept)."""
    return _UNSAFE.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100
                       else f"\\u{ord(m.group()):04x}", text)


def _source_line(text: str) -> str:
    return _UNSAFE.sub(lambda m: _PICTURES.get(ord(m.group()), "\ufffd"), text.replace("\t", " "))


@dataclass(frozen=True)
class Span:
    """A 1-based source range; end_col is exclusive."""

    file: str
    line: int
    col: int
    end_line: int
    end_col: int

    def to_json(self) -> dict:
        return {
            "file": self.file,
            "line": self.line,
            "col": self.col,
            "end_line": self.end_line,
            "end_col": self.end_col,
        }

    @classmethod
    def from_json(cls, d: dict) -> "Span":
        return cls(d["file"], d["line"], d["col"], d["end_line"], d["end_col"])

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


# code -> (severity, one-line summary). Stable: never rename a code, only add.
CODES: dict[str, tuple[str, str]] = {
    # syntax
    "syntax-error": (ERROR, "the parser met a token it did not expect"),
    "unexpected-character": (ERROR, "a character that no token of the language starts with"),
    "unexpected-eof": (ERROR, "the file ends in the middle of a declaration"),
    "unterminated-string": (ERROR, "a string literal is not closed on its line"),
    "missing-arrow": (ERROR, "a signature or pipeline has no `->` between inputs and outputs"),
    "trailing-comma": (ERROR, "a comma directly before a closing bracket"),
    "missing-colon": (ERROR, "a field name followed by a type without `:` between them"),
    "bad-escape": (ERROR, "a string literal has a backslash escape that does not decode"),
    # names
    "duplicate-name": (ERROR, "two top-level declarations share a name"),
    "duplicate-field": (ERROR, "a signature, object type or pipeline repeats a field name"),
    "duplicate-step": (ERROR, "two steps of one pipeline share a name"),
    "duplicate-argument": (ERROR, "a call passes the same argument twice"),
    "undefined-name": (ERROR, "an expression names no pipeline input or step"),
    "unknown-type": (ERROR, "a type name that is neither built in nor declared"),
    "unknown-signature": (ERROR, "a step names no declared signature or pipeline"),
    "unknown-model": (ERROR, "`using` names no declared model"),
    "unknown-retriever": (ERROR, "a `retrieve` step names no declared retriever"),
    "bad-retriever": (ERROR, "a retriever declaration with an unknown kind or option, a bad value, mode or corpus format"),
    "missing-corpus": (ERROR, "a retriever's corpus file or folder does not exist"),
    "bad-retrieve-k": (ERROR, "`k` of a `retrieve` step is not a positive whole number literal"),
    "unknown-tool": (ERROR, "a `react` step lists a tool that no `tool` declaration names"),
    "bad-tools": (ERROR, "a react step without `tools [...]`, tools on another kind of step, a tool listed "
                         "twice, or a tool declaration that is not a `file.py:function` reference"),
    "missing-tool": (ERROR, "a tool's Python file or its top-level function does not exist"),
    "bad-tool-annotation": (ERROR, "a tool's parameter or result has no supported type annotation, or its "
                                   "signature has more than one output"),
    "bad-max-steps": (ERROR, "`max_steps` (1 to 50) or `min_steps` (1 to max_steps) is not a whole number in range, "
                             "or is on a step that is not react"),
    "unknown-module": (ERROR, "a step uses a module kind the language does not know"),
    "unknown-field": (ERROR, "`step.field` names no output of that step"),
    "unknown-argument": (ERROR, "a step passes an argument its signature has no input for"),
    "missing-argument": (ERROR, "a step does not pass a required input of its signature"),
    "missing-field-access": (ERROR, "a step is used as a value without naming one of its fields"),
    "unknown-builtin": (ERROR, "an expression calls a function that is not a builtin"),
    "bad-builtin-call": (ERROR, "a builtin is called with the wrong number or types of arguments"),
    "unknown-pipeline": (ERROR, "an optimize block names no declared pipeline"),
    "bad-function-ref": (ERROR, "a `call` step without a `file.py:function` reference, or another module with one"),
    "bad-using": (ERROR, "`using` on a step that calls no model"),
    "bad-loop": (ERROR, "`map` without `for x in list`, `for` on another kind of step, or a loop variable "
                        "that hides a name"),
    "not-a-list": (ERROR, "`map ... for x in VALUE` where VALUE is not a list"),
    "check-not-bool": (ERROR, "a `check` condition that is not a bool"),
    "check-reads-no-step": (ERROR, "a `check` whose condition reads no step output"),
    "ambiguous-check": (ERROR, "a `check` reading steps that do not depend on one another"),
    "bad-check": (ERROR, "a `check` on a step a retry cannot change, an empty message, or a bad `retries`"),
    "bad-best-of": (ERROR, "a `best_of` step without a whole `n` or a reward, a reward that is not a bool or number "
                            "over the step's outputs, a `file.py:function` or a fitting judge pipeline, or best_of's "
                            "options on another step"),
    # types
    "type-mismatch": (ERROR, "a value's type does not fit where it flows"),
    "bad-operand": (ERROR, "an operator's operand has a type the operator does not take"),
    "bad-condition": (ERROR, "a `when` condition that is not a bool, or `when` on a pipeline call"),
    "optional-not-handled": (ERROR, "a conditional step's output read where a value that is never null is required"),
    "bad-union": (ERROR, "a union of anything but string literals"),
    "bad-type-argument": (ERROR, "a generic type used wrongly (`list` needs one type argument)"),
    "recursive-type": (ERROR, "a named type refers to itself"),
    "type-too-deep": (ERROR, "a type nests more than 16 levels of `list[...]` and `{...}`"),
    "reserved-field": (ERROR, "a field name the compiler reserves (e.g. `reasoning` with chain_of_thought)"),
    # graph
    "cycle": (ERROR, "steps (or pipelines) depend on each other in a circle"),
    "missing-output": (ERROR, "a declared pipeline output is never returned"),
    "unknown-output": (ERROR, "`return` names a field the pipeline does not declare"),
    "missing-return": (ERROR, "a pipeline with outputs has no `return`"),
    "unused-step": (WARNING, "a step whose result never reaches an output"),
    "unused-input": (WARNING, "a pipeline input that nothing reads"),
    "empty-signature": (ERROR, "a signature with no outputs"),
    # models
    "unknown-provider": (ERROR, "a model provider other than llama_cpp or openai"),
    "bad-model-option": (ERROR, "an option a model provider does not take, or a value of the wrong kind"),
    "missing-model-source": (ERROR, "a llama_cpp model without exactly one of builtin/path/hf"),
    "unknown-builtin-model": (ERROR, "`builtin:` names a model that lmpc does not ship"),
    "secret-literal": (ERROR, "a secret written into the file instead of named from the environment"),
    # optimize
    "bad-optimize-option": (ERROR, "an optimize entry the compiler does not know, or a bad value"),
    "unknown-metric": (ERROR, "a metric that is neither built in nor a pipeline"),
    "unknown-strategy": (ERROR, "an optimizer strategy that does not exist"),
    "duplicate-optimize": (ERROR, "two optimize blocks for one pipeline"),
}


@dataclass(frozen=True)
class Diagnostic:
    code: str
    span: Span
    message: str
    hint: str | None = None
    severity: str = field(default="")

    def __post_init__(self) -> None:
        if self.code not in CODES:
            raise KeyError(f"diagnostic code {self.code!r} is not registered in CODES")
        if not self.severity:
            object.__setattr__(self, "severity", CODES[self.code][0])

    @property
    def is_error(self) -> bool:
        return self.severity == ERROR

    def to_json(self) -> dict:
        return {
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
            "hint": self.hint,
            **self.span.to_json(),
        }

    def render(self, source: str | None = None) -> str:
        """`file:line:col: error[code]: message`, the source line with a caret, the hint."""
        out = [printable(f"{self.span}: {self.severity}[{self.code}]: {self.message}")]
        # Split at \n only, as the parser counts lines (splitlines() also splits at \x0c,
        # \x1c.. and U+2028, which would quote the wrong line).
        lines = source.split("\n") if source is not None else []
        if 1 <= self.span.line <= len(lines):
            text = _source_line(lines[self.span.line - 1].rstrip("\r"))
            num = str(self.span.line)
            pad = " " * len(num)
            end = self.span.end_col if self.span.end_line == self.span.line else len(text) + 1
            width = max(1, min(end, len(text) + 1) - self.span.col)
            out.append(f" {num} | {text}")
            out.append(f" {pad} | {' ' * (self.span.col - 1)}{'^' * width}")
        if self.hint:
            out.append(printable(f"  hint: {self.hint}"))
        return "\n".join(out)


class CompileError(LmpcError):
    """Raised by compile_file/compile_source; carries every diagnostic of the run."""

    def __init__(self, diagnostics: list[Diagnostic], sources: dict[str, str] | None = None):
        self.diagnostics = diagnostics
        self.sources = sources or {}
        errors = [d for d in diagnostics if d.is_error]
        super().__init__(f"{len(errors)} error(s)\n" + self.render())

    def render(self) -> str:
        return "\n".join(d.render(self.sources.get(d.span.file)) for d in self.diagnostics)


class ArgumentCompileError(CompileError):
    """An expression given as an argument (`--metric`, `--strategy`, a metric text passed to
    lmpc.evaluate) that does not compile: a usage error, its diagnostics positioned in the text."""

    exit_code = EXIT_USAGE


def did_you_mean(name: str, choices: Iterable[str]) -> str | None:
    """A 'did you mean' hint, or an 'available:' list when nothing is close."""
    choices = sorted(set(choices))
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    if close:
        return f"did you mean `{close[0]}`?"
    if choices:
        shown = ", ".join(choices[:12]) + (", ..." if len(choices) > 12 else "")
        return f"available: {shown}"
    return None


def sort_key(d: Diagnostic) -> tuple:
    return (d.span.file, d.span.line, d.span.col, d.code)
