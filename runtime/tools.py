"""Run one tool of a react step: only the function the .lmp file names, with a timeout; its
result, exception or timeout becomes the observation the model reads next.

Why a thread and not a process: a tool is an ordinary Python function of the user's file
(like a `call` step), often cheap (a calculator, a lookup), and a process per call would cost
more than most tools (a fork of a process holding llama.cpp threads, or a fresh interpreter
that imports the file again) and would need picklable arguments and results. Measured on
the example's calculator (2-core CPU): 0.03 ms called directly, 0.26 ms in a thread, 187 ms
in a fresh interpreter. A thread cannot be killed, so on timeout the call is abandoned: the
row goes on with a timeout observation,
the thread runs on in the background until the function returns (a daemon thread: it does
not keep the process alive), and its result is dropped. A tool that may hang forever should
bound its own I/O (timeouts on its sockets).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from lmpc.compiler.kinds.react import tool_fields
from lmpc.runtime.calls import load_function
from lmpc.runtime.values import validation_error


def run_tool(spec: dict, args: dict[str, Any], base_dir: Path, timeout_s: float) -> dict[str, Any]:
    """{"observation": text, "error": None | why, "result": value}: never raises for what the
    tool does (a missing file or function raises LmpcRuntimeError: that is the program's
    mistake, not an observation)."""
    fn = load_function(spec["fn"], base_dir)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = fn(**args)
        except BaseException as e:  # the tool's failure is reported to the model, not raised
            box["error"] = e

    worker = threading.Thread(target=target, name=f"lmpc-tool-{spec['fn']}", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        why = f"the tool did not answer within {timeout_s:g} s"
        return {"observation": f"error: {why}", "error": why, "result": None}
    if "error" in box:
        e = box["error"]
        why = f"{type(e).__name__}: {e}"
        return {"observation": f"error: {why}", "error": why, "result": None}
    result = box.get("result")
    expected = tool_fields(spec)[1]
    if expected is not None:
        why = validation_error(_jsonable(result), expected["schema"])
        if why is not None:
            why = f"the tool returned {type(result).__name__} {_short(result)}, not {expected['type']} ({why})"
            return {"observation": f"error: {why}", "error": why, "result": None}
    return {"observation": _text(result), "error": None, "result": _jsonable(result)}


def _jsonable(value: Any) -> Any:
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError):
        return str(value)


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(value)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
