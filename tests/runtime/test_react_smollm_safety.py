"""What can still go wrong in a react loop on the real embedded model (SmolLM2-135M through
llama.cpp), where grammar-bound decoding makes every action well formed (issue 15, "Show").

- Over a run of the example (examples/agent/agent.lmp as it is, its three hand-written
  trajectory demos from scripts/seeded.py, the first 4 dev rows, fresh cache): the share of
  tool calls the tool accepts and the share of rows that finish within max_steps, read from
  the traces. Measured: 8 model calls, 0 malformed; 4 of 4 tool calls accepted; 4 of 4 rows
  finished (2 model calls each), and the finish answers copy the calculator's results. With
  DRY over the whole call's history only 2 of 4 were right: it penalized copying numbers the
  call already generated, and an action's args restate its thought; DRY (on by default) now
  restarts its history at each JSON string, and 4 of 4 are right (runtime/models/sampling.py).
- A tool that raises, one that hangs past its timeout (tool_timeout_s 0.5) and one that
  returns the wrong type, each forced by `min_steps 2`, in one batch with a row on the healthy
  calculator: every bad call is an error observation, traced as the tool event's error and
  shown in the next action's prompt; no row makes more than max_steps model calls; a row ends
  with an answer or the clear max_steps message; the healthy row finishes right. Measured:
  each bad tool called 3 times (all 9 calls errors), the 3 bad rows end with "no `finish`
  action within max_steps 3", the calculator row finishes with 27 in 2 model calls.
- A built artifact with trajectory demos runs in a fresh process with an empty cache (the
  model runs there) and gives the build's actions byte for byte and its outputs.
  (tests/runtime/test_react_smollm.py covers the trust refusal and a fresh run on the
  build's cache.)

.venv/bin/python -m pytest -q -s tests/runtime/test_react_smollm_safety.py  (prints the figures)
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

import lmpc
from lmpc.compiler import compile_file
from lmpc.runtime.program import Program

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "agent"
MISBEHAVE = ROOT / "tests" / "data" / "react_tools_misbehave.py"


def _seeded():
    spec = importlib.util.spec_from_file_location("agent_seeded", EXAMPLE / "scripts" / "seeded.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _shares(results) -> dict:
    tools = [e for r in results for e in r.trace if e.kind == "tool"]
    actions = [e for r in results for e in r.trace if e.kind == "react"]
    return {"rows": len(results), "model_calls": len(actions),
            "malformed_actions": sum(e.error is not None for e in actions),
            "tool_calls": len(tools), "tool_calls_accepted": sum(e.error is None for e in tools),
            "rows_finished": sum(r.error is None for r in results)}


DEV = [json.loads(line) for line in (EXAMPLE / "data" / "dev.jsonl").read_text().splitlines()][:4]


def _run_example(lmp: Path, cache: Path, dev: list[dict]):
    prog = lmpc.compile_file(lmp, cache=cache)
    prog.graph.nodes["a"]["demos"] = _seeded().seed_demos()
    t0 = time.perf_counter()
    results = prog.batch([{"question": r["question"]} for r in dev])
    wall = time.perf_counter() - t0
    shares = _shares(results)
    shares["right"] = sum((res.values or {}).get("answer") == r["answer"] for res, r in zip(results, dev))
    print(json.dumps({**shares, "wall_s": round(wall, 1)}))
    assert all(not e.cache_hit for r in results for e in r.trace if e.kind == "react")  # the model really ran
    return results, shares


@pytest.fixture(scope="module")
def example_run(tmp_path_factory):
    """examples/agent/agent.lmp as it is, with its three hand-written trajectory demos
    (scripts/seeded.py), on the first 4 dev rows, fresh cache."""
    return _run_example(EXAMPLE / "agent.lmp", tmp_path_factory.mktemp("agent") / "calls.sqlite", DEV)


def test_example_run_tool_calls_accepted_and_rows_finished(example_run):
    """Every action well formed, every row calls the calculator and every call is accepted,
    every row finishes within max_steps 3 (measured: 4/4 calls accepted, 4/4 rows finished,
    8 model calls)."""
    results, shares = example_run
    assert shares["malformed_actions"] == 0
    for r in results:  # max_steps 3 honoured, counted from the trace
        assert sum(e.kind == "react" for e in r.trace) <= 3
    assert shares["tool_calls"] >= len(DEV), shares
    assert shares["tool_calls_accepted"] == shares["tool_calls"], [
        (e.parsed, e.error) for r in results for e in r.trace if e.kind == "tool"]
    assert shares["rows_finished"] == len(DEV), [str(r.error) for r in results]


def _copies(results, dev) -> list:
    """Per row: (the calculator's last result, the finish answer, the gold answer)."""
    out = []
    for r, d in zip(results, dev):
        tools = [e for e in r.trace if e.kind == "tool" and e.error is None]
        out.append((tools[-1].parsed["result"] if tools else None, (r.values or {}).get("answer"), d["answer"]))
    return out


def test_example_finish_copies_the_calculator(example_run):
    """Each finish answer is the calculator's last result, the gold answer (with DRY on, 2 of
    these 4 rows miscopied a digit: the reason it is off by default)."""
    results, shares = example_run
    assert shares["right"] == len(DEV), _copies(results, DEV)
    assert all(obs == answer == gold for obs, answer, gold in _copies(results, DEV)), _copies(results, DEV)


SOURCE = '''
model m = llama_cpp(builtin: "smollm2-135m", temperature: 0)
tool calculator = "calculator.py:calculator"
tool raises = "misbehave.py:raises"
tool hangs = "misbehave.py:hangs"
tool wrong_type = "misbehave.py:wrong_type"

signature Solve {
    "Answer the arithmetic question with a whole number. Call the calculator on the expression, then finish with its result."
    question: str
    ->
    answer: int
}

pipeline solve(question: str, tool: str) -> (raised: int?, hung: int?, wrong: int?, healthy: int?) {
    r = react Solve(question: question) tools [raises] max_steps 3 min_steps 2 when tool == "raises"
    h = react Solve(question: question) tools [hangs] max_steps 3 min_steps 2 when tool == "hangs"
    w = react Solve(question: question) tools [wrong_type] max_steps 3 min_steps 2 when tool == "wrong_type"
    c = react Solve(question: question) tools [calculator] max_steps 3 min_steps 2 when tool == "calculator"
    return raised: r.answer, hung: h.answer, wrong: w.answer, healthy: c.answer
}
'''

TIMEOUT_S = 0.5
EXPECTED_ERROR = {"raises": "ValueError: cannot evaluate", "hangs": f"the tool did not answer within {TIMEOUT_S:g} s",
                  "wrong_type": "the tool returned str 'forty-two', not float"}


def test_misbehaving_tools_give_observations_and_the_other_rows_finish(tmp_path):
    """One batch, one row per tool (`when` picks the row's react step): raises, hangs past
    tool_timeout_s, returns a str for a float, and the healthy calculator (seeded demos)."""
    (tmp_path / "p.lmp").write_text(SOURCE)
    (tmp_path / "calculator.py").write_text((EXAMPLE / "tools.py").read_text())
    (tmp_path / "misbehave.py").write_text(MISBEHAVE.read_text())
    checked = compile_file(tmp_path / "p.lmp")
    g = checked.graphs["solve"]
    g.nodes["c"]["demos"] = _seeded().seed_demos()  # the healthy row: the example's seeded agent
    for nid in "rhw":
        g.nodes[nid]["tool_timeout_s"] = TIMEOUT_S
    question = "What is 405 divided by 15?"
    rows = [{"question": question, "tool": t} for t in ("raises", "hangs", "wrong_type", "calculator")]
    with Program(g, base_dir=tmp_path, cache=tmp_path / "calls.sqlite") as prog:
        t0 = time.perf_counter()
        results = prog.batch(rows)
        wall = time.perf_counter() - t0
    summary = []
    for row, r in zip(rows, results):
        actions = [e for e in r.trace if e.kind == "react"]
        tools = [e for e in r.trace if e.kind == "tool"]
        summary.append({"tool": row["tool"], "model_calls": len(actions), "tool_calls": len(tools),
                        "tool_errors": [e.error for e in tools], "error": None if r.error is None else str(r.error),
                        "values": r.values})
    print(f"wall {wall:.1f} s")
    for s in summary:
        print(json.dumps(s))
    for row, r, s in zip(rows, results, summary):
        actions = [e for e in r.trace if e.kind == "react"]
        tools = [e for e in r.trace if e.kind == "tool"]
        assert all(e.error is None for e in actions), s  # every action well formed
        assert 1 <= len(actions) <= 3, s  # max_steps 3 honoured
        assert len(tools) <= len(actions) and all(e.extra.get("tool") == row["tool"] for e in tools), s
        assert tools, s  # min_steps 2: the first action called the row's tool
        if row["tool"] == "calculator":
            assert r.error is None and r.values["healthy"] == 27, s
            assert all(e.error is None for e in tools), s
            continue
        # every call of a bad tool is an error observation, traced as the tool event's error
        for e in tools:
            assert e.error is not None and e.error.startswith(EXPECTED_ERROR[row["tool"]]), s
            assert e.parsed["observation"] == f"error: {e.error}", s
        if row["tool"] == "hangs":  # abandoned at the timeout, not waited for (the tool sleeps 5 s)
            assert all(TIMEOUT_S <= e.latency_s < 3.0 for e in tools), [e.latency_s for e in tools]
        # the next action's prompt shows the model that error
        for i, e in enumerate(tools[: len(actions) - 1]):
            shown = json.dumps(actions[i + 1].messages)
            assert json.dumps(f"error: {e.error}")[1:-1] in shown, s
        # the row ends with an answer, or with the clear max_steps message
        assert r.error is None or "no `finish` action within max_steps 3" in str(r.error), s


FRESH = r'''
import json, sys
import lmpc
prog = lmpc.load(sys.argv[1], trust_code=True, cache=sys.argv[2])
demos = prog.graph.nodes["a"]["demos"]
result = prog.batch([{"question": sys.argv[3]}])[0]
print(json.dumps({"demo_trajectories": [d.get("trajectory") for d in demos], "values": result.values,
                  "error": None if result.error is None else str(result.error),
                  "actions": [e.raw for e in result.trace if e.kind == "react"],
                  "hits": [e.cache_hit for e in result.trace if e.kind == "react"]}))
'''


def test_artifact_with_trajectory_demos_reruns_the_model_in_a_fresh_process(tmp_path):
    """tests/runtime/test_react_smollm.py runs such an artifact in a fresh process on the cache
    its build filled; here the fresh process starts with an empty cache, so the model really
    runs there: its trajectory demos (the example's seeded ones) travel in the artifact, and
    its actions are byte for byte the build's."""
    from lmpc.compiler.artifact import make_artifact, place_code, write_artifact

    (tmp_path / "src").mkdir()
    for name in ("agent.lmp", "tools.py"):
        (tmp_path / "src" / name).write_text((EXAMPLE / name).read_text())
    checked = compile_file(tmp_path / "src" / "agent.lmp")
    g = checked.graphs["solve"]
    g.nodes["a"]["demos"] = _seeded().seed_demos()
    question = DEV[1]["question"]
    with Program(g, base_dir=tmp_path / "src", cache=tmp_path / "build.sqlite") as prog:
        built = prog.batch([{"question": question}])[0]
    out = tmp_path / "build" / "solve.lmpc.json"
    place_code({"solve": g}, {}, tmp_path / "src", out)
    write_artifact(out, make_artifact(checked, "solve", {"solve": g}, out, {}, {}))
    ran = subprocess.run([sys.executable, "-c", FRESH, str(out), str(tmp_path / "fresh.sqlite"), question],
                         capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr[-2000:]
    fresh = json.loads(ran.stdout.strip().splitlines()[-1])
    assert fresh["demo_trajectories"] == [d["trajectory"] for d in g.nodes["a"]["demos"]]
    assert fresh["hits"] and not any(fresh["hits"])  # the model ran in the fresh process
    assert fresh["error"] is None and built.error is None, (fresh["error"], built.error)
    assert fresh["actions"] == [e.raw for e in built.trace if e.kind == "react"]
    assert fresh["values"] == built.values
