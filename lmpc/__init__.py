"""lmpc: a declarative dataflow-graph compiler for language-model programs.

    import lmpc
    prog = lmpc.compile_file("examples/sentiment/sentiment.lmp")
    prog(text="I love this phone").label      # 'positive'
    prog.graph                                # the typed networkx.DiGraph that runs

The runtime (and llama.cpp) is imported on first use, so `lmpc check` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "compile_file": "lmpc.api",
    "compile_source": "lmpc.api",
    "ensemble": "lmpc.api",
    "evaluate": "lmpc.api",
    "load": "lmpc.api",
    "ArtifactError": "lmpc.compiler.artifact",
    "ArtifactTrustError": "lmpc.compiler.artifact",
    "CheckedProgram": "lmpc.compiler",
    "CompileError": "lmpc.compiler",
    "ConfigurationError": "lmpc.runtime.errors",
    "DataError": "lmpc.runtime.data",
    "Diagnostic": "lmpc.compiler",
    "EnsembleProgram": "lmpc.runtime.ensemble",
    "LmpcError": "lmpc.compiler.errors",
    "LmpcRuntimeError": "lmpc.runtime.errors",
    "MetricError": "lmpc.runtime.metrics",
    "OptimizerConfigError": "lmpc.optimizers.base",
    "OutputError": "lmpc.runtime.errors",
    "PipelineChoiceError": "lmpc.compiler.errors",
    "Program": "lmpc.runtime.program",
    "Result": "lmpc.runtime.program",
    "RunnableProgram": "lmpc.runtime.protocol",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lmpc' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
