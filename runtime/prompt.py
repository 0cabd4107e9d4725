"""Render a prompt node into chat messages, and build its output schema.

Layout (stable parts first, so llama.cpp reuses the KV cache across examples):
  system:    instructions, the input and output fields, the answer format
  demos:     one user/assistant turn pair per demo
  user:      this example's inputs (last)
"""

from __future__ import annotations

import json
from typing import Any

from lmpc.compiler.kinds import KINDS
from lmpc.compiler.kinds.chain_of_thought import REASONING_MAX_CHARS  # noqa: F401  (re-exported)
from lmpc.compiler.kinds.predict import DEMO_FORMATS  # noqa: F401  (re-exported)

# Decoding bounds. A small model can repeat itself inside a string or a list until
# max_tokens, leaving JSON that never closes; with these bounds the grammar forces every
# string and list to close, and max_tokens is sized to the bound (decoding_budget).
TEXT_MAX_CHARS = 1000  # a free-text output field
ITEM_MAX_CHARS = 200  # a string inside a list or an object
LIST_MAX_ITEMS = 10
MAX_DECODING_TOKENS = 2048


def output_schema(node: dict) -> dict:
    """The JSON object a prompt node must produce (validation), its fields in the node's order
    (chain_of_thought's lowering put `reasoning` first)."""
    props: dict[str, Any] = {name: f["schema"] for name, f in node["outputs"].items()}
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def _bounded(schema: dict, max_chars: int) -> dict:
    if "anyOf" in schema:
        return {**schema, "anyOf": [_bounded(s, max_chars) for s in schema["anyOf"]]}
    kind = schema.get("type")
    if kind == "string" and "enum" not in schema:
        return {**schema, "maxLength": min(schema.get("maxLength", max_chars), max_chars)}
    if kind == "array":
        return {**schema, "items": _bounded(schema.get("items", {}), ITEM_MAX_CHARS),
                "maxItems": min(schema.get("maxItems", LIST_MAX_ITEMS), LIST_MAX_ITEMS)}
    if kind == "object":
        return {**schema, "properties": {k: _bounded(v, ITEM_MAX_CHARS) for k, v in schema.get("properties", {}).items()}}
    return schema


def decoding_schema(node: dict) -> dict:
    """output_schema with every free-text string and list bounded: what the model decodes under."""
    if node.get("kind") == "react":  # an action, not the outputs themselves (runtime/react_prompt.py)
        from lmpc.runtime.react_prompt import decoding_schema as action_decoding_schema

        return action_decoding_schema(node)
    schema = output_schema(node)
    props = {}
    for name, s in schema["properties"].items():
        limit = KINDS[node["kind"]].text_limit(name) or TEXT_MAX_CHARS  # a field the kind adds may have its own
        props[name] = _bounded(s, limit)
    return {**schema, "properties": props}


def decoding_budget(schema: dict) -> int:
    """Tokens enough for the longest output the bounded schema allows (1 char per token at worst)."""
    if "anyOf" in schema:
        return max(decoding_budget(s) for s in schema["anyOf"])
    if "enum" in schema:
        return max(len(json.dumps(v)) for v in schema["enum"]) + 2
    kind = schema.get("type")
    if kind == "string":
        return schema.get("maxLength", TEXT_MAX_CHARS) + 2
    if kind == "array":
        return schema.get("maxItems", LIST_MAX_ITEMS) * (decoding_budget(schema.get("items", {})) + 2) + 2
    if kind == "object":
        return sum(decoding_budget(v) + len(k) + 6 for k, v in schema.get("properties", {}).items()) + 2
    return 24  # numbers, booleans, null


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


def user_message(node: dict, inputs: dict[str, Any]) -> str:
    """This example's inputs; on a check's retry (runtime/checks.py) also what to change, last.
    The rejected attempt is shown only when a failing check says `show_previous`: SmolLM2
    copied it back whatever the wording (0 of 6 long answers shortened when shown, 2 of 6 when
    not; docs/language.md, Checks); stronger models use it, as DSPy's retries do."""
    text = render_inputs(node, inputs)
    fb = node.get("feedback")
    if fb:
        if fb.get("show_previous"):
            text += "\n\nPrevious attempt (rejected): " + render_outputs(node, fb["previous"])
        text += "\n\n" + "\n".join(f"Instruction: {m}" for m in fb["instructions"])
    return text


def render_messages(node: dict, inputs: dict[str, Any]) -> list[dict[str, str]]:
    """Demos render as prior user/assistant turns ("turns", the default) or as one examples
    block at the end of the system message ("block"); which works better is model-specific
    and is an optimizer's choice (node attribute `demo_format`)."""
    if node.get("kind") == "react":  # its first action: demos are trajectories (runtime/react_prompt.py)
        from lmpc.runtime.react_prompt import render_messages as render_react

        return render_react(node, inputs, [])
    demos = node.get("demos", [])
    system = system_message(node)
    if demos and node.get("demo_format", "turns") == "block":
        shown = "\n\n".join(f"{render_inputs(node, d['inputs'])}\nAnswer: {render_outputs(node, d['outputs'])}"
                             for d in demos)
        return [{"role": "system", "content": f"{system}\n\nExamples:\n\n{shown}"},
                {"role": "user", "content": user_message(node, inputs)}]
    messages = [{"role": "system", "content": system}]
    for demo in demos:
        messages.append({"role": "user", "content": render_inputs(node, demo["inputs"])})
        messages.append({"role": "assistant", "content": render_outputs(node, demo["outputs"])})
    messages.append({"role": "user", "content": user_message(node, inputs)})
    return messages
