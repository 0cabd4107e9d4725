"""random_search: candidates, one teacher run shared by all, scoring on dev, the tie rule."""

from __future__ import annotations

from lmpc.compiler.ir import to_json
from lmpc.optimizers import OptimizeContext, RandomSearch
from lmpc.runtime.models import Completion

from .fake import track, FakeModel, correct, exact_label, examples, graph, truth, wrong


def needs_two_demos(f, demos, req):
    """The planted student: right only when its prompt holds at least two demos."""
    return {"label": truth(f["text"]) if demos >= 2 else ("negative" if truth(f["text"]) == "positive" else "positive")}


def context(student, teacher, train, dev, **kw):
    return track(OptimizeContext(trainset=train, devset=dev, metric=exact_label, log=lambda _: None,
                           models={"m": student, "other": teacher}, **kw))


def test_random_search_picks_the_planted_best_candidate_and_reports_all():
    train = examples([f"good {i}" for i in range(4)] + [f"bad {i}" for i in range(4)])
    dev = examples(["good x", "bad y", "good z"], start=100)
    student, teacher = FakeModel("m", needs_two_demos), FakeModel("other", correct)
    g = graph()
    before = to_json(g)
    opt = RandomSearch(candidates=6, max_demos=3, max_labeled=0, teacher="other", seed=0)
    result = opt.compile(g, context(student, teacher, train, dev))
    rows = result.report["candidates"]
    assert [r["index"] for r in rows] == list(range(6))
    assert [r["kind"] for r in rows] == ["zero_shot", "labeled", "bootstrapped", "bootstrapped", "bootstrapped",
                                         "bootstrapped"]
    assert rows[0]["score"] == 0.0 and rows[0]["demos"] == 0
    assert rows[1]["same_as"] == 0 and rows[1]["calls"] == 0, "max_labeled 0: the labeled set is empty too"
    assert rows[2]["demos"] == 3 and rows[2]["score"] == 1.0
    for r in rows:
        assert r["score"] == (1.0 if r["demos"] >= 2 else 0.0)
        assert "calls" in r and "errors" in r
    winners = [r for r in rows if r["score"] == 1.0]
    best = min(winners, key=lambda r: (r["demos"], r["index"]))
    assert result.report["best"] == best["index"] and result.report["best_score"] == 1.0
    assert len(result.graph.nodes["s"]["demos"]) == best["demos"]
    assert len(teacher.requests) == len(train), "one teacher run for all bootstrapped candidates"
    assert to_json(g) == before


def test_labeled_candidate_and_ties_prefer_fewer_demos():
    train = examples(["good a", "bad b", "good c"])
    dev = examples(["good x", "bad y"], start=100)
    student = FakeModel("m", correct)  # every candidate scores 1.0: zero-shot (no demos) wins the tie
    result = RandomSearch(candidates=2).compile(graph(), context(student, FakeModel("other", wrong), train, dev))
    rows = result.report["candidates"]
    assert [(r["kind"], r["demos"], r["score"]) for r in rows] == [("zero_shot", 0, 1.0), ("labeled", 3, 1.0)]
    assert result.report["best"] == 0 and result.report["teacher"] == {}
    assert result.graph.nodes["s"]["demos"] == []


def test_without_a_dev_set_candidates_are_scored_on_train():
    train = examples(["good a", "bad b"])
    result = RandomSearch(candidates=3, max_labeled=0).compile(
        graph(), context(FakeModel("m", correct), FakeModel("other", correct), train, []))
    assert result.report["scored_on"] == "train"


def test_planned_calls_are_upper_bounds_per_stage():
    g = graph()
    assert RandomSearch(candidates=6).planned_calls(g, 20, 30) == {"teacher": 20, "candidates": 6 * 30}
    assert RandomSearch(candidates=2).planned_calls(g, 20, 30) == {"teacher": 0, "candidates": 2 * 30}
    assert RandomSearch(candidates=6).planned_calls(g, 20, 0) == {"teacher": 20, "candidates": 6 * 20}


def test_planned_calls_bound_the_calls_made():
    train = examples([f"good {i}" for i in range(3)] + [f"bad {i}" for i in range(3)])
    dev = examples(["good x", "bad y"], start=100)
    student = FakeModel("m", needs_two_demos)
    opt = RandomSearch(candidates=4, max_demos=2)
    opt.compile(graph(), context(student, FakeModel("other", correct), train, dev))
    assert len(student.requests) <= sum(opt.planned_calls(graph(), len(train), len(dev)).values())


def test_max_prompt_tokens_keeps_the_best_candidate_that_fits():
    class Counting(FakeModel):
        def generate(self, req):
            c = super().generate(req)
            return Completion(c.text, prompt_tokens=sum(len(m["content"]) for m in req.messages) // 4,
                              completion_tokens=3)

    train = examples([f"good {i}" for i in range(4)] + [f"bad {i}" for i in range(4)])
    dev = examples(["good x", "bad y", "good z"], start=100)
    opt = RandomSearch(candidates=4, max_demos=3, max_labeled=0, teacher="other", seed=0)
    free = opt.compile(graph(), context(Counting("m", needs_two_demos), FakeModel("other", correct), train, dev))
    rows = {r["index"]: r for r in free.report["candidates"]}
    assert rows[free.report["best"]]["score"] == 1.0
    budget = int(rows[0]["prompt_tokens"]) + 1  # zero-shot fits; no candidate with demos does
    limited = opt.compile(graph(), context(Counting("m", needs_two_demos), FakeModel("other", correct), train, dev,
                                           max_prompt_tokens=budget))
    r = limited.report
    assert r["best"] == 0 and r["max_prompt_tokens"] == budget and limited.graph.nodes["s"]["demos"] == []
    assert all(c.get("over_budget") for c in r["candidates"] if c["demos"] > 0)
    assert all(c["prompt_tokens"] > 0 for c in r["candidates"])
