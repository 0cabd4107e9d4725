"""bootstrap_few_shot on a deterministic fake model: which runs become demos, label coverage,
intermediate nodes, the error budget, teachers, rounds, seeds and order independence."""

from __future__ import annotations

import random

import pytest

from lmpc.compiler.ir import to_json
from lmpc.optimizers import BootstrapFewShot, OptimizeContext, OptimizerConfigError, TeacherBrokenError
from lmpc.runtime.budget import CallBudget
from lmpc.runtime.budget import BudgetExceededError
from lmpc.runtime.metrics import BUILTIN_METRICS

from .fake import track, TWO_STEP, FakeModel, broken_on, correct, examples, graph, wrong


def context(train, models=None, **kw):
    models = models or {"m": FakeModel("m", correct)}
    metric = BUILTIN_METRICS["exact_match"](["label"])  # the builtin, as `metric exact_match(label)` gives
    return track(OptimizeContext(trainset=train, devset=[], metric=metric, models=models, log=lambda _: None, **kw))


def test_one_passing_example_becomes_exactly_one_demo():
    fake = FakeModel("m", correct)
    g = graph()
    before = to_json(g)
    result = BootstrapFewShot().compile(g, context(examples(["good day"]), {"m": fake}))
    assert result.graph.nodes["s"]["demos"] == [{"inputs": {"text": "good day"}, "outputs": {"label": "positive"},
                                                 "source": "train.jsonl:1", "kind": "bootstrapped"}]
    assert len(fake.requests) == 1
    report = result.report
    assert report["calls"] == 1 and report["passed"] == 1 and report["errors"] == 0 and report["rounds"] == 1
    assert report["nodes"]["s"]["candidates"] == 1 and report["nodes"]["s"]["bootstrapped"] == ["train.jsonl:1"]
    assert to_json(g) == before, "the input graph is not mutated"


def test_a_failing_example_becomes_no_bootstrapped_demo():
    train = examples(["good day"])
    result = BootstrapFewShot(max_labeled=0, balance=False).compile(graph(), context(train, {"m": FakeModel("m", wrong)}))
    assert result.graph.nodes["s"]["demos"] == []
    assert result.report["passed"] == 0 and result.report["nodes"]["s"]["candidates"] == 0
    # with the coverage rule (the default), a label no run passed gets a labeled demo even so
    result = BootstrapFewShot(max_labeled=0).compile(graph(), context(train, {"m": FakeModel("m", wrong)}))
    assert [(d["kind"], d["outputs"]) for d in result.graph.nodes["s"]["demos"]] == [("labeled", {"label": "positive"})]
    assert result.report["nodes"]["s"]["labels_not_passed"] == ["positive"]
    # with labeled fill (the default), the example still gives its gold label
    result = BootstrapFewShot().compile(graph(), context(train, {"m": FakeModel("m", wrong)}))
    assert [(d["kind"], d["outputs"]) for d in result.graph.nodes["s"]["demos"]] == [("labeled", {"label": "positive"})]


def test_label_coverage_keeps_a_rare_label_in_the_demos():
    # 12 positive rows pass and 2 negative rows pass (the other negatives fail): without
    # coverage, 4 demos drawn from 14 passing rows would usually be all positive.
    def mostly_positive(f, demos, req):
        return {"label": "negative" if f["text"] in ("bad 0", "bad 1") else "positive"}

    train = examples([f"good {i}" for i in range(12)] + [f"bad {i}" for i in range(6)])
    for seed in range(5):
        result = BootstrapFewShot(max_demos=4, max_labeled=0, seed=seed).compile(
            graph(), context(train, {"m": FakeModel("m", mostly_positive)}))
        demos = result.graph.nodes["s"]["demos"]
        assert [d["kind"] for d in demos] == ["bootstrapped"] * 4
        assert sorted(d["outputs"]["label"] for d in demos) == ["negative", "negative", "positive", "positive"]
        assert result.report["nodes"]["s"]["labels"] == {"negative": 2, "positive": 2}
        assert result.report["passed"] == 14


def test_intermediate_nodes_of_a_two_step_pipeline_get_demos():
    train = examples(["good a", "bad b", "good c"])
    result = BootstrapFewShot(max_demos=2).compile(graph(TWO_STEP), context(train))
    t, j = (result.graph.nodes[n]["demos"] for n in ("t", "j"))
    assert len(t) == 2 and len(j) == 2
    assert all(set(d["outputs"]) == {"topic"} for d in t)
    assert all(d["inputs"]["topic"] == "topic of " + d["inputs"]["text"] for d in j)
    nodes = result.report["nodes"]
    assert "labeled_skipped" in nodes["t"] and "labeled_skipped" in nodes["j"]
    assert result.report["calls"] == 6
    assert BootstrapFewShot(max_rounds=3).planned_calls(graph(TWO_STEP), 3, 10) == {"teacher": 3 * 3 * 2}


def test_a_teacher_that_fails_on_most_rows_stops_with_the_error_budget():
    train = examples(["good a", "bad b", "good c", "bad d"])
    fake = FakeModel("m", broken_on(lambda text: text != "good a"))
    with pytest.raises(TeacherBrokenError, match=r"teacher is broken: 3 of 4 training examples failed"):
        BootstrapFewShot().compile(graph(), context(train, {"m": fake}))
    # half or fewer: counted, and the rest still bootstraps
    fake = FakeModel("m", broken_on(lambda text: text in ("bad b", "bad d")))
    result = BootstrapFewShot(max_labeled=0, balance=False).compile(graph(), context(train, {"m": fake}))
    assert result.report["errors"] == 2 and "HTTP 503" in result.report["error_examples"][0]
    assert sorted(d["source"] for d in result.graph.nodes["s"]["demos"]) == ["train.jsonl:1", "train.jsonl:3"]


def test_teacher_option_runs_every_prompt_node_on_that_model():
    student, teacher = FakeModel("m", wrong), FakeModel("other", correct)
    train = examples(["good a", "bad b"])
    result = BootstrapFewShot(teacher="other", max_labeled=0).compile(
        graph(TWO_STEP), context(train, {"m": student, "other": teacher}))
    assert not student.requests and len(teacher.requests) == 4
    assert result.report["teacher"] == "other" and result.report["passed"] == 2
    assert result.graph.nodes["j"]["model"] is None, "the student keeps its own model"
    with pytest.raises(OptimizerConfigError, match="teacher `big` is not a declared model"):
        BootstrapFewShot(teacher="big").compile(graph(), context(train))


def test_later_rounds_retry_failures_as_fresh_samples():
    def right_when_sampling(f, demos, req):
        return {"label": "positive" if req.temperature > 0 else "negative"}

    fake = FakeModel("m", right_when_sampling)
    train = examples(["good a", "bad b"])
    result = BootstrapFewShot(max_rounds=3, max_labeled=0).compile(graph(), context(train, {"m": fake}))
    assert result.report["rounds"] == 2, "round 2 had nothing left to retry"
    assert [(r.temperature, r.seed) for r in fake.requests] == [(0.0, 0), (0.0, 0), (0.7, 1)]
    assert sorted(d["source"] for d in result.graph.nodes["s"]["demos"]) == ["train.jsonl:1", "train.jsonl:2"]
    assert result.report["calls"] == 3


def test_seeds_give_identical_graphs_and_different_seeds_can_differ():
    train = examples([f"good {i}" for i in range(10)] + [f"bad {i}" for i in range(10)])

    def run(seed, rows):
        return to_json(BootstrapFewShot(max_demos=2, max_labeled=4, seed=seed).compile(graph(), context(rows)).graph)

    first = run(0, train)
    assert run(0, train) == first
    shuffled = list(train)
    random.Random(7).shuffle(shuffled)
    assert run(0, shuffled) == first, "the choice depends on the seed, not on the training list's order"
    assert any(run(s, train) != first for s in range(1, 6))


def test_the_call_budget_stops_the_teacher():
    train = examples(["good a", "bad b", "good c"])
    with pytest.raises(BudgetExceededError):
        BootstrapFewShot().compile(graph(), context(train, budget=CallBudget(2)))


def test_bad_options_are_config_errors():
    with pytest.raises(OptimizerConfigError, match="1 or more"):
        BootstrapFewShot(max_rounds=0)
    with pytest.raises(OptimizerConfigError, match="takes no option"):
        BootstrapFewShot(k=2)
    with pytest.raises(OptimizerConfigError, match="needs training examples"):
        BootstrapFewShot().compile(graph(), context([]))
