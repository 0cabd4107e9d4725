"""The model interface the runtime codes against, and the factory that builds models.

A Model turns a GenerationRequest (chat messages + optional JSON Schema) into a Completion.
Implementations: local GGUF files through llama.cpp (local.py) and OpenAI-compatible HTTP
servers (remote.py). Validating the returned text against the schema is the caller's job.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from lmpc.compiler.options import PROVIDER_OPTIONS
from lmpc.runtime.errors import ModelConfigError


class CancelToken:
    """Set once when a batch is abandoned (Ctrl-C, a configuration error): models stop their
    in-flight calls (on_cancel callbacks) and the executor starts no new ones."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], Any]] = []

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def cancel(self) -> None:
        with self._lock:
            if self._event.is_set():
                return
            self._event.set()
            callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:
            fn()

    def on_cancel(self, fn: Callable[[], Any]) -> Callable[[], None]:
        """Call fn when cancelled (at once if already); returns a function that unregisters it."""
        with self._lock:
            if not self._event.is_set():
                self._callbacks.append(fn)

                def remove() -> None:
                    with self._lock:
                        if fn in self._callbacks:
                            self._callbacks.remove(fn)

                return remove
        fn()
        return lambda: None


@dataclass
class GenerationRequest:
    messages: list[dict]  # [{"role": "system"|"user"|"assistant", "content": str}, ...]
    json_schema: dict | None  # constrain the output to this JSON Schema (None = free text)
    max_tokens: int = 256
    temperature: float = 0.0
    seed: int = 0
    stop: list[str] | None = None
    # a LoRA adapter to apply (local models): (its verified file, its SHA-256); runtime/models/adapters.py
    adapter: tuple[Path, str] | None = None
    # The batch's cancel token: implementations that can stop a call midway (HTTP) watch it.
    cancel: CancelToken | None = field(default=None, compare=False, repr=False)


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None = None
    endpoint: str | None = None  # the server that answered (remote models; a pool has several)


class Model(ABC):
    """One declared model. generate() is thread-safe on every implementation."""

    name: str  # the name in the .lmp file

    @property
    @abstractmethod
    def identity(self) -> str:
        """Stable id for cache keys (provider + weights, or base URL + model). Never a secret."""

    @property
    def has_chat_template(self) -> bool:
        """False for base models that should get a plain completion-style prompt."""
        return True

    @property
    def supports_adapters(self) -> bool:
        """Whether generate() applies a request's LoRA adapter (local llama.cpp models)."""
        return False

    @property
    def supports_concurrency(self) -> bool:
        """Whether callers gain anything from calling generate() from several threads."""
        return False

    @abstractmethod
    def generate(self, req: GenerationRequest) -> Completion: ...

    def close(self) -> None:
        """Release weights, threads and connections. Idempotent."""

    def __repr__(self) -> str:
        # Not the identity: computing it may touch the disk, and repr must never fail.
        return f"<{type(self).__name__} {self.name!r}>"


PROVIDERS = tuple(PROVIDER_OPTIONS)


def check_options(name: str, provider: str, options: dict[str, Any], known: tuple[str, ...]) -> None:
    """Reject option names a provider does not understand (a typo would otherwise be ignored)."""
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ModelConfigError(
            f"model `{name}` ({provider}): unknown option(s) {', '.join(unknown)}; "
            f"the options of {provider} are: {', '.join(known)}"
        )


def create_model(name: str, provider: str, options: dict, base_dir: Path | None = None) -> Model:
    """Build the Model for one `model` declaration. Cheap: weights load on first generate()."""
    # Imported here so that using one provider never imports the other's heavy dependency.
    if provider == "llama_cpp":
        from lmpc.runtime.models.local import LlamaCppModel

        return LlamaCppModel(name, options, base_dir)
    if provider == "openai":
        from lmpc.runtime.models.remote import OpenAIModel

        return OpenAIModel(name, options)
    raise ModelConfigError(
        f"model `{name}`: unknown provider `{provider}`; the providers are: {', '.join(PROVIDERS)}"
    )
