"""The react loop on the deterministic fake model (tests/optimizers/fake.py): tool results
fed back as observations, a tool that raises / hangs / returns the wrong type, max_steps,
rows' loops interleaved so one round's actions go back to back, and the cache replaying a
trajectory. The real model's run is tests/runtime/test_react_smollm.py."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from lmpc.compiler import compile_file
from lmpc.runtime.program import Program

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "optimizers"))
from fake import FakeModel  # noqa: E402

TOOLS = '''
import time

CALLS = []


def calculator(expression: str) -> float:
    """Evaluate an arithmetic expression, e.g. 3 * (4 + 5)."""
    CALLS.append(expression)
    a, op, b = expression.split()
    return {"+": float(a) + float(b), "*": float(a) * float(b)}[op]


def boom(x: int) -> int:
    """Always fails."""
    raise ValueError(f"no luck with {x}")


def slow(x: int) -> int:
    """Takes its time."""
    time.sleep(3)
    return x


def liar(x: int) -> int:
    """Says it returns an int."""
    return "many"
'''

SOURCE = '''
model m = llama_cpp(builtin: "smollm2-135m")
tool calc = "tools.py:calculator"
tool boom = "tools.py:boom"
tool slow = "tools.py:slow"
tool liar = "tools.py:liar"
signature Solve = "Solve the problem." question -> answer: float

pipeline solve(question: str) -> (answer: float) {
    a = react Solve(question: question) tools [calc, boom, slow, liar] max_steps 3
    return answer: a.answer
}
'''


def first_user(req) -> str:
    return [m for m in req.messages if m["role"] == "user"][0]["content"].removeprefix("question: ")


def agent(f: dict, demos: int, req) -> dict:
    """question "calc 2 * 3": call calc("2 * 3"), then finish with the observation as a
    number (-1 if it is an error); "loop": call calc forever; "direct": finish at once."""
    q = first_user(req)
    tool, _, arg = q.partition(" ")
    if tool == "loop":
        return {"thought": "again", "tool": "calc", "args": {"expression": "1 + 1"}}
    if "Observation" in f:
        try:
            answer = float(f["Observation"])
        except ValueError:
            answer = -1.0
        return {"thought": "done", "tool": "finish", "args": {"answer": answer}}
    if tool == "direct":
        return {"thought": "easy", "tool": "finish", "args": {"answer": 1.0}}
    args = {"expression": arg} if tool == "calc" else {"x": int(arg)}
    return {"thought": f"use {tool}", "tool": tool, "args": args}


@pytest.fixture
def program_dir(tmp_path: Path) -> Path:
    (tmp_path / "tools.py").write_text(TOOLS)
    (tmp_path / "p.lmp").write_text(SOURCE)
    return tmp_path


def run(folder: Path, rows: list[dict], answer=agent, cache=False, timeout: float | None = None):
    g = compile_file(folder / "p.lmp").graphs["solve"]
    if timeout is not None:
        g.nodes["a"]["tool_timeout_s"] = timeout
    fake = FakeModel("m", answer)
    with Program(g, base_dir=folder, cache=cache, trace_log=False, models={"m": fake}) as prog:
        results = prog.batch(rows)
    return results, fake


def test_a_tool_result_is_the_next_observation(program_dir):
    (res,), fake = run(program_dir, [{"question": "calc 2 * 3"}])
    assert res.error is None and res.values == {"answer": 6.0}
    assert [e.kind for e in res.trace] == ["react", "tool", "react"]
    tool = res.trace[1]
    assert tool.inputs == {"tool": "calc", "args": {"expression": "2 * 3"}} and tool.error is None
    assert tool.parsed["observation"] == "6.0" and tool.model is None  # not a model call
    second = fake.requests[1].messages
    assert second[-2] == {"role": "assistant",
                          "content": json.dumps({"thought": "use calc", "tool": "calc", "args": {"expression": "2 * 3"}})}
    assert second[-1] == {"role": "user", "content": "Observation: 6.0"}
    assert res.trace[2].extra["trajectory"][0]["observation"] == "6.0"  # the finish event holds the whole trajectory


def test_every_action_is_decoded_under_the_tools_grammar(program_dir):
    _, fake = run(program_dir, [{"question": "direct"}])
    schema = fake.requests[0].json_schema
    branches = {b["properties"]["tool"]["enum"][0]: b["properties"]["args"] for b in schema["anyOf"]}
    assert set(branches) == {"calc", "boom", "slow", "liar", "finish"}
    assert branches["calc"]["properties"]["expression"]["type"] == "string"
    assert branches["calc"]["required"] == ["expression"] and branches["calc"]["additionalProperties"] is False
    assert branches["finish"]["properties"] == {"answer": {"type": "number"}}
    system = fake.requests[0].messages[0]["content"]
    assert "- calc(expression: str) -> float — Evaluate an arithmetic expression, e.g. 3 * (4 + 5)." in system


def test_a_tool_that_raises_becomes_an_observation_and_is_traced(program_dir):
    (res,), fake = run(program_dir, [{"question": "boom 4"}])
    assert res.error is None and res.values == {"answer": -1.0}
    tool = res.trace[1]
    assert tool.kind == "tool" and tool.error == "ValueError: no luck with 4"
    assert fake.requests[1].messages[-1]["content"] == "Observation: error: ValueError: no luck with 4"


def test_a_tool_past_its_timeout_becomes_an_observation(program_dir):
    t0 = time.perf_counter()
    (res, other), _ = run(program_dir, [{"question": "slow 1"}, {"question": "calc 1 + 2"}], timeout=0.3)
    assert time.perf_counter() - t0 < 2.5  # the 3 s tool was not waited for
    assert res.error is None and res.values == {"answer": -1.0}
    assert res.trace[1].error == "the tool did not answer within 0.3 s"
    assert other.error is None and other.values == {"answer": 3.0}


def test_a_tool_returning_the_wrong_type_becomes_an_error_observation(program_dir):
    (res,), fake = run(program_dir, [{"question": "liar 1"}])
    assert res.error is None and res.values == {"answer": -1.0}
    assert "the tool returned str 'many', not int" in res.trace[1].error


def test_max_steps_ends_the_row_with_a_clear_error_and_the_other_rows_finish(program_dir):
    (stuck, ok), fake = run(program_dir, [{"question": "loop"}, {"question": "calc 2 + 2"}])
    assert ok.error is None and ok.values == {"answer": 4.0}
    assert stuck.error is not None
    message = str(stuck.error)
    assert "no `finish` action within max_steps 3" in message and "p.lmp:10" in message
    assert [e.kind for e in stuck.trace] == ["react", "tool"] * 3  # 3 model calls, no more
    assert len(fake.requests) == 3 + 2


def test_rows_loops_are_interleaved_so_each_rounds_actions_go_back_to_back(program_dir):
    rows = [{"question": f"calc {i} + 1"} for i in range(4)]
    results, fake = run(program_dir, rows)
    assert [r.values for r in results] == [{"answer": float(i + 1)} for i in range(4)]
    steps = [sum(m["role"] == "assistant" for m in r.messages) for r in fake.requests]
    assert steps == [0, 0, 0, 0, 1, 1, 1, 1]  # every row's first action, then every row's second


def test_a_rerun_replays_the_trajectory_from_the_cache(program_dir, tmp_path):
    cache = tmp_path / "cache" / "calls.sqlite"
    rows = [{"question": "calc 5 * 5"}, {"question": "direct"}]
    first, fake1 = run(program_dir, rows, cache=cache)
    again, fake2 = run(program_dir, rows, cache=cache)
    assert len(fake1.requests) == 3 and fake2.requests == []  # every action from the cache
    assert [r.values for r in again] == [r.values for r in first] == [{"answer": 25.0}, {"answer": 1.0}]
    assert [e.cache_hit for e in again[0].trace if e.kind == "react"] == [True, True]


def test_before_min_steps_the_grammar_has_no_finish_so_a_tool_is_called(program_dir):
    (program_dir / "p.lmp").write_text(SOURCE.replace("max_steps 3", "max_steps 3 min_steps 2"))
    g = compile_file(program_dir / "p.lmp").graphs["solve"]
    assert g.nodes["a"]["min_steps"] == 2
    fake = FakeModel("m", agent)
    with Program(g, base_dir=program_dir, cache=False, trace_log=False, models={"m": fake}) as prog:
        (res,) = prog.batch([{"question": "calc 1 + 1"}])
    assert res.error is None and res.values == {"answer": 2.0}
    first, second = (r.json_schema for r in fake.requests)
    assert "finish" not in {b["properties"]["tool"]["enum"][0] for b in first["anyOf"]}
    assert "finish" in {b["properties"]["tool"]["enum"][0] for b in second["anyOf"]}
    assert "Call a tool first: finish is allowed from step 2 on." in fake.requests[0].messages[0]["content"]


def test_an_action_that_does_not_fit_the_grammar_fails_the_row_keeping_the_raw_text(program_dir):
    def invents(f: dict, demos: int, req) -> dict:  # a server without grammar support could answer this
        return {"thought": "hmm", "tool": "search_the_web", "args": {"q": "x"}}

    (res,), _ = run(program_dir, [{"question": "direct"}], answer=invents)
    assert res.error is not None and "the model's action" in str(res.error)
    assert json.loads(res.error.raw_text)["tool"] == "search_the_web"


def test_a_react_step_in_a_called_pipeline_and_in_a_map_body(program_dir):
    (program_dir / "p.lmp").write_text('''
model m = llama_cpp(builtin: "smollm2-135m")
tool calc = "tools.py:calculator"
signature Solve = "Solve." question -> answer: float
pipeline inner(question: str) -> (answer: float) {
    a = react Solve(question: question) tools [calc] max_steps 3
    return answer: a.answer
}
pipeline solve(question: str, more: list[str]) -> (answer: float, each: list[float]) {
    x = inner(question: question)
    m = map inner(question: q) for q in more
    return answer: x.answer, each: m.answer
}
''')
    g = compile_file(program_dir / "p.lmp").graphs["solve"]
    fake = FakeModel("m", agent)
    with Program(g, base_dir=program_dir, cache=False, trace_log=False, models={"m": fake}) as prog:
        (res,) = prog.batch([{"question": "calc 2 * 3", "more": ["calc 1 + 1", "direct"]}])
    assert res.error is None and res.values == {"answer": 6.0, "each": [2.0, 1.0]}
    assert sorted(e.step for e in res.trace if e.kind == "tool") == ["m[0]/inner/a", "x/a"]
