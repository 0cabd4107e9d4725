"""`predict`: one model call that fills the signature's outputs (decoded under their grammar)."""

from __future__ import annotations

from typing import Any

from lmpc.compiler.kinds.base import Execution, Generate, StepKind


def default_instructions(inputs: list[str], outputs: list[str]) -> str:
    """What a prompt node says when its signature gives no instructions (DSPy's convention)."""
    ins = ", ".join(f"`{n}`" for n in inputs)
    outs = ", ".join(f"`{n}`" for n in outputs)
    return f"Given the fields {ins}, produce the fields {outs}." if ins else f"Produce the fields {outs}."


DEMO_FORMATS = ("turns", "block")


class Predict(StepKind):
    name = "predict"
    doc = "one model call that fills the signature's outputs"
    prompt = True
    accepts_feedback = True  # its prompt carries a check's feedback (runtime/prompt.user_message)
    tunable = ("instructions", "demos", "demo_format", "knn")
    artifact_keys = ("step", "signature", "model", "inputs", "outputs", "bindings", "instructions", "demos",
                     "demo_format", "knn", "span")
    artifact_required = ("signature", "instructions", "demos")

    def extra_outputs(self, lowering: Any) -> dict[str, dict]:
        """Output fields the kind puts before the signature's (chain_of_thought: reasoning)."""
        return {}

    def lower(self, s, sig, lowering) -> dict[str, Any]:
        inputs = {n: lowering.field(f.type, f.description) for n, f in sig.inputs.items()}
        outputs = {**self.extra_outputs(lowering),
                   **{n: lowering.field(f.type, f.description) for n, f in sig.outputs.items()}}
        return {"signature": sig.name, "inputs": inputs, "outputs": outputs,
                "instructions": sig.instructions or default_instructions(list(sig.inputs), list(sig.outputs)),
                "demos": []}

    def execute(self, node: dict, inputs: dict[str, Any]) -> Execution:
        return (yield Generate(node, inputs))

    def load(self, n: dict, d: dict, where: str, io: Any) -> None:
        io.require(io.is_str(n["signature"]), where, "the signature is a name")
        io.require(isinstance(n["instructions"], str), f"{where}/instructions", "instructions are a string")
        io.check_demos(n["demos"], f"{where}/demos")
        d.update(signature=n["signature"], instructions=n["instructions"], demos=n["demos"])
        if "demo_format" in n:
            io.require(n["demo_format"] in DEMO_FORMATS, f"{where}/demo_format", f"one of {', '.join(DEMO_FORMATS)}")
            d["demo_format"] = n["demo_format"]
        if "knn" in n:
            io.check_knn(n["knn"], f"{where}/knn")
            d["knn"] = n["knn"]


KIND = Predict()
