"""bootstrap_few_shot on a react step (the fake model): a demo is a whole successful trajectory
(its tool calls and observations, then the finish action), trimmed to the demo budget, never
a gold answer without a trajectory; the built artifact keeps the trajectories and its tool
file, refuses to run without trust_code, and runs in a fresh process with it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from lmpc.compiler import compile_file
from lmpc.compiler.artifact import make_artifact, place_code, write_artifact
from lmpc.compiler.kinds.react import DEMO_MAX_CHARS, trim_trajectory
from lmpc.optimizers import BootstrapFewShot, OptimizeContext
from lmpc.runtime.data import Example
from lmpc.runtime.prompt import render_messages

from .fake import FakeModel, track

TOOLS = '''
def add(a: int, b: int) -> int:
    """Add two whole numbers."""
    return a + b
'''

SOURCE = '''
model m = llama_cpp(builtin: "smollm2-135m")
tool add = "tools.py:add"
signature Sum = "Add the numbers." a: int, b: int -> total: int

pipeline total(a: int, b: int) -> (total: int) {
    s = react Sum(a: a, b: b) tools [add] max_steps 3
    return total: s.total
}
'''


def adder(f: dict, demos: int, req) -> dict:
    """Calls add on the row's numbers, then finishes with the observation."""
    if "Observation" in f:
        return {"thought": "that is it", "tool": "finish", "args": {"total": int(f["Observation"])}}
    return {"thought": "add them", "tool": "add", "args": {"a": int(f["a"]), "b": int(f["b"])}}


def example(a: int, b: int, i: int) -> Example:
    return Example({"a": a, "b": b}, {"total": a + b}, f"train.jsonl:{i}", {"a": a, "b": b, "total": a + b})


def exact_total(ex: Example, pred: dict) -> float:
    return float(pred.get("total") == ex.gold["total"])


def compiled(tmp_path: Path):
    (tmp_path / "tools.py").write_text(TOOLS)
    (tmp_path / "p.lmp").write_text(SOURCE)
    checked = compile_file(tmp_path / "p.lmp")
    ctx = track(OptimizeContext(trainset=[example(2, 3, 1), example(10, 20, 2)], devset=[], metric=exact_total,
                                models={"m": FakeModel("m", adder)}, log=lambda _: None, base_dir=tmp_path))
    result = BootstrapFewShot(max_demos=2).compile(checked.graphs["total"], ctx)
    return checked, result


def test_a_bootstrapped_demo_is_the_whole_trajectory(tmp_path):
    _, result = compiled(tmp_path)
    demos = result.graph.nodes["s"]["demos"]
    assert len(demos) == 2 and all(d["kind"] == "bootstrapped" for d in demos)  # no labeled (gold-only) demo
    d = next(d for d in demos if d["inputs"] == {"a": 2, "b": 3})
    assert d["outputs"] == {"total": 5} and d["thought"] == "that is it"
    assert d["trajectory"] == [{"thought": "add them", "tool": "add", "args": {"a": 2, "b": 3}, "observation": "5"}]
    assert "labeled_skipped" in result.report["nodes"]["s"]
    shown = render_messages(result.graph.nodes["s"], {"a": 1, "b": 1})
    assert [m["role"] for m in shown] == ["system"] + ["user", "assistant", "user", "assistant"] * 2 + ["user"]
    assert {shown[3]["content"], shown[7]["content"]} == {"Observation: 5", "Observation: 30"}


def test_a_long_trajectory_is_trimmed_to_the_demo_budget():
    steps = [{"thought": f"step {i}", "tool": "add", "args": {"a": i, "b": 1}, "observation": "x" * 400}
             for i in range(10)]
    kept = trim_trajectory(steps)
    assert 0 < len(kept) < 10 and kept[-1]["thought"] == "step 9"  # the latest steps are kept
    assert len(json.dumps(kept)) <= DEMO_MAX_CHARS


def test_the_artifact_keeps_trajectories_and_runs_in_a_fresh_process_only_with_trust(tmp_path):
    checked, result = compiled(tmp_path)
    out = tmp_path / "build" / "total.lmpc.json"
    graphs = {"total": result.graph}
    place_code(graphs, {}, tmp_path, out)
    write_artifact(out, make_artifact(checked, "total", graphs, out, {}, {}))
    data = json.loads(out.read_text())
    assert [c["file"] for c in data["code"]] == ["tools.py"] and (out.parent / "tools.py").is_file()
    script = f'''
import json, sys
sys.path.insert(0, {str(Path(__file__).parents[2])!r})
import lmpc
from lmpc.errors import LmpcError
from tests.optimizers.fake import FakeModel
from tests.optimizers.test_react_demos import adder
try:
    lmpc.load({str(out)!r})
    print("loaded without trust")
except LmpcError as e:
    print("refused:", "trust" in str(e))
prog = lmpc.load({str(out)!r}, trust_code=True, models={{"m": FakeModel("m", adder)}}, cache=False, trace_log=False)
node = prog.graph.nodes["s"]
print(json.dumps([len(node["demos"]), node["demos"][0]["trajectory"][0]["tool"], prog.batch([{{"a": 4, "b": 5}}])[0].values]))
'''
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0] == "refused: True"
    assert json.loads(lines[1]) == [2, "add", {"total": 9}]


def test_dry_run_plans_count_max_steps_calls_per_row(tmp_path):
    from lmpc.compiler.ir import calls_per_row
    from lmpc.optimizers.build import plan

    (tmp_path / "tools.py").write_text(TOOLS)
    (tmp_path / "p.lmp").write_text(SOURCE)
    g = compile_file(tmp_path / "p.lmp").graphs["total"]
    assert calls_per_row(g) == 3  # max_steps model calls per row at most
    stages = {s.stage: s.calls for s in plan(g, [BootstrapFewShot(max_rounds=2)], n_train=4, n_dev=5)}
    assert stages["evaluate zero-shot on dev"] == 5 * 3
    assert stages["bootstrap_few_shot: teacher"] == 4 * 2 * 3


def test_an_artifact_cannot_bring_a_schema_into_a_tools_parameters(tmp_path):
    from lmpc.compiler.artifact import ArtifactError, load_artifact

    checked, result = compiled(tmp_path)
    out = tmp_path / "total.lmpc.json"
    write_artifact(out, make_artifact(checked, "total", {"total": result.graph}, out, {}, {}))
    data = json.loads(out.read_text())
    (node,) = [n for n in data["graphs"]["total"]["nodes"] if n["kind"] == "react"]
    assert node["tools"]["add"]["params"][0]["t"] == "int"  # a type form, not a schema
    node["tools"]["add"]["params"][0]["t"] = {"$ref": "https://example.com/schema.json"}
    out.write_text(json.dumps(data))
    try:
        load_artifact(out)
    except ArtifactError as e:
        assert "tools/add/params/0/t" in str(e)
    else:
        raise AssertionError("a bad type form in a tool's parameters was loaded")


def test_instruction_search_proposes_and_sets_a_react_steps_instructions(tmp_path):
    from lmpc.optimizers.instructions import propose_instructions
    from lmpc.runtime.program import Program

    (tmp_path / "tools.py").write_text(TOOLS)
    (tmp_path / "p.lmp").write_text(SOURCE)
    g = compile_file(tmp_path / "p.lmp").graphs["total"]

    def answer(f: dict, demos: int, req) -> dict:
        if "instruction" in req.json_schema.get("properties", {}):  # the proposer's call
            return {"instruction": f"Call add on both numbers, then finish with its result ({f.get('tip', '')[:24]})."}
        return adder(f, demos, req)

    fake = FakeModel("m", answer)
    ctx = track(OptimizeContext(trainset=[example(2, 3, 1)], devset=[], metric=exact_total, models={"m": fake},
                                log=lambda _: None, base_dir=tmp_path))
    proposals, report = propose_instructions(g, ctx, 3, None, {}, 0)
    assert proposals["s"][0] == "Add the numbers." and len(proposals["s"]) == 3 and report["calls"] >= 2
    described = [r for r in fake.requests if "instruction" in r.json_schema.get("properties", {})][0]
    assert "(react)" in described.messages[-1]["content"]  # the proposer is told the step's kind
    g.nodes["s"]["instructions"] = proposals["s"][1]
    with Program(g, base_dir=tmp_path, cache=False, trace_log=False, models={"m": FakeModel("m", adder)}) as prog:
        (res,) = prog.batch([{"a": 1, "b": 2}])
    assert res.values == {"total": 3}
    assert res.trace[0].messages[0]["content"].startswith(proposals["s"][1])


def test_knn_few_shot_on_a_react_step_chooses_trajectories_per_row_and_round_trips(tmp_path):
    from lmpc.compiler.artifact import load_artifact
    from lmpc.optimizers import KNNFewShot
    from lmpc.runtime.embed import Embedder, register_embedder
    from lmpc.runtime.program import Program

    class Digits(Embedder):  # deterministic: the row's first number, on a circle
        identity, dim = "test:digits:v1", 2

        def embed(self, texts):
            import math
            nums = [int("".join(c for c in t.split("a: ")[1].split("\n")[0] if c.isdigit()) or 0) for t in texts]
            return [[math.cos(n / 10), math.sin(n / 10)] for n in nums]

    register_embedder("digits", lambda: Digits())
    try:
        (tmp_path / "tools.py").write_text(TOOLS)
        (tmp_path / "p.lmp").write_text(SOURCE)
        checked = compile_file(tmp_path / "p.lmp")
        ctx = track(OptimizeContext(trainset=[example(2, 3, 1), example(10, 20, 2), example(30, 1, 3)], devset=[],
                                    metric=exact_total, models={"m": FakeModel("m", adder)}, log=lambda _: None,
                                    base_dir=tmp_path))
        result = KNNFewShot(k=1, embedder="digits").compile(checked.graphs["total"], ctx)
        knn = result.graph.nodes["s"]["knn"]
        assert len(knn["pool"]) == 3 and all(d["trajectory"][0]["tool"] == "add" for d in knn["pool"])
        out = tmp_path / "total.lmpc.json"
        write_artifact(out, make_artifact(checked, "total", {"total": result.graph}, out, {}, {}))
        loaded = load_artifact(out).graph
        assert loaded.nodes["s"]["knn"]["pool"] == knn["pool"]
        fake = FakeModel("m", adder)
        with Program(loaded, base_dir=tmp_path, cache=False, trace_log=False, models={"m": fake}) as prog:
            (res,) = prog.batch([{"a": 11, "b": 1}])
        assert res.values == {"total": 12}
        assert res.trace[0].extra["knn"][0]["source"] == "train.jsonl:2"  # 10 + 20 is nearest to 11 + 1
        assert "a: 10" in fake.requests[0].messages[1]["content"]  # its trajectory is in the prompt
    finally:
        register_embedder("digits", None)
