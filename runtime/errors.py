"""Errors the runtime raises for the user to read.

Each error's str() is a complete, one-paragraph message that says what went wrong and how
to fix it, so the CLI can print it as is, without a traceback. None ever contains a secret:
API keys are referred to by the name of their environment variable, and every message passes
through redact (a server that echoes the key in its error body, a base_url with credentials).

ConfigurationError marks the errors that would fail every row the same way (an unset key
variable, a model that cannot load, a server that refuses the key): the executor raises them
once for the whole batch instead of recording one per row.

Every class here is an lmpc.LmpcError (compiler/errors.py); exit_code is what `lmpc` ends with
when one escapes a command.
"""

from __future__ import annotations

from lmpc.compiler.errors import EXIT_INTERRUPTED, EXIT_USAGE, LmpcError
from lmpc.runtime.redact import redact


class LmpcRuntimeError(LmpcError):
    """Base class of every error the runtime reports to the user."""

    def __init__(self, *args: object) -> None:
        super().__init__(*(redact(a) if isinstance(a, str) else a for a in args))


class ConfigurationError(LmpcRuntimeError):
    """An error of the setup, not of one row: every call would fail the same way, so a batch
    stops at the first one and raises it (Program.batch, lmpc.evaluate, `lmpc eval`/`run`)."""


class InvalidArgumentError(LmpcRuntimeError, ValueError):
    """A name or value the program was asked to use that it does not have, found before any
    model call: a model to run every step on, a judge pipeline, no metric to score with, a
    negative limit or sample size (a ValueError too, as those were)."""

    exit_code = EXIT_USAGE


class Interrupted(LmpcRuntimeError):
    """A call was cancelled because its batch was interrupted (Ctrl-C); never a row's result."""

    exit_code = EXIT_INTERRUPTED


class ModelNotFoundError(ConfigurationError):
    """A model's weights are not available: builtin package missing, path missing, or a
    Hugging Face file that is neither cached nor downloadable."""


class ModelConfigError(ConfigurationError):
    """A model's options are wrong: unknown builtin, unknown option, unset API-key variable."""


class ServerUnreachableError(LmpcRuntimeError):
    """No connection to an OpenAI-compatible server could be made, after retries."""


class ServerError(LmpcRuntimeError):
    """The server kept answering 5xx / 429 or timing out, after retries; or answered a
    request error (4xx) that retrying cannot fix."""

    def __init__(self, message: str, *, status: int | None = None, attempts: int = 1) -> None:
        super().__init__(message)
        self.status = status
        self.attempts = attempts


class AuthenticationError(ServerError, ConfigurationError):
    """The server refused the credentials (HTTP 401/403): every request would be refused."""


class EndpointNotFoundError(ServerError, ConfigurationError):
    """The server answered 404 for the chat endpoint or model: base_url or model is wrong."""


class OutputError(LmpcRuntimeError):
    """A model's output could not be parsed or does not fit its declared type."""

    def __init__(self, message: str, raw_text: str = "") -> None:
        super().__init__(message)
        self.raw_text = raw_text
