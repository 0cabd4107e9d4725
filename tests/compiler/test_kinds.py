"""Every kind of step in the registry (compiler/kinds/) has: checks, lowering, execution, an
artifact round trip, a `lmpc graph` rendering and a docs section. A kind added to KINDS
without a row in CASES fails here."""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from lmpc.compiler import compile_file
from lmpc.compiler.api import analyze
from lmpc.compiler.artifact import load_artifact, make_artifact, write_artifact
from lmpc.compiler.ir import parameter_sites, site, walk
from lmpc.compiler.kinds import KINDS
from lmpc.compiler.render import to_dot, to_mermaid
from lmpc.runtime.program import Program
from lmpc.runtime.prompt import decoding_schema, render_messages

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "optimizers"))
from fake import FakeModel  # noqa: E402

HEADER = '''model m = llama_cpp(builtin: "smollm2-135m")
type Label = "positive" | "negative"
signature Sentiment = "Classify the text." text: str -> label: Label
signature Split = text: str -> parts: list[str]
signature Count = text: str -> words: int
'''


@dataclass
class Case:
    good: str  # a pipeline `p(text: str)` whose step `x` is of this kind
    row: dict
    expect: dict  # p's outputs on `row` with the fake model below
    bad: str  # a step of this kind written wrongly
    code: str  # the diagnostic the bad step gets


CASES = {
    "predict": Case(
        "pipeline p(text: str) -> (label: Label) {\n    x = predict Sentiment(text: text)\n    return label: x.label\n}",
        {"text": "good day"}, {"label": "positive"},
        'pipeline p(text: str) -> (label: Label) {\n    x = predict "t.py:f" Sentiment(text: text)\n'
        "    return label: x.label\n}", "bad-function-ref"),
    "chain_of_thought": Case(
        "pipeline p(text: str) -> (label: Label, why: str) {\n    x = chain_of_thought Sentiment(text: text)\n"
        "    return label: x.label, why: x.reasoning\n}",
        {"text": "bad day"}, {"label": "negative", "why": "because"},
        "signature R = text: str -> reasoning: str\npipeline p(text: str) -> (r: str) {\n"
        "    x = chain_of_thought R(text: text)\n    return r: x.reasoning\n}", "reserved-field"),
    "call": Case(
        'pipeline p(text: str) -> (words: int) {\n    x = call "tools.py:count" Count(text: text)\n'
        "    return words: x.words\n}",
        {"text": "a b c"}, {"words": 3},
        'pipeline p(text: str) -> (words: int) {\n    x = call "tools.py:count" Count(text: text) using m\n'
        "    return words: x.words\n}", "bad-using"),
    "map": Case(
        "pipeline p(text: str) -> (labels: list[Label]) {\n    s = predict Split(text: text)\n"
        "    x = map Sentiment(text: t) for t in s.parts\n    return labels: x.label\n}",
        {"text": "good bad good"}, {"labels": ["positive", "negative", "positive"]},
        "pipeline p(text: str) -> (labels: list[Label]) {\n    x = map Sentiment(text: t) for t in text\n"
        "    return labels: x.label\n}", "not-a-list"),
    "retrieve": Case(
        'retriever r = index(corpus: "corpus.jsonl", mode: "bm25")\n'
        "pipeline p(text: str) -> (ids: list[str], passages: list[str]) {\n    x = retrieve r(query: text, k: 1)\n"
        "    return ids: x.ids, passages: x.passages\n}",
        {"text": "a good day"}, {"ids": ["g"], "passages": ["What a good day it was."]},
        'retriever r = index(corpus: "corpus.jsonl", mode: "bm25")\n'
        "pipeline p(text: str) -> (ids: list[str]) {\n    x = retrieve r(query: text, k: 0)\n"
        "    return ids: x.ids\n}", "bad-retrieve-k"),
    "react": Case(
        'tool words = "tools.py:words"\npipeline p(text: str) -> (words: int) {\n'
        "    x = react Count(text: text) tools [words] max_steps 3\n    return words: x.words\n}",
        {"text": "a b c"}, {"words": 3},
        'tool words = "tools.py:words"\npipeline p(text: str) -> (words: int) {\n'
        "    x = react Count(text: text) tools [wrds] max_steps 3\n    return words: x.words\n}", "unknown-tool"),
    "best_of": Case(
        "pipeline p(text: str) -> (label: Label) {\n"
        '    x = best_of Sentiment(text: text) n 3 reward x.label == "negative" threshold 1\n    return label: x.label\n}',
        {"text": "bad day"}, {"label": "negative"},
        "pipeline p(text: str) -> (label: Label) {\n"
        '    x = best_of Sentiment(text: text) n 0 reward x.label == "negative"\n    return label: x.label\n}',
        "bad-best-of"),
}


def answer(f: dict, demos: int, req) -> dict:
    if "anyOf" in req.json_schema:  # a react action: call the tool, then finish with its observation
        if "Observation" in f:
            return {"thought": "done", "tool": "finish", "args": {"words": int(f["Observation"])}}
        return {"thought": "count them", "tool": "words", "args": {"text": f["text"]}}
    props = req.json_schema["properties"]
    out: dict = {}
    if "reasoning" in props:
        out["reasoning"] = "because"
    if "parts" in props:
        out["parts"] = f["text"].split()
    if "label" in props:
        out["label"] = "positive" if f["text"].startswith("good") else "negative"
    return out


def _program(tmp_path: Path, kind: str) -> Path:
    src = tmp_path / "p.lmp"
    src.write_text(HEADER + CASES[kind].good + "\n")
    (tmp_path / "tools.py").write_text("def count(text):\n    return {'words': len(text.split())}\n\n\n"
                                      "def words(text: str) -> int:\n    return len(text.split())\n")
    (tmp_path / "corpus.jsonl").write_text('{"id": "g", "text": "What a good day it was."}\n'
                                          '{"id": "b", "text": "The storm broke the fence."}\n')
    return src


def _run(g, tmp_path: Path, row: dict) -> tuple[dict, list]:
    fake = FakeModel("m", answer)
    with Program(g, base_dir=tmp_path, cache=False, trace_log=False, models={"m": fake}) as prog:
        res = prog.batch([row])[0]
    assert res.error is None, res.error
    return res.values, fake.requests


def test_every_registered_kind_has_a_case():
    assert set(CASES) == set(KINDS)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_checks(kind):
    case = CASES[kind]
    _, diags = analyze(HEADER + case.bad + "\n", "bad.lmp")
    assert case.code in {d.code for d in diags}, [d.code for d in diags]
    _, ok = analyze(HEADER + case.good + "\n", "good.lmp")
    assert not [d for d in ok if d.severity == "error"]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_lowering_gives_the_attributes_the_kind_declares(kind, tmp_path):
    g = compile_file(_program(tmp_path, kind)).graphs["p"]
    node = g.nodes["x"]
    assert node["kind"] == kind
    declared = KINDS[kind]
    assert set(node) - {"kind", "level"} <= set(declared.artifact_keys)
    assert set(declared.artifact_required) <= set(node)
    assert (("x" in parameter_sites(g)) or any(s.startswith("x[*]/") for s in parameter_sites(g))) \
        == (declared.prompt or kind == "map")


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_execution(kind, tmp_path):
    g = compile_file(_program(tmp_path, kind)).graphs["p"]
    values, _ = _run(g, tmp_path, CASES[kind].row)
    assert values == CASES[kind].expect


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_artifact_round_trip(kind, tmp_path):
    """Written and loaded back: the same JSON, the same prompts and schemas, the same outputs."""
    src = _program(tmp_path, kind)
    checked = compile_file(src)
    g = checked.graphs["p"]
    for sid in parameter_sites(g):  # a tuned site (bodies included) survives the round trip
        site(g, sid)["instructions"] = "Tuned."
        site(g, sid)["demos"] = [{"inputs": {"text": "good x"}, "outputs": {"label": "positive"}}]
    out = tmp_path / "p.lmpc.json"
    data = make_artifact(checked, "p", {"p": g}, out, {}, {})
    write_artifact(out, data)
    loaded = load_artifact(out)
    assert json.loads(out.read_text())["graphs"] == json.loads(json.dumps(data["graphs"]))
    assert parameter_sites(loaded.graph) == parameter_sites(g)
    for sid in parameter_sites(g):
        before, after = site(g, sid), site(loaded.graph, sid)
        assert after["instructions"] == "Tuned." and after["demos"] == before["demos"]
        assert render_messages(after, {"text": "t"}) == render_messages(before, {"text": "t"})
        assert json.dumps(decoding_schema(after)) == json.dumps(decoding_schema(before))
    kinds = {d["kind"] for _, d in walk(loaded.graph)}
    assert kind in kinds
    values, requests = _run(loaded.graph, tmp_path, CASES[kind].row)
    assert values == CASES[kind].expect
    _, requests_before = _run(g, tmp_path, CASES[kind].row)
    assert [r.messages for r in requests] == [r.messages for r in requests_before]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_graph_rendering(kind, tmp_path):
    g = compile_file(_program(tmp_path, kind)).graphs["p"]
    text = to_mermaid(g)
    assert f"x = {kind} " in text
    dot = to_dot(g)
    assert f"x = {kind} " in dot
    if kind == "map":  # the body is drawn inside the node's subgraph (cluster)
        assert "subgraph" in text and "Sentiment = predict Sentiment" in text
        assert 'subgraph "cluster_x[*]/"' in dot and '"x[*]/Sentiment"' in dot


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_docs_section(kind):
    doc = (ROOT / "docs" / "language.md").read_text()
    assert re.search(rf"^\| `{kind}` \| `x = ", doc, re.M), f"the modules table has no row for `{kind}`"
    assert f"- **{kind}**" in doc, f"'What each module does at run time' does not describe `{kind}`"
