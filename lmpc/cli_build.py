"""`lmpc build`: optimize a pipeline on data and write the compiled artifact."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any


def _settings(args: argparse.Namespace, checked, pipeline: str) -> dict[str, Any]:
    """The optimize block's settings, with command-line flags taking precedence.

    Paths from the block are relative to the .lmp file; paths from flags to the cwd."""
    from lmpc.compiler.api import metric_from_text, strategy_from_text

    opt = checked.optimize.get(pipeline)
    base = Path(args.file).parent
    settings: dict[str, Any] = {}
    if opt is not None:
        settings.update(opt.settings)
        for key in ("train", "dev"):
            if key in settings:
                settings[key] = str(base / settings[key])
    for key in ("train", "dev"):
        if getattr(args, key):
            settings[key] = getattr(args, key)
    info = checked.pipelines[pipeline]
    if args.metric:
        settings["metric"] = metric_from_text(args.metric, pipeline, info.outputs,
                                              [n for n in checked.pipelines if n != pipeline])
    if args.strategy:
        settings["strategy"] = strategy_from_text(args.strategy, checked.models)
    if args.seed is not None:
        settings["seed"] = args.seed
    if args.max_calls is not None:
        settings["max_calls"] = args.max_calls
    if args.max_prompt_tokens is not None:
        settings["max_prompt_tokens"] = args.max_prompt_tokens
    return settings


def _examples(prog, settings: dict[str, Any], base: Path) -> tuple[list, list]:
    """The train and dev examples (DataError: exit 2). Demos record where they came from,
    relative to the .lmp folder, so artifacts are portable."""
    from lmpc.api import load_data

    trainset = load_data(prog, settings["train"])
    devset = load_data(prog, settings["dev"])
    for ex in trainset + devset:
        path, sep, line = ex.source.rpartition(":")
        if sep and Path(path).exists():
            ex.source = f"{os.path.relpath(Path(path).resolve(), base)}:{line}"
    return trainset, devset


def _print_plan(pipeline: str, stages: list, trainset: list, devset: list, judge: str | None, budget,
                maps: list[str] = (), conditional: list[str] = ()) -> None:
    # A map's item count is known only at run time: its body's calls are counted once per row.
    bounds = f"one item per row of the map step(s) {', '.join(f'`{m}`' for m in maps)}" if maps else "upper bounds"
    if conditional:  # counted as if their conditions always held
        bounds += f"; upper bound: conditional steps {', '.join(f'`{c}`' for c in conditional)} counted as run"
    print(f"build plan for `{pipeline}`: {len(trainset)} train, {len(devset)} dev examples "
          f"({bounds}; cached calls are free)")
    searches = sum(s.searches for s in stages)  # runs of retrieve steps, shown beside the calls
    for s in stages:
        print(f"  {s.calls:>7}  {s.stage}" + (f" (and {s.searches} searches)" if s.searches else ""))
    print(f"  {sum(s.calls for s in stages):>7}  model calls in all"
          + (f", the judge `{judge}`'s included" if judge is not None else "")
          + (f" (budget --max-calls {budget.max_calls})" if budget.max_calls is not None else ""))
    if searches:
        print(f"  {searches:>7}  searches of retrieve steps in all (not model calls: cached like them, "
              f"not counted in --max-calls)")


def _write(out: Path, checked, pipeline: str, graphs: dict, settings: dict[str, Any], base: Path,
           report: dict[str, Any]) -> None:
    """The artifact: paths as it reads them (relative to its folder), its Python files beside it."""
    from lmpc.compiler.artifact import make_artifact, place_code, relocate_paths, write_artifact
    from lmpc.runtime.models.adapters import place_adapters

    graphs, optimize = relocate_paths(graphs, settings, base, out)
    place_code(graphs, optimize, base, out)
    graphs = place_adapters(graphs, out)  # finetune's LoRA files: copied beside it, named by hash
    write_artifact(out, make_artifact(checked, pipeline, graphs, out, optimize, report))


def cmd_build(args: argparse.Namespace) -> int:
    """Errors say their own exit code (lmpc/cli.py main): a --metric or --strategy that does not
    read, an unknown pipeline, a bad strategy option, bad data or an artifact that cannot carry
    the Python files it names exit 2, before any model call; a spent budget or a failed run 1."""
    from lmpc.cli_common import UsageError, load_program, open_runner
    from lmpc.optimizers.build import make_optimizers
    from lmpc.runtime.budget import CallBudget
    from lmpc.runtime.cache import CallCache, default_cache_dir

    checked = load_program(args.file)
    if checked is None:
        return 1
    pipeline = checked.choose_pipeline(args.pipeline)
    settings = _settings(args, checked, pipeline)
    missing = [k for k in ("train", "dev", "metric", "strategy") if k not in settings]
    if missing:
        raise UsageError(f"the build needs {', '.join(missing)}: add them to `optimize {pipeline} {{ ... }}` "
                         f"or pass --{' --'.join(missing)}")
    optimizers = make_optimizers(settings["strategy"])

    cache_dir = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    cache = CallCache(cache_dir / "calls.sqlite", enabled=not args.no_cache)
    # --executor ray: evaluations run their rows on a Ray cluster, whose workers share this cache
    # and charge one budget with the programs here (lmpc/ray_executor.py)
    runner = None if args.dry_run else open_runner(args, cache)
    budget = runner.budget(settings.get("max_calls")) if runner is not None else CallBudget(settings.get("max_calls"))
    try:
        return _build(args, checked, pipeline, settings, optimizers, cache, cache_dir, budget, runner)
    finally:
        if runner is not None:
            runner.close()


def _build(args: argparse.Namespace, checked, pipeline: str, settings: dict[str, Any], optimizers: list, cache,
           cache_dir: Path, budget, runner) -> int:
    from lmpc.api import program_from_checked, resolve_metric
    from lmpc.compiler.artifact import place_code
    from lmpc.optimizers.base import OptimizeContext
    from lmpc.optimizers.build import build, plan
    from lmpc.runtime.trace import start_meter

    # Every program of the build (and a judge metric) records its calls where `lmpc inspect` reads.
    prog = program_from_checked(checked, pipeline, base_dir=Path(args.file).parent, cache=cache,
                                trace_log=cache_dir / "traces.jsonl", budget=budget)
    base = Path(args.file).parent.resolve()
    trainset, devset = _examples(prog, settings, base)

    metric_spec = settings["metric"]
    judge = metric_spec["name"] if metric_spec.get("kind") == "pipeline" else None
    stages = plan(prog.graph, optimizers, len(trainset), len(devset), checked.graphs[judge] if judge else None)
    if args.dry_run:
        from lmpc.compiler.ir import walk

        maps = [d["step"] for _, d in prog.graph.nodes(data=True) if d["kind"] == "map"]
        conditional = [sid for sid, d in walk(prog.graph) if "when" in d]
        _print_plan(pipeline, stages, trainset, devset, judge, budget, maps, conditional)
        prog.close()
        return 0

    out = Path(args.output) if args.output else Path(args.file).with_suffix(".lmpc.json")
    graphs = {pipeline: prog.graph}  # what the artifact holds: the pipeline and any judge it needs
    if judge is not None:
        graphs[judge] = checked.graphs[judge]
    # Before any model call: the artifact must be able to carry the Python files it names.
    place_code(graphs, settings, base, out, check_only=True)
    metric = resolve_metric(prog, metric_spec)
    # The build's programs share the judge's loaded models and trace log (prog's).
    ctx = OptimizeContext(trainset, devset, metric, seed=int(settings.get("seed", 0)), cache=cache, budget=budget,
                          base_dir=Path(args.file).parent, max_prompt_tokens=settings.get("max_prompt_tokens"),
                          trace_log=prog.trace_log, progress=True, runner=runner, _pool=prog.pool)
    t0 = time.perf_counter()
    usage = start_meter()
    try:
        graphs[pipeline], report = build(prog.graph, optimizers, ctx)
    finally:
        usage.stop()
        ctx.close()
        prog.close()
    _write(out, checked, pipeline, graphs, settings, base, report)
    print(f"dev score {report['score_before']:.3f} -> {report['score_after']:.3f} "
          f"({report['dev_examples']} dev examples; {usage.calls} model calls, {usage.cache_hits} from cache; "
          f"{time.perf_counter() - t0:.1f} s)")
    print_label_report(report)
    print(f"wrote {out}")
    return 0


def print_label_report(report: dict[str, Any]) -> None:
    """Enum and bool outputs: the demos' labels, the zero-shot predictions in one line, and the
    result's label and confusion tables on dev (the collapse warning was logged on stderr)."""
    from lmpc.cli_labels import print_labels
    from lmpc.compiler.diagnostics import printable

    for node, counts in report.get("demo_labels", {}).items():
        if counts:
            print(f"demo labels of `{printable(node)}`: " + ", ".join(f"{printable(k)} {v}" for k, v in counts.items()))
    for name, stats in report.get("labels_before", {}).items():
        shown = ", ".join(f"{printable(k)} {v}" for k, v in stats["predicted"].items())
        print(f"zero-shot predictions of `{printable(name)}` on dev: {shown or 'none'}"
              + (f", error {stats['errors']}" if stats["errors"] else ""))
    if report.get("labels_after"):
        print_labels(report["labels_after"], title="result on dev: ")


def add_build_command(sub: argparse._SubParsersAction) -> None:
    from lmpc.cli_common import add_executor_options, int_flag

    b = sub.add_parser("build", help="optimize a pipeline and write the compiled artifact",
                       description="Compile FILE, evaluate the pipeline zero-shot on the dev data, run the strategy "
                                   "chain (few-shot bootstrapping, search), evaluate the result, and write a JSON "
                                   "artifact that `lmpc run`, `lmpc eval` and `lmpc.load()` accept. Flags override "
                                   "the optimize block. Exit 0: written; 1: errors in the file, the budget was "
                                   "spent, or the build failed; 2: usage or data error.")
    b.add_argument("file", metavar="FILE", help=".lmp file")
    b.add_argument("-o", "--output", metavar="OUT.lmpc.json", help="artifact path (default: FILE with .lmpc.json)")
    b.add_argument("--pipeline", help="which pipeline (default: the one no other pipeline calls)")
    b.add_argument("--train", metavar="PATH", help="training data (overrides the optimize block)")
    b.add_argument("--dev", metavar="PATH", help="dev data for scoring (overrides the optimize block)")
    b.add_argument("--metric", metavar="EXPR", help='e.g. "exact_match(label)"')
    b.add_argument("--strategy", metavar="CHAIN", help='e.g. "bootstrap_few_shot(max_demos: 4) then random_search"')
    b.add_argument("--seed", type=int_flag(entry="seed"),
                   help="seed for every random choice (default: the block's, else 0)")
    b.add_argument("--max-calls", type=int_flag(entry="max_calls"), metavar="N",
                   help="hard budget of model calls (cache hits are free)")
    b.add_argument("--max-prompt-tokens", type=int_flag(entry="max_prompt_tokens"), metavar="N",
                   help="search strategies never choose a program whose prompts average more than N tokens "
                        "per example (all prompt nodes summed)")
    b.add_argument("--dry-run", action="store_true", help="print the planned model calls per stage and stop")
    b.add_argument("--no-cache", action="store_true", help="do not read or write the call cache")
    b.add_argument("--cache-dir", metavar="DIR", help="cache folder (default: $LMPC_CACHE_DIR or ~/.cache/lmpc)")
    add_executor_options(b)
    b.set_defaults(func=cmd_build)
