"""The public Python API: compile a .lmp file into a runnable Program."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmpc.compiler.api import compile_source as _compile_checked
from lmpc.compiler.checked import CheckedProgram
from lmpc.runtime.errors import LmpcRuntimeError
from lmpc.runtime.program import Program


def choose_pipeline(checked: CheckedProgram, pipeline: str | None) -> str:
    """The pipeline to run: the one named, else the single one no other pipeline calls."""
    if pipeline is not None:
        if pipeline not in checked.pipelines:
            raise LmpcRuntimeError(f"{checked.path} has no pipeline `{pipeline}` "
                                   f"(it has: {', '.join(checked.pipelines) or 'none'})")
        return pipeline
    entries = checked.entry_pipelines()
    if len(entries) == 1:
        return entries[0]
    if not checked.pipelines:
        raise LmpcRuntimeError(f"{checked.path} declares no pipeline")
    raise LmpcRuntimeError(f"{checked.path} has several pipelines ({', '.join(entries)}); choose one")


def compile_source(text: str, file: str = "<string>", pipeline: str | None = None,
                   base_dir: str | Path | None = None, **options: Any) -> Program:
    """Compile .lmp text into a Program (raises CompileError with every diagnostic)."""
    checked = _compile_checked(text, file)
    name = choose_pipeline(checked, pipeline)
    prog = Program(checked.graphs[name], base_dir=base_dir, **options)
    prog.checked = checked
    return prog


def compile_file(path: str | Path, pipeline: str | None = None, **options: Any) -> Program:
    """Compile a .lmp file into a Program; `call` steps and model paths resolve next to it.

    options: cache (True/False/path or CallCache), trace_log, model (run every step on this
    declared model), max_workers.
    """
    path = Path(path)
    return compile_source(path.read_text(encoding="utf-8"), str(path), pipeline, base_dir=path.parent, **options)
