"""Checks of `retriever NAME = index(corpus: ..., text: ..., id: ..., mode: ...)` declarations:
the spec every `retrieve` step that names the retriever carries into its node (the runtime
builds the index from it, runtime/retrieval.py)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmpc.compiler import ast
from lmpc.compiler.diagnostics import did_you_mean

if TYPE_CHECKING:
    from lmpc.compiler.check import Context

PROVIDERS = ("index",)
MODES = ("bm25", "dense", "hybrid")  # kept equal to runtime/retrieval.MODES (a test checks it)
OPTIONS = {"corpus": None, "text": "text", "id": "id", "mode": "hybrid", "embedder": "e5-small"}
CORPUS_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv")


def check_retrievers(ctx: "Context") -> None:
    for decl in ctx.retriever_decls.values():
        # a bad declaration is reported once; its steps are still typed (no cascade)
        ctx.retrievers[decl.name] = _check(ctx, decl) or {"name": decl.name, **OPTIONS}


def _check(ctx: "Context", decl: ast.RetrieverDecl) -> dict[str, Any] | None:
    ok = True
    if decl.provider not in PROVIDERS:
        ctx.report("bad-retriever", decl.provider_span, f"unknown retriever kind `{decl.provider}`",
                   'the embedded index is `index(corpus: "file.jsonl", ...)`')
        ok = False
    spec: dict[str, Any] = {"name": decl.name, **OPTIONS}
    for kw in decl.options:
        if kw.name not in OPTIONS:
            ctx.report("bad-retriever", kw.name_span, f"a retriever takes no option `{kw.name}`",
                       did_you_mean(kw.name, list(OPTIONS)) or f"options: {', '.join(OPTIONS)}")
            ok = False
            continue
        if not isinstance(kw.value, ast.Literal) or not isinstance(kw.value.value, str):
            ctx.report("bad-retriever", kw.value.span, f"`{kw.name}` takes a string")
            ok = False
            continue
        spec[kw.name] = kw.value.value
    if spec["mode"] not in MODES:
        bad = next(kw for kw in decl.options if kw.name == "mode")
        ctx.report("bad-retriever", bad.value.span, f"unknown retrieval mode \"{spec['mode']}\"",
                   f"modes: {', '.join(MODES)}")
        ok = False
    corpus = next((kw for kw in decl.options if kw.name == "corpus"), None)
    if corpus is None:
        ctx.report("bad-retriever", decl.name_span, f"retriever `{decl.name}` needs `corpus:`",
                   'e.g. `corpus: "passages.jsonl"` (relative to this file)')
        return None
    source = Path(ctx.module.path)
    if isinstance(spec["corpus"], str):
        path = Path(spec["corpus"])
        full = path if path.is_absolute() else source.parent / path
        if path.suffix.lower() not in CORPUS_SUFFIXES:
            ctx.report("bad-retriever", corpus.value.span, f"unknown corpus format `{path.suffix or path.name}`",
                       f"supported: {', '.join(CORPUS_SUFFIXES)}")
            ok = False
        # text without a file (a docs example, an editor buffer) has no folder to look in
        elif (source.is_file() or path.is_absolute()) and not full.is_file():
            ctx.report("missing-corpus", corpus.value.span, f"no corpus file \"{spec['corpus']}\"",
                       f"looked for {full} (a relative path is relative to the .lmp file)")
            ok = False
    return spec if ok else None
