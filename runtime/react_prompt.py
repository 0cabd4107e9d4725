"""The prompt and the action grammar of a react step (compiler/kinds/react.py).

Messages (stable parts first, so llama.cpp reuses the KV cache across rows and steps):
  system:     instructions, fields, the tools with their parameters, the action format
  demos:      per demo, its inputs, then its actions and observations as turns, then finish
  user:       this row's inputs
  assistant / user: each earlier action of this row, and its observation

Every action is decoded under one JSON schema: an anyOf with one branch per tool, so the
arguments fit the tool chosen: {"thought": str, "tool": "<name>", "args": {...}}, and a
branch for "finish" whose arguments are the signature's outputs.
"""

from __future__ import annotations

import json
from typing import Any

from lmpc.compiler.kinds.react import OBSERVATION_MAX_CHARS, observation_text, tool_fields
from lmpc.compiler.tools import FINISH
from lmpc.runtime.prompt import ITEM_MAX_CHARS, _bounded, _describe_field, render_inputs

THOUGHT_MAX_CHARS = 200
MIN_ACTION_TOKENS = 64


def _args_schema(params: dict[str, dict], required: list[str]) -> dict:
    return {"type": "object", "properties": {n: f["schema"] for n, f in params.items()},
            "required": list(required), "additionalProperties": False}


def _branch(tool: str, args: dict) -> dict:
    return {"type": "object",
            "properties": {"thought": {"type": "string"}, "tool": {"type": "string", "enum": [tool]}, "args": args},
            "required": ["thought", "tool", "args"], "additionalProperties": False}


def may_finish(node: dict, step: int) -> bool:
    """Whether action `step` (1-based) may be finish: from the node's `min_steps` on (an
    earlier action must call a tool, as agent APIs' "tool choice: required")."""
    return step >= int(node.get("min_steps", 1))


def action_schema(node: dict, step: int = 1) -> dict:
    """What action `step` must be (validation)."""
    branches = [_branch(name, _args_schema(tool_fields(t)[0], t["required"])) for name, t in node["tools"].items()]
    if may_finish(node, step):
        outputs = {n: {"schema": f["schema"]} for n, f in node["outputs"].items()}
        branches.append(_branch(FINISH, _args_schema(outputs, list(outputs))))
    return {"anyOf": branches}


def decoding_schema(node: dict, step: int = 1) -> dict:
    """action_schema with the thought and every string and list bounded (what the model decodes)."""
    out = []
    for b in action_schema(node, step)["anyOf"]:
        props = dict(b["properties"])
        props["thought"] = {"type": "string", "maxLength": THOUGHT_MAX_CHARS}
        args = props["args"]
        props["args"] = {**args, "properties": {k: _bounded(v, ITEM_MAX_CHARS) for k, v in args["properties"].items()}}
        out.append({**b, "properties": props})
    return {"anyOf": out}


def _signature(params: dict[str, dict], required: list[str]) -> str:
    return ", ".join(f"{n}: {f['type']}" + ("" if n in required else " (optional)") for n, f in params.items())


def system_message(node: dict) -> str:
    lines = [node["instructions"].strip(), "", "Input fields:"]
    lines += [_describe_field(n, f) for n, f in node["inputs"].items()]
    lines += ["", "Output fields (the arguments of finish):"]
    lines += [_describe_field(n, f) for n, f in node["outputs"].items()]
    lines += ["", "Tools:"]
    for name, t in node["tools"].items():
        params, res = tool_fields(t)
        result = f" -> {res['type']}" if res else ""
        desc = f" — {t['description']}" if t.get("description") else ""
        lines.append(f"- {name}({_signature(params, t['required'])}){result}{desc}")
    outs = ", ".join(f"{n}: {f['type']}" for n, f in node["outputs"].items())
    lines.append(f"- {FINISH}({outs}) — give the final answer and stop")
    if int(node.get("min_steps", 1)) > 1:
        lines.append(f"Call a tool first: {FINISH} is allowed from step {node['min_steps']} on.")
    lines += ["", "Work step by step. At each step answer with one JSON object "
              '{"thought": ..., "tool": ..., "args": {...}}: think briefly, then call one tool with its '
              f'arguments; you then read its result as an observation. When you know the answer, call "{FINISH}" '
              "with the output fields as its arguments."]
    return "\n".join(lines)


def action_text(step: dict) -> str:
    return json.dumps({"thought": step.get("thought", ""), "tool": step["tool"], "args": step["args"]},
                      ensure_ascii=False)


def observation_message(text: str) -> str:
    return f"Observation: {observation_text(text)}"


def _turns(inputs_text: str, steps: list[dict]) -> list[dict[str, str]]:
    messages = [{"role": "user", "content": inputs_text}]
    for s in steps:
        messages.append({"role": "assistant", "content": action_text(s)})
        messages.append({"role": "user", "content": observation_message(s["observation"])})
    return messages


def render_messages(node: dict, inputs: dict[str, Any], trajectory: list[dict]) -> list[dict[str, str]]:
    """The messages of one action: a demo is its trajectory (none for a labeled demo) ending in
    its finish action; then this row's inputs and its steps so far."""
    messages = [{"role": "system", "content": system_message(node)}]
    for demo in node.get("demos", []):
        messages += _turns(render_inputs(node, demo["inputs"]), demo.get("trajectory", []))
        finish = {"thought": demo.get("thought", ""), "tool": FINISH,
                  "args": {n: demo["outputs"][n] for n in node["outputs"] if n in demo["outputs"]}}
        messages.append({"role": "assistant", "content": action_text(finish)})
    return messages + _turns(render_inputs(node, inputs), trajectory)


def decoding_budget(schema: dict) -> int:
    from lmpc.runtime.prompt import decoding_budget as budget

    return max(budget(schema), MIN_ACTION_TOKENS)


__all__ = ["action_schema", "decoding_schema", "render_messages", "system_message", "OBSERVATION_MAX_CHARS"]
