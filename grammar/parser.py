"""The Lark parser for .lmp files (LALR(1), positions propagated)."""

from __future__ import annotations

import functools
from importlib import resources

from lark import Lark, Tree


@functools.lru_cache(maxsize=1)
def get_parser() -> Lark:
    """Build the parser once per process; LALR tables take a few milliseconds to build."""
    text = resources.files("lmpc.grammar").joinpath("lmp.lark").read_text(encoding="utf-8")
    return Lark(
        text,
        parser="lalr",
        lexer="contextual",
        propagate_positions=True,
        maybe_placeholders=True,
        start=["start", "expr"],  # `expr` parses command-line values such as --metric
    )


def parse(text: str) -> Tree:
    """Parse `text`; raises lark's UnexpectedInput on a syntax error."""
    return get_parser().parse(text, start="start")


def parse_expr(text: str) -> Tree:
    """Parse one expression (e.g. `exact_match(label)`)."""
    return get_parser().parse(text, start="expr")
