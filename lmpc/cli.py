"""The `lmpc` command: check, graph (run, inspect: see lmpc/cli_run.py)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from lmpc.compiler.api import analyze
from lmpc.compiler.render import FORMATS

EXIT_OK, EXIT_DIAGNOSTICS, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A mistake in how the command was called (exit code 2)."""


def int_flag(low: int = 0, entry: str | None = None):
    """An argparse type for an integer flag: `low` or more, or what the optimize block's `entry`
    accepts (compiler/options.ENTRY_VALUES, so --seed and `seed` are checked alike). A bad value
    is argparse's usage error (exit 2), never a traceback later."""

    def parse(text: str) -> int:
        from lmpc.compiler.options import ENTRY_VALUES

        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
        if entry is not None:
            why = ENTRY_VALUES[entry].problem(value)
            if why is not None:
                raise argparse.ArgumentTypeError(why)
        elif value < low:
            raise argparse.ArgumentTypeError(f"must be {low} or more, not {value}")
        return value

    return parse


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8-sig")  # a BOM is not part of the program
    except FileNotFoundError:
        raise UsageError(f"no such file: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read {path}: {e}") from None


def cmd_check(args: argparse.Namespace) -> int:
    worst = EXIT_OK
    report = []
    for path in args.files:
        source = _read(path)
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


def _pick_pipeline(program, name: str | None) -> str:
    try:
        return program.choose_pipeline(name)
    except ValueError as e:
        raise UsageError(str(e)) from None


def load_program(path: str):
    """Compile a .lmp file, printing diagnostics; None when it has errors."""
    source = _read(path)
    program, diags = analyze(source, path)
    for d in diags:
        print(d.render(source), file=sys.stderr)
    return program


def cmd_graph(args: argparse.Namespace) -> int:
    if args.file.endswith(".json"):  # a built artifact: its graph, with the demos it learned
        from lmpc.compiler.artifact import ArtifactError, load_artifact

        try:
            artifact = load_artifact(args.file)
        except ArtifactError as e:
            raise UsageError(str(e)) from None
        g = artifact.graphs[args.pipeline or artifact.pipeline] if (args.pipeline or artifact.pipeline) in \
            artifact.graphs else None
        if g is None:
            raise UsageError(f"{args.file} has no pipeline `{args.pipeline}` (it has: {', '.join(artifact.graphs)})")
    else:
        program = load_program(args.file)
        if program is None:
            return EXIT_DIAGNOSTICS
        g = program.graphs[_pick_pipeline(program, args.pipeline)]
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
    from lmpc.cli_run import add_run_commands

    add_run_commands(sub)
    add_build_command(sub)
    add_doctor_command(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.func(args)
    except UsageError as e:
        from lmpc.compiler.diagnostics import printable  # file text in a message: no raw ESC/NUL

        print(printable(f"lmpc: error: {e}"), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("lmpc: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `lmpc ... | head`: the reader left; not an error of ours
        # Point stdout at devnull so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
