"""Conditional steps (`x = ... when COND`): lowered with a `when` condition, run only when it
holds (otherwise no call, outputs null), inlined and mapped, kept by the artifact, drawn
dashed by `lmpc graph`, counted as run by `lmpc build --dry-run`; on SmolLM2 too."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lmpc.compiler import compile_file, compile_source
from lmpc.compiler.artifact import load_artifact, make_artifact, write_artifact
from lmpc.compiler.artifact_graph import GraphFormatError, graph_from_json, graph_to_json
from lmpc.compiler.render import to_dot, to_mermaid
from lmpc.runtime.program import Program
from lmpc.runtime.trace import start_meter

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "optimizers"))
from fake import FakeModel  # noqa: E402

SOURCE = '''
model m = llama_cpp(builtin: "smollm2-135m")
signature Expand = question: str -> expanded: str
signature Answer = question: str, extra: str? -> answer: str
signature Polish = text: str -> polished: str

pipeline p(question: str) -> (answer: str, extra: str?, polished: str?) {
    extra = predict Expand(question: question) when len(question) < 20
    a = predict Answer(question: question, extra: extra.expanded)
    pol = predict Polish(text: extra.expanded) when extra.expanded != null
    return answer: a.answer, extra: extra.expanded, polished: pol.polished
}
'''


def answer(f: dict, demos: int, req) -> dict:
    props = req.json_schema["properties"]
    if "expanded" in props:
        return {"expanded": f["question"] + " (expanded)"}
    if "answer" in props:
        return {"answer": f"A[{f['extra']}]"}
    return {"polished": f["text"].upper()}


def _run(graph, rows, fake=None):
    fake = fake or FakeModel("m", answer)
    with Program(graph, cache=False, trace_log=False, models={"m": fake}) as prog:
        return prog.batch(rows), fake


def test_a_step_runs_only_when_its_condition_holds_and_is_null_otherwise():
    g = compile_source(SOURCE).graphs["p"]
    assert g.nodes["extra"]["when"] == {"op": "<", "args": [{"call": "len", "args": [{"ref": "in:question",
                                                                                        "path": []}]}, {"lit": 20}]}
    res, fake = _run(g, [{"question": "short?"}, {"question": "a question far longer than twenty"}])
    assert res[0].values == {"answer": "A[short? (expanded)]", "extra": "short? (expanded)",
                             "polished": "SHORT? (EXPANDED)"}
    assert res[1].values == {"answer": "A[null]", "extra": None, "polished": None}
    # the long row made one call (Answer): no Expand, no Polish, and no trace event for them
    assert [e.step for e in res[0].trace] == ["extra", "a", "pol"]
    assert [e.step for e in res[1].trace] == ["a"]
    assert len(fake.requests) == 4


def test_a_condition_that_reads_a_step_runs_after_it():
    g = compile_source(SOURCE).graphs["p"]
    assert g.has_edge("extra", "pol") and g.nodes["pol"]["level"] > g.nodes["extra"]["level"]
    assert {"arg": "(when)", "path": ["expanded"], "type": "str?"} in g.edges["extra", "pol"]["uses"]


def test_a_conditional_step_inside_a_called_and_a_mapped_pipeline():
    src = '''
model m = llama_cpp(builtin: "smollm2-135m")
signature Expand = question: str -> expanded: str
pipeline one(question: str, on: bool) -> (expanded: str?) {
    e = predict Expand(question: question) when on and question != ""
    return expanded: e.expanded
}
pipeline p(questions: list[str], first: str) -> (each: list[str?], top: str?) {
    t = one(question: first, on: len(questions) > 1)
    m = map one(question: q, on: true) for q in questions
    return each: m.expanded, top: t.expanded
}
'''
    g = compile_source(src).graphs["p"]
    # inlined: the condition reads the caller's values
    assert g.nodes["t/e"]["when"]["args"][0]["args"][0]["call"] == "len"
    rows = [{"questions": ["x", "", "y"], "first": "f"}, {"questions": ["z"], "first": "g"}]
    res, fake = _run(g, rows, FakeModel("m", lambda f, d, r: {"expanded": f["question"] + "!"}))
    assert res[0].values == {"each": ["x!", None, "y!"], "top": "f!"}
    assert res[1].values == {"each": ["z!"], "top": None}
    assert len(fake.requests) == 4


def test_artifact_round_trip_keeps_the_condition(tmp_path):
    src = tmp_path / "c.lmp"
    src.write_text(SOURCE)
    checked = compile_file(src)
    g = checked.graphs["p"]
    out = tmp_path / "c.lmpc.json"
    write_artifact(out, make_artifact(checked, "p", {"p": g}, out, {}, {}))
    loaded = load_artifact(out).graph
    assert loaded.nodes["extra"]["when"] == g.nodes["extra"]["when"]
    assert loaded.nodes["pol"]["when"] == g.nodes["pol"]["when"]
    assert graph_to_json(loaded) == graph_to_json(g)
    res, _ = _run(loaded, [{"question": "a question far longer than twenty"}])
    assert res[0].values["extra"] is None and [e.step for e in res[0].trace] == ["a"]


@pytest.mark.parametrize("when, message", [
    ({"op": "<", "args": [{"lit": 1}]}, "takes 2 operands"),
    ({"ref": "nowhere", "path": []}, "`nowhere`, which is not a node"),
    ({"ref": "extra", "path": ["nope"]}, "does not output"),
    ({"ref": "pol", "path": ["polished"]}, "cycle"),  # a condition on the step's own output
])
def test_artifact_refuses_a_malformed_condition(when, message):
    data = graph_to_json(compile_source(SOURCE).graphs["p"])
    node = next(n for n in data["nodes"] if n["id"] == "pol")
    node["when"] = when
    with pytest.raises(GraphFormatError, match="nodes") as e:
        graph_from_json(data, "graph")
    assert message in str(e.value)


def test_graph_draws_conditional_steps_dashed_with_their_condition():
    g = compile_source(SOURCE).graphs["p"]
    mermaid, dot = to_mermaid(g), to_dot(g)
    assert "when len(question) < 20" in mermaid and "class n_extra conditional" in mermaid
    assert "classDef conditional stroke-dasharray" in mermaid
    assert "class n_a " not in mermaid
    assert '"pol" [shape=box, style=dashed, label="pol = predict Polish -> (polished: str) when extra.expanded != null"]' in dot
    assert '"a" [shape=box, label=' in dot


def test_dry_run_plan_says_conditional_steps_are_counted_as_run(tmp_path):
    (tmp_path / "d.jsonl").write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")
    src = tmp_path / "c.lmp"
    src.write_text(SOURCE + '''
optimize p {
    train "d.jsonl"
    dev "d.jsonl"
    metric exact_match(answer)
    strategy bootstrap_few_shot(max_demos: 1)
}
''')
    r = subprocess.run([sys.executable, "-m", "lmpc", "build", str(src), "--dry-run", "--cache-dir",
                        str(tmp_path / "c")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "upper bound: conditional steps `extra`, `pol` counted as run" in r.stdout


@pytest.mark.usefixtures("smollm2_path")
def test_on_smollm2_a_step_not_needed_makes_no_call(tmp_path):
    """The real embedded model: the row whose condition fails makes no call for the step (the
    meter counts only the unconditional one); the row whose condition holds runs it."""
    g = compile_source(SOURCE.replace("    pol = predict Polish(text: extra.expanded) when extra.expanded != null\n", "")
                       .replace(", polished: pol.polished", "").replace(", polished: str?", "")).graphs["p"]
    with Program(g, cache=False, trace_log=tmp_path / "traces.jsonl") as prog:
        meter = start_meter()
        skipped = prog.batch([{"question": "a question far longer than twenty"}])
        meter.stop()
        assert meter.calls == 1 and [e.step for e in skipped[0].trace] == ["a"]
        assert skipped[0].error is None and skipped[0].values["extra"] is None
        meter = start_meter()
        needed = prog.batch([{"question": "Why blue?"}])
        meter.stop()
    assert needed[0].error is None, needed[0].error
    assert meter.calls == 2 and [e.step for e in needed[0].trace] == ["extra", "a"]
    assert isinstance(needed[0].values["extra"], str)
    logged = [json.loads(line)["step"] for line in (tmp_path / "traces.jsonl").read_text().splitlines()]
    assert logged == ["a", "extra", "a"]


def test_a_conditional_map_step_runs_no_item_when_its_condition_fails():
    src = '''
model m = llama_cpp(builtin: "smollm2-135m")
signature Expand = question: str -> expanded: str
pipeline p(questions: list[str], go: bool) -> (each: list[str]?) {
    m = map Expand(question: q) for q in questions when go and len(questions) > 0
    return each: m.expanded
}
'''
    g = compile_source(src).graphs["p"]
    assert "when go and len(questions) > 0" in to_mermaid(g)
    rows = [{"questions": ["a", "b"], "go": True}, {"questions": ["c"], "go": False}]
    res, fake = _run(g, rows, FakeModel("m", lambda f, d, r: {"expanded": f["question"] + "!"}))
    assert [r.values for r in res] == [{"each": ["a!", "b!"]}, {"each": None}]
    assert len(fake.requests) == 2


def test_an_ensemble_member_keeps_its_condition_on_its_own_steps():
    from lmpc.optimizers.ensemble import ensemble_graph, member_id

    g = compile_source(SOURCE).graphs["p"]
    e = ensemble_graph([g, g.copy()])
    pol = e.nodes[member_id("pol", 2)]
    assert pol["when"]["args"][0] == {"ref": member_id("extra", 2), "path": ["expanded"]}
    res, fake = _run(e, [{"question": "a question far longer than twenty"}, {"question": "short?"}])
    assert res[0].values["extra"] is None and res[1].values["extra"] == "short? (expanded)"
    assert len(fake.requests) == 2 + 6  # the long row: Answer per member; the short one: all three
