"""docs/diagnostics.md documents exactly the codes in CODES, with examples that are true.

Each code has a `## CODE` section holding a ```lmp bad block (which must produce that code
and no other diagnostic), a ```text block (what `lmpc check example.lmp` prints for it, which
must match today's output) and a ```lmp fixed block (which must compile with no diagnostic).
A ```python NAME block is a file beside example.lmp (a tool's source): the bad example's after
it, the fixed example's (when they differ) after the fixed block.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lmpc.compiler.api import analyze
from lmpc.compiler.diagnostics import CODES

DOC = Path(__file__).resolve().parents[2] / "docs" / "diagnostics.md"
FENCE = re.compile(r"^```(?P<info>[^\n]*)\n(?P<body>.*?)^```$", re.M | re.S)


def sections() -> dict[str, str]:
    text = DOC.read_text(encoding="utf-8")
    parts = re.split(r"^## +(.+?) *$", text, flags=re.M)
    out: dict[str, str] = {}
    for heading, body in zip(parts[1::2], parts[2::2]):
        code = heading.strip("` ")
        assert code not in out, f"`## {code}` appears twice"
        out[code] = body
    return out


def blocks(body: str, info: str) -> list[str]:
    return [m.group("body") for m in FENCE.finditer(body) if m.group("info").strip() == info]


SECTIONS = sections()


def test_documents_exactly_the_registered_codes():
    assert set(SECTIONS) == set(CODES)


def test_summary_table_lists_every_code_with_its_severity():
    text = DOC.read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| \[`([a-z-]+)`\]\(#[a-z-]+\) \| (error|warning) \|", text, flags=re.M))
    assert rows == {code: sev for code, (sev, _) in CODES.items()}


def python_files(body: str) -> dict[str, str]:
    """```python NAME blocks: files the examples read beside example.lmp (a tool's source)."""
    files: dict[str, str] = {}
    for m in FENCE.finditer(body.split("```lmp fixed", 1)[0]):
        info = m.group("info").split()
        if info[:1] == ["python"] and len(info) == 2:
            files.setdefault(info[1], m.group("body"))
    return files


@pytest.mark.parametrize("code", sorted(CODES))
def test_section(code: str, tmp_path, monkeypatch):
    body = SECTIONS[code]
    files = python_files(body)
    if files:  # the bad example's file (the first block of a name) in a folder with example.lmp
        monkeypatch.chdir(tmp_path)
        (tmp_path / "example.lmp").write_text("")
        for name, text in files.items():
            (tmp_path / name).write_text(text)
    severity = CODES[code][0]
    assert f"**{severity}**" in body, f"section {code} does not state its severity ({severity})"
    (bad,) = blocks(body, "lmp bad")
    (fixed,) = blocks(body, "lmp fixed")
    (rendered,) = blocks(body, "text")

    _, diags = analyze(bad, "example.lmp")
    assert diags, f"the bad example of {code} compiles cleanly"
    assert {d.code for d in diags} == {code}, "\n".join(d.render(bad) for d in diags)
    assert all(d.severity == severity for d in diags)
    assert rendered.rstrip("\n") == diags[0].render(bad), "the printed output shown is out of date"

    fences = list(FENCE.finditer(body))
    after = next((i for i, m in enumerate(fences) if m.group("info").strip() == "lmp fixed"), len(fences))
    fixed_files = [m.group("body") for m in fences[after:] if m.group("info").split()[:1] == ["python"]]
    for name, text in zip(files, fixed_files):  # the fixed example's files follow it
        (tmp_path / name).write_text(text)
    program, diags = analyze(fixed, "example.lmp")
    assert diags == [], "\n".join(d.render(fixed) for d in diags)
    assert program is not None
