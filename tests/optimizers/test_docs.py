"""docs/optimizers.md: its .lmp blocks compile, and it documents every registered strategy."""

from __future__ import annotations

import re
from pathlib import Path

from lmpc.compiler.api import analyze
from lmpc.optimizers import REGISTRY

DOC = Path(__file__).resolve().parents[2] / "docs" / "optimizers.md"
FENCE = re.compile(r"^```lmp([^\n`]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def test_optimizer_guide_blocks_compile_and_cover_the_registry():
    text = DOC.read_text(encoding="utf-8")
    blocks = FENCE.findall(text)
    assert len(blocks) >= 2
    for _, source in blocks:
        program, diags = analyze(source, "docs/optimizers.md")
        assert program is not None, [d.message for d in diags]
    for name, cls in REGISTRY.items():
        signature = f"`{name}(" 
        assert signature in text, f"docs/optimizers.md does not document {name}"
        for option in cls.options_spec:
            assert option in text, f"{name}'s option {option} is not documented"
