"""A run killed with SIGKILL mid-batch leaves a usable cache, and a rerun reuses every call
it finished."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import lmpc
from lmpc.runtime.cache import CallCache

from .test_program_local import CLASSIFY

TEXTS = ["I love it", "This is awful", "Best day ever!", "I hate rain", "So boring", "Great food",
         "Nice", "Terrible", "Wonderful", "Sad news"]


def _count(path) -> int:
    try:
        with sqlite3.connect(path) as db:
            return db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_killed_run_keeps_finished_calls(tmp_path):
    db = tmp_path / "calls.sqlite"
    script = textwrap.dedent(f"""
        import lmpc
        from lmpc.runtime.cache import CallCache
        prog = lmpc.compile_source({CLASSIFY!r}, cache=CallCache({str(db)!r}), trace_log=False)
        prog.batch([{{"text": t}} for t in {TEXTS!r}])
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 240
    while _count(db) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = _count(db)
    assert 3 <= done < len(TEXTS), "the run should have been killed part-way"

    cache = CallCache(db)
    prog = lmpc.compile_source(CLASSIFY, cache=cache, trace_log=False)
    results = prog.batch([{"text": t} for t in TEXTS])
    assert all(r.ok for r in results)
    assert cache.stats.hits == done and cache.stats.misses == len(TEXTS) - done
    assert cache.count() == len(TEXTS)
    prog.close()
