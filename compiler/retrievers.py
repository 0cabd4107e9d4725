"""Checks of `retriever NAME = KIND(option: value, ...)` declarations: the spec every
`retrieve` step that names the retriever carries into its node (the runtime opens the
retriever from it, runtime/retrieval.open_retriever).

Kinds: `index`, the embedded index (a corpus file or folder, BM25/dense/hybrid), and `qdrant`,
a collection of a Qdrant vector database (a server `url:` or a local `path:` folder), searched
with query vectors lmpc embeds, and filled by lmpc from `corpus:` when it is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmpc.compiler import ast
from lmpc.compiler.check import SECRET_OPTION_NAMES
from lmpc.compiler.diagnostics import did_you_mean

if TYPE_CHECKING:
    from lmpc.compiler.check import Context

MODES = ("bm25", "dense", "hybrid")  # kept equal to runtime/retrieval.MODES (a test checks it)
_CORPUS = {"text": "text", "id": "id", "embedder": "e5-small", "chunk": None, "overlap": 0, "skip_bad_rows": False}
# kind -> option -> default (None: absent); REQUIRED names the options a kind cannot do without
OPTIONS: dict[str, dict[str, Any]] = {
    "index": {"corpus": None, "mode": "hybrid", **_CORPUS},
    "qdrant": {"collection": None, "url": None, "path": None, "api_key_env": None, "timeout": None,
               "corpus": None, **_CORPUS},
}
REQUIRED = {"index": ("corpus",), "qdrant": ("collection",)}
TYPES: dict[str, tuple[type, ...]] = {"chunk": (int,), "overlap": (int,), "skip_bad_rows": (bool,),
                                      "timeout": (int, float)}  # the others take a string
ENV_OPTIONS = ("url",)  # the options whose value may be env("VAR"), read when the program runs
CHUNK_MAX = 100_000  # words
CORPUS_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv")
EXAMPLES = {"index": 'index(corpus: "passages.jsonl")',
            "qdrant": 'qdrant(url: env("QDRANT_URL"), collection: "docs", corpus: "passages.jsonl")'}


def check_retrievers(ctx: "Context") -> None:
    for decl in ctx.retriever_decls.values():
        # a bad declaration is reported once; its steps are still typed (no cascade)
        ctx.retrievers[decl.name] = _check(ctx, decl) or default_spec(decl.name)


def default_spec(name: str, kind: str = "index") -> dict[str, Any]:
    spec = {"kind": kind, "name": name, **OPTIONS[kind]}
    if kind == "qdrant":
        spec["mode"] = "dense"  # a collection holds the passages' vectors
    return spec


def _value(ctx: "Context", kw: ast.KwArg) -> tuple[bool, Any]:
    v = kw.value
    if isinstance(v, ast.Literal):
        want = TYPES.get(kw.name, (str,))
        ok = isinstance(v.value, want) and (bool in want or not isinstance(v.value, bool))
        if ok:
            return True, v.value
        names = {str: "a string", int: "a whole number", bool: "true or false", float: "a number"}
        ctx.report("bad-retriever", v.span, f"`{kw.name}` takes {' or '.join(names[t] for t in want)}")
        return False, None
    if (kw.name in ENV_OPTIONS and isinstance(v, ast.Call) and v.func == "env" and len(v.args) == 1
            and not v.kwargs and isinstance(v.args[0], ast.Literal) and isinstance(v.args[0].value, str)):
        return True, {"env": v.args[0].value}
    ctx.report("bad-retriever", v.span, f"`{kw.name}` takes a literal value"
               + (' or env("NAME")' if kw.name in ENV_OPTIONS else ""))
    return False, None


def _check(ctx: "Context", decl: ast.RetrieverDecl) -> dict[str, Any] | None:
    kind = decl.provider
    if kind not in OPTIONS:
        ctx.report("bad-retriever", decl.provider_span, f"unknown retriever kind `{kind}`",
                   (did_you_mean(kind, list(OPTIONS)) or "") + " kinds: the embedded index "
                   f"`{EXAMPLES['index']}`, a Qdrant collection `{EXAMPLES['qdrant']}`")
        return None
    ok = True
    spec = default_spec(decl.name, kind)
    given: dict[str, ast.KwArg] = {}
    for kw in decl.options:
        if kw.name in given:
            ctx.report("duplicate-argument", kw.name_span, f"option `{kw.name}` is given twice")
            ok = False
            continue
        if kw.name.lower() in SECRET_OPTION_NAMES:
            ctx.report("secret-literal", kw.span, "secrets must not be written into a .lmp file",
                       'name the environment variable that holds it: `api_key_env: "QDRANT_API_KEY"`')
            ok = False
            continue
        if kw.name not in OPTIONS[kind]:
            ctx.report("bad-retriever", kw.name_span, f"a retriever of kind `{kind}` takes no option `{kw.name}`",
                       did_you_mean(kw.name, list(OPTIONS[kind])) or f"options: {', '.join(OPTIONS[kind])}")
            ok = False
            continue
        good, value = _value(ctx, kw)
        if good:
            given[kw.name] = kw
            spec[kw.name] = value
        ok = ok and good
    for name in REQUIRED[kind]:
        if not any(kw.name == name for kw in decl.options):  # (one given with a bad value is reported above)
            ctx.report("bad-retriever", decl.name_span, f"retriever `{decl.name}` needs `{name}:`",
                       f"e.g. `{EXAMPLES[kind]}`" + (" (a relative path is relative to this file)"
                                                     if name == "corpus" else ""))
            return None
    ok = _check_values(ctx, kind, spec, given) and ok
    if "corpus" in given:
        ok = _check_corpus(ctx, spec, given) and ok
    return spec if ok else None


def _check_values(ctx: "Context", kind: str, spec: dict[str, Any], given: dict[str, ast.KwArg]) -> bool:
    ok = True

    def bad(name: str, message: str, hint: str | None = None) -> None:
        nonlocal ok
        ctx.report("bad-retriever", given[name].value.span, message, hint)
        ok = False

    if "mode" in given and spec["mode"] not in MODES:
        bad("mode", f"unknown retrieval mode \"{spec['mode']}\"", f"modes: {', '.join(MODES)}")
    if "chunk" in given and not 1 <= spec["chunk"] <= CHUNK_MAX:
        bad("chunk", f"`chunk` is a number of words from 1 to {CHUNK_MAX}", "e.g. `chunk: 200, overlap: 40`")
    if "overlap" in given:
        if "chunk" not in given:
            bad("overlap", "`overlap` needs `chunk:` (the words consecutive chunks share)",
                "e.g. `chunk: 200, overlap: 40`")
        elif not 0 <= spec["overlap"] < max(spec["chunk"], 1):
            bad("overlap", f"`overlap` must be from 0 to chunk - 1 ({spec['chunk'] - 1})",
                "consecutive chunks share `overlap` words")
    for name in ("text", "id", "collection", "embedder"):
        if name in given and not spec[name].strip():
            bad(name, f"`{name}` must not be empty")
    if kind == "qdrant":
        if ("url" in given) == ("path" in given):
            where = given.get("path") or given.get("url") or given["collection"]
            ctx.report("bad-retriever", where.span if len(given.keys() & {"url", "path"}) == 2 else where.value.span,
                       "a qdrant retriever needs exactly one of `url:` (a server) and `path:` (a local folder)",
                       'e.g. `url: env("QDRANT_URL")` or `path: "qdrant-data"`')
            ok = False
        url = spec["url"]
        if isinstance(url, str) and not url.startswith(("http://", "https://")):
            bad("url", "`url` is an http:// or https:// address", 'e.g. `url: "http://localhost:6333"`')
        if "api_key_env" in given and "url" not in given:
            bad("api_key_env", "`api_key_env` is for a server (`url:`); a local `path:` has no key")
        if "timeout" in given and not 1 <= spec["timeout"] <= 86_400:
            bad("timeout", "`timeout` is a number of seconds from 1 to 86400")
        if "corpus" not in given:
            for name in ("chunk", "overlap", "skip_bad_rows"):
                if name in given:
                    bad(name, f"`{name}` applies to the `corpus:` that lmpc uploads; this retriever has none",
                        "give `corpus:` or remove the option")
    return ok


def _check_corpus(ctx: "Context", spec: dict[str, Any], given: dict[str, ast.KwArg]) -> bool:
    """The corpus: a data file of a known format, or a folder of text files (a path that ends
    with `/` or names an existing folder); it must exist when the source is a file."""
    corpus = given["corpus"]
    source = Path(ctx.module.path)
    raw = spec["corpus"]
    path = Path(raw)
    full = path if path.is_absolute() else source.parent / path
    # text without a file (a docs example, an editor buffer) has no folder to look in
    can_look = source.is_file() or path.is_absolute()
    folder = raw.endswith(("/", "\\")) or (can_look and full.is_dir())
    if not folder and path.suffix.lower() not in CORPUS_SUFFIXES:
        ctx.report("bad-retriever", corpus.value.span, f"unknown corpus format `{path.suffix or path.name}`",
                   f"a data file ({', '.join(CORPUS_SUFFIXES)}) or a folder of .txt/.md files (write it with "
                   "a trailing `/`)")
        return False
    if can_look and not (full.is_dir() if folder else full.is_file()):
        ctx.report("missing-corpus", corpus.value.span, f"no corpus {'folder' if folder else 'file'} \"{raw}\"",
                   f"looked for {full} (a relative path is relative to the .lmp file)")
        return False
    return True
