"""A persistent, content-addressed cache of model calls (SQLite, one row per call).

Keys hash everything that determines a call's result: model identity, messages, decoding
settings, output schema and a sample id ("another sample" of the same prompt). Each insert
commits on its own (WAL journal), so a killed run loses nothing already answered. Identical
calls in flight are de-duplicated: the second waits for the first.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable


def default_cache_dir() -> Path:
    return Path(os.environ.get("LMPC_CACHE_DIR") or Path.home() / ".cache" / "lmpc")


def call_key(parts: dict[str, Any]) -> str:
    # Key order is kept, not sorted: the order of an output schema's properties is the order
    # the model decodes the fields in, so two schemas that differ only in order are two calls.
    # Every part is built in a fixed order by the code, so equal calls still get equal keys.
    blob = json.dumps(parts, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    deduplicated: int = 0


class CallCache:
    def __init__(self, path: str | Path | None = None, enabled: bool = True):
        self.enabled = enabled
        self.stats = CacheStats()
        self._lock = threading.Lock()
        self._inflight: dict[str, Future] = {}
        self.path = Path(path) if path else default_cache_dir() / "calls.sqlite"
        self._db: sqlite3.Connection | None = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, value TEXT NOT NULL)")

    def get(self, key: str) -> dict | None:
        if self._db is None:
            return None
        with self._lock:
            row = self._db.execute("SELECT value FROM calls WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, value: dict) -> None:
        if self._db is None:
            return
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO calls (key, value) VALUES (?, ?)",
                             (key, json.dumps(value, ensure_ascii=False)))

    def get_or_compute(self, key: str, compute: Callable[[], dict]) -> tuple[dict, bool]:
        """(value, cache_hit). Only successful results are stored."""
        if not self.enabled:
            self.stats.misses += 1
            return compute(), False
        cached = self.get(key)
        if cached is not None:
            self.stats.hits += 1
            return cached, True
        with self._lock:
            waiting = self._inflight.get(key)
            if waiting is None:
                mine: Future = Future()
                self._inflight[key] = mine
        if waiting is not None:
            self.stats.deduplicated += 1
            return waiting.result(), True
        try:
            self.stats.misses += 1
            value = compute()
            self.put(key, value)
            mine.set_result(value)
            return value, False
        except BaseException as e:
            mine.set_exception(e)
            raise
        finally:
            with self._lock:
                self._inflight.pop(key, None)

    def count(self) -> int:
        if self._db is None:
            return 0
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
