"""What llama.cpp detected on this machine, and whether to use its extra buffer types.

llama.cpp's CPU backend can store weights in "extra" buffer types that repack them for
faster kernels: CPU_REPACK (e.g. Q4_0/Q4_K on AVX2) and AMX (Intel Sapphire Rapids and
later). On CPUs with AMX the AMX buffers crash the first decode (a known llama.cpp problem),
so by default (`auto`) lmpc turns extra buffer types off when the CPU reports AMX, and keeps
them on elsewhere, where they only make things faster.

The model-params field `use_extra_bufts` controls this, but llama-cpp-python's Llama() has no
argument for it (unknown keywords are swallowed). load_llama() sets the field for one load
only: llama.py builds its params with llama_model_default_params(), which is wrapped once so
that it applies a per-thread (contextvar) override, or a process-wide one for the server
launcher; any other caller of Llama() in the same process is unaffected. After loading, the
params the model was actually built with are checked.
"""

from __future__ import annotations

import contextvars
import functools
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from lmpc.runtime.errors import LmpcRuntimeError, ModelConfigError

ENV_VAR = "LMPC_LLAMA_EXTRA_BUFFERS"
ON_WORDS = ("on", "true", "1", "yes")
OFF_WORDS = ("off", "false", "0", "no")
AMX_FLAGS = ("amx_tile", "amx_int8", "amx_bf16")  # as /proc/cpuinfo spells them
CPUINFO = Path("/proc/cpuinfo")
_AMX_SYSINFO = re.compile(r"\bAMX_INT8\s*=\s*1\b")
# llama.cpp logs one "<buffer type> model buffer size = ... MiB" line per buffer it loads into.
_BUFFER_LINE = re.compile(r"(\S+) model buffer size\s*=")
# Buffers that hold weights as they are in the file; anything else is an extra buffer type.
PLAIN_CPU_BUFFERS = frozenset({"CPU", "CPU_Mapped"})


@dataclass(frozen=True)
class ExtraBuffers:
    """The decision for one load: enabled, and why (for logs, `lmpc doctor`, errors)."""

    enabled: bool
    source: str  # "env", "option" or "auto"
    reason: str

    @property
    def word(self) -> str:
        return "on" if self.enabled else "off"


def parse_setting(value: Any, where: str) -> str | bool:
    """"auto", True or False from an option value or an environment variable's text."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        if word == "auto":
            return "auto"
        if word in ON_WORDS:
            return True
        if word in OFF_WORDS:
            return False
    raise ModelConfigError(f"{where} must be auto, on (true) or off (false), not {value!r}")


def amx_evidence(cpu_flags: Iterable[str], system_info: str) -> list[str]:
    """What reports AMX: the CPU's flags and/or llama.cpp's system info (empty: no AMX)."""
    flags = sorted(set(cpu_flags) & set(AMX_FLAGS))
    found = [f"{', '.join(flags)} in /proc/cpuinfo"] if flags else []
    if _AMX_SYSINFO.search(system_info):
        found.append("AMX_INT8 = 1 in llama.cpp's system info")
    return found


def decide_extra_buffers(option: Any = "auto", *, env: str | None, cpu_flags: Iterable[str],
                         system_info: str) -> ExtraBuffers:
    """Whether a load uses extra buffer types. Pure: the caller passes what it read.

    LMPC_LLAMA_EXTRA_BUFFERS (on/off) wins over the model option, which wins over auto: the
    variable belongs to the machine, where a program written elsewhere may crash.
    """
    if env is not None and env.strip():
        setting = parse_setting(env, f"the environment variable {ENV_VAR}")
        if setting != "auto":
            return ExtraBuffers(bool(setting), "env", f"{ENV_VAR}={env.strip()}")
    setting = parse_setting(option, "the llama_cpp model option extra_buffers")
    if setting != "auto":
        return ExtraBuffers(bool(setting), "option", f"model option extra_buffers: {str(setting).lower()}")
    evidence = amx_evidence(cpu_flags, system_info)
    if evidence:
        return ExtraBuffers(False, "auto", "auto: the CPU has AMX (" + "; ".join(evidence) + "), and "
                            "llama.cpp's AMX weight buffers crash on such CPUs")
    return ExtraBuffers(True, "auto", "auto: no AMX reported by the CPU or llama.cpp")


# -- reading this machine ------------------------------------------------------------------

def read_cpu_flags(path: Path = CPUINFO) -> frozenset[str]:
    """The first `flags` line of /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def cpu_model_name(path: Path = CPUINFO) -> str:
    try:
        for line in path.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                return value.strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


@functools.lru_cache(maxsize=1)
def llama_system_info() -> str:
    """llama_print_system_info(): the backends and CPU features llama.cpp will use."""
    import llama_cpp

    return llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip()


def extra_buffers_for(option: Any = "auto") -> ExtraBuffers:
    """The decision on this machine, for a model whose extra_buffers option is `option`."""
    return decide_extra_buffers(option, env=os.environ.get(ENV_VAR), cpu_flags=read_cpu_flags(),
                                system_info=llama_system_info())


def buffer_types(log_text: str) -> list[str]:
    """The model buffer types a llama.cpp load log names, in order, once each."""
    seen: list[str] = []
    for name in _BUFFER_LINE.findall(log_text):
        if name not in seen:
            seen.append(name)
    return seen


def extra_buffer_types(log_text: str) -> list[str]:
    return [b for b in buffer_types(log_text) if b not in PLAIN_CPU_BUFFERS]


# -- loading with the decision applied -----------------------------------------------------

_override: contextvars.ContextVar[bool | None] = contextvars.ContextVar("lmpc_extra_bufts", default=None)
_process_default: bool | None = None  # set by the server launcher, which owns its process
_install_lock = threading.Lock()


def has_extra_bufts_field() -> bool:
    import llama_cpp

    return "use_extra_bufts" in {name for name, *_ in llama_cpp.llama_model_params._fields_}


def _require_field() -> None:
    if not has_extra_bufts_field():
        import llama_cpp

        version = getattr(llama_cpp, "__version__", "?")
        raise LmpcRuntimeError(
            f"llama-cpp-python {version} has no use_extra_bufts model parameter, so lmpc cannot "
            "turn off llama.cpp's extra buffer types (needed on CPUs with AMX); install the "
            f"version lmpc pins (pip install -e .), or set {ENV_VAR}=on to load with them"
        )


def _install() -> None:
    """Wrap llama_model_default_params once so it applies our override (if any)."""
    import llama_cpp.llama_cpp as C

    with _install_lock:
        if getattr(C.llama_model_default_params, "_lmpc_wrapped", False):
            return
        _require_field()
        original = C.llama_model_default_params

        def default_params() -> Any:
            params = original()
            value = _override.get()
            if value is None:
                value = _process_default
            if value is not None:
                params.use_extra_bufts = value
            return params

        default_params._lmpc_wrapped = True  # type: ignore[attr-defined]
        C.llama_model_default_params = default_params


def set_process_extra_buffers(enabled: bool) -> None:
    """Apply `enabled` to every model this process loads (the server launcher's way)."""
    global _process_default
    if enabled and not has_extra_bufts_field():
        return  # llama.cpp's default, nothing to set
    _install()
    _process_default = enabled


def load_llama(extra_buffers: bool, **kwargs: Any) -> Any:
    """llama_cpp.Llama(**kwargs) with use_extra_bufts = extra_buffers for this load only."""
    from llama_cpp import Llama

    if extra_buffers and not has_extra_bufts_field():
        return Llama(**kwargs)  # llama.cpp's default, nothing to set or check
    _install()
    token = _override.set(extra_buffers)
    try:
        llm = Llama(**kwargs)
    finally:
        _override.reset(token)
    if bool(llm.model_params.use_extra_bufts) != extra_buffers:
        llm.close()
        raise LmpcRuntimeError(
            "llama-cpp-python ignored lmpc's use_extra_bufts setting (its Llama() no longer builds "
            "its model params with llama_model_default_params); cannot apply "
            f"extra buffers {'on' if extra_buffers else 'off'}"
        )
    return llm
