"""lmpc's runtime overhead over raw llama-cpp-python, and cached-call throughput.

The same 100 prompts (VADER tweets from examples/sentiment, the sentiment classifier's
rendered messages and output grammar) go through
  raw:  llama_cpp.Llama.create_chat_completion in a plain loop, and
  lmpc: Program.batch (scheduler, prompt rendering, JSON validation, traces), cache off,
        once as declared (reproducible: every call's output is independent of the calls
        before it; the whole cached prefix is reused when runtime/models/layout_probe.py
        measured the model layout-exact on this machine, as it does SmolLM2 on AVX2), once with
        `reproducible: "grid"` (the fixed 16-token grid, re-evaluating up to 15 cached prompt
        tokens per call: what the default was before the probe) and once with
        `reproducible: false` (llama-cpp-python's own full prefix reuse, as the raw loop);
and, with --slots N, once more on the batched engine (`engine: "batched", slots: N`,
runtime/models/batch_engine.py: the calls decoded together as parallel sequences);
then a cache-filled Program.batch measures calls/s served from the cache.

    .venv/bin/python bench/runtime/bench_runtime.py [--n 100] [--repeats 2] [--slots 4]

--build instead times a 4-demo bootstrap build of the same classifier plus its dev evaluation,
cache off, on the single and on the batched engine:

    .venv/bin/python bench/runtime/bench_runtime.py --build [--train 50] [--dev 100] [--slots 4]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

from llama_cpp import Llama, LlamaGrammar

import lmpc
from lmpc.runtime.cache import CallCache
from lmpc.runtime.models.local import schema_to_gbnf
from lmpc.runtime.models.resolve import resolve_builtin
from lmpc.runtime.prompt import decoding_budget, decoding_schema, render_messages

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "sentiment" / "sentiment.lmp"


def load_texts(n: int) -> list[str]:
    rows = []
    for split in ("dev", "test", "train"):
        for line in (ROOT / "examples" / "sentiment" / "data" / f"{split}.jsonl").read_text().splitlines():
            rows.append(json.loads(line)["text"])
    return rows[:n]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--slots", type=int, default=0, help="also time the batched engine with this many slots")
    args = ap.parse_args()
    texts = load_texts(args.n)
    rows = [{"text": t} for t in texts]

    prog = lmpc.compile_file(EXAMPLE, cache=False, trace_log=False)
    node = prog.graph.nodes["s"]
    schema = decoding_schema(node)
    model = prog.pool.get("local")
    opts = prog.pool.options("local")

    llm = Llama(model_path=str(resolve_builtin("smollm2-135m")), n_ctx=model.n_ctx, n_threads=model.n_threads,
                n_threads_batch=model.n_threads, seed=0, verbose=False)
    grammar = LlamaGrammar.from_string(schema_to_gbnf(schema), verbose=False)
    max_tokens = int(opts.get("max_tokens", decoding_budget(schema)))

    def raw_pass() -> list[str]:
        out = []
        for t in texts:
            r = llm.create_chat_completion(messages=render_messages(node, {"text": t}), grammar=grammar,
                                           max_tokens=max_tokens, temperature=0.0, seed=0, repeat_penalty=1.0)
            out.append(json.loads(r["choices"][0]["message"]["content"])["label"])
        return out

    free_src = EXAMPLE.read_text().replace("temperature: 0)", "temperature: 0, reproducible: false)")
    assert "reproducible: false" in free_src
    free = lmpc.compile_source(free_src, str(EXAMPLE), base_dir=EXAMPLE.parent, cache=False, trace_log=False)
    grid_src = EXAMPLE.read_text().replace("temperature: 0)", 'temperature: 0, reproducible: "grid")')
    grid = lmpc.compile_source(grid_src, str(EXAMPLE), base_dir=EXAMPLE.parent, cache=False, trace_log=False)

    def lmpc_pass(p=prog) -> list[str]:
        return [r.label for r in p.batch(rows)]

    batched = None
    if args.slots:
        src = EXAMPLE.read_text().replace("temperature: 0)", f'temperature: 0, engine: "batched", slots: {args.slots})')
        batched = lmpc.compile_source(src, str(EXAMPLE), base_dir=EXAMPLE.parent, cache=False, trace_log=False)
        lmpc_pass(batched)
    raw_pass(), lmpc_pass(), lmpc_pass(free), lmpc_pass(grid)  # warm all: model load, probe, grammar, page cache
    raw_times, lmpc_times, free_times, grid_times, batch_times = [], [], [], [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter(); raw_labels = raw_pass(); raw_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter(); lmpc_labels = lmpc_pass(); lmpc_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter(); free_labels = lmpc_pass(free); free_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter(); grid_labels = lmpc_pass(grid); grid_times.append(time.perf_counter() - t0)
        if batched is not None:
            t0 = time.perf_counter(); batch_labels = lmpc_pass(batched); batch_times.append(time.perf_counter() - t0)
    agree = sum(a == b for a, b in zip(raw_labels, lmpc_labels))
    agree_free = sum(a == b for a, b in zip(raw_labels, free_labels))
    exact = model._submit(lambda: model._w.exact)
    prog.close()
    free.close()
    grid.close()

    with tempfile.TemporaryDirectory() as d:
        cached = lmpc.compile_file(EXAMPLE, cache=CallCache(Path(d) / "c.sqlite"), trace_log=False)
        cached.batch(rows)  # fill
        t0 = time.perf_counter(); cached.batch(rows); hit_s = time.perf_counter() - t0
        hits = cached.cache.stats.hits
        cached.close()

    raw, ours, ours_free, ours_grid = (statistics.median(t) for t in (raw_times, lmpc_times, free_times, grid_times))
    fmt = lambda ts: ", ".join(f"{t:.1f}" for t in ts)  # noqa: E731
    print(f"machine: {platform.machine()}, {platform.python_version()}, llama-cpp-python "
          f"{__import__('llama_cpp').__version__}, n={len(texts)}, repeats={args.repeats}")
    print("| measure | value |\n|---|---|")
    print(f"| raw llama-cpp-python, {len(texts)} prompts | {raw:.2f} s ({fmt(raw_times)}) |")
    print(f"| lmpc, reproducible: false | {ours_free:.2f} s ({fmt(free_times)}) |")
    print(f"| lmpc overhead, reproducible: false | {100 * (ours_free - raw) / raw:+.1f} % |")
    print(f"| lmpc, reproducible (default; probe: {'layout-exact' if exact else 'layout-dependent, grid'}) "
          f"| {ours:.2f} s ({fmt(lmpc_times)}) |")
    print(f"| lmpc overhead, reproducible (default) | {100 * (ours - raw) / raw:+.1f} % |")
    print(f"| reproducible (default) over reproducible: false | {100 * (ours - ours_free) / ours_free:+.1f} % |")
    print(f"| lmpc, reproducible: \"grid\" | {ours_grid:.2f} s ({fmt(grid_times)}) |")
    print(f"| lmpc overhead, reproducible: \"grid\" | {100 * (ours_grid - raw) / raw:+.1f} % |")
    agree_grid = sum(a == b for a, b in zip(lmpc_labels, grid_labels))
    print(f"| same labels as raw: reproducible / free | {agree}/{len(texts)} / {agree_free}/{len(texts)} |")
    print(f"| same labels, reproducible and grid | {agree_grid}/{len(texts)} |")
    if batched is not None:
        ours_batched = statistics.median(batch_times)
        agree_batched = sum(a == b for a, b in zip(raw_labels, batch_labels))
        print(f"| lmpc, batched engine ({args.slots} slots) | {ours_batched:.2f} s ({fmt(batch_times)}) |")
        print(f"| batched throughput over raw sequential | {raw / ours_batched:.2f}x |")
        print(f"| same labels as raw: batched | {agree_batched}/{len(texts)} |")
        batched.close()
    print(f"| cached re-run | {hits} hits in {hit_s:.3f} s = {len(texts) / hit_s:.0f} calls/s |")


def build_and_evaluate(engine: str, n_train: int, n_dev: int, slots: int) -> tuple[float, float, int]:
    """A 4-demo bootstrap build of the sentiment classifier and its dev evaluation, cache off, on
    one engine (single, grid: the single engine on the 16-token grid, what lmpc did before the
    layout probe, or batched): (wall seconds, dev score, model calls)."""
    from lmpc.compiler.api import strategy_from_text
    from lmpc.optimizers.base import OptimizeContext
    from lmpc.optimizers.build import make_optimizers

    opts = "temperature: 0" + (f', engine: "batched", slots: {slots}' if engine == "batched" else
                               ', reproducible: "grid"' if engine == "grid" else "")
    src = EXAMPLE.read_text().replace("temperature: 0)", opts + ")")
    prog = lmpc.compile_source(src, str(EXAMPLE), base_dir=EXAMPLE.parent, cache=False, trace_log=False)
    train = lmpc.api.load_data(prog, EXAMPLE.parent / "data" / "train.jsonl")[:n_train]
    dev = lmpc.api.load_data(prog, EXAMPLE.parent / "data" / "dev.jsonl")[:n_dev]
    metric = lmpc.api.resolve_metric(prog, prog.optimize_settings["metric"])
    ctx = OptimizeContext(train, dev, metric, seed=0, base_dir=EXAMPLE.parent)
    t0 = time.perf_counter()
    graph, calls = prog.graph, 0
    for opt in make_optimizers(strategy_from_text("bootstrap_few_shot(max_demos: 4)")):
        result = opt.compile(graph, ctx)
        graph, calls = result.graph, calls + int(result.report.get("calls", 0))
    report = ctx.evaluate(graph, dev)
    wall = time.perf_counter() - t0
    ctx.close()
    prog.close()
    return wall, report.score, calls + report.calls


def build_main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", action="store_true")
    ap.add_argument("--train", type=int, default=50)
    ap.add_argument("--dev", type=int, default=100)
    ap.add_argument("--slots", type=int, default=4)
    args = ap.parse_args()
    print(f"| sentiment, bootstrap 4 demos, {args.train} train, {args.dev} dev, cache off | wall (s) | dev score | calls |"
          "\n|---|---:|---:|---:|")
    names = {"grid": "single engine, 16-token grid (before the probe)", "single": "single engine (the default)",
             "batched": f"batched ({args.slots} slots)"}
    for engine in ("grid", "single", "batched"):
        wall, score, calls = build_and_evaluate(engine, args.train, args.dev, args.slots)
        print(f"| {names[engine]} | {wall:.1f} | {score:.3f} | {calls} |", flush=True)


if __name__ == "__main__":
    import sys

    build_main() if "--build" in sys.argv else main()
