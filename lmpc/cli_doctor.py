"""`lmpc doctor`: what llama.cpp detected on this machine, and whether a local model runs.

The model is loaded and decoded in a child process, so a native crash inside llama.cpp (a
SIGSEGV, e.g. from AMX weight buffers) is reported, with the knob to try, instead of taking
lmpc down. The child prints one marked JSON line per stage on stdout: after loading (which
buffer types llama.cpp used) and after decoding (the answer and llama.cpp's timings).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

CHILD_TIMEOUT_S = 300
MARK = "LMPC-DOCTOR "  # prefix of the child's report lines on stdout
# Tests only: the child kills itself with this signal (e.g. SIGSEGV) after loading, before
# decoding, to exercise the crash report with a real signal.
CRASH_HOOK_ENV = "LMPC_DOCTOR_TEST_SIGNAL"
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "amx_tile", "amx_int8", "amx_bf16")
PROMPT = "Say hello in five words."
MAX_TOKENS = 16


def add_doctor_command(sub: Any) -> None:
    d = sub.add_parser(
        "doctor", help="show what llama.cpp detected here and whether a local model runs",
        description="Print versions, the CPU features llama.cpp uses, the extra-buffer decision, and "
                    "load and decode a local model in a child process (a crash is reported, not "
                    "suffered). Exit 0: the model runs; 1: it does not; 2: usage error.")
    d.add_argument("--model", default="smollm2-135m", metavar="NAME_OR_PATH",
                   help="a builtin model name or a .gguf path (default: smollm2-135m, the embedded model)")
    d.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    d.set_defaults(func=cmd_doctor)


def _model_options(spec: str) -> dict[str, Any]:
    from lmpc.cli_common import UsageError
    from lmpc.runtime.models import BUILTIN_MODELS

    if spec in BUILTIN_MODELS:
        return {"builtin": spec}
    path = Path(spec).expanduser()
    if path.is_file():
        return {"path": str(path.resolve())}
    raise UsageError(f"--model {spec}: neither a builtin model ({', '.join(BUILTIN_MODELS)}) "
                     "nor an existing .gguf file")


def _versions() -> dict[str, str]:
    import importlib.metadata

    import lmpc

    try:
        llama = importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        llama = "not installed"
    return {"lmpc": lmpc.__version__, "llama_cpp_python": llama,
            "python": platform.python_version(), "platform": f"{platform.system()} {platform.machine()}"}


def _run_child(options: dict[str, Any]) -> dict[str, Any]:
    """Load and decode in a child; what it reported, and how it ended."""
    cmd = [sys.executable, "-m", "lmpc.cli_doctor", "--child", json.dumps(options)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        out, err, code = e.stdout or "", e.stderr or "", None
        if isinstance(out, bytes):
            out, err = out.decode(errors="replace"), err.decode(errors="replace")  # type: ignore[union-attr]
    else:
        out, err, code = proc.stdout, proc.stderr, proc.returncode
    stages: dict[str, Any] = {}
    for line in out.splitlines():
        if line.startswith(MARK):
            report = json.loads(line[len(MARK):])
            stages[report.pop("stage")] = report
    run: dict[str, Any] = {"exit_code": code, **stages.get("loaded", {}), **stages.get("decoded", {})}
    run["ok"] = code == 0 and "decoded" in stages
    where = "while decoding" if "loaded" in stages else "while loading"
    if code is None:
        run["error"] = f"the child did not finish within {CHILD_TIMEOUT_S} s ({where})"
    elif code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else f"signal {-code}"
        run["signal"] = name
        run["error"] = f"the child died with {name} (exit {code}) {where}"
    elif "error" in stages:
        run["error"] = stages["error"]["error"]  # a message of lmpc's own, e.g. a missing model
    elif not run["ok"]:
        run["error"] = f"the child exited with {code} {where}"
    run["crashed"] = not run["ok"] and "error" not in stages
    if not run["ok"]:
        run["stderr_tail"] = err[-2000:]
    return run


def _hint(run: dict[str, Any], decision: dict[str, Any]) -> str | None:
    if not run["crashed"]:
        return None
    from lmpc.runtime.models.llama_system import ENV_VAR

    if decision["enabled"]:
        return (f"try turning llama.cpp's extra buffer types off: {ENV_VAR}=off lmpc doctor "
                "(then the same variable for lmpc run/eval/build, or `extra_buffers: false` in the "
                "model's options); see docs/runtime.md")
    return (f"extra buffer types were already off; try {ENV_VAR}=on lmpc doctor, another model "
            "(--model), or report the llama.cpp log above")


def doctor_report(model_spec: str) -> dict[str, Any]:
    from lmpc.runtime.models.llama_system import (
        amx_evidence, cpu_model_name, extra_buffers_for, llama_system_info, read_cpu_flags,
    )

    options = _model_options(model_spec)
    flags = read_cpu_flags()
    info = llama_system_info()
    decision = extra_buffers_for("auto")
    report: dict[str, Any] = {
        **_versions(),
        "cpu": {"model": cpu_model_name(), **{f: f in flags for f in CPU_FLAGS},
                "amx": amx_evidence(flags, info)},
        "llama_system_info": info,
        "extra_buffers": {"enabled": decision.enabled, "source": decision.source, "reason": decision.reason},
        "model": {"spec": model_spec, **options},
    }
    report["run"] = _run_child(options)
    hint = _hint(report["run"], report["extra_buffers"])
    if hint:
        report["run"]["hint"] = hint
    report["ok"] = report["run"]["ok"]
    return report


def _yes(v: bool) -> str:
    return "yes" if v else "no"


def _print_text(r: dict[str, Any]) -> None:
    cpu, eb, run = r["cpu"], r["extra_buffers"], r["run"]
    print(f"lmpc {r['lmpc']}, llama-cpp-python {r['llama_cpp_python']}, Python {r['python']} ({r['platform']})")
    print(f"CPU: {cpu['model']}")
    print(f"  AVX2: {_yes(cpu['avx2'])}  AVX512F: {_yes(cpu['avx512f'])}  AVX512_VNNI: {_yes(cpu['avx512_vnni'])}  "
          f"AMX: {'; '.join(cpu['amx']) if cpu['amx'] else 'no'}")
    print(f"llama.cpp system info: {r['llama_system_info']}")
    print(f"extra buffer types: {'on' if eb['enabled'] else 'off'} ({eb['reason']})")
    model = r["model"].get("builtin") or r["model"].get("path")
    print(f"model: {model}" + (f" ({run['path']})" if run.get("path") and run["path"] != model else ""))
    if "buffer_types" in run:
        print(f"  loaded in {run['load_s']:.1f} s into buffers: {', '.join(run['buffer_types']) or '(none logged)'}"
              f" (extra buffer types {'on' if run['extra_buffers'] else 'off'})")
    if run["ok"]:
        print(f"  decoded {run['generated_tokens']} tokens: prompt {run['prompt_tokens_per_s']:.1f} tokens/s, "
              f"generation {run['generation_tokens_per_s']:.1f} tokens/s")
        print(f"  answer: {run['text']!r}")
        print("ok: the model runs on this machine")
        return
    if run.get("stderr_tail", "").strip():
        print("  the child's last output:")
        for line in run["stderr_tail"].strip().splitlines()[-15:]:
            print(f"    {line}")
    print(f"FAILED: {run['error']}")
    if run.get("hint"):
        print(f"  {run['hint']}")


def cmd_doctor(args: argparse.Namespace) -> int:
    from lmpc.cli_common import UsageError
    from lmpc.runtime.errors import ModelConfigError

    try:
        report = doctor_report(args.model)
    except ModelConfigError as e:  # e.g. a bad LMPC_LLAMA_EXTRA_BUFFERS value
        raise UsageError(str(e)) from None
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_text(report)
    return 0 if report["ok"] else 1


# -- the child ---------------------------------------------------------------------------

def _emit(stage: str, **data: Any) -> None:
    print(MARK + json.dumps({"stage": stage, **data}), flush=True)


def child_main(options: dict[str, Any]) -> int:
    import logging

    from lmpc.runtime.errors import LmpcRuntimeError
    from lmpc.runtime.models.base import GenerationRequest
    from lmpc.runtime.models.llama_system import buffer_types
    from lmpc.runtime.models.local import LlamaCppModel

    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())
            print(lines[-1], file=sys.stderr, flush=True)  # the parent shows the tail after a crash

    llama_log = logging.getLogger("lmpc.llama_cpp")
    llama_log.addHandler(Collect(logging.INFO))
    llama_log.setLevel(logging.INFO)
    try:
        model = LlamaCppModel("doctor", options)
        start = time.perf_counter()
        model.has_chat_template  # loads the weights
        load_s = time.perf_counter() - start
        decision = model.extra_buffers
        assert decision is not None
        _emit("loaded", path=str(model.path), load_s=load_s, buffer_types=buffer_types("\n".join(lines)),
              extra_buffers=decision.enabled, extra_buffers_reason=decision.reason)
        crash = os.environ.get(CRASH_HOOK_ENV)
        if crash:
            os.kill(os.getpid(), getattr(signal, crash))
        out = model.generate(GenerationRequest(messages=[{"role": "user", "content": PROMPT}],
                                               json_schema=None, max_tokens=MAX_TOKENS))
        perf = model.perf()
        model.close()
    except LmpcRuntimeError as e:
        _emit("error", error=str(e))
        return 1
    _emit("decoded", text=out.text, generated_tokens=out.completion_tokens,
          prompt_tokens=perf["prompt_tokens"],
          prompt_tokens_per_s=perf["prompt_tokens"] / max(perf["prompt_ms"], 1e-6) * 1000,
          generation_tokens_per_s=perf["generated_tokens"] / max(perf["generation_ms"], 1e-6) * 1000)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        sys.exit(child_main(json.loads(sys.argv[2])))
    print("usage: lmpc doctor (this module's --child mode is for lmpc doctor itself)", file=sys.stderr)
    sys.exit(2)
