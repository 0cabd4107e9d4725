"""`call`: a Python function that the file names explicitly (`call "tools.py:lookup" Sig(...)`)."""

from __future__ import annotations

from typing import Any

from lmpc.compiler.kinds.base import CallFunction, Execution, StepKind
from lmpc.compiler.optimize_spec import FUNCTION_REF


class Call(StepKind):
    name = "call"
    doc = "a Python function that the file names explicitly"
    artifact_keys = ("step", "signature", "model", "inputs", "outputs", "bindings", "fn", "span")
    artifact_required = ("signature", "fn")

    def check(self, ctx, s) -> None:
        if s.ref is None:
            ctx.report("bad-function-ref", s.module_span, "a `call` step names the Python function it runs",
                       f'e.g. `{s.name} = call "tools.py:lookup" {s.target}(...)`')
        elif not FUNCTION_REF.match(s.ref):
            ctx.report("bad-function-ref", s.module_span, f'"{s.ref}" is not a `file.py:function` reference',
                       'e.g. "tools.py:lookup" (the path is relative to the .lmp file)')
        if s.using is not None:
            ctx.report("bad-using", s.using_span, "a `call` step runs Python, not a model", "remove `using`")
        if s.loop is not None:
            ctx.report("bad-loop", s.loop.span, "a `call` step does not loop over a list",
                       f"write `{s.name} = map {s.target}(...) for x in list` to run a signature per item")
        self.check_no_tools(ctx, s)

    def lower(self, s, sig, lowering) -> dict[str, Any]:
        return {"signature": sig.name,
                "inputs": {n: lowering.field(f.type, f.description) for n, f in sig.inputs.items()},
                "outputs": {n: lowering.field(f.type, f.description) for n, f in sig.outputs.items()},
                "fn": s.ref}

    def execute(self, node: dict, inputs: dict[str, Any]) -> Execution:
        return (yield CallFunction(node, inputs))

    def load(self, n: dict, d: dict, where: str, io: Any) -> None:
        io.require(io.is_str(n["signature"]), where, "the signature is a name")
        io.check_fn(n["fn"], f"{where}/fn")
        d.update(signature=n["signature"], fn=n["fn"])


KIND = Call()
