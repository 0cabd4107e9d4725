"""Front-end entry points: source text -> checked program with one typed graph per pipeline."""

from __future__ import annotations

import contextlib
import gc
from pathlib import Path
from typing import Any
from typing import Iterator

from lmpc.compiler.check import check_module
from lmpc.compiler.checked import CheckedProgram
from lmpc.compiler.diagnostics import ArgumentCompileError, CompileError, Diagnostic, sort_key
from lmpc.compiler.errors import SourceFileError, SourceNotFoundError
from lmpc.compiler.lower import lower_program
from lmpc.compiler.syntax import nesting_error, parse_module, too_deep


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for one compile.

    A compile allocates many small objects (parse trees, AST, IR) and next to no reference
    cycles; with the collector on, its repeated passes over the growing heap made compile
    time superlinear in the file's size (about 40% of the time at 2000 steps). Memory is
    reclaimed by reference counting as usual; the collector resumes afterwards.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def analyze(text: str, file: str = "<string>") -> tuple[CheckedProgram | None, list[Diagnostic]]:
    """Parse, check and (when error-free) lower. Never raises for a mistake in `text`."""
    from lark.exceptions import VisitError

    text = text.removeprefix("\ufeff")  # a UTF-8 BOM, as some Windows editors write
    deep = nesting_error(text, file)
    if deep is not None:
        return None, [deep]
    with gc_paused():
        try:
            return _analyze(text, file)
        except RecursionError:  # a chain of thousands of types, calls or `.field`s
            return None, [too_deep(text, file)]
        except VisitError as e:  # the same, met inside a parse-tree callback
            if not isinstance(e.orig_exc, RecursionError):
                raise
            return None, [too_deep(text, file)]


def _analyze(text: str, file: str) -> tuple[CheckedProgram | None, list[Diagnostic]]:
    parsed = parse_module(text, file)
    program, diags = check_module(parsed.module, parsed.failed_names)
    diags = sorted(parsed.diagnostics + diags, key=sort_key)
    if any(d.is_error for d in diags):
        return None, diags
    program.graphs = lower_program(program)
    program.diagnostics = diags
    return program, diags


def compile_source(text: str, file: str = "<string>") -> CheckedProgram:
    """Compile .lmp text; raises CompileError carrying every diagnostic if there is an error."""
    program, diags = analyze(text, file)
    if program is None:
        raise CompileError(diags, {file: text.removeprefix("\ufeff")})
    return program


def read_source(path: str | Path) -> str:
    """A .lmp file's text; SourceFileError (exit 2) when it cannot be read."""
    try:
        return Path(path).read_text(encoding="utf-8-sig")  # a BOM is not part of the program
    except FileNotFoundError:
        raise SourceNotFoundError(f"no such file: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SourceFileError(f"cannot read {path}: {e}") from None


def compile_file(path: str | Path) -> CheckedProgram:
    return compile_source(read_source(path), str(path))


def _parse_cli_expr(text: str, file: str, example: str):
    from lark.exceptions import UnexpectedInput

    from lmpc.compiler.build_ast import AstBuilder
    from lmpc.compiler.diagnostics import Span
    from lmpc.grammar import parse_expr

    try:
        return AstBuilder(file).transform(parse_expr(text))
    except UnexpectedInput as e:
        col = getattr(e, "column", 1) or 1
        raise ArgumentCompileError([Diagnostic("syntax-error", Span(file, 1, col, 1, col + 1), f"cannot read `{text}`",
                                       f"e.g. {example}")], {file: text}) from None


def _cli_context(file: str, text: str, pipelines: list[str]):
    from types import SimpleNamespace

    from lmpc.compiler import ast
    from lmpc.compiler.check import Context

    ctx = Context(ast.Module(file, text), set())
    ctx.pipeline_decls = {n: SimpleNamespace(name=n) for n in pipelines}  # names are all check_metric reads
    return ctx


def metric_from_text(text: str, pipeline: str, outputs: dict[str, Any], pipelines: list[str]) -> dict:
    """Check a metric written on the command line (`--metric exact_match(label)`).

    outputs: the pipeline's outputs; pipelines: names usable as judge pipelines."""
    from types import SimpleNamespace

    from lmpc.compiler.optimize_spec import check_metric

    file = "--metric"
    expr = _parse_cli_expr(text, file, 'exact_match(label), numeric_match(answer, tolerance: 0.5), "metrics.py:score"')
    ctx = _cli_context(file, text, pipelines)
    metric = check_metric(ctx, expr, SimpleNamespace(name=pipeline, outputs=outputs))
    if metric is None or ctx.diagnostics:
        raise ArgumentCompileError(ctx.diagnostics, {file: text})
    return metric


def strategy_from_text(text: str, models: Any = ()) -> list[dict]:
    """Check a strategy chain from the command line: `bootstrap_few_shot(max_demos: 4) then random_search`.

    models: the program's declared model names, which `teacher:` and `proposer:` must name."""
    import re

    from lmpc.compiler.optimize_spec import STRATEGIES, _call_parts

    file = "--strategy"
    chain = []
    ctx = _cli_context(file, text, [])
    ctx.models = {name: None for name in models}
    start = 0
    for sep in [*re.finditer(r"\s+then\s+", text), None]:
        end = sep.start() if sep is not None else len(text)
        # Padded with spaces to its place in the text, so a diagnostic's column points into `text`.
        part = " " * start + text[start:end]
        start = sep.end() if sep is not None else end
        expr = _parse_cli_expr(part, file, "bootstrap_few_shot(max_demos: 4) then random_search(candidates: 6)")
        parts = _call_parts(ctx, expr, "strategy", STRATEGIES)
        if parts is not None:
            chain.append({"name": parts["name"], "options": parts["options"]})
    if ctx.diagnostics:
        raise ArgumentCompileError(ctx.diagnostics, {file: text})
    return chain
