"""Traces: one record per model (or function) call, kept with results and appended to a log."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


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


class TraceLog:
    """Appends events as JSON lines; `lmpc inspect` reads the tail."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()

    def append(self, events: list[TraceEvent]) -> None:
        if not events:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = "".join(json.dumps(e.to_json(), ensure_ascii=False) + "\n" for e in events)
        with self._lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    def tail(self, n: int) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        out = []
        for line in lines[-n:]:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by a killed run
                continue
        return out
