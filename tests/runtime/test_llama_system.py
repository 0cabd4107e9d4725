"""llama.cpp's extra buffer types (weight repacking, AMX): the decision, and what was loaded.

The decision is tested as a pure function on fake CPU flags and system-info strings (this
machine may or may not have AMX). The loads are real: llama.cpp logs one "<type> model buffer
size" line per weight buffer, and the tests assert that the logged types match the decision,
in-process and in the server launcher.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from pathlib import Path

import pytest

from lmpc.compiler.api import analyze
from lmpc.runtime.errors import ModelConfigError
from lmpc.runtime.models import GenerationRequest, create_model
from lmpc.runtime.models.llama_system import (
    ENV_VAR, amx_evidence, buffer_types, decide_extra_buffers, extra_buffer_types, extra_buffers_for,
    llama_system_info, load_llama, read_cpu_flags,
)
from lmpc.runtime.models.resolve import resolve_builtin

from .conftest import running_llama_server

SPR_FLAGS = {"avx2", "avx512f", "amx_tile", "amx_int8", "amx_bf16"}
AVX2_FLAGS = {"sse3", "avx", "avx2", "fma"}
SPR_INFO = "CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | AVX512 = 1 | AMX_INT8 = 1 | REPACK = 1 |"
AVX2_INFO = "CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | REPACK = 1 |"


# -- the decision (pure) -------------------------------------------------------------------

def test_auto_keeps_extra_buffers_without_amx():
    d = decide_extra_buffers("auto", env=None, cpu_flags=AVX2_FLAGS, system_info=AVX2_INFO)
    assert (d.enabled, d.source) == (True, "auto")


def test_auto_turns_them_off_when_the_cpu_flags_report_amx():
    d = decide_extra_buffers("auto", env=None, cpu_flags=SPR_FLAGS, system_info=AVX2_INFO)
    assert (d.enabled, d.source) == (False, "auto")
    assert "amx_bf16, amx_int8, amx_tile in /proc/cpuinfo" in d.reason


def test_auto_turns_them_off_when_llama_cpp_reports_amx():
    # e.g. no /proc/cpuinfo flags readable, but a native build with AMX
    d = decide_extra_buffers("auto", env=None, cpu_flags=(), system_info=SPR_INFO)
    assert not d.enabled and "AMX_INT8 = 1" in d.reason
    assert decide_extra_buffers("auto", env=None, cpu_flags=(),
                                system_info="CPU : AMX_INT8 = 0 |").enabled


def test_the_model_option_overrides_auto():
    d = decide_extra_buffers(True, env=None, cpu_flags=SPR_FLAGS, system_info=SPR_INFO)
    assert (d.enabled, d.source) == (True, "option")
    d = decide_extra_buffers(False, env="", cpu_flags=AVX2_FLAGS, system_info=AVX2_INFO)
    assert (d.enabled, d.source) == (False, "option")


@pytest.mark.parametrize("env, option, enabled", [
    ("off", True, False), ("OFF", "auto", False), ("false", "auto", False), ("0", True, False),
    ("on", False, True), ("true", "auto", True), ("1", "auto", True),
])
def test_the_environment_variable_wins(env, option, enabled):
    d = decide_extra_buffers(option, env=env, cpu_flags=SPR_FLAGS, system_info=SPR_INFO)
    assert (d.enabled, d.source) == (enabled, "env")
    assert d.reason == f"{ENV_VAR}={env}"


def test_env_auto_defers_to_the_option_then_to_detection():
    assert decide_extra_buffers(False, env="auto", cpu_flags=(), system_info="").source == "option"
    d = decide_extra_buffers("auto", env=" auto ", cpu_flags=SPR_FLAGS, system_info="")
    assert (d.enabled, d.source) == (False, "auto")


def test_bad_values_are_named():
    with pytest.raises(ModelConfigError, match=f"{ENV_VAR} must be auto, on .* not 'maybe'"):
        decide_extra_buffers("auto", env="maybe", cpu_flags=(), system_info="")
    with pytest.raises(ModelConfigError, match="extra_buffers must be auto"):
        decide_extra_buffers("yes please", env=None, cpu_flags=(), system_info="")
    with pytest.raises(ModelConfigError, match="option extra_buffers must be auto"):
        create_model("m", "llama_cpp", {"builtin": "smollm2-135m", "extra_buffers": "sometimes"})


def test_cpu_flags_are_read_from_a_cpuinfo_file(tmp_path: Path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Xeon\nflags\t\t: fpu avx2 amx_tile amx_int8\n\n"
                       "processor\t: 1\nflags\t\t: fpu avx2 amx_tile amx_int8\n")
    assert read_cpu_flags(cpuinfo) == {"fpu", "avx2", "amx_tile", "amx_int8"}
    assert read_cpu_flags(tmp_path / "absent") == frozenset()


def test_this_machine_is_decided_from_its_real_flags(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    flags = read_cpu_flags()
    has_amx = bool(flags & {"amx_tile", "amx_int8", "amx_bf16"}) or "AMX_INT8 = 1" in llama_system_info()
    d = extra_buffers_for()
    assert d.source == "auto" and d.enabled is not has_amx


def test_buffer_types_are_parsed_from_the_load_log():
    log = ("load_tensors:   CPU_Mapped model buffer size =   100.00 MiB\n"
           "load_tensors:   CPU_REPACK model buffer size =    80.00 MiB\n"
           "load_tensors:          AMX model buffer size =    10.00 MiB\n"
           "llama_kv_cache:        CPU KV buffer size =    24.00 MiB\n")
    assert buffer_types(log) == ["CPU_Mapped", "CPU_REPACK", "AMX"]
    assert extra_buffer_types(log) == ["CPU_REPACK", "AMX"]


# -- the .lmp option ---------------------------------------------------------------------

def test_lmpc_check_accepts_and_validates_the_option():
    ok = 'model m = llama_cpp(builtin: "smollm2-135m", extra_buffers: false)\n'
    ok += 'model n = llama_cpp(builtin: "smollm2-135m", extra_buffers: "auto")\n'
    program, diags = analyze(ok, "ok.lmp")
    assert program is not None and not [d for d in diags if d.is_error], diags
    assert program.models["m"].options["extra_buffers"] is False
    bad = 'model m = llama_cpp(builtin: "smollm2-135m", extra_buffers: "off")\n'
    _, diags = analyze(bad, "bad.lmp")
    errors = [d for d in diags if d.is_error]
    assert [d.code for d in errors] == ["bad-model-option"]
    assert (errors[0].span.line, errors[0].span.col) == (1, bad.index('"off"') + 1)
    assert 'extra_buffers is "auto", true or false' in errors[0].message


# -- real loads: the logged buffer types follow the decision ----------------------------------

# Forcing extra buffers on where the CPU has AMX would crash this process (the bug they avoid).
needs_no_amx = pytest.mark.skipif(bool(amx_evidence(read_cpu_flags(), llama_system_info())),
                                  reason="extra buffers on crash llama.cpp on CPUs with AMX")

def _load_and_log(options: dict, caplog: pytest.LogCaptureFixture) -> tuple[list[str], object, str]:
    caplog.clear()
    model = create_model("m", "llama_cpp", {**options, "temperature": 0})
    try:
        with caplog.at_level(logging.INFO, logger="lmpc.llama_cpp"):
            out = model.generate(GenerationRequest(
                messages=[{"role": "user", "content": "Is water wet? Answer yes or no."}],
                json_schema={"type": "object", "properties": {"answer": {"enum": ["yes", "no"]}},
                             "required": ["answer"]}, max_tokens=12))
        log = "\n".join(r.getMessage() for r in caplog.records if r.name == "lmpc.llama_cpp")
        return buffer_types(log), model.extra_buffers, out.text
    finally:
        model.close()


@pytest.mark.parametrize("builtin", ["smollm2-135m", "gemma3-270m"])
def test_extra_buffers_off_loads_no_repacked_weights(builtin, caplog, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    types, decision, text = _load_and_log({"builtin": builtin, "extra_buffers": False}, caplog)
    assert not decision.enabled and decision.source == "option"
    assert types and set(types) <= {"CPU", "CPU_Mapped"}, types
    assert json.loads(text)["answer"] in ("yes", "no")  # and it decodes


@needs_no_amx
def test_extra_buffers_on_repacks_gemma_q4_k_on_avx2(caplog, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    types, decision, text = _load_and_log({"builtin": "gemma3-270m", "extra_buffers": True}, caplog)
    assert decision.enabled and decision.source == "option"
    if "avx2" not in read_cpu_flags():
        pytest.skip("Q4_K is repacked for AVX2 CPUs; this one has none")
    assert "CPU_REPACK" in types or "AMX" in types, types
    assert json.loads(text)["answer"] in ("yes", "no")


def test_the_environment_variable_beats_the_option_in_a_real_load(caplog, monkeypatch):
    monkeypatch.setenv(ENV_VAR, "off")
    types, decision, _ = _load_and_log({"builtin": "gemma3-270m", "extra_buffers": True}, caplog)
    assert (decision.enabled, decision.source) == (False, "env")
    assert types and set(types) <= {"CPU", "CPU_Mapped"}, types


def test_load_llama_sets_the_field_for_its_own_load_only(smollm2_path: Path):
    import llama_cpp
    import llama_cpp.llama_cpp as C

    llm = load_llama(False, model_path=str(smollm2_path), n_ctx=64, verbose=False)
    try:
        assert llm.model_params.use_extra_bufts is False
    finally:
        llm.close()
    assert C.llama_model_default_params().use_extra_bufts is True  # others get llama.cpp's default
    plain = llama_cpp.Llama(model_path=str(smollm2_path), n_ctx=64, verbose=False)
    try:
        assert plain.model_params.use_extra_bufts is True
    finally:
        plain.close()


# -- the server launcher ---------------------------------------------------------------------

@pytest.mark.parametrize("setting", ["off", pytest.param("on", marks=needs_no_amx)])
def test_the_server_launcher_applies_the_decision(setting: str, tmp_path: Path):
    log_path = tmp_path / "server.log"
    gemma = resolve_builtin("gemma3-270m")
    with running_llama_server(gemma, log_path, env={ENV_VAR: setting}) as base_url:
        body = json.dumps({"prompt": "The sky is", "max_tokens": 4, "temperature": 0}).encode()
        req = urllib.request.Request(f"{base_url}/completions", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as r:
            assert json.load(r)["choices"][0]["text"]  # it decodes
    log = log_path.read_text(errors="replace")
    assert f"lmpc: llama.cpp extra buffer types {setting} ({ENV_VAR}={setting})" in log
    types = buffer_types(log)
    assert types, log[-2000:]
    if setting == "off":
        assert extra_buffer_types(log) == [], types
    elif "avx2" in read_cpu_flags():
        assert "CPU_REPACK" in types or "AMX" in types, types
