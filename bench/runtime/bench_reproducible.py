"""Issue 17's target: the reproducible default within 5 % of `reproducible: false`.

The issue's 100 sentiment prompts through three lmpc programs that differ only in the model's
`reproducible` option (free: llama-cpp-python's own prefix reuse; default: the layout probe's
verdict; grid: the fixed 16-token grid), interleaved, cache off, median of --repeats, with the
prompt tokens llama.cpp evaluated (exact, unlike the wall times).

    .venv/bin/python bench/runtime/bench_reproducible.py [--repeats 3]
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_runtime import EXAMPLE, load_texts  # noqa: E402

import lmpc  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rows = [{"text": t} for t in load_texts(100)]
    progs = {}
    for name, opt in (("free", "temperature: 0, reproducible: false)"), ("default", "temperature: 0)"),
                      ("grid", 'temperature: 0, reproducible: "grid")')):
        src = EXAMPLE.read_text().replace("temperature: 0)", opt)
        progs[name] = lmpc.compile_source(src, str(EXAMPLE), base_dir=EXAMPLE.parent, cache=False, trace_log=False)
        progs[name].batch(rows[:3])  # load, probe, grammar
    times: dict[str, list[float]] = {k: [] for k in progs}
    tokens: dict[str, int] = {}
    for _ in range(args.repeats):
        for name, p in progs.items():
            m = p.pool.get("local")
            before = m.perf()["prompt_tokens"]
            t0 = time.perf_counter()
            p.batch(rows)
            times[name].append(time.perf_counter() - t0)
            tokens[name] = m.perf()["prompt_tokens"] - before
    print("| reproducible | wall, median | prompt tokens evaluated |\n|---|---:|---:|")
    for name in progs:
        print(f"| {name} | {statistics.median(times[name]):.2f} s ({', '.join(f'{t:.1f}' for t in times[name])}) "
              f"| {tokens[name]} |")
    f, d = statistics.median(times["free"]), statistics.median(times["default"])
    print(f"\ndefault over free: {100 * (d - f) / f:+.1f} %")
    for p in progs.values():
        p.close()


if __name__ == "__main__":
    main()
