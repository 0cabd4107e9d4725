"""labeled_few_shot: demos from gold labels, which nodes can take them, CoT rendering, no calls."""

from __future__ import annotations

import pytest

from lmpc.compiler.ir import to_json
from lmpc.compiler.optimize_spec import STRATEGIES
from lmpc.optimizers import REGISTRY, LabeledFewShot, OptimizeContext, OptimizerConfigError
from lmpc.runtime.prompt import render_messages

from .fake import track, COT, TWO_STEP, FakeModel, correct, exact_label, examples, graph


def context(train, fake=None, **kw):
    models = {"m": fake or FakeModel("m", correct)}
    return track(OptimizeContext(trainset=train, devset=[], metric=exact_label, models=models, log=lambda _: None,
                                 **kw))


def test_registry_matches_the_compilers_strategy_options():
    for name, cls in REGISTRY.items():
        assert cls.name == name
        assert set(cls.options_spec) == set(STRATEGIES[name]), name


def test_labeled_demos_come_from_gold_with_label_coverage_and_no_calls():
    fake = FakeModel("m", correct)
    train = examples([f"good {i}" for i in range(8)] + ["bad 0", "bad 1"])
    g = graph()
    before = to_json(g)
    opt = LabeledFewShot(k=4)
    assert opt.planned_calls(g, 10, 5) == {}
    result = opt.compile(g, context(train, fake))
    demos = result.graph.nodes["s"]["demos"]
    assert len(demos) == 4 and not fake.requests
    assert {d["kind"] for d in demos} == {"labeled"}
    assert sorted(d["outputs"]["label"] for d in demos) == ["negative", "negative", "positive", "positive"]
    for d in demos:
        assert d["outputs"]["label"] == ("positive" if d["inputs"]["text"].startswith("good") else "negative")
        assert d["source"].startswith("train.jsonl:")
    assert to_json(g) == before, "the input graph is not mutated"
    assert result.report["calls"] == 0 and len(result.report["nodes"]["s"]["labeled"]) == 4


def test_seeded_and_independent_of_the_training_lists_order():
    train = examples([f"good {i}" for i in range(10)] + [f"bad {i}" for i in range(10)])
    a = LabeledFewShot(k=3, seed=1).compile(graph(), context(train)).graph
    b = LabeledFewShot(k=3, seed=1).compile(graph(), context(list(reversed(train)))).graph
    assert to_json(a) == to_json(b)
    others = [to_json(LabeledFewShot(k=3, seed=s).compile(graph(), context(train)).graph) for s in range(2, 8)]
    assert any(o != to_json(a) for o in others)
    # no seed option: the build's seed
    c = LabeledFewShot(k=3).compile(graph(), context(train, seed=1)).graph
    assert to_json(c) == to_json(a)


def test_chain_of_thought_labeled_demos_leave_out_reasoning():
    g = graph(COT)
    result = LabeledFewShot(k=2).compile(g, context(examples(["good a", "bad b"])))
    node = result.graph.nodes["s"]
    assert [set(d["outputs"]) for d in node["demos"]] == [{"label"}, {"label"}]
    messages = render_messages(node, {"text": "good c"})
    assistant = [m["content"] for m in messages if m["role"] == "assistant"]
    assert sorted(assistant) == ['{"label": "negative"}', '{"label": "positive"}']


def test_nodes_without_a_path_to_the_labels_are_skipped_with_a_reason():
    result = LabeledFewShot(k=2).compile(graph(TWO_STEP), context(examples(["good a", "bad b"])))
    nodes = result.report["nodes"]
    assert "`topic` is not returned" in nodes["t"]["skipped"]
    assert "`topic` comes from step `t`" in nodes["j"]["skipped"]
    assert all(result.graph.nodes[n]["demos"] == [] for n in ("t", "j"))


def test_examples_without_gold_are_not_used():
    train = examples(["good a", "bad b"])
    train[0].gold.clear()
    result = LabeledFewShot(k=4).compile(graph(), context(train))
    assert [d["inputs"]["text"] for d in result.graph.nodes["s"]["demos"]] == ["bad b"]


def test_bad_options_are_config_errors():
    with pytest.raises(OptimizerConfigError, match="takes no option"):
        LabeledFewShot(max_demos=3)
    with pytest.raises(OptimizerConfigError, match="`k` takes an integer"):
        LabeledFewShot(k="3")
    with pytest.raises(OptimizerConfigError, match="0 or more"):
        LabeledFewShot(k=-1)
