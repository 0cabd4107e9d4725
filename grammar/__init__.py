"""lmpc.grammar: the .lmp grammar (lmp.lark) and its parser factory."""

from lmpc.grammar.parser import get_parser, parse, parse_expr

__all__ = ["get_parser", "parse", "parse_expr"]
