"""The `lmpc` command: check and graph here; run and inspect (cli_run.py), eval (cli_eval.py),
build (cli_build.py), doctor (cli_doctor.py), sharing cli_common.py. main() is the one place
where an error that ends a command becomes its exit code (each LmpcError class declares it)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from lmpc.compiler.api import analyze, read_source
from lmpc.compiler.render import FORMATS

# Re-exported: lmpc.cli.UsageError and friends were imported from here before cli_common existed.
from lmpc.cli_common import (EXIT_DIAGNOSTICS, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, UsageError,  # noqa: F401
                             exit_on_next_interrupt, int_flag, load_program)
from lmpc.compiler.errors import LmpcError


def cmd_check(args: argparse.Namespace) -> int:
    worst = EXIT_OK
    report = []
    for path in args.files:
        source = read_source(path)
        program, diags = analyze(source, path)
        if program is None:
            worst = EXIT_DIAGNOSTICS
        if args.json:
            report.extend(d.to_json() for d in diags)
        else:
            for d in diags:
                print(d.render(source), file=sys.stderr)
            if not diags and not args.quiet:
                pipelines = ", ".join(program.pipelines) or "no pipelines"
                print(f"{path}: ok ({pipelines})")
    if args.json:
        print(json.dumps({"ok": worst == EXIT_OK, "diagnostics": report}, indent=2))
    return worst


def cmd_graph(args: argparse.Namespace) -> int:
    if args.file.endswith(".json"):  # a built artifact: its graph, with the demos it learned
        from lmpc.compiler.artifact import load_artifact
        from lmpc.compiler.checked import choose_pipeline

        artifact = load_artifact(args.file)
        g = artifact.graphs[choose_pipeline(args.file, list(artifact.graphs), [artifact.pipeline], args.pipeline)]
    else:
        program = load_program(args.file)
        if program is None:
            return EXIT_DIAGNOSTICS
        g = program.graphs[program.choose_pipeline(args.pipeline)]
    if args.output and Path(args.output).suffix in (".png", ".svg", ".pdf"):
        dot = shutil.which("dot")
        if dot is None:
            raise UsageError("drawing an image needs Graphviz's `dot` (apt-get install graphviz); "
                             "use --format dot or mermaid instead")
        fmt = Path(args.output).suffix[1:]
        subprocess.run([dot, f"-T{fmt}", "-o", args.output], input=FORMATS["dot"](g), text=True, check=True)
        print(f"wrote {args.output}")
        return EXIT_OK
    text = FORMATS[args.format](g)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {args.output}")
    else:
        sys.stdout.write(text)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lmpc",
        description="lmpc compiles .lmp language-model programs into typed dataflow graphs and runs them.",
        epilog="Run `lmpc COMMAND --help` for a command's options. Docs: docs/cli.md",
    )
    from lmpc import __version__

    p.add_argument("--version", action="version", version=f"lmpc {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    c = sub.add_parser("check", help="parse and type-check .lmp files",
                       description="Parse and type-check .lmp files without calling any model. "
                                   "Exit 0: clean (warnings allowed); 1: errors found; 2: usage error.")
    c.add_argument("files", nargs="+", metavar="FILE", help=".lmp file(s) to check")
    c.add_argument("--json", action="store_true", help="print diagnostics as JSON on stdout")
    c.add_argument("-q", "--quiet", action="store_true", help="print nothing for clean files")
    c.set_defaults(func=cmd_check)

    g = sub.add_parser("graph", help="print a pipeline's typed dataflow graph",
                       description="Compile FILE and print one pipeline's graph (after inlining and pruning).")
    g.add_argument("file", metavar="FILE", help=".lmp file or built artifact (.json)")
    g.add_argument("--pipeline", help="which pipeline (default: the one no other pipeline calls)")
    g.add_argument("--format", choices=sorted(FORMATS), default="mermaid", help="output format (default: mermaid)")
    g.add_argument("-o", "--output", help="write to a file; .png/.svg/.pdf draws an image with Graphviz")
    g.set_defaults(func=cmd_graph)

    from lmpc.cli_build import add_build_command
    from lmpc.cli_doctor import add_doctor_command
    from lmpc.cli_eval import add_eval_command
    from lmpc.cli_index import add_index_command
    from lmpc.cli_run import add_run_commands
    from lmpc.cli_serve import add_serve_command

    add_run_commands(sub)
    add_eval_command(sub)
    add_build_command(sub)
    add_index_command(sub)
    add_doctor_command(sub)
    add_serve_command(sub)
    return p


def report_error(e: LmpcError) -> int:
    """Print an error that ended a command and return its exit code: the one place where errors
    become exit codes (each class declares its own, compiler/errors.py). Diagnostics print as
    diagnostics (positioned in the file, or in a flag's text); the rest as `lmpc: error: ...`."""
    from lmpc.compiler.diagnostics import CompileError, printable  # file text in a message: no raw ESC/NUL

    if isinstance(e, CompileError):
        print(e.render(), file=sys.stderr)
    elif e.exit_code == EXIT_INTERRUPTED:
        detail = str(e)
        print(printable("lmpc: interrupted" + (f"; {detail}" if detail else "")), file=sys.stderr)
    else:
        print(printable(f"lmpc: error: {e}"), file=sys.stderr)
    return e.exit_code


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.func(args)
    except LmpcError as e:
        return report_error(e)
    except KeyboardInterrupt:
        exit_on_next_interrupt()  # a second Ctrl-C while Python shuts down ends at once
        print("lmpc: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `lmpc ... | head`: the reader left; not an error of ours
        # Point stdout at devnull so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
