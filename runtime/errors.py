"""Errors the runtime raises for the user to read.

Each error's str() is a complete, one-paragraph message that says what went wrong and how
to fix it, so the CLI can print it as is, without a traceback. None ever contains a secret
(API keys are referred to by the name of their environment variable only).
"""

from __future__ import annotations


class LmpcRuntimeError(Exception):
    """Base class of every error the runtime reports to the user."""


class ModelNotFoundError(LmpcRuntimeError):
    """A model's weights are not available: builtin package missing, path missing, or a
    Hugging Face file that is neither cached nor downloadable."""


class ModelConfigError(LmpcRuntimeError):
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


class OutputError(LmpcRuntimeError):
    """A model's output could not be parsed or does not fit its declared type."""

    def __init__(self, message: str, raw_text: str = "") -> None:
        super().__init__(message)
        self.raw_text = raw_text
