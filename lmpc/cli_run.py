"""Commands that run models: `lmpc run` and `lmpc inspect`."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

from lmpc.cli_common import UsageError, exit_on_next_interrupt, int_flag, load_program


def parse_inputs(pairs: list[str], fields: dict[str, dict]) -> dict[str, Any]:
    from lmpc.runtime.values import coerce_text

    row: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep:
            raise UsageError(f"--input takes NAME=VALUE, got {pair!r}")
        if key not in fields:
            raise UsageError(f"the pipeline has no input `{key}` (inputs: {', '.join(fields) or 'none'})")
        row[key] = coerce_text(text, fields[key]["schema"])
    return row


def read_rows(path: str, fields: dict[str, dict]) -> tuple[list[dict[str, Any]], list[str]]:
    """(the pipeline's inputs of each row, "file:line" of each row) of a JSONL, JSON, CSV or TSV
    file (or hf://...). Rows are checked against the inputs' types before any model call (CSV
    cells are read as those types); a bad row is a usage error naming it as file:line."""
    from lmpc.runtime.data import load_examples

    examples, bad = load_examples(path, fields, {}, skip_bad_rows=True)  # DataError: exit 2
    if bad:
        more = f" (and {len(bad) - 1} more bad row{'s' if len(bad) > 2 else ''})" if len(bad) > 1 else ""
        raise UsageError(f"{bad[0]}{more}")
    return [ex.inputs for ex in examples], [ex.source for ex in examples]


def is_artifact(path: str) -> bool:
    return path.endswith(".json")


def open_program(args: argparse.Namespace, trace_log: Callable[[Path], Any] | None = None):
    """A Program from a .lmp file (diagnostics printed; None on errors) or a built artifact.
    Its errors (an unknown pipeline or model, an artifact refused) say their own exit code, 2.
    trace_log makes the trace log from its path (lmpc serve's tags each call with its batch)."""
    from lmpc.api import load, program_from_checked
    from lmpc.runtime.cache import CallCache, default_cache_dir

    cache_dir = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    traces = cache_dir / "traces.jsonl"
    options = dict(cache=CallCache(cache_dir / "calls.sqlite", enabled=not args.no_cache),
                   trace_log=trace_log(traces) if trace_log else traces, model=args.model)
    if is_artifact(args.file):
        if args.pipeline is not None:
            raise UsageError("an artifact holds one pipeline; --pipeline applies to .lmp files")
        return load(args.file, trust_code=args.trust_code, trust_models=args.trust_models,
                    model_options=parse_model_options(args.model_option or []), **options)
    if args.model_option:
        raise UsageError("--model-option applies to built artifacts; in a .lmp file, set the options in "
                         "its `model` declaration")
    checked = load_program(args.file)
    if checked is None:
        return None
    return program_from_checked(checked, args.pipeline, base_dir=Path(args.file).parent, **options)


def parse_model_options(pairs: list[str]) -> dict[str, dict[str, Any]]:
    """`NAME.OPTION=VALUE` pairs; VALUE is read as JSON when it parses (numbers, true), else as text."""
    out: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        target, sep, text = pair.partition("=")
        name, dot, option = target.partition(".")
        if not sep or not dot or not name or not option:
            raise UsageError(f"--model-option takes NAME.OPTION=VALUE (e.g. big.base_url=http://127.0.0.1:8080/v1), "
                               f"got {pair!r}")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        if isinstance(value, (dict, list)):
            value = text
        out.setdefault(name, {})[option] = value
    from lmpc.compiler.options import model_option_problems

    for name, options in out.items():  # the values `lmpc check` accepts in a .lmp file, no others
        for problem in model_option_problems(name, options):
            raise UsageError(f"--model-option: {problem}")
    return out


def add_program_options(p: argparse.ArgumentParser) -> None:
    """Options shared by the commands that run a program."""
    p.add_argument("--trust-code", action="store_true",
                   help="an artifact may run the Python files beside it (call steps, a Python metric)")
    p.add_argument("--trust-models", action="store_true",
                   help="an artifact may use the endpoints, key variables and model files it names")
    p.add_argument("--model-option", action="append", metavar="NAME.OPTION=VALUE",
                   help="set an option of an artifact's model yourself (repeatable), e.g. "
                        "big.base_url=http://127.0.0.1:8080/v1 big.api_key_env=MY_KEY")
    p.add_argument("--pipeline", help="which pipeline (default: the one no other pipeline calls)")
    p.add_argument("--model", metavar="NAME", help="run every step on this declared model")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the call cache")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="cache and trace folder (default: $LMPC_CACHE_DIR or ~/.cache/lmpc)")


def cmd_run(args: argparse.Namespace) -> int:
    from lmpc.compiler.diagnostics import printable
    from lmpc.runtime import redact

    prog = open_program(args)
    if prog is None:
        return 1
    sources: list[str] | None = None  # "file:line" of each row of --input-file
    if args.input_file:
        if args.input:
            raise UsageError("give either --input or --input-file, not both")
        # Data files carry more than inputs (gold labels, ids): only the inputs are taken.
        rows, sources = read_rows(args.input_file, prog.input_fields)
    else:
        rows = [parse_inputs(args.input or [], prog.input_fields)]
    t0 = time.perf_counter()
    try:  # a configuration error is raised once for the whole batch (exit 1, lmpc/cli.py)
        results = prog.batch(rows)
    except KeyboardInterrupt:
        exit_on_next_interrupt()  # closing below; a second Ctrl-C ends at once
        raise
    finally:
        prog.close()
    failed = 0
    for r in results:
        where = {"source": sources[r.index]} if sources else {}
        if args.json:
            print(redact.dumps({"row": r.index, **where, **r.to_json()}, ensure_ascii=False))
        elif r.ok:
            prefix = f"[{r.index}] " if len(results) > 1 else ""
            text = "  ".join(f"{k}: {json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else v}"
                             for k, v in r.values.items())
            print(printable(redact.redact_known(prefix + text)))
        if not r.ok:
            failed += 1
            row = f"{sources[r.index]}: " if sources else ""
            print(printable(f"lmpc: error: {row}{r.error}"), file=sys.stderr)
            raw = getattr(r.error, "raw_text", None)
            if raw is not None:
                print(f"  raw model output: {redact.redact_known(raw[:500])!r}", file=sys.stderr)
    calls = [e for r in results for e in r.trace if e.model]
    hits = sum(e.cache_hit for e in calls)
    tokens = sum(e.prompt_tokens + e.completion_tokens for e in calls)
    print(f"{len(results)} row(s), {failed} failed; {len(calls)} model call(s), {hits} from cache, "
          f"{tokens} tokens; {time.perf_counter() - t0:.2f} s", file=sys.stderr)
    return 1 if failed else 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from lmpc.compiler.diagnostics import printable  # traced text comes from data files and models
    from lmpc.runtime.cache import default_cache_dir
    from lmpc.runtime.trace import TraceLog

    path = Path(args.cache_dir or default_cache_dir()) / "traces.jsonl"
    events = TraceLog(path).tail(args.n)
    if not events:
        print(f"no calls recorded yet in {path}")
        return 0
    if args.json:
        for e in events:
            print(json.dumps(e, ensure_ascii=False))
        return 0
    for e in events:
        span = e.get("span") or {}
        loc = f"{span.get('file')}:{span.get('line')}" if span else ""
        status = "error" if e.get("error") else "ok"
        print(f"── {e['step']} ({e['kind']}, {loc}) model={e.get('model')} {status} "
              f"cache={'hit' if e.get('cache_hit') else 'miss'} tokens={e['prompt_tokens']}+{e['completion_tokens']} "
              f"{e['latency_s'] * 1000:.0f} ms")
        messages = e.get("messages") or []
        shown = messages if args.full else messages[-1:]
        for m in shown:
            print(printable(f"   {m['role']}: " + m["content"].replace("\n", "\n      ")))
        if e.get("kind") == "call":
            print(printable(f"   inputs: {json.dumps(e.get('inputs'), ensure_ascii=False)}"))
        if e.get("kind") == "tool":  # a react step's tool call: its arguments and what the model read back
            call = e.get("inputs") or {}
            seen = (e.get("parsed") or {}).get("observation")
            print(printable(f"   {call.get('tool')}({json.dumps(call.get('args'), ensure_ascii=False)}) -> {seen}"))
        found = (e.get("extra") or {}).get("retrieval")
        if found:  # a retrieve step: its query and what it found (--full: the passages' text)
            print(printable(f"   query: {found['query']}"))
            print(printable(f"   passages: {', '.join(found['ids']) or '(none)'}"))
            if args.full and isinstance(e.get("parsed"), list):  # the hits: [{id, text, score}]
                for h in e["parsed"]:
                    print(printable(f"      {h['id']} ({h['score']}): " + h["text"].replace("\n", " ")))
        if e.get("raw") is not None:
            print(printable(f"   raw: {e['raw']}"))
        if e.get("error"):
            print(printable(f"   error: {e['error']}"))
    return 0


def add_run_commands(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("run", help="run a pipeline on inputs",
                       description="Compile FILE and run its pipeline on one input (--input NAME=VALUE ...) "
                                   "or on JSON lines (--input-file). Exit 0: all rows ok; 1: a row failed "
                                   "or the file has errors; 2: usage error.")
    r.add_argument("file", metavar="FILE", help=".lmp file or built artifact (.json)")
    r.add_argument("--input", "-i", action="append", metavar="NAME=VALUE",
                   help="an input value (repeatable); non-string types are read as JSON")
    r.add_argument("--input-file", metavar="ROWS", help="run every row of a JSONL, JSON, CSV or TSV file")
    r.add_argument("--json", action="store_true", help="print one JSON line per row")
    add_program_options(r)
    r.set_defaults(func=cmd_run)

    i = sub.add_parser("inspect", help="show the last model calls",
                       description="Show the last N recorded model calls: step, model, cache, tokens, the input "
                                   "message, the raw output and any error.")
    i.add_argument("-n", type=int_flag(1), default=5, help="how many calls (default 5)")
    i.add_argument("--full", action="store_true", help="show every message, not just the last")
    i.add_argument("--json", action="store_true", help="print the raw trace records")
    i.add_argument("--cache-dir", metavar="DIR", help="cache and trace folder (default: $LMPC_CACHE_DIR or ~/.cache/lmpc)")
    i.set_defaults(func=cmd_inspect)
