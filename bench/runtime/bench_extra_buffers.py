"""The cost of turning llama.cpp's extra buffer types (weight repacking, AMX) off.

lmpc turns them off on CPUs with AMX (where they crash) and keeps them on elsewhere. This
measures what "off" costs: prompt-evaluation and generation tokens/s with use_extra_bufts on
and off, for each builtin model, loaded as lmpc loads them (threads, 16-token batches).
Settings alternate within each repetition so that machine-load drift hits both alike; the
table gives medians and the best repetition (least disturbed by other jobs). It also prints which buffer types llama.cpp loaded the weights into.

    .venv/bin/python bench/runtime/bench_extra_buffers.py [--repeats 5] [--models gemma3-270m smollm2-135m]
"""

from __future__ import annotations

import argparse
import logging
import platform
import statistics
import time

import llama_cpp

from lmpc.runtime.models.llama_system import (
    amx_evidence, buffer_types, cpu_model_name, llama_system_info, load_llama, read_cpu_flags,
)
from lmpc.runtime.models.local import PREFIX_CHUNK, _install_log_sink, default_threads
from lmpc.runtime.models.resolve import resolve_builtin

PROMPT = ("You are a careful assistant that summarizes product reviews for a shop. Keep the summary "
          "short, neutral and factual; mention the good and the bad points. Here is the review: I bought "
          "this phone three weeks ago. The battery lasts two days, the screen is bright even outdoors, "
          "and the camera is fine in daylight. But the speaker is tinny, the case scratches easily, and "
          "the charger is not in the box. Summarize the review in one sentence:")


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def load(path: str, extra: bool, batch: int, sink: Collect):
    sink.lines.clear()
    llm = load_llama(extra, model_path=path, n_ctx=512, n_batch=batch, n_ubatch=batch,
                     n_threads=default_threads(), n_threads_batch=default_threads(), seed=0, verbose=False)
    return llm, buffer_types("\n".join(sink.lines))


def once(llm, max_tokens: int) -> tuple[float, float, int, int]:
    """(prompt tokens/s, generation tokens/s, prompt tokens, generated tokens) of one fresh call."""
    llm.reset()  # evaluate the whole prompt: no prefix reuse between repetitions
    llama_cpp.llama_perf_context_reset(llm.ctx)
    llm.create_completion(PROMPT, max_tokens=max_tokens, temperature=0, repeat_penalty=1.0)
    p = llama_cpp.llama_perf_context(llm.ctx)
    return p.n_p_eval / p.t_p_eval_ms * 1000, p.n_eval / max(p.t_eval_ms, 1e-6) * 1000, p.n_p_eval, p.n_eval


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["gemma3-270m", "smollm2-135m"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--batch", type=int, default=PREFIX_CHUNK, help="n_batch/n_ubatch (lmpc's grid: 16)")
    args = ap.parse_args()

    _install_log_sink()
    sink = Collect()
    log = logging.getLogger("lmpc.llama_cpp")
    log.addHandler(sink)
    log.setLevel(logging.INFO)
    flags = read_cpu_flags()
    amx = amx_evidence(flags, llama_system_info())
    print(f"# CPU: {cpu_model_name()}; AVX2: {'avx2' in flags}; AVX512F: {'avx512f' in flags}; "
          f"AMX: {'; '.join(amx) if amx else 'no'}; threads: {default_threads()}; batch: {args.batch}; "
          f"llama-cpp-python {llama_cpp.__version__}; Python {platform.python_version()}")
    print(f"# llama.cpp: {llama_system_info()}")
    print("| model | extra buffers | weight buffers | prompt tok/s: median (best) | generation tok/s: median (best) "
          "| prompt / generated tokens |")
    print("|---|---|---|---:|---:|---:|")
    start = time.perf_counter()
    for name in args.models:
        path = str(resolve_builtin(name))
        loaded = {extra: load(path, extra, args.batch, sink) for extra in (True, False)}
        for llm, _ in loaded.values():
            once(llm, 4)  # warm-up: page the weights in, first-call allocations
        runs: dict[bool, list[tuple[float, float, int, int]]] = {True: [], False: []}
        for _ in range(args.repeats):
            for extra in (True, False):
                runs[extra].append(once(loaded[extra][0], args.max_tokens))
        for extra in (True, False):
            r = runs[extra]
            print(f"| {name} | {'on' if extra else 'off'} | {', '.join(loaded[extra][1])} | "
                  f"{statistics.median(x[0] for x in r):.1f} ({max(x[0] for x in r):.1f}) | "
                  f"{statistics.median(x[1] for x in r):.1f} ({max(x[1] for x in r):.1f}) | "
                  f"{r[0][2]} / {r[0][3]} |", flush=True)
        for llm, _ in loaded.values():
            llm.close()
    print(f"# {args.repeats} repetitions per setting, {time.perf_counter() - start:.0f} s in all")


if __name__ == "__main__":
    main()
