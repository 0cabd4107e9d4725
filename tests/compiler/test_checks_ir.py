"""`check` statements in the IR, the artifact, `lmpc graph` and --dry-run bounds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmpc.compiler import compile_file
from lmpc.compiler.artifact import ArtifactError, load_artifact, make_artifact, write_artifact
from lmpc.compiler.ir import calls_per_row
from lmpc.compiler.render import to_dot, to_mermaid

SOURCE = '''model m = llama_cpp(builtin: "smollm2-135m")
signature Answer = question -> answer: str
signature Shorten = answer -> short: str
pipeline p(question: str) -> (short: str) {
    a = predict Answer(question: question)
    s = predict Shorten(answer: a.answer)
    check len(a.answer) <= 120 else "Answer in one short phrase"
    check len(s.short) < len(a.answer) else "Shorter than the answer" soft retries 3
    return short: s.short
}
'''


@pytest.fixture
def checked(tmp_path):
    src = tmp_path / "c.lmp"
    src.write_text(SOURCE)
    return compile_file(src)


def test_checks_are_lowered_onto_the_step_they_constrain(checked):
    g = checked.graphs["p"]
    (a,) = g.nodes["a"]["checks"]
    assert a["id"] == "c.lmp:7" and a["text"] == "len(a.answer) <= 120" and a["retries"] == 2 and not a["soft"]
    assert a["cond"] == {"op": "<=", "args": [{"call": "len", "args": [{"ref": "a", "path": ["answer"]}]},
                                              {"lit": 120}]}
    (s,) = g.nodes["s"]["checks"]  # it reads a and s; s depends on a: s is the one retried
    assert s["soft"] and s["retries"] == 3 and s["message"] == "Shorter than the answer"


def test_dry_run_bounds_count_every_retry(checked):
    assert calls_per_row(checked.graphs["p"]) == (1 + 2) + (1 + 3)


def test_artifact_round_trip_keeps_the_checks(checked, tmp_path):
    g = checked.graphs["p"]
    out = tmp_path / "c.lmpc.json"
    write_artifact(out, make_artifact(checked, "p", {"p": g}, out, {}, {}))
    loaded = load_artifact(out).graph
    assert loaded.nodes["a"]["checks"] == g.nodes["a"]["checks"]
    assert loaded.nodes["s"]["checks"] == g.nodes["s"]["checks"]


@pytest.mark.parametrize("tamper, message", [
    (lambda c: c.update(retries=99), "retries is a whole number from 0 to 10"),
    (lambda c: c.update(soft="yes"), "soft and show_previous bools"),
    (lambda c: c.update(cond={"ref": "s", "path": ["short"]}), "neither the checked step nor a node it depends on"),
    (lambda c: c.update(cond={"ref": "a", "path": ["nope"]}), "does not output"),
    (lambda c: c.pop("message"), "a check has exactly"),
])
def test_a_tampered_check_is_refused_on_load(checked, tmp_path, tamper, message):
    out = tmp_path / "c.lmpc.json"
    data = make_artifact(checked, "p", {"p": checked.graphs["p"]}, out, {}, {})
    data = json.loads(json.dumps(data))
    node = next(n for n in data["graphs"]["p"]["nodes"] if n["id"] == "a")
    tamper(node["checks"][0])
    out.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match=message):
        load_artifact(out)


def test_graph_draws_checks_distinctly(checked):
    g = checked.graphs["p"]
    mermaid = to_mermaid(g)
    assert '{{"check len(a.answer) <= 120 (hard, retries 2) else Answer in one short phrase"}}' in mermaid
    assert "n_a -.-> n_a_23_check0" in mermaid
    dot = to_dot(g)
    assert '"a#check0" [shape=hexagon' in dot and '"a" -> "a#check0" [style=dashed];' in dot
