"""A one-step classifier on an OpenAI-compatible server named by LMPC_TEST_BASE_URL, and helpers
to run the `lmpc` command on it in a real subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

SOURCE = '''
model srv = openai(model: "hostile", base_url: env("LMPC_TEST_BASE_URL"), timeout: {timeout}, max_retries: {retries}{extra})
type Label = "positive" | "negative"
signature Sentiment = text -> label: Label
pipeline classify(text: str) -> (label: Label) {{
    s = predict Sentiment(text: text)
    return label: s.label
}}
'''


def source(timeout: float = 30, retries: int = 3, extra: str = "") -> str:
    return SOURCE.format(timeout=timeout, retries=retries, extra=extra)


def write_project(tmp: Path, rows: int, **kw) -> tuple[Path, Path]:
    """classify.lmp and data.jsonl (rows examples, gold positive) in tmp."""
    prog = tmp / "classify.lmp"
    prog.write_text(source(**kw))
    data = tmp / "data.jsonl"
    data.write_text("".join(json.dumps({"text": f"row {i}", "label": "positive"}) + "\n" for i in range(rows)))
    return prog, data


def lmpc_env(base_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMPC_")}
    return {**env, "LMPC_TEST_BASE_URL": base_url, "PYTHONUNBUFFERED": "1", **extra}


def _default_sigint() -> None:
    # a test run started in the background (`cmd &` in a script) inherits SIGINT ignored, and
    # so would the child: these tests need the terminal's Ctrl-C behaviour
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_lmpc(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lmpc", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                            preexec_fn=_default_sigint)


def run_lmpc(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lmpc", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
