"""Checks of `tool NAME = "file.py:function" [Signature]` declarations: the typed spec every
`react` step that lists the tool carries into its node.

A tool's parameters and result come from its signature when one is named (inputs are the
parameters, outputs the result), else from the function's annotations, read statically with
Python's `ast` module: the compiler never imports user code. Supported annotations: int,
float, str, bool, list[T], Optional[T] / T | None, Literal["a", "b"] (what lmpc types
express; an object parameter needs a signature with an object type). The
function's docstring (first paragraph) is the tool's description shown to the model.
"""

from __future__ import annotations

import ast as pyast
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmpc.compiler import ast
from lmpc.compiler.diagnostics import did_you_mean
from lmpc.compiler.optimize_spec import FUNCTION_REF
from lmpc.compiler.types import BOOL, FLOAT, INT, STR, EnumT, ListT, OptT, Type, describe, to_schema

if TYPE_CHECKING:
    from lmpc.compiler.check import Context

FINISH = "finish"  # the action that ends a react loop: a tool may not take this name
_PRIMS = {"int": INT, "float": FLOAT, "str": STR, "bool": BOOL}


class BadAnnotation(ValueError):
    pass


def annotation_type(node: pyast.expr) -> Type:
    """The lmpc type of a Python annotation, or BadAnnotation. Only types lmpc can express
    (so that an artifact stores them as type forms, never as schemas: docs/security.md)."""
    if isinstance(node, pyast.Constant) and isinstance(node.value, str):  # "int" (a string annotation)
        try:
            node = pyast.parse(node.value, mode="eval").body
        except SyntaxError:
            raise BadAnnotation(f"`{node.value}` is not a type") from None
    if isinstance(node, pyast.Name) and node.id in _PRIMS:
        return _PRIMS[node.id]
    if isinstance(node, pyast.Name) and node.id in ("list", "List", "dict", "Dict"):
        raise BadAnnotation(f"`{node.id}` needs its item type (e.g. list[int]); for an object, name a signature")
    if isinstance(node, pyast.BinOp) and isinstance(node.op, pyast.BitOr):  # T | None
        if isinstance(node.right, pyast.Constant) and node.right.value is None:
            return OptT(annotation_type(node.left))
        raise BadAnnotation("a union is only `T | None`")
    if isinstance(node, pyast.Subscript):
        base = node.value.attr if isinstance(node.value, pyast.Attribute) else getattr(node.value, "id", None)
        arg = node.slice
        if base in ("list", "List"):
            return ListT(annotation_type(arg))
        if base == "Optional":
            return OptT(annotation_type(arg))
        if base == "Literal":
            values = arg.elts if isinstance(arg, pyast.Tuple) else [arg]
            if all(isinstance(v, pyast.Constant) and isinstance(v.value, str) for v in values):
                return EnumT(tuple(dict.fromkeys(v.value for v in values)))
            raise BadAnnotation("Literal[...] takes strings")
    raise BadAnnotation(f"`{pyast.unparse(node)}` is not a tool type")


def _field(t: Type, description: str | None = None) -> dict:
    return {"type": describe(t), "schema": to_schema(t), "description": description}


def read_function(path: Path, name: str) -> pyast.FunctionDef | None:
    """The top-level `def name` of a Python file, parsed (not imported); None if absent."""
    tree = pyast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in tree.body:
        if isinstance(node, (pyast.FunctionDef, pyast.AsyncFunctionDef)) and node.name == name:
            return node
    return None


def signature_from_function(fn: pyast.FunctionDef) -> tuple[dict, list[str], dict | None, str, list[tuple[str, pyast.AST]]]:
    """(params, required, result, description, problems) from a parsed function."""
    problems: list[tuple[str, pyast.AST]] = []
    args = fn.args
    if args.vararg or args.kwarg:
        problems.append(("a tool takes named parameters, not *args or **kwargs", args.vararg or args.kwarg))
    positional = args.posonlyargs + args.args
    defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    kw_defaults = list(args.kw_defaults)
    params: dict[str, dict] = {}
    required: list[str] = []
    for a, default in list(zip(positional, defaults)) + list(zip(args.kwonlyargs, kw_defaults)):
        if a.annotation is None:
            problems.append((f"parameter `{a.arg}` has no type annotation", a))
            continue
        try:
            params[a.arg] = _field(annotation_type(a.annotation))
        except BadAnnotation as e:
            problems.append((f"parameter `{a.arg}`: {e}", a.annotation))
            continue
        if default is None:
            required.append(a.arg)
    result = None
    if fn.returns is not None:
        try:
            result = _field(annotation_type(fn.returns))
        except BadAnnotation as e:
            problems.append((f"the result: {e}", fn.returns))
    doc = pyast.get_docstring(fn) or ""
    description = doc.strip().split("\n\n")[0].replace("\n", " ").strip()
    return params, required, result, description, problems


def check_tools(ctx: "Context") -> None:
    for decl in ctx.tool_decls.values():
        # a bad declaration is reported once; steps naming it are not reported again
        ctx.tools[decl.name] = _check(ctx, decl)


def _check(ctx: "Context", decl: ast.ToolDecl) -> dict[str, Any] | None:
    ref = decl.ref
    if decl.name == FINISH:
        ctx.report("bad-tools", decl.name_span, f"`{FINISH}` is the action that ends a react loop",
                   "give the tool another name")
        return None
    if not FUNCTION_REF.match(ref):
        ctx.report("bad-tools", decl.ref_span, f'"{ref}" is not a `file.py:function` reference',
                   'e.g. "tools.py:calculator" (the path is relative to the .lmp file)')
        return None
    spec: dict[str, Any] = {"fn": ref, "description": "", "params": {}, "required": [], "result": None}
    if decl.signature is not None:
        sig = ctx.signatures.get(decl.signature)
        if sig is None:
            if decl.signature not in ctx.suppressed:
                ctx.report("unknown-signature", decl.signature_span, f"unknown signature `{decl.signature}`",
                           did_you_mean(decl.signature, list(ctx.signature_decls)))
            return None
        spec["description"] = sig.instructions or ""
        spec["params"] = {n: _field(f.type, f.description) for n, f in sig.inputs.items()}
        spec["required"] = [n for n, p in spec["params"].items() if "anyOf" not in p["schema"]]
        outs = list(sig.outputs.items())
        if len(outs) > 1:
            ctx.report("bad-tool-annotation", decl.signature_span,
                       f"a tool returns one value, and `{decl.signature}` has {len(outs)} outputs",
                       "give the signature one output: the tool's result")
            return None
        if len(outs) == 1:
            spec["result"] = _field(outs[0][1].type, outs[0][1].description)
    source = Path(ctx.module.path)
    file, _, name = ref.partition(":")
    path = Path(file)
    full = path if path.is_absolute() else source.parent / path
    if not (source.is_file() or path.is_absolute()):
        return spec  # text without a file (a docs example, an editor buffer): nothing to read
    if not full.is_file():
        ctx.report("missing-tool", decl.ref_span, f"no Python file \"{file}\"",
                   f"looked for {full} (a relative path is relative to the .lmp file)")
        return None
    try:
        fn = read_function(full, name)
    except (SyntaxError, UnicodeDecodeError, ValueError) as e:
        ctx.report("missing-tool", decl.ref_span, f"{file} does not parse as Python: {e}")
        return None
    if fn is None:
        ctx.report("missing-tool", decl.ref_span, f"{file} defines no top-level function `{name}`",
                   "a tool is a function defined with `def` at the top of its file")
        return None
    params, required, result, description, problems = signature_from_function(fn)
    if decl.signature is not None:
        missing = [p for p in spec["required"] if p not in {a.arg for a in fn.args.args + fn.args.kwonlyargs}]
        if missing and not fn.args.kwarg:
            ctx.report("bad-tool-annotation", decl.signature_span,
                       f"`{name}` takes no parameter {', '.join(f'`{m}`' for m in missing)} of `{decl.signature}`",
                       f"the signature's inputs are the tool's parameters: {', '.join(spec['params'])}")
            return None
        spec["description"] = spec["description"] or description
        return spec
    for message, node in problems:
        line = decl.ref_span
        ctx.report("bad-tool-annotation", line,
                   f"tool `{decl.name}`: {message} ({file}:{getattr(node, 'lineno', fn.lineno)})",
                   "annotate each parameter with int, float, str, bool, list[T], T | None or Literal[...], "
                   "or name a signature: `tool NAME = \"file.py:function\" Signature`")
    if problems:
        return None
    spec.update(params=params, required=required, result=result, description=description)
    return spec


