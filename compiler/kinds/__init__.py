"""The kinds of step, one module each, and the registry every stage reads.

The checker (which kinds exist, their checks and interfaces), lowering (node attributes),
the runtime (execution), the optimizers (prompt nodes and what they may tune), `lmpc graph`
(labels) and the artifact (stored attributes and their checks) all look a kind up here.
Adding a kind: a module with a StepKind subclass, listed below; see docs/architecture.md.
"""

from __future__ import annotations

from lmpc.compiler.kinds import best_of, call, chain_of_thought, map as map_kind, predict, react, retrieve
from lmpc.compiler.kinds.base import Act, CallFunction, Generate, Request, Retrieve, RunBody, StepKind, Target, ToolCall

KINDS: dict[str, StepKind] = {k.name: k for k in (predict.KIND, chain_of_thought.KIND, call.KIND, map_kind.KIND,
                                                   retrieve.KIND, react.KIND, best_of.KIND)}
PROMPT_KINDS: tuple[str, ...] = tuple(name for name, k in KINDS.items() if k.prompt)

__all__ = ["KINDS", "PROMPT_KINDS", "StepKind", "Target", "Request", "Generate", "CallFunction", "RunBody", "Retrieve", "Act",
           "ToolCall"]
