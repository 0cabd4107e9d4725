"""The docs and examples compile.

Every ```lmp block of docs/language.md and README.md must compile with no errors; a block
fenced ```lmp error is a deliberate mistake and must produce at least one error. Every
examples/**/*.lmp must pass `lmpc check` with exit 0 and print no diagnostics.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from lmpc.compiler.api import analyze

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "docs" / "language.md", ROOT / "README.md"]

# An opening fence ```lmp (with optional words after it), the body, the closing fence.
FENCE = re.compile(r"^```lmp([^\n`]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def _blocks() -> list:
    params = []
    for doc in DOCS:
        if not doc.exists():
            continue
        text = doc.read_text(encoding="utf-8")
        for m in FENCE.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            flags = m.group(1).split()
            rel = doc.relative_to(ROOT).as_posix()
            params.append(pytest.param(m.group(2), "error" in flags, f"{rel}:{line}", id=f"{rel}:{line}"))
    return params


def _render(diags, source: str) -> str:
    return "\n".join(d.render(source) for d in diags)


@pytest.mark.parametrize("source, expect_error, where", _blocks())
def test_doc_block(source: str, expect_error: bool, where: str) -> None:
    program, diags = analyze(source, where)
    errors = [d for d in diags if d.is_error]
    if expect_error:
        assert errors, f"{where}: a block marked `lmp error` compiled without errors"
    else:
        assert not errors, f"{where}: the block does not compile:\n{_render(diags, source)}"
        assert program is not None


def test_language_md_has_blocks() -> None:
    text = (ROOT / "docs" / "language.md").read_text(encoding="utf-8")
    assert len(FENCE.findall(text)) >= 10


EXAMPLES = sorted(ROOT.glob("examples/**/*.lmp"))


def test_examples_exist() -> None:
    assert len(EXAMPLES) >= 4, [p.name for p in EXAMPLES]


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.relative_to(ROOT).as_posix() for p in EXAMPLES])
def test_example_checks_clean(path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "lmpc", "check", "-q", str(path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", f"diagnostics for {path}:\n{proc.stderr}"
    assert proc.stdout == ""
