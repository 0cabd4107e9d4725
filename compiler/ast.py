"""AST of a .lmp file: plain dataclasses, each carrying the Span it came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from lmpc.compiler.diagnostics import Span

# ---- types --------------------------------------------------------------------------------


@dataclass
class NamedType:
    name: str
    span: Span


@dataclass
class GenericType:
    name: str
    arg: "TypeExpr"
    span: Span


@dataclass
class OptionalType:
    inner: "TypeExpr"
    span: Span


@dataclass
class LiteralType:
    value: str
    span: Span


@dataclass
class UnionType:
    members: list["TypeExpr"]
    span: Span


@dataclass
class ObjectField:
    name: str
    type: "TypeExpr"
    span: Span


@dataclass
class ObjectType:
    fields: list[ObjectField]
    span: Span


TypeExpr = Union[NamedType, GenericType, OptionalType, LiteralType, UnionType, ObjectType]

# ---- expressions ----------------------------------------------------------------------------


@dataclass
class Name:
    name: str
    span: Span


@dataclass
class Attr:
    value: "Expr"
    attr: str
    span: Span
    attr_span: Span


@dataclass
class Literal:
    value: object  # str | int | float | bool | None
    span: Span


@dataclass
class ListExpr:
    items: list["Expr"]
    span: Span


@dataclass
class KwArg:
    name: str
    value: "Expr"
    span: Span
    name_span: Span


@dataclass
class Call:
    func: str
    args: list["Expr"]
    kwargs: list[KwArg]
    span: Span
    func_span: Span


@dataclass
class Op:
    """An operator: `==` `!=` `<` `<=` `>` `>=` `in` `not in` (two operands), `and` `or`
    (two), `not` (one)."""

    op: str
    args: list["Expr"]
    span: Span
    op_span: Span


Expr = Union[Name, Attr, Literal, ListExpr, Call, Op]

# ---- declarations ---------------------------------------------------------------------------


@dataclass
class ModelDecl:
    name: str
    provider: str
    options: list[KwArg]
    span: Span
    name_span: Span
    provider_span: Span


@dataclass
class RetrieverDecl:
    name: str
    provider: str  # "index": the embedded index (runtime/retrieval.py)
    options: list[KwArg]
    span: Span
    name_span: Span
    provider_span: Span


@dataclass
class ToolDecl:
    """`tool NAME = "file.py:function" [Signature]`: a Python function react steps may call."""

    name: str
    ref: str
    signature: str | None
    span: Span
    name_span: Span
    ref_span: Span
    signature_span: Span | None


@dataclass
class TypeDecl:
    name: str
    type: TypeExpr
    span: Span
    name_span: Span


@dataclass
class Field:
    name: str
    type: TypeExpr | None  # None: the default, str
    description: str | None
    span: Span


@dataclass
class SignatureDecl:
    name: str
    instructions: str | None
    inputs: list[Field]
    outputs: list[Field]
    span: Span
    name_span: Span


@dataclass
class Step:
    name: str
    module: str | None  # None: a call of another pipeline
    ref: str | None  # module argument string, e.g. call "tools.py:lookup"
    target: str  # signature (or pipeline) name
    args: list[KwArg]
    using: str | None
    span: Span
    name_span: Span
    module_span: Span | None
    target_span: Span
    using_span: Span | None
    loop: "Loop | None" = None  # `for x in list` (map)
    tools: "list[tuple[str, Span]] | None" = None  # `tools [a, b]` (react): names and their spans
    tools_span: Span | None = None
    max_steps: "Expr | None" = None  # `max_steps N` (react)
    min_steps: "Expr | None" = None  # `min_steps N` (react): finish allowed from action N on
    when: "Expr | None" = None  # `when cond`: a conditional step
    samples: "Expr | None" = None  # `n N` (best_of)
    reward: "Expr | None" = None  # `reward EXPR | "file.py:fn" | judge_pipeline` (best_of)
    threshold: "Expr | None" = None  # `threshold X` (best_of)


@dataclass
class Loop:
    var: str
    over: "Expr"
    span: Span
    var_span: Span


@dataclass
class Check:
    """`check COND else "message" [soft] [retries N] [show_previous]`: a constraint on a step's outputs."""

    cond: "Expr"
    message: str
    soft: bool
    retries: int | None  # None: the default (compiler/check_pipeline.CHECK_RETRIES)
    span: Span
    message_span: Span
    retries_span: Span | None = None
    show_previous: bool = False  # a retry's prompt shows the rejected outputs too (runtime/prompt.user_message)


@dataclass
class Param:
    name: str
    type: TypeExpr | None
    span: Span


@dataclass
class Return:
    fields: list[KwArg]
    span: Span


@dataclass
class PipelineDecl:
    name: str
    inputs: list[Param]
    outputs: list[Param]
    steps: list[Step]
    ret: Return | None
    span: Span
    name_span: Span
    checks: list[Check] = field(default_factory=list)


@dataclass
class OptEntry:
    key: str
    values: list[Expr]  # more than one only for `strategy a then b`
    span: Span
    key_span: Span


@dataclass
class OptimizeDecl:
    pipeline: str
    entries: list[OptEntry]
    span: Span
    name_span: Span


Decl = Union[ModelDecl, RetrieverDecl, ToolDecl, TypeDecl, SignatureDecl, PipelineDecl, OptimizeDecl]


@dataclass
class Module:
    """One parsed file."""

    path: str
    source: str
    decls: list[Decl] = field(default_factory=list)
