"""Every error class lmpc raises for the user, one root (`lmpc.LmpcError`, compiler/errors.py)
and a subclass per stage, each beside its stage's code. ERRORS is the registry: tests check
every class against it, and lmpc/cli.py main maps each to its exit code (its `exit_code`)."""

from __future__ import annotations

from lmpc.cli_common import CommandInterrupted, UsageError
from lmpc.compiler.artifact import ArtifactError, ArtifactTrustError
from lmpc.compiler.diagnostics import ArgumentCompileError, CompileError
from lmpc.compiler.errors import LmpcError, PipelineChoiceError, SourceFileError, SourceNotFoundError
from lmpc.optimizers.base import OptimizerConfigError
from lmpc.optimizers.bootstrap import TeacherBrokenError
from lmpc.optimizers.finetune_train import FinetuneNotInstalled
from lmpc.runtime.budget import BudgetExceededError
from lmpc.runtime.data import DataError
from lmpc.runtime.embed import EmbedderError
from lmpc.runtime.errors import (AuthenticationError, ConfigurationError, EndpointNotFoundError, Interrupted,
                                 InvalidArgumentError, LmpcRuntimeError, ModelConfigError, ModelNotFoundError,
                                 OutputError, ServerError, ServerUnreachableError)
from lmpc.runtime.executor import StepError
from lmpc.runtime.metrics import MetricError
from lmpc.runtime.models.adapters import AdapterError
from lmpc.runtime.retrieval import RetrievalError

# stage -> its classes (the first is the stage's base, where it has one)
STAGES: dict[str, tuple[type[LmpcError], ...]] = {
    "compile": (CompileError, ArgumentCompileError, PipelineChoiceError, SourceFileError, SourceNotFoundError),
    "artifact": (ArtifactError, ArtifactTrustError),
    "runtime": (LmpcRuntimeError, ConfigurationError, InvalidArgumentError, Interrupted, ModelNotFoundError,
                ModelConfigError, ServerUnreachableError, ServerError, AuthenticationError, EndpointNotFoundError,
                OutputError, StepError, EmbedderError, RetrievalError, AdapterError),
    "data": (DataError,),
    "metrics": (MetricError,),
    "budget": (BudgetExceededError,),
    "optimizers": (OptimizerConfigError, TeacherBrokenError, FinetuneNotInstalled),
    "cli": (UsageError, CommandInterrupted),
}

ERRORS: tuple[type[LmpcError], ...] = tuple(cls for classes in STAGES.values() for cls in classes)

__all__ = ["ERRORS", "STAGES", "LmpcError"] + [cls.__name__ for cls in ERRORS]
