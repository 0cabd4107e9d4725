"""`react`: a loop in which the model thinks, calls one of the step's tools (or finishes),
and reads the tool's result, until it fills the signature's outputs.

    tool calc = "tools.py:calculator"
    a = react Answer(question: q) tools [calc] max_steps 6

Each action is one model call decoded under a JSON grammar: `{"thought", "tool", "args"}`
where `tool` is one of the listed tools or `finish`, and `args` fits that tool's parameters
(finish: the signature's outputs). The runtime runs only the listed functions (a ToolCall
request), with a timeout; a tool's exception becomes the observation. Reaching `max_steps`
without `finish` fails the row (MaxStepsReached), keeping the trajectory in the trace.
"""

from __future__ import annotations

import json
from typing import Any

from lmpc.compiler import ast
from lmpc.compiler.diagnostics import did_you_mean
from lmpc.compiler.kinds.base import Act, Execution, ToolCall
from lmpc.compiler.kinds.predict import Predict
from lmpc.compiler.tools import FINISH

DEFAULT_MAX_STEPS = 5
MAX_MAX_STEPS = 50
TOOL_TIMEOUT_S = 10.0  # per tool call; the node's `tool_timeout_s` (kept in artifacts)
OBSERVATION_MAX_CHARS = 500  # an observation is cut to this in the prompt (and in demos)
DEMO_MAX_CHARS = 1500  # a bootstrapped trajectory is trimmed to this (earliest steps dropped first)


def tool_to_node(spec: dict) -> dict:
    """A checked tool spec (compiler/tools.py) as a react node holds it: parameter and result
    types as type forms, like fields in an artifact (never schemas: docs/security.md)."""
    from lmpc.compiler.artifact_graph import fields_to_json

    result = spec.get("result")
    return {"fn": spec["fn"], "description": spec["description"], "params": fields_to_json(spec["params"]),
            "required": list(spec["required"]), "result": fields_to_json({"result": result})[0] if result else None}


def tool_fields(tool: dict, where: str = "tool") -> tuple[dict[str, dict], dict | None]:
    """(params, result) of a node's tool as fields {type, schema, description}, each schema
    rebuilt by lmpc's own to_schema (GraphFormatError for a bad form)."""
    from lmpc.compiler.artifact_graph import fields_from_json

    params = fields_from_json(tool["params"], f"{where}/params")
    result = fields_from_json([tool["result"]], f"{where}/result")["result"] if tool.get("result") else None
    return params, result


class MaxStepsReached(Exception):
    """The loop used all its steps without a finish action."""


def observation_text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= OBSERVATION_MAX_CHARS else text[:OBSERVATION_MAX_CHARS] + " ..."


def trim_trajectory(steps: list[dict]) -> list[dict]:
    """The last steps of a trajectory whose JSON fits DEMO_MAX_CHARS (observations cut)."""
    steps = [{**s, "observation": observation_text(s.get("observation", ""))} for s in steps]
    kept: list[dict] = []
    size = 0
    for s in reversed(steps):
        size += len(json.dumps(s, ensure_ascii=False))
        if size > DEMO_MAX_CHARS:
            break
        kept.insert(0, s)
    return kept


def _whole(v: Any, top: int) -> bool:
    return (isinstance(v, ast.Literal) and isinstance(v.value, int) and not isinstance(v.value, bool)
            and 0 < v.value <= top)


class React(Predict):
    name = "react"
    doc = "a loop of thought, tool call and observation until the model finishes with the outputs"
    tunable = ("instructions", "demos", "knn")
    artifact_keys = ("step", "signature", "model", "inputs", "outputs", "bindings", "instructions", "demos",
                     "knn", "tools", "max_steps", "min_steps", "tool_timeout_s", "span")
    artifact_required = ("signature", "instructions", "demos", "tools", "max_steps")
    takes_tools = True
    accepts_feedback = False  # a check's feedback has no place in an action's prompt (yet)

    def check(self, ctx, s) -> None:
        super().check(ctx, s)
        if s.tools is None:
            ctx.report("bad-tools", s.target_span, "a `react` step lists the tools it may call",
                       f"e.g. `{s.name} = react {s.target}(...) tools [calc] max_steps {DEFAULT_MAX_STEPS}` "
                       'with `tool calc = "tools.py:calculator"` declared in the file')
        seen: set[str] = set()
        for name, span in s.tools or []:
            if name in seen:
                ctx.report("bad-tools", span, f"tool `{name}` is listed twice")
            elif name not in ctx.tools and name not in ctx.suppressed:
                ctx.report("unknown-tool", span, f"no tool named `{name}`",
                           did_you_mean(name, list(ctx.tools))
                           or f'declare it: `tool {name} = "tools.py:{name}"`')
            seen.add(name)
        v = s.max_steps
        top = MAX_MAX_STEPS
        if v is not None:
            if _whole(v, MAX_MAX_STEPS):
                top = v.value
            else:
                ctx.report("bad-max-steps", v.span, f"`max_steps` is a whole number from 1 to {MAX_MAX_STEPS} "
                           "written in the file", f"e.g. `max_steps {DEFAULT_MAX_STEPS}` (model calls per row at most)")
        else:
            top = DEFAULT_MAX_STEPS
        low = getattr(s, "min_steps", None)
        if low is not None and not _whole(low, top):
            ctx.report("bad-max-steps", low.span, f"`min_steps` is a whole number from 1 to max_steps ({top}) "
                       "written in the file", "e.g. `min_steps 2`: the first action must call a tool")

    def lower(self, s, sig, lowering) -> dict[str, Any]:
        attrs = super().lower(s, sig, lowering)
        specs = lowering.program.tools
        attrs["tools"] = {name: tool_to_node(specs[name]) for name, _ in s.tools or [] if specs.get(name)}
        attrs["max_steps"] = s.max_steps.value if s.max_steps is not None else DEFAULT_MAX_STEPS
        attrs["tool_timeout_s"] = TOOL_TIMEOUT_S
        low = getattr(s, "min_steps", None)
        if low is not None and low.value > 1:  # kept only when it says something (artifacts unchanged otherwise)
            attrs["min_steps"] = low.value
        return attrs

    def execute(self, node: dict, inputs: dict[str, Any]) -> Execution:
        steps: list[dict] = []
        for _ in range(node["max_steps"]):
            action = yield Act(node, inputs, [dict(s) for s in steps])
            if action["tool"] == FINISH:
                return {name: action["args"].get(name) for name in node["outputs"]}
            result = yield ToolCall(node, action["tool"], action["args"])
            steps.append({"thought": action["thought"], "tool": action["tool"], "args": action["args"],
                          "observation": result["observation"]})
        last = f"; last action: {steps[-1]['tool']}({json.dumps(steps[-1]['args'])})" if steps else ""
        raise MaxStepsReached(f"no `{FINISH}` action within max_steps {node['max_steps']}{last} "
                              "(the trajectory is in the trace: lmpc inspect)")

    def max_calls(self, node: dict) -> int:
        return int(node["max_steps"])  # a row's loop makes at most this many model calls

    def demo(self, inputs: dict, parsed: dict, extra: dict) -> dict | None:
        """A bootstrapped demo from a trace event: only a finish action makes one, holding the
        whole trajectory that led to it (trimmed to DEMO_MAX_CHARS)."""
        if not isinstance(parsed, dict) or parsed.get("tool") != FINISH:
            return None
        trajectory = trim_trajectory(extra.get("trajectory", []))
        return {"inputs": inputs, "outputs": parsed["args"], "thought": parsed.get("thought", ""),
                "trajectory": trajectory}

    def load(self, n: dict, d: dict, where: str, io: Any) -> None:
        demos = n["demos"]
        knn = n.get("knn")
        pool = knn.get("pool") if isinstance(knn, dict) else None
        # trajectories checked here; the rest of each demo (and of a kNN pool's) as predict's
        plain = {**n, "demos": self._plain_demos(n, demos, f"{where}/demos", io)}
        if isinstance(pool, list):
            plain["knn"] = {**knn, "pool": self._plain_demos(n, pool, f"{where}/knn/pool", io)}
        super().load(plain, d, where, io)
        d["demos"] = demos
        if "knn" in d:
            d["knn"] = knn
        tools = n["tools"]
        io.require(isinstance(tools, dict) and FINISH not in tools, f"{where}/tools",
                   "tools map names (not `finish`) to their specs")
        for name, spec in tools.items():
            at = f"{where}/tools/{name}"
            io.require(isinstance(spec, dict) and set(spec) == {"fn", "description", "params", "required", "result"}
                       and isinstance(spec["description"], str) and isinstance(spec["params"], list)
                       and isinstance(spec["required"], list), at,
                       "a tool is {fn, description, params, required, result}")
            io.check_fn(spec["fn"], f"{at}/fn")
            params, _ = tool_fields(spec, at)  # type forms, rebuilt as schemas by lmpc (GraphFormatError)
            io.require(set(spec["required"]) <= set(params), f"{at}/required", "required names parameters")
        steps = n["max_steps"]
        io.require(isinstance(steps, int) and not isinstance(steps, bool) and 0 < steps <= MAX_MAX_STEPS,
                   f"{where}/max_steps", f"a whole number from 1 to {MAX_MAX_STEPS}")
        timeout = n.get("tool_timeout_s", TOOL_TIMEOUT_S)
        io.require(isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout > 0,
                   f"{where}/tool_timeout_s", "a positive number of seconds")
        d.update(tools=tools, max_steps=steps, tool_timeout_s=float(timeout))
        if "min_steps" in n:
            low = n["min_steps"]
            io.require(isinstance(low, int) and not isinstance(low, bool) and 0 < low <= steps,
                       f"{where}/min_steps", "a whole number from 1 to max_steps")
            d["min_steps"] = low

    @staticmethod
    def _plain_demos(n: dict, demos: Any, where: str, io: Any) -> Any:
        if not isinstance(demos, list):
            return demos  # predict's check says what is wrong
        plain = []
        for i, demo in enumerate(demos):
            io.require(isinstance(demo, dict), f"{where}/{i}", "a demo is an object")
            traj = demo.get("trajectory", [])
            io.require(isinstance(traj, list) and all(
                isinstance(st, dict) and set(st) == {"thought", "tool", "args", "observation"}
                and isinstance(st["thought"], str) and isinstance(n.get("tools"), dict) and st["tool"] in n["tools"]
                and isinstance(st["args"], dict)
                and isinstance(st["observation"], str) for st in traj), f"{where}/{i}/trajectory",
                "a trajectory is a list of {thought, tool, args, observation} with tools the node lists")
            io.require(isinstance(demo.get("thought", ""), str), f"{where}/{i}/thought", "a string")
            plain.append({k: v for k, v in demo.items() if k not in ("trajectory", "thought")})
        return plain

    def label(self, nid: str, d: dict) -> str:
        outs = ", ".join(f"{n}: {f['type']}" for n, f in d.get("outputs", {}).items())
        model = f" using {d['model']}" if d.get("model") else ""
        demos = f" [{len(d['demos'])} demos]" if d.get("demos") else ""
        tools = ", ".join(d.get("tools", {}))
        return (f"{nid} = react {d.get('signature')} tools [{tools}] max_steps {d.get('max_steps')}"
                f"{model}{demos} -> ({outs})")


KIND = React()
