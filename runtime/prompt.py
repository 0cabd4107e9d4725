"""Render a prompt node into chat messages, and build its output schema.

Layout (stable parts first, so llama.cpp reuses the KV cache across examples):
  system:    instructions, the input and output fields, the answer format
  demos:     one user/assistant turn pair per demo
  user:      this example's inputs (last)
"""

from __future__ import annotations

import json
from typing import Any

# Free-text reasoning is bounded so a small model cannot ramble until max_tokens.
REASONING_MAX_CHARS = 400


def output_schema(node: dict) -> dict:
    """The JSON object a prompt node must produce; reasoning (if any) comes first."""
    props: dict[str, Any] = {}
    for name, f in node["outputs"].items():
        schema = dict(f["schema"])
        if name == "reasoning" and node["kind"] == "chain_of_thought":
            schema = {"type": "string", "maxLength": REASONING_MAX_CHARS}
        props[name] = schema
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def _describe_field(name: str, f: dict) -> str:
    schema = f["schema"]
    if "enum" in schema:
        kind = "one of " + ", ".join(json.dumps(v) for v in schema["enum"])
    else:
        kind = f["type"]
    desc = f" — {f['description']}" if f.get("description") else ""
    return f"- {name} ({kind}){desc}"


def render_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def render_inputs(node: dict, inputs: dict[str, Any]) -> str:
    return "\n".join(f"{name}: {render_value(inputs.get(name))}" for name in node["inputs"])


def render_outputs(node: dict, outputs: dict[str, Any]) -> str:
    ordered = {name: outputs[name] for name in node["outputs"] if name in outputs}
    return json.dumps(ordered, ensure_ascii=False)


def system_message(node: dict) -> str:
    lines = [node["instructions"].strip(), "", "Input fields:"]
    lines += [_describe_field(n, f) for n, f in node["inputs"].items()]
    lines += ["", "Output fields:"]
    lines += [_describe_field(n, f) for n, f in node["outputs"].items()]
    names = ", ".join(f'"{n}"' for n in node["outputs"])
    lines += ["", f"Answer with one JSON object with the keys {names}."]
    return "\n".join(lines)


DEMO_FORMATS = ("turns", "block")


def render_messages(node: dict, inputs: dict[str, Any]) -> list[dict[str, str]]:
    """Demos render as prior user/assistant turns ("turns", the default) or as one examples
    block at the end of the system message ("block"); which works better is model-specific
    and is an optimizer's choice (node attribute `demo_format`)."""
    demos = node.get("demos", [])
    system = system_message(node)
    if demos and node.get("demo_format", "turns") == "block":
        shown = "\n\n".join(f"{render_inputs(node, d['inputs'])}\nAnswer: {render_outputs(node, d['outputs'])}"
                             for d in demos)
        return [{"role": "system", "content": f"{system}\n\nExamples:\n\n{shown}"},
                {"role": "user", "content": render_inputs(node, inputs)}]
    messages = [{"role": "system", "content": system}]
    for demo in demos:
        messages.append({"role": "user", "content": render_inputs(node, demo["inputs"])})
        messages.append({"role": "assistant", "content": render_outputs(node, demo["outputs"])})
    messages.append({"role": "user", "content": render_inputs(node, inputs)})
    return messages
