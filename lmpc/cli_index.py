"""`lmpc index FILE`: build the indexes of a program's retrievers (and fill the Qdrant
collections lmpc owns) ahead of the first run, as the first run would: the same cache dir,
the same keys, so later runs, builds and apps open them without embedding anything."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from lmpc.cli_common import EXIT_DIAGNOSTICS, EXIT_OK, UsageError, load_program


def add_index_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("index", help="build the retrievers' indexes (or fill their Qdrant collections) ahead of a run",
                       description="Open every retriever that FILE's pipelines search, as a run would: build an "
                                   "embedded index that is not built yet (under the cache dir), and create and "
                                   "fill a Qdrant collection lmpc owns (`corpus:`) that is missing or out of date. "
                                   "Exit 0: all ready; 1: errors in the file or a retriever that cannot be opened; "
                                   "2: usage error.")
    p.add_argument("file", metavar="FILE", help=".lmp file or built artifact (.json)")
    p.add_argument("--retriever", action="append", metavar="NAME", help="only this retriever (repeatable)")
    p.add_argument("--cache-dir", help="where indexes are kept (default: as for lmpc run)")
    p.add_argument("--trust-models", action="store_true",
                   help="for an artifact: approve the corpora, folders and servers its retrievers name")
    p.set_defaults(func=cmd_index)


def _specs(args: argparse.Namespace) -> tuple[list[dict], dict, Path] | None:
    """(the distinct retriever specs the pipelines use, the declared models, the base dir)."""
    from lmpc.compiler.ir import walk

    if args.file.endswith(".json"):
        from lmpc.api import load

        prog = load(args.file, trust_models=args.trust_models, cache=False, trace_log=False)
        graphs, base = [prog.graph], Path(args.file).resolve().parent
        prog.close()
    else:
        if args.trust_models:
            raise UsageError("--trust-models applies to built artifacts")
        checked = load_program(args.file)
        if checked is None:
            return None
        graphs, base = list(checked.graphs.values()), Path(args.file).parent
    specs: dict[str, dict] = {}
    models: dict = {}
    for g in graphs:
        models.update(g.graph.get("models", {}))
        for _, d in walk(g):
            if d.get("kind") == "retrieve":
                specs.setdefault(json.dumps(d["retriever"], sort_keys=True), d["retriever"])
    return list(specs.values()), models, base


def cmd_index(args: argparse.Namespace) -> int:
    from lmpc.runtime.cache import default_cache_dir
    from lmpc.runtime.retrieval import open_retriever

    found = _specs(args)
    if found is None:
        return EXIT_DIAGNOSTICS
    specs, models, base = found
    names = sorted({s["name"] for s in specs})
    unknown = sorted(set(args.retriever or []) - set(names))
    if unknown:
        raise UsageError(f"no pipeline of {args.file} searches a retriever named `{unknown[0]}` "
                         f"(retrievers: {', '.join(names) or 'none'})")
    cache_dir = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    if not specs:
        print(f"{args.file}: no retrieve steps, nothing to index")
    for spec in specs:
        if args.retriever and spec["name"] not in args.retriever:
            continue
        t0 = time.monotonic()
        opened = open_retriever(spec, models, base, cache_dir)
        skipped = f", {len(opened.bad)} bad row(s) skipped (first: {opened.bad[0]})" if opened.bad else ""
        where = (f"collection \"{spec['collection']}\" at {opened.where}" if spec.get("kind") == "qdrant"
                 else f"index {opened.folder}")
        state = f"built in {time.monotonic() - t0:.1f} s" if opened.built else "up to date"
        print(f"retriever {spec['name']}: {where}: {state} ({opened.size} passages{skipped})")
    return EXIT_OK
