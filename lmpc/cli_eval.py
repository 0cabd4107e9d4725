"""`lmpc eval`: score a program on labelled data."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from lmpc.cli_common import (CommandInterrupted, UsageError, add_executor_options, exit_on_next_interrupt, int_flag,
                             open_runner)
from lmpc.cli_run import add_program_options, open_program


def _parse_mapping(pairs: list[str] | None) -> dict[str, str] | None:
    if not pairs:
        return None
    mapping = {}
    for pair in pairs:
        field, sep, column = pair.partition("=")
        if not sep or not field or not column:
            raise UsageError(f"--map takes FIELD=COLUMN, got {pair!r}")
        mapping[field] = column
    return mapping


def _short(value: Any, width: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def print_worst(report, k: int, stream=None) -> None:
    worst = [r for r in report.worst(k) if r.error is not None or r.score < 1.0]
    if not worst:
        print("no failing examples", file=stream)
        return
    print(f"worst {len(worst)} example(s):", file=stream)
    for r in worst:
        got = f"error: {_short(r.error, 120)}" if r.error else f"got {_short(r.prediction)}"
        print(f"  [{r.index}] {r.source}  score {r.score:.2f}  gold {_short(r.gold)}  {got}", file=stream)
        print(f"      input {_short(r.inputs, 100)}", file=stream)


def print_checks(checks: dict[str, dict], stream=None) -> None:
    """One line per `check`: how often it failed, was repaired by a retry, and still failed."""
    for cid, c in checks.items():
        print(f"check {cid} `{c['text']}` ({'soft' if c['soft'] else 'hard'}, step `{c['step']}`): failed on "
              f"{c['failures']} of {c['runs']}, repaired {c['repaired']}, still failing {c['still_failing']} "
              f"({c['retries']} retries)", file=stream)


def print_eval_plan(prog, n: int, metric: Any) -> None:
    """What evaluating n examples will run, as `lmpc build --dry-run` counts it: model calls
    (a judge metric's included) and, apart, the searches of retrieve steps (not model calls)."""
    from lmpc.compiler.api import metric_from_text
    from lmpc.compiler.ir import calls_per_row
    from lmpc.optimizers.build import retrieve_steps

    spec = metric if metric is not None else prog.optimize_settings.get("metric")
    if isinstance(spec, str):
        spec = metric_from_text(spec, prog.name, prog.output_fields, [g for g in prog.graphs if g != prog.name])
    judge = prog.graphs.get(spec["name"]) if isinstance(spec, dict) and spec.get("kind") == "pipeline" else None
    graphs = [prog.graph] + ([judge] if judge is not None else [])
    calls = sum(calls_per_row(g) for g in graphs)
    searches = [s for g in graphs for s in retrieve_steps(g)]
    maps = [d["step"] for _, d in prog.graph.nodes(data=True) if d["kind"] == "map"]
    bounds = f"one item per row of the map step(s) {', '.join(f'`{m}`' for m in maps)}" if maps else "upper bounds"
    print(f"eval plan for `{prog.name}`: {n} example(s) ({bounds}; cached calls are free)")
    print(f"  {n * calls:>7}  model calls ({calls} per example"
          + (f", the judge `{spec['name']}`'s included" if judge is not None else "") + ")")
    if searches:
        print(f"  {n * len(searches):>7}  searches of retrieve steps ({len(searches)} per example: "
              f"{', '.join(f'`{s}`' for s in searches)}; not model calls)")


def cmd_eval(args: argparse.Namespace) -> int:
    from lmpc.api import resolve_metric
    from lmpc.runtime.evaluate import evaluate
    from lmpc.runtime import redact
    from lmpc.runtime.progress import Progress

    prog = open_program(args)
    if prog is None:
        return 1
    runner = None
    try:
        data = args.data
        if data is None:
            dev = prog.optimize_settings.get("dev")
            if dev is None:
                raise UsageError(f"no data: give --data, or a `dev` file in an optimize block for `{prog.name}`")
            data = str(Path(prog.base_dir or ".") / dev)
        # A --metric that does not read, no metric, bad data: errors that say their exit code, 2.
        metric = resolve_metric(prog, args.metric)
        from lmpc.runtime.data import load_examples, sample

        examples, bad = load_examples(data, prog.input_fields, prog.output_fields,
                                      mapping=_parse_mapping(args.map), skip_bad_rows=args.skip_bad_rows)
        if bad:
            print(f"skipped {len(bad)} bad row(s); first: {bad[0]}", file=sys.stderr)
        if args.sample is not None:
            examples = sample(examples, args.sample, args.seed)
        if args.limit is not None:
            examples = examples[: args.limit]
        if not examples:
            raise UsageError(f"{data}: no examples to evaluate")
        if args.dry_run:
            print_eval_plan(prog, len(examples), args.metric)
            return 0
        runner = open_runner(args, prog.cache)  # --executor ray: rows run on a Ray cluster

        out = open(args.out, "w", encoding="utf-8") if args.out else None  # noqa: SIM115
        written = 0
        try:
            def write(result) -> None:
                nonlocal written
                if out is not None:  # one line per example as soon as it is scored; no secret in it
                    out.write(redact.dumps(result.to_json(), ensure_ascii=False) + "\n")
                    out.flush()
                    written += 1

            try:  # a configuration error (every example would fail alike) ends it: exit 1
                report = evaluate(prog, examples, metric, max_errors=args.max_errors,
                                  progress=Progress(len(examples), label=f"eval {prog.name}"), on_result=write,
                                  runner=runner)
            except KeyboardInterrupt:
                exit_on_next_interrupt()  # cleaning up below; a second Ctrl-C ends at once
                kept = f"the {written} result(s) in {args.out} are kept" if out is not None else ""
                raise CommandInterrupted(kept) from None
        finally:
            if out is not None:
                out.close()
    finally:
        if runner is not None:
            runner.close()
        prog.close()

    from lmpc.cli_labels import collapse_warnings, print_labels

    summary = report.summary()
    if args.json:
        print(json.dumps(summary))
        for warning in collapse_warnings(summary.get("labels", {})):  # stdout stays one JSON object
            print(f"lmpc: warning: {warning}", file=sys.stderr)
    else:
        print(f"score {report.score:.3f} on {len(report.results)} example(s) ({data}); errors {report.errors}; "
              f"{report.calls} model calls ({report.cache_hits} from cache); "
              f"{report.prompt_tokens} + {report.completion_tokens} tokens; {report.wall_s:.1f} s")
        if report.stopped_early:
            print(report.stopped_early)
        print_checks(summary.get("checks", {}))
        # enum and bool outputs: what the program answers, not only how often it is right
        for warning in print_labels(summary.get("labels", {})):
            print(f"warning: {warning}")
        if args.worst:
            print_worst(report, args.worst)
        if args.out:
            print(f"wrote {args.out}")
    if report.results and report.errors == len(report.results):
        # a CI step must not pass when nothing could be scored (a server down, a broken program)
        print(f"lmpc: error: every example failed; the first: {report.worst(1)[0].error}", file=sys.stderr)
        return 1
    return 1 if report.stopped_early else 0


def add_eval_command(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("eval", help="score a pipeline on labelled data",
                       description="Run FILE's pipeline on every example of the data and score it with the "
                                   "metric. Data and metric default to the optimize block's `dev` and `metric`. "
                                   "Exit 0: evaluated (per-example errors count as score 0); 1: stopped by "
                                   "--max-errors, every example failed, a configuration error (an unset key "
                                   "variable, a model that cannot load, a server refusing the key) or the file "
                                   "has errors; 2: usage or data error; 130: interrupted (Ctrl-C; the results "
                                   "already written to --out are kept).")
    e.add_argument("file", metavar="FILE", help=".lmp file or built artifact (.json)")
    e.add_argument("--data", metavar="PATH", help="JSONL, JSON, CSV or TSV file, or hf://datasets/ORG/REPO/FILE")
    e.add_argument("--metric", metavar="EXPR",
                   help='e.g. "exact_match(label)", "numeric_match(answer, tolerance: 0.5)", '
                        '"metrics.py:score", or a judge pipeline "judge"')
    e.add_argument("--map", action="append", metavar="FIELD=COLUMN", help="read FIELD from a differently named column")
    e.add_argument("--skip-bad-rows", action="store_true", help="skip (and count) rows that do not fit the inputs")
    e.add_argument("--max-errors", type=int_flag(1), metavar="N", help="stop after N examples fail")
    e.add_argument("--sample", type=int_flag(1), metavar="N", help="evaluate a seeded random sample of N examples")
    e.add_argument("--seed", type=int_flag(entry="seed"), default=0, help="seed for --sample (default 0)")
    e.add_argument("--limit", type=int_flag(1), metavar="N", help="evaluate only the first N examples")
    e.add_argument("--out", metavar="RESULTS.jsonl", help="one JSON line per example: inputs, gold, prediction, "
                                                         "score, error, trace ids")
    e.add_argument("--worst", type=int_flag(0), default=5, metavar="K", help="show the K worst examples (default 5; 0: none)")
    e.add_argument("--json", action="store_true", help="print the summary as JSON")
    e.add_argument("--dry-run", action="store_true",
                   help="print the planned model calls and searches of retrieve steps, and stop")
    add_program_options(e)
    add_executor_options(e)
    e.set_defaults(func=cmd_eval)
