"""Golden-file tests: bad programs carry their expected diagnostics inline, mypy-style.

An annotation is a comment on the line a diagnostic points at (its span's start line):

    label: Lable   # E: unknown-type
    t = predict Translate(text: a.answer)   # W: unused-step
    return a: x.y, b: z   # E: unknown-field  # E: type-mismatch
    label: Lable   # E: unknown-type "did you mean `Label`"

`E` is an error, `W` a warning. An optional "quoted" (or 'quoted') text must occur in the
message or the hint of a diagnostic with that code on that line. The (line, severity, code)
of the annotations and of the diagnostics must agree exactly, as multisets: a diagnostic no
annotation expects fails the test, and so does an annotation no diagnostic matches.

tests/data/*.lmp are bad programs (each must have at least one error); tests/data/ok/*.lmp
must compile with no diagnostics at all.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from lmpc.compiler.api import analyze
from lmpc.compiler.diagnostics import CODES

DATA = Path(__file__).resolve().parents[1] / "data"
BAD = sorted(DATA.glob("*.lmp"))
OK = sorted((DATA / "ok").glob("*.lmp"))

ANNOTATION = re.compile(r"#\s*(?P<sev>[EW]):\s*(?P<code>[a-z][a-z-]*)(?:\s+(?:\"(?P<dq>[^\"]*)\"|'(?P<sq>[^']*)'))?")
SEVERITY = {"E": "error", "W": "warning"}


def parse_annotations(text: str) -> tuple[Counter, list[tuple[int, str, str]]]:
    """(multiset of (line, severity, code), [(line, code, substring), ...])."""
    expected: Counter = Counter()
    substrings: list[tuple[int, str, str]] = []
    for lineno, line in enumerate(text.split("\n"), start=1):
        for m in ANNOTATION.finditer(line):
            sev = SEVERITY[m.group("sev")]
            expected[(lineno, sev, m.group("code"))] += 1
            sub = m.group("dq") if m.group("dq") is not None else m.group("sq")
            if sub is not None:
                substrings.append((lineno, m.group("code"), sub))
    return expected, substrings


def _explain(path: Path, text: str, diags) -> str:
    return "\n".join(d.render(text) for d in diags) or "(no diagnostics)"


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.name)
def test_bad_program(path: Path):
    text = path.read_text(encoding="utf-8")
    expected, substrings = parse_annotations(text)
    assert expected, f"{path.name} has no `# E:` / `# W:` annotations"
    for (_, _, code) in expected:
        assert code in CODES, f"{path.name}: annotation names unknown code {code!r}"

    program, diags = analyze(text, path.name)
    actual = Counter((d.span.line, d.severity, d.code) for d in diags)
    missing = expected - actual
    unexpected = actual - expected
    assert not missing and not unexpected, (
        f"\n{path.name}:\n  expected but not reported: {sorted(missing.elements())}"
        f"\n  reported but not expected: {sorted(unexpected.elements())}\n\n{_explain(path, text, diags)}"
    )
    for line, code, sub in substrings:
        found = [d for d in diags if d.span.line == line and d.code == code
                 and (sub in d.message or sub in (d.hint or ""))]
        assert found, f"{path.name}:{line}: no {code} whose message or hint contains {sub!r}\n\n" + \
            _explain(path, text, diags)
    # A program comes back exactly when there is no error.
    has_error = any(sev == "error" for (_, sev, _) in expected)
    assert (program is None) == has_error


@pytest.mark.parametrize("path", OK, ids=lambda p: p.name)
def test_ok_program(path: Path):
    text = path.read_text(encoding="utf-8")
    assert not ANNOTATION.search(text), "ok programs carry no annotations"
    program, diags = analyze(text, path.name)
    assert diags == [], _explain(path, text, diags)
    assert program is not None and program.graphs


def test_enough_golden_files():
    assert len(BAD) >= 45
    assert len(OK) >= 3


def test_every_code_is_exercised():
    covered: set[str] = set()
    for path in BAD:
        expected, _ = parse_annotations(path.read_text(encoding="utf-8"))
        covered |= {code for (_, _, code) in expected}
    assert set(CODES) - covered == set(), "codes no golden file exercises"


def test_every_syntax_code_is_exercised():
    syntax = {"syntax-error", "unexpected-character", "unexpected-eof", "unterminated-string",
              "missing-arrow", "trailing-comma", "missing-colon", "bad-escape"}
    assert syntax <= set(CODES)
    covered = Counter()
    for path in BAD:
        expected, _ = parse_annotations(path.read_text(encoding="utf-8"))
        covered.update({code for (_, _, code) in expected} & syntax)
    assert set(covered) == syntax


def test_several_syntax_errors_in_one_file_are_all_reported():
    """The recovery promise: independent broken declarations are each reported."""
    text = (DATA / "syntax_multiple_errors.lmp").read_text(encoding="utf-8")
    _, diags = analyze(text, "f.lmp")
    syntax_lines = {d.span.line for d in diags if d.code in ("trailing-comma", "missing-arrow", "syntax-error")}
    assert len(syntax_lines) == 3
    assert any(d.code == "unknown-type" for d in diags)  # a declaration that parsed is still checked


def test_annotation_parser():
    text = 'a   # E: unknown-type "did you mean `Label`"\nb\nc  # E: x-y  # W: unused-step \'say "hi"\'\n'
    expected, subs = parse_annotations(text)
    assert expected == Counter({(1, "error", "unknown-type"): 1, (3, "error", "x-y"): 1,
                                (3, "warning", "unused-step"): 1})
    assert subs == [(1, "unknown-type", "did you mean `Label`"), (3, "unused-step", 'say "hi"')]
