"""lmpc.compiler: AST, diagnostics, semantic checks, lowering to the IR, and passes."""

from lmpc.compiler.api import analyze, compile_file, compile_source
from lmpc.compiler.checked import CheckedProgram
from lmpc.compiler.diagnostics import CODES, CompileError, Diagnostic, Span

__all__ = ["analyze", "compile_file", "compile_source", "CheckedProgram", "CODES", "CompileError",
           "Diagnostic", "Span"]
