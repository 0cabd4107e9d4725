"""Score strategies on an example's dev split with the embedded model: the table in
docs/optimizers.md and the example READMEs.

    .venv/bin/python bench/optimizers/bench_optimizers.py sentiment
    .venv/bin/python bench/optimizers/bench_optimizers.py counting --configs zero,boot2

Each configuration starts from the zero-shot graph and runs one strategy chain; `+block`
renders the chosen demos as one block in the system message instead of chat turns. Calls
are every model call the configuration needed (its teacher runs, candidate scoring and the
final dev evaluation); wall time is measured with a cold cache for that configuration
(cached calls of earlier configurations with identical prompts are reused, as in a build).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import lmpc
from lmpc.compiler.api import strategy_from_text
from lmpc.compiler.ir import prompt_nodes
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
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("example", choices=sorted(EXAMPLES))
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--builtin", help="run on this builtin model instead (e.g. gemma3-270m)")
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
        print("| configuration | strategy | dev score | errors | demos per node | model calls | wall (s) |")
        print("|---|---|---:|---:|---:|---:|---:|")
        for name in args.configs.split(","):
            chain = CONFIGS[name]
            t0 = time.perf_counter()
            calls = 0
            graph = prog.graph
            if chain:
                for opt in make_optimizers(strategy_from_text(chain)):
                    result = opt.compile(graph, ctx)
                    graph = result.graph
                    calls += int(result.report.get("calls", 0))
                if name.endswith("+block"):
                    for n in prompt_nodes(graph):
                        graph.nodes[n]["demo_format"] = "block"
            report = ctx.evaluate(graph, dev)
            calls += report.calls
            demos = [len(graph.nodes[n].get("demos", [])) for n in prompt_nodes(graph)]
            print(f"| {name} | {chain or 'zero-shot'} | {report.score:.3f} | {report.errors} | "
                  f"{'/'.join(map(str, demos))} | {calls} | {time.perf_counter() - t0:.0f} |", flush=True)
        ctx.close()
        prog.close()


if __name__ == "__main__":
    main()
