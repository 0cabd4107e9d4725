"""Property test: a mutated valid program ends in a program or in diagnostics, never a crash.

Seeds are the example programs and tests/data/ok/*.lmp. Each run applies one to four
mutations (characters and whole tokens deleted, inserted, swapped, duplicated; keywords and
punctuation inserted; a name replaced by another name of the file) and then requires that
`analyze`:

* returns normally (no exception of any kind escapes it);
* returns either a program (then its graphs render and survive a JSON round trip) or at
  least one error;
* points every diagnostic inside the file (1 <= line <= number of lines + 1, col >= 1).

LMPC_FUZZ_EXAMPLES=N runs N mutants per seed instead, for a longer hunt:

    LMPC_FUZZ_EXAMPLES=20000 .venv/bin/pytest tests/compiler/test_fuzz.py -k mutations
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmpc.compiler.api import analyze
from lmpc.compiler.ir import from_json, to_json
from lmpc.compiler.render import FORMATS

ROOT = Path(__file__).resolve().parents[2]
SEEDS = sorted(ROOT.glob("examples/**/*.lmp")) + sorted((ROOT / "tests/data/ok").glob("*.lmp"))
# About 5000 runs in all (~25 s on 2 cores); LMPC_FUZZ_EXAMPLES sets the runs per seed instead.
EXAMPLES_PER_SEED = int(os.environ.get("LMPC_FUZZ_EXAMPLES", "0")) or max(100, 5000 // max(1, len(SEEDS)))

TOKEN = re.compile(r'"""(?:[^"\\]|\\.|"(?!""))*"""|"(?:[^"\\\n]|\\.)*"|->|[A-Za-z_]\w*|-?\d+(?:\.\d+)?|#[^\n]*|\s+|.',
                   re.S)
KEYWORDS = [
    "model", "type", "signature", "pipeline", "optimize", "predict", "chain_of_thought", "call",
    "using", "return", "then", "true", "false", "null", "list", "str", "int", "float", "bool",
    "reasoning", "env", "len", "join", "metric", "strategy", "train", "seed", "llama_cpp", "openai",
]
PUNCT = ["->", "-", ">", "{", "}", "(", ")", "[", "]", ":", ",", ".", "?", "|", "=", '"', '"""', "#",
         "\n", " ", "\t", "$", "@", "\\", "'", "0", "-1.5e3", '"x"', '"a.py:f"', "\r"]
CHARS = st.sampled_from(list("{}()[]:,.?|=\"#-> \n\tab_Z09$'\\") + ["é", "\x00"])


def _lines(text: str) -> int:
    return text.count("\n") + 1


@st.composite
def mutated(draw, seed_text: str) -> str:
    text = seed_text
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["del_char", "ins_char", "swap_char", "dup_char",
                                     "del_tok", "dup_tok", "swap_tok", "ins_tok", "ins_name", "rep_name"]))
        if kind.endswith("_char"):
            if not text:
                text = draw(CHARS)
                continue
            i = draw(st.integers(0, len(text) - 1))
            if kind == "del_char":
                text = text[:i] + text[i + 1:]
            elif kind == "ins_char":
                text = text[:i] + draw(CHARS) + text[i:]
            elif kind == "dup_char":
                text = text[:i] + text[i] + text[i:]
            elif i + 1 < len(text):
                text = text[:i] + text[i + 1] + text[i] + text[i + 2:]
            continue
        toks = TOKEN.findall(text)
        if not toks:
            text = draw(st.sampled_from(KEYWORDS + PUNCT))
            continue
        i = draw(st.integers(0, len(toks) - 1))
        if kind == "del_tok":
            del toks[i]
        elif kind == "dup_tok":
            toks.insert(i, toks[i])
        elif kind == "swap_tok":
            j = draw(st.integers(0, len(toks) - 1))
            toks[i], toks[j] = toks[j], toks[i]
        elif kind == "ins_tok":
            toks.insert(i, draw(st.sampled_from(KEYWORDS + PUNCT)) + draw(st.sampled_from(["", " "])))
        else:  # a name that the file already uses, somewhere it does not belong
            names = sorted({t for t in toks if re.fullmatch(r"[A-Za-z_]\w*", t)})
            if not names:
                continue
            if kind == "ins_name":
                toks.insert(i, " " + draw(st.sampled_from(names)) + " ")
            else:  # replace one name by another: wrong references, cycles, type mismatches
                at = [k for k, t in enumerate(toks) if t in names]
                toks[draw(st.sampled_from(at))] = draw(st.sampled_from(names))
        text = "".join(toks)
    return text


def check_invariants(text: str) -> None:
    program, diags = analyze(text, "fuzz.lmp")
    n_lines = _lines(text)
    for d in diags:
        assert d.span.file == "fuzz.lmp"
        assert 1 <= d.span.line <= n_lines + 1, (d, n_lines)
        assert d.span.col >= 1, d
        assert d.span.end_line >= d.span.line, d
        d.render(text)
        d.to_json()
    if program is None:
        assert any(d.is_error for d in diags)
        return
    assert not any(d.is_error for d in diags)
    for g in program.graphs.values():
        for fmt in FORMATS.values():
            fmt(g)
        back = from_json(to_json(g))
        assert set(back.nodes) == set(g.nodes) and set(back.edges) == set(g.edges)


def test_seeds_are_valid():
    assert len(SEEDS) >= 5
    for path in SEEDS:
        program, diags = analyze(path.read_text(encoding="utf-8"), str(path))
        assert program is not None, [d.render() for d in diags]


@pytest.mark.parametrize("seed_path", SEEDS, ids=lambda p: p.name)
def test_mutations_never_crash(seed_path: Path):
    seed_text = seed_path.read_text(encoding="utf-8")

    @settings(max_examples=EXAMPLES_PER_SEED, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(mutated(seed_text))
    def run(text: str) -> None:
        check_invariants(text)

    run()


@pytest.mark.parametrize("text", [
    "", "\n", "#", '"', '"""', "model", "type T =", "signature S {", "pipeline p(", "optimize o {",
    "\x00", "é", "}", "->", "signature S = -> y", "pipeline p() -> () {}", 'model m = x(a: "\\',
    "type T = list[list[", "signature S { a -> b }\n" * 3, "\r\n\r\n", "pipeline p(x) -> y { return y: x.y.z }",
])
def test_edge_inputs(text: str):
    check_invariants(text)


@pytest.mark.parametrize("kind", ["brackets", "list types", "type chain", "call chain"])
def test_absurd_nesting_is_a_diagnostic_not_a_crash(kind: str):
    """Past Python's recursion limit the compiler reports a syntax error (as CPython does
    for too many nested parentheses) instead of raising RecursionError."""
    n = 1200 if kind == "call chain" else 3000  # (Python's default limit is 1000 frames)
    if kind == "brackets":
        text = ("signature S = x: list[str] -> y\npipeline p(a: str) -> (y: str) {\n"
                f"    s = predict S(x: {'[' * n}a{']' * n})\n    return y: s.y\n}}\n")
    elif kind == "list types":
        text = f"type T = {'list[' * n}str{']' * n}\n"
    elif kind == "type chain":
        text = "".join(f"type T{i} = T{i + 1}\n" for i in range(n)) + f"type T{n} = str\n"
    else:
        text = "signature S = x -> y\n" + "".join(
            f"pipeline p{i}(x: str) -> (y: str) {{ c = p{i + 1}(x: x) return y: c.y }}\n" for i in range(n)
        ) + f"pipeline p{n}(x: str) -> (y: str) {{ s = predict S(x: x) return y: s.y }}\n"
    program, diags = analyze(text, "deep.lmp")
    assert program is None
    (d,) = diags
    assert d.code == "syntax-error"
    if kind in ("brackets", "list types"):
        assert "too many nested brackets" in d.message
        assert d.span.line == (3 if kind == "brackets" else 1)
    else:
        assert (d.span.line, d.span.col) == (1, 1) and "nest too deeply" in d.message
    check_invariants(text)
