"""`chain_of_thought`: like predict, with a free-text `reasoning` output decoded first.

The `reasoning` field is added here, once, at lowering: the checker, the prompt, the output
grammar and the optimizers read it from the lowered node like any other output."""

from __future__ import annotations

from typing import Any

from lmpc.compiler.kinds.base import StepKind, Target
from lmpc.compiler.kinds.predict import Predict
from lmpc.compiler.types import STR

REASONING = "reasoning"
REASONING_DESCRIPTION = "think step by step, briefly"
REASONING_MAX_CHARS = 400  # the grammar closes the reasoning string after this many characters


class ChainOfThought(Predict):
    name = "chain_of_thought"
    doc = "like predict, with a free-text `reasoning` output decoded before the others"

    def interface(self, ctx, s, target: Target) -> tuple[dict, dict]:
        if REASONING in target.outputs or REASONING in target.inputs:
            ctx.report("reserved-field", s.target_span,
                       f"chain_of_thought adds a `{REASONING}` output, and `{s.target}` already has a field "
                       f"`{REASONING}`", "rename that field, or use predict")
        outputs = {REASONING: STR, **{k: v for k, v in target.outputs.items() if k != REASONING}}
        return dict(target.inputs), outputs

    def extra_outputs(self, lowering: Any) -> dict[str, dict]:
        return {REASONING: lowering.field(STR, REASONING_DESCRIPTION)}

    def generated_outputs(self, node: dict) -> tuple[str, ...]:
        return (REASONING,)

    def text_limit(self, field: str) -> int | None:
        return REASONING_MAX_CHARS if field == REASONING else None


KIND = ChainOfThought()
