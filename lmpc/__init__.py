"""lmpc: a declarative dataflow-graph compiler for language-model programs.

    import lmpc
    program = lmpc.compile_file("examples/sentiment/sentiment.lmp")
    program.graphs["classify"]          # a typed networkx.DiGraph
"""

from lmpc.compiler import CheckedProgram, CompileError, Diagnostic, compile_file, compile_source

__version__ = "0.1.0"

__all__ = ["CheckedProgram", "CompileError", "Diagnostic", "compile_file", "compile_source", "__version__"]
