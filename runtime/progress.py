"""Progress for long runs: a live bar in a terminal, plain lines in logs (CI stays readable)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """update(done, score, errors) as work proceeds; close() at the end. scored=False: work
    that has no score nor errors (building an index): only the count and the ETA are shown."""

    def __init__(self, total: int, label: str = "eval", stream: TextIO | None = None, live: bool | None = None,
                 scored: bool = True):
        self.total = total
        self.scored = scored
        self.label = label
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.t0 = time.monotonic()
        self._last_line = -1.0
        self._bar = None
        if self.live:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeRemainingColumn

            counts = [TextColumn("score {task.fields[score]}  errors {task.fields[errors]}")] if scored else []
            self._bar = Bar(TextColumn(f"{label}"), BarColumn(), MofNCompleteColumn(), *counts,
                            TextColumn("ETA"), TimeRemainingColumn(), console=Console(file=self.stream),
                            transient=False)
            self._task = self._bar.add_task(label, total=total, score="-", errors=0)
            self._bar.start()

    def eta(self, done: int) -> float | None:
        if done == 0:
            return None
        return (time.monotonic() - self.t0) / done * (self.total - done)

    def update(self, done: int, score: float | None = None, errors: int = 0) -> None:
        shown = "-" if score is None else f"{score:.3f}"
        if self._bar is not None:
            self._bar.update(self._task, completed=done, score=shown, errors=errors)
            return
        # Plain mode: a line at most every 5 s, and always the last one.
        now = time.monotonic()
        if done < self.total and now - self._last_line < 5.0:
            return
        self._last_line = now
        eta = self.eta(done)
        eta_text = f", ETA {eta:.0f} s" if eta is not None and done < self.total else ""
        pct = 100 * done / self.total if self.total else 100
        counts = f", score {shown}, errors {errors}" if self.scored else ""
        print(f"{self.label}: {done}/{self.total} ({pct:.0f}%){counts}{eta_text}",
              file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
