"""Traces: one record per model (or function) call, kept with results and appended to a log."""

from __future__ import annotations

import json
import os
import threading
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lmpc.runtime import redact


@dataclass
class TraceEvent:
    step: str
    kind: str  # predict | chain_of_thought | call
    span: dict | None
    model: str | None
    messages: list[dict] | None
    inputs: dict[str, Any]
    raw: str | None
    parsed: dict[str, Any] | None
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    cache_hit: bool = False
    row: int = 0
    started_at: float = 0.0
    trace_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Usage:
    """Model calls counted by a meter: every call the log sees, cached ones included."""

    calls: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    _token: Any = field(default=None, repr=False, compare=False)

    def add(self, events: list[TraceEvent]) -> None:
        for e in events:
            if e.model is not None:
                self.calls += 1
                self.cache_hits += e.cache_hit
                self.prompt_tokens += e.prompt_tokens
                self.completion_tokens += e.completion_tokens

    def stop(self) -> "Usage":
        """Stop counting (a meter started with start_meter)."""
        if self._token is not None:
            _METERS.reset(self._token)
            self._token = None
        return self


# The meters counting in this context. Every program's executor hands each level's events to
# its TraceLog (one without a file counts only), so a meter sees every model call made in its
# context by any program: the pipeline's, a judge metric's, a teacher's, an ensemble's members.
_METERS: ContextVar[tuple[Usage, ...]] = ContextVar("lmpc_meters", default=())


def start_meter() -> Usage:
    """Count the model calls made from here on in this context, until .stop(); meters nest."""
    usage = Usage()
    usage._token = _METERS.set(_METERS.get() + (usage,))
    return usage


class TraceLog:
    """Appends events as JSON lines (`lmpc inspect` reads the tail); path None: counts only.

    Whatever the path, every event appended is counted by the meters running (start_meter)."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()

    def append(self, events: list[TraceEvent]) -> None:
        if not events:
            return
        for usage in _METERS.get():
            usage.add(events)
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = "".join(redact.dumps(e.to_json(), ensure_ascii=False) + "\n" for e in events)
        with self._lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    def tail(self, n: int) -> list[dict[str, Any]]:
        if self.path is None or not self.path.exists():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        out = []
        for line in lines[-n:]:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by a killed run
                continue
        return out
