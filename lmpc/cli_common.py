"""What every `lmpc` subcommand module shares: UsageError, the exit codes, integer flags, reading
and compiling a .lmp file, and the second-Ctrl-C guard. The command modules import this one and
never each other's entry module (lmpc/cli.py), so no import goes in a circle."""

from __future__ import annotations

import argparse
import sys

from lmpc.compiler.errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, LmpcError

EXIT_DIAGNOSTICS = EXIT_ERROR  # the .lmp file has errors (printed as diagnostics)

__all__ = ["EXIT_DIAGNOSTICS", "EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "UsageError",
           "exit_on_next_interrupt", "int_flag", "load_program"]


class UsageError(LmpcError):
    """A mistake in how the command was called (exit code 2)."""

    exit_code = EXIT_USAGE


class CommandInterrupted(LmpcError):
    """A command stopped by Ctrl-C after cleaning up; str() adds what was kept (exit 130)."""

    exit_code = EXIT_INTERRUPTED


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


def load_program(path: str):
    """Compile a .lmp file, printing diagnostics; None when it has errors (SourceFileError, exit
    2, when it cannot be read)."""
    from lmpc.compiler.api import analyze, read_source

    source = read_source(path)
    program, diags = analyze(source, path)
    for d in diags:
        print(d.render(source), file=sys.stderr)
    return program


def exit_on_next_interrupt() -> None:
    """After a first Ctrl-C a command cleans up (cancels calls, closes files); a second one
    ends the process at once, before interpreter shutdown could wait on threads and print a
    traceback. Finished work is already on disk (results flushed per line, cache committed)."""
    import os
    import signal

    def force(signum: int, frame: object) -> None:
        try:
            sys.stderr.write("lmpc: interrupted again; exiting now\n")
            sys.stderr.flush()
        finally:
            os._exit(EXIT_INTERRUPTED)

    try:
        signal.signal(signal.SIGINT, force)
    except ValueError:  # not the main thread (lmpc.cli.main called from a thread): nothing to arm
        pass


EXECUTORS = ("local", "ray")


def add_executor_options(p: argparse.ArgumentParser) -> None:
    """--executor and the Ray flags (`lmpc eval`, `lmpc build`; docs/cluster.md)."""
    p.add_argument("--executor", choices=EXECUTORS, default=None,
                   help="where rows run: local (this process, the default) or ray (a Ray cluster; "
                        "pip install 'lmpc[ray]'); default: $LMPC_EXECUTOR, else local")
    p.add_argument("--ray-address", metavar="ADDR",
                   help="the Ray cluster to join: HOST:PORT, ray://HOST:PORT or auto (the one started on this "
                        "machine by `ray start`); default: $RAY_ADDRESS, else start a local cluster")
    p.add_argument("--ray-workers", type=int_flag(1), metavar="N",
                   help="Ray workers (actors, one CPU each, each loads a local model once); "
                        "default: the cluster's CPUs, at most 8")


def open_runner(args: argparse.Namespace, cache):
    """The RayRunner that --executor ray asks for (None: run rows here). Ray not installed:
    UsageError (exit 2); a cluster that cannot be reached: ConfigurationError (exit 1)."""
    import os

    executor = args.executor or os.environ.get("LMPC_EXECUTOR") or "local"
    if executor not in EXECUTORS:
        raise UsageError(f"LMPC_EXECUTOR must be one of {', '.join(EXECUTORS)}, not {executor!r}")
    if executor == "local":
        if args.ray_address is not None or args.ray_workers is not None:
            raise UsageError("--ray-address and --ray-workers need --executor ray")
        return None
    from lmpc.ray_executor import RayRunner, require_ray

    require_ray()
    return RayRunner(address=args.ray_address, workers=args.ray_workers, cache=cache)
