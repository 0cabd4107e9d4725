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
