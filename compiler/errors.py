"""The root of every error lmpc reports to the user, and the exit codes the CLI maps them to.

It lives in the compiler, the first stage, so that every later stage (runtime, optimizers,
the lmpc package) can subclass it without importing backwards. Each stage keeps its own
classes beside its code (CompileError in diagnostics.py, ArtifactError in artifact.py,
LmpcRuntimeError in runtime/errors.py, OptimizerConfigError in optimizers/base.py, the CLI's
UsageError in lmpc/cli_common.py); lmpc/errors.py lists them all.

A class says which exit code `lmpc` ends with when it escapes a command (lmpc/cli.py main,
the one place that maps errors to exit codes); str() of an error is its complete message.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1  # the .lmp file has errors, a row failed, the build failed, a configuration error
EXIT_USAGE = 2  # a bad flag, argument, name, data file or artifact: nothing ran
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a command ended by Ctrl-C


class LmpcError(Exception):
    """Base class of every error lmpc raises for the user to read (`lmpc.LmpcError`)."""

    exit_code: int = EXIT_ERROR


class SourceFileError(LmpcError, OSError):
    """A .lmp file that cannot be read: not a file, not UTF-8 (an OSError too)."""

    exit_code = EXIT_USAGE


class SourceNotFoundError(SourceFileError, FileNotFoundError):
    """A .lmp file that does not exist (a FileNotFoundError too, as compile_file raised)."""


class PipelineChoiceError(LmpcError, ValueError):
    """The pipeline to run cannot be chosen: an unknown name, none declared, or several entry
    pipelines and none named. (A ValueError too, as CheckedProgram.choose_pipeline raised.)"""

    exit_code = EXIT_USAGE

