"""Score strategies on an example's dev split with the embedded model: the table in
docs/optimizers.md and the example READMEs.

    .venv/bin/python bench/optimizers/bench_optimizers.py sentiment
    .venv/bin/python bench/optimizers/bench_optimizers.py counting --configs zero,boot2
    .venv/bin/python bench/optimizers/bench_optimizers.py sentiment --fresh --configs zero,boot4,random6,bayes

Each configuration starts from the zero-shot graph and runs one strategy chain; `+block`
renders the chosen demos as one block in the system message instead of chat turns. Calls
are every model call the configuration needed (its teacher runs, proposer, candidate
scoring and the final dev evaluation), cached or not; "new calls" are the ones that reached
the model. By default the configurations share one cache (calls of earlier configurations
with identical prompts are reused, as in a build); with --fresh each starts from an empty
cache, so its wall time and new calls are what it costs on its own.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import lmpc
from lmpc.compiler.api import strategy_from_text
from lmpc.compiler.ir import prompt_nodes, to_json
from lmpc.optimizers.base import OptimizeContext
from lmpc.optimizers.build import make_optimizers
from lmpc.runtime.cache import CallCache

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = {"sentiment": ROOT / "examples/sentiment/sentiment.lmp", "counting": ROOT / "examples/counting/counting.lmp"}
CONFIGS = {
    "zero": None,
    "labeled4": "labeled_few_shot(k: 4)",
    "boot2": "bootstrap_few_shot(max_demos: 2, max_labeled: 0)",
    "boot4": "bootstrap_few_shot(max_demos: 4, max_labeled: 0)",
    "boot4+block": "bootstrap_few_shot(max_demos: 4, max_labeled: 0)",
    "random6": "random_search(candidates: 6, max_demos: 4, max_labeled: 4)",
    "random8": "random_search(candidates: 8, max_demos: 4, max_labeled: 0)",
    "bayes": "bayesian(trials: 10, instructions: 4, demo_sets: 4, minibatch: 15, full_eval_every: 4, max_demos: 4)",
    "bayes_instr": "bayesian(trials: 8, instructions: 6, demo_sets: 1, minibatch: 15, full_eval_every: 4)",
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("example", choices=sorted(EXAMPLES))
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--builtin", help="run on this builtin model instead (e.g. gemma3-270m)")
    ap.add_argument("--fresh", action="store_true", help="an empty cache for each configuration")
    ap.add_argument("--save", metavar="DIR", help="write each configuration's graph and reports here (JSON)")
    args = ap.parse_args()
    src = EXAMPLES[args.example]
    text = src.read_text()
    if args.builtin:  # same program and data, another embedded model as the default
        text = f'model swapped = llama_cpp(builtin: "{args.builtin}", temperature: 0)\n' + "\n".join(
            line for line in text.splitlines() if not line.startswith("model "))
    with tempfile.TemporaryDirectory() as d:
        cache = CallCache(Path(d) / "c.sqlite")
        prog = lmpc.compile_source(text, str(src), base_dir=src.parent, cache=cache, trace_log=False)
        settings = prog.optimize_settings
        train = lmpc.api.load_data(prog, src.parent / settings["train"])
        dev = lmpc.api.load_data(prog, src.parent / settings["dev"])
        metric = lmpc.api.resolve_metric(prog, settings["metric"])
        ctx = OptimizeContext(train, dev, metric, seed=args.seed, cache=cache, base_dir=src.parent)
        model = args.builtin or "declared model"
        print(f"{args.example} on {model}: {len(train)} train, {len(dev)} dev, metric {settings['metric']['name']}, seed {args.seed}")
        print("| configuration | strategy | dev score | errors | demos per node | model calls | new calls | wall (s) |")
        print("|---|---|---:|---:|---:|---:|---:|---:|")
        for i, name in enumerate(args.configs.split(",")):
            chain = CONFIGS[name]
            if args.fresh:
                ctx.close()
                cache = CallCache(Path(d) / f"c{i}.sqlite")
                ctx = OptimizeContext(train, dev, metric, seed=args.seed, cache=cache, base_dir=src.parent)
            misses = cache.stats.misses
            t0 = time.perf_counter()
            calls = 0
            graph = prog.graph
            reports = []
            if chain:
                for opt in make_optimizers(strategy_from_text(chain)):
                    result = opt.compile(graph, ctx)
                    graph = result.graph
                    reports.append({"strategy": opt.name, **result.report})
                    calls += int(result.report.get("calls", 0))
                if name.endswith("+block"):
                    for n in prompt_nodes(graph):
                        graph.nodes[n]["demo_format"] = "block"
            report = ctx.evaluate(graph, dev)
            calls += report.calls
            if args.save:
                Path(args.save).mkdir(parents=True, exist_ok=True)
                (Path(args.save) / f"{args.example}-{args.builtin or 'declared'}-{name}.json").write_text(
                    json.dumps({"graph": to_json(graph), "reports": reports, "dev_score": report.score},
                               indent=1, default=str))
            demos = [len(graph.nodes[n].get("demos", [])) for n in prompt_nodes(graph)]
            print(f"| {name} | {chain or 'zero-shot'} | {report.score:.3f} | {report.errors} | "
                  f"{'/'.join(map(str, demos))} | {calls} | {cache.stats.misses - misses} | "
                  f"{time.perf_counter() - t0:.0f} |", flush=True)
        ctx.close()
        prog.close()


if __name__ == "__main__":
    main()
