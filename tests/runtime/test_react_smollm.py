"""A react step on the real embedded model (SmolLM2-135M through llama.cpp): every action is
well formed (decoded under the action grammar), the calculator tool really runs, the loop
stays within max_steps, the row's trajectory is in its trace (lmpc inspect), and the program
with its trajectory demos, built as an artifact, runs in a fresh process only with trust."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from lmpc.compiler import compile_file
from lmpc.compiler.artifact import make_artifact, place_code, write_artifact
from lmpc.runtime.program import Program

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "agent"

SOURCE = '''
model m = llama_cpp(builtin: "smollm2-135m")
tool calculator = "tools.py:calculator"
signature Solve = "Solve the arithmetic problem: call the calculator on the expression, then finish with its result." question -> answer: float

pipeline solve(question: str) -> (answer: float) {
    a = react Solve(question: question) tools [calculator] max_steps 3
    return answer: a.answer
}
'''


def demo(question: str, expression: str, result: float) -> dict:
    """A compiled program's demo: one whole trajectory (what bootstrap_few_shot stores).
    Zero-shot, the 135M model answers at once without the tool; three demos teach it."""
    return {"inputs": {"question": question}, "outputs": {"answer": result}, "thought": f"The result is {result:g}.",
            "trajectory": [{"thought": f"Compute {expression}.", "tool": "calculator",
                            "args": {"expression": expression}, "observation": str(result)}]}


DEMOS = [demo("What is 6 * 7?", "6 * 7", 42.0),
         demo("Ann has 15 pens and gives away 4. How many are left?", "15 - 4", 11.0),
         demo("What is 250 / 5?", "250 / 5", 50.0)]


def test_actions_are_well_formed_and_the_calculator_runs(tmp_path):
    (tmp_path / "p.lmp").write_text(SOURCE)
    (tmp_path / "tools.py").write_text((EXAMPLE / "tools.py").read_text())
    checked = compile_file(tmp_path / "p.lmp")
    g = checked.graphs["solve"]
    g.nodes["a"]["demos"] = DEMOS
    rows = [{"question": "What is 17 * 23?"}, {"question": "What is 120 + 45?"}]
    with Program(g, base_dir=tmp_path, cache=tmp_path / "calls.sqlite", trace_log=tmp_path / "traces.jsonl") as prog:
        results = prog.batch(rows)
    actions = [e for r in results for e in r.trace if e.kind == "react"]
    tools = [e for r in results for e in r.trace if e.kind == "tool"]
    assert actions and all(e.error is None for e in actions), [e.raw for e in actions]
    for e in actions:  # the raw text is one JSON action naming a listed tool or finish
        raw = json.loads(e.raw)
        assert set(raw) == {"thought", "tool", "args"} and raw["tool"] in ("calculator", "finish")
    assert tools, "the model never called the calculator"
    assert any(e.error is None and float(e.parsed["observation"]) in (391.0, 165.0) for e in tools)
    for r in results:  # finished within max_steps, or failed saying so
        calls = sum(e.kind == "react" for e in r.trace)
        assert calls <= 3
        assert r.error is None or "max_steps 3" in str(r.error)

    # lmpc inspect shows the trajectory: each action's raw JSON and each tool call with its observation
    shown = subprocess.run([sys.executable, "-m", "lmpc", "inspect", "-n", "20", "--cache-dir", str(tmp_path)],
                           capture_output=True, text=True, check=True).stdout
    assert "a (tool, " in shown and 'calculator({"expression": "17 * 23"}) -> 391.0' in shown
    assert '"tool": "finish"' in shown

    # the program with its trajectory demos as an artifact: refused without trust, then run in a
    # fresh process (its actions come from the cache this run filled)
    out = tmp_path / "build" / "solve.lmpc.json"
    place_code({"solve": g}, {}, tmp_path, out)
    write_artifact(out, make_artifact(checked, "solve", {"solve": g}, out, {}, {}))
    cmd = [sys.executable, "-m", "lmpc", "run", str(out), "-i", "question=What is 17 * 23?", "--cache-dir", str(tmp_path)]
    refused = subprocess.run(cmd, capture_output=True, text=True)
    assert refused.returncode == 2 and "--trust-code" in refused.stderr
    ran = subprocess.run(cmd + ["--trust-code", "--json"], capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["outputs"] == results[0].values
