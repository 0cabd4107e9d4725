"""`map` at run time: the body runs through the same executor, all items of all rows of a
batch together (one prompt node's calls back to back), with traces naming the item, the
call cache, the call budget, and per-row errors; through an artifact; on SmolLM2 too."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from lmpc.compiler import compile_file, compile_source
from lmpc.compiler.artifact import ArtifactError, load_artifact, make_artifact, write_artifact
from lmpc.compiler.artifact_graph import graph_from_json, graph_to_json
from lmpc.compiler.ir import parameter_sites, site
from lmpc.runtime.budget import BudgetExceededError, CallBudget
from lmpc.runtime.cache import CallCache
from lmpc.runtime.errors import ServerError
from lmpc.runtime.program import Program
from lmpc.runtime.trace import TraceLog

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "optimizers"))
from fake import FakeModel  # noqa: E402

SOURCE = '''
model m = llama_cpp(builtin: "smollm2-135m")
type Label = "positive" | "negative"
signature Split = text: str -> parts: list[str]
signature Judge = "Judge the part." part: str, text: str -> label: Label
pipeline p(text: str) -> (labels: list[Label], n: int) {
    s = predict Split(text: text)
    j = map Judge(part: x, text: text) for x in s.parts
    return labels: j.label, n: len(s.parts)
}
'''


def answer(f: dict, demos: int, req) -> dict:
    props = req.json_schema["properties"]
    if "parts" in props:
        return {"parts": f["text"].split()}
    if f["part"] == "boom":
        raise ServerError("HTTP 503 from the fake server", status=503, attempts=1)
    return {"label": "positive" if f["part"].startswith("good") else "negative"}


def _graph(source: str = SOURCE):
    return compile_source(source).graphs["p"]


def _user(req) -> str:
    return [m["content"] for m in req.messages if m["role"] == "user"][-1]


def test_body_calls_of_all_rows_are_issued_back_to_back():
    fake = FakeModel("m", answer)
    with Program(_graph(), cache=False, trace_log=False, models={"m": fake}) as prog:
        res = prog.batch([{"text": "good bad good"}, {"text": "bad"}, {"text": ""}])
    assert [r.values for r in res] == [{"labels": ["positive", "negative", "positive"], "n": 3},
                                       {"labels": ["negative"], "n": 1}, {"labels": [], "n": 0}]
    asked = [_user(r).splitlines()[0] for r in fake.requests]
    # the three rows' Split calls, then the four Judge calls of all items of all rows
    assert asked == ["text: good bad good", "text: bad", "text: ",
                     "part: good", "part: bad", "part: good", "part: bad"]
    steps = [(e.step, e.row) for e in res[0].trace]
    assert steps == [("s", 0), ("j[0]/Judge", 0), ("j[1]/Judge", 0), ("j[2]/Judge", 0)]
    assert [(e.step, e.row) for e in res[1].trace] == [("s", 1), ("j[0]/Judge", 1)]
    assert len({e.trace_id for r in res for e in r.trace}) == 7


TWO_STEP_BODY = '''
model m = llama_cpp(builtin: "smollm2-135m")
type Label = "positive" | "negative"
signature Split = text: str -> parts: list[str]
signature Topic = part: str -> topic: str
signature Judge = part: str, text: str -> label: Label
pipeline one(part: str) -> (label: Label) {
    t = predict Topic(part: part)
    j = predict Judge(part: part, text: t.topic)
    return label: j.label
}
pipeline p(text: str) -> (labels: list[Label]) {
    s = predict Split(text: text)
    each = map one(part: x) for x in s.parts
    return labels: each.label
}
'''


def test_each_prompt_node_of_a_body_is_batched_across_items_and_rows():
    """Not item by item (Topic, Judge, Topic, Judge, ...): all Topic calls, then all Judge calls."""
    def two(f, demos, req):
        props = req.json_schema["properties"]
        if "topic" in props:
            return {"topic": "t"}
        return answer(f, demos, req)

    fake = FakeModel("m", two)
    with Program(_graph(TWO_STEP_BODY), cache=False, trace_log=False, models={"m": fake}) as prog:
        res = prog.batch([{"text": "good bad"}, {"text": "good"}])
    assert [r.values for r in res] == [{"labels": ["positive", "negative"]}, {"labels": ["positive"]}]
    kinds = [next(iter(r.json_schema["properties"])) for r in fake.requests]
    assert kinds == ["parts", "parts", "topic", "topic", "topic", "label", "label", "label"]


def test_a_failing_item_fails_its_row_only_and_names_the_item():
    fake = FakeModel("m", answer)
    with Program(_graph(), cache=False, trace_log=False, models={"m": fake}) as prog:
        res = prog.batch([{"text": "good boom"}, {"text": "good"}])
    assert res[1].values == {"labels": ["positive"], "n": 1}
    assert res[0].error is not None and res[0].values is None
    assert res[0].error.step == "j[1]/Judge"
    assert "item 1" in str(res[0].error) and "step `j`" in str(res[0].error)


def test_body_calls_are_cached_logged_and_budgeted(tmp_path):
    rows = [{"text": "good bad"}, {"text": "bad good"}]
    cache = CallCache(tmp_path / "calls.sqlite")
    log = TraceLog(tmp_path / "traces.jsonl")
    try:
        fake = FakeModel("m", answer)
        with Program(_graph(), cache=cache, trace_log=log, models={"m": fake}) as prog:
            first = prog.batch(rows)
            again = prog.batch(rows)
        assert [r.values for r in first] == [r.values for r in again]
        assert len(fake.requests) == 2 + 4  # the second batch made none
        assert all(e.cache_hit for r in again for e in r.trace)
        logged = [e["step"] for e in log.tail(100)]
        assert logged.count("j[0]/Judge") == 4 and logged.count("j[1]/Judge") == 4
    finally:
        cache.close()
    budget = CallBudget(3)  # 2 Split calls, then the budget ends inside the body
    fake = FakeModel("m", answer)
    with Program(_graph(), cache=False, trace_log=False, models={"m": fake}, budget=budget) as prog:
        with pytest.raises(BudgetExceededError):
            prog.batch(rows)
    assert budget.used == 3


def test_map_over_a_sub_pipeline_with_a_python_step_and_a_captured_value(tmp_path):
    (tmp_path / "tools.py").write_text("def tag(part, prefix):\n    return {'tagged': prefix + part}\n")
    src = tmp_path / "p.lmp"
    src.write_text('''
model m = llama_cpp(builtin: "smollm2-135m")
type Label = "positive" | "negative"
signature Split = text: str -> parts: list[str]
signature Judge = part: str, text: str -> label: Label
signature Tag = part: str, prefix: str -> tagged: str
pipeline one(part: str, prefix: str) -> (label: Label, tagged: str) {
    t = call "tools.py:tag" Tag(part: part, prefix: prefix)
    j = predict Judge(part: part, text: t.tagged)
    return label: j.label, tagged: t.tagged
}
pipeline p(text: str, prefix: str) -> (labels: list[Label], tagged: list[str]) {
    s = predict Split(text: text)
    each = map one(part: x, prefix: prefix) for x in s.parts
    return labels: each.label, tagged: each.tagged
}
''')
    g = compile_file(src).graphs["p"]
    assert parameter_sites(g) == ["s", "each[*]/one/j"]
    fake = FakeModel("m", answer)
    with Program(g, base_dir=tmp_path, cache=False, trace_log=False, models={"m": fake}) as prog:
        (res,) = prog.batch([{"text": "good bad", "prefix": "#"}])
    assert res.values == {"labels": ["positive", "negative"], "tagged": ["#good", "#bad"]}
    assert [e.step for e in res.trace] == ["s", "each[0]/one/t", "each[0]/one/j", "each[1]/one/t", "each[1]/one/j"]


def test_an_artifact_body_is_checked_like_a_graph():
    g = _graph()
    data = graph_to_json(g)
    node = next(n for n in data["nodes"] if n["id"] == "j")
    body_node = next(n for n in node["body"]["nodes"] if n["id"] == "Judge")
    body_node["bindings"]["part"] = {"ref": "in:nope", "path": []}
    with pytest.raises(ValueError, match=r"nodes/\d+/body/nodes/Judge/bindings/part: refers to `in:nope`"):
        graph_from_json(data, "graphs/p")
    node["kind"] = "fold"
    with pytest.raises(ValueError, match="needs a newer lmpc"):
        graph_from_json(data, "graphs/p")


@pytest.mark.usefixtures("smollm2_path")
def test_map_on_smollm2_through_an_artifact(tmp_path):
    """The real embedded model: build the artifact, load it, run a map over a tiny list; the
    loaded program makes the same calls (all cache hits)."""
    src = tmp_path / "m.lmp"
    src.write_text('''
type Mood = "positive" | "negative"
signature Sentiment = "Classify the sentiment of the text." text: str -> mood: Mood
pipeline moods(texts: list[str]) -> (moods: list[Mood]) {
    each = map Sentiment(text: t) for t in texts
    return moods: each.mood
}
''')
    checked = compile_file(src)
    g = checked.graphs["moods"]
    site(g, "each[*]/Sentiment")["demos"] = [{"inputs": {"text": "I love it"}, "outputs": {"mood": "positive"}}]
    out = tmp_path / "m.lmpc.json"
    write_artifact(out, make_artifact(checked, "moods", {"moods": g}, out, {}, {}))
    loaded = load_artifact(out).graph
    assert site(loaded, "each[*]/Sentiment")["demos"][0]["outputs"] == {"mood": "positive"}
    rows = [{"texts": ["What a great day", "I hate this"]}, {"texts": []}]
    with Program(g, cache=tmp_path / "calls.sqlite", trace_log=False) as prog:
        first = prog.batch(rows)
    with Program(loaded, cache=tmp_path / "calls.sqlite", trace_log=False) as prog:
        second = prog.batch(rows)
    assert first[0].error is None and len(first[0].values["moods"]) == 2
    assert set(first[0].values["moods"]) <= {"positive", "negative"}
    assert first[1].values == {"moods": []}
    assert [r.values for r in second] == [r.values for r in first]
    assert [e.cache_hit for e in second[0].trace] == [True, True]


def test_a_bad_artifact_body_is_refused_on_load(tmp_path):
    src = tmp_path / "m.lmp"
    src.write_text(SOURCE)
    checked = compile_file(src)
    out = tmp_path / "m.lmpc.json"
    data = make_artifact(checked, "p", {"p": checked.graphs["p"]}, out, {}, {})
    node = next(n for n in data["graphs"]["p"]["nodes"] if n["id"] == "j")
    node["body"]["outputs"] = []
    import json

    out.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="body"):
        load_artifact(out)


def test_map_over_five_items_on_smollm2_makes_five_calls_per_row_issued_together():
    """Issue 16's map check on the real embedded model: a list of 5 items makes 5 calls per
    row, and the body's calls of all rows go to the model lane together, after every row's
    first step (not row by row: first step, items, first step, items), so llama.cpp reuses
    their shared prompt prefix back to back."""
    from lmpc.runtime.models import create_model
    from lmpc.runtime.trace import start_meter

    g = compile_source('''
model m = llama_cpp(builtin: "smollm2-135m", temperature: 0)
type Mood = "positive" | "negative"
type Domain = "food" | "film"
signature Topic = "Say what the text is about." text: str -> domain: Domain
signature Sentiment = "Classify the sentiment of the text." text: str, domain: Domain -> mood: Mood
pipeline moods(intro: str, texts: list[str]) -> (moods: list[Mood]) {
    k = predict Topic(text: intro)
    each = map Sentiment(text: t, domain: k.domain) for t in texts
    return moods: each.mood
}
''').graphs["moods"]
    model = create_model("m", "llama_cpp", {"builtin": "smollm2-135m", "temperature": 0})
    asked: list[str] = []
    real_generate = model.generate

    def recording(req):  # the real model answers; the test only notes the order of the calls
        asked.append(_user(req))
        return real_generate(req)

    model.generate = recording
    rows = [{"intro": "Reviews of a pizza place", "texts": ["great", "awful", "lovely", "bad", "fine"]},
            {"intro": "Reviews of a new film", "texts": ["I hate it", "so good", "meh", "wonderful", "terrible"]}]
    meter = start_meter()
    try:
        with Program(g, cache=False, trace_log=False, models={"m": model}) as prog:
            res = prog.batch(rows)
    finally:
        meter.stop()
        model.close()
    assert [r.error for r in res] == [None, None]
    assert all(len(r.values["moods"]) == 5 and set(r.values["moods"]) <= {"positive", "negative"} for r in res)
    assert meter.calls == 12  # per row: its Topic call and 5 Sentiment calls
    for i, r in enumerate(res):
        assert [(e.step, e.row) for e in r.trace] == [("k", i)] + [(f"each[{n}]/Sentiment", i) for n in range(5)]
    assert [a.splitlines()[0] for a in asked] == (
        [f"text: {row['intro']}" for row in rows] + [f"text: {t}" for row in rows for t in row["texts"]])
