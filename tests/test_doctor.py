"""`lmpc doctor`: runs the real embedded model in a child process and reports; a child that
dies by a real signal is reported with the knob to try, and lmpc itself survives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lmpc.runtime.models.llama_system import ENV_VAR, extra_buffers_for, read_cpu_flags

ROOT = Path(__file__).resolve().parents[1]


def doctor(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k not in (ENV_VAR, "LMPC_DOCTOR_TEST_SIGNAL")}
    return subprocess.run([sys.executable, "-m", "lmpc", "doctor", *args], capture_output=True, text=True,
                          cwd=ROOT, env={**full_env, **(env or {})}, timeout=600)


def test_doctor_runs_the_embedded_model_and_reports(monkeypatch: pytest.MonkeyPatch):
    proc = doctor("--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r = json.loads(proc.stdout)
    assert r["ok"] and r["run"]["ok"] and r["run"]["exit_code"] == 0
    assert r["llama_cpp_python"] == "0.3.36" and r["lmpc"]
    assert "CPU :" in r["llama_system_info"]
    assert r["cpu"]["avx2"] == ("avx2" in read_cpu_flags())
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert r["extra_buffers"]["enabled"] == extra_buffers_for().enabled
    assert r["run"]["extra_buffers"] == r["extra_buffers"]["enabled"]
    assert r["run"]["buffer_types"]  # what llama.cpp actually loaded into
    assert r["run"]["generated_tokens"] > 0 and r["run"]["generation_tokens_per_s"] > 0
    assert r["run"]["prompt_tokens_per_s"] > 0 and r["run"]["text"]


def test_doctor_text_report_and_a_forced_setting():
    proc = doctor("--model", "gemma3-270m", env={ENV_VAR: "off"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert f"extra buffer types: off ({ENV_VAR}=off)" in out
    assert "into buffers: CPU_Mapped" in out and "CPU_REPACK" not in out
    assert "ok: the model runs on this machine" in out


@pytest.mark.parametrize("setting, hint", [
    ("on", f"{ENV_VAR}=off lmpc doctor"),
    ("off", "extra buffer types were already off"),
])
def test_a_child_killed_by_sigsegv_is_reported_with_the_knob(setting: str, hint: str):
    proc = doctor(env={"LMPC_DOCTOR_TEST_SIGNAL": "SIGSEGV", ENV_VAR: setting})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAILED: the child died with SIGSEGV (exit -11) while decoding" in proc.stdout
    assert hint in proc.stdout
    assert "the child's last output:" in proc.stdout and "buffer size" in proc.stdout  # llama.cpp's log
    assert "Traceback" not in proc.stdout + proc.stderr


def test_crash_report_as_json():
    proc = doctor("--json", env={"LMPC_DOCTOR_TEST_SIGNAL": "SIGABRT"})
    assert proc.returncode == 1
    run = json.loads(proc.stdout)["run"]
    assert run["signal"] == "SIGABRT" and run["exit_code"] == -6 and not run["ok"]
    assert run["buffer_types"]  # the load had finished: the report says what it loaded


def test_usage_errors_exit_2():
    proc = doctor("--model", "no-such-model")
    assert proc.returncode == 2
    assert "lmpc: error: --model no-such-model: neither a builtin model" in proc.stderr
    proc = doctor(env={ENV_VAR: "sometimes"})
    assert proc.returncode == 2
    assert f"{ENV_VAR} must be auto, on (true) or off (false), not 'sometimes'" in proc.stderr
    assert "Traceback" not in proc.stderr
