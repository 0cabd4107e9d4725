"""The coverage rule (optimizers/coverage.py, issue 12): a teacher that passes only the rows of
one label still gives every strategy demo sets that cover the data's labels, no label takes
more than its fair share of the slots, and `balance: false` restores the choice before."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from lmpc.compiler.api import compile_source
from lmpc.compiler.diagnostics import CompileError
from lmpc.compiler.ir import to_json
from lmpc.optimizers import Bayesian, BootstrapFewShot, KNNFewShot, OptimizeContext, RandomSearch
from lmpc.runtime.data import Example
from lmpc.runtime.embed import Embedder, register_embedder

from .fake import HEADER, FakeModel, exact_label, track

TOPICS = ("sport", "tech", "money", "world", "health")

PROGRAM = HEADER + '''
type Topic = "sport" | "tech" | "money" | "world" | "health"
signature Classify = text -> label: Topic
pipeline topic(text: str) -> (label: Topic) {
    s = predict Classify(text: text)
    return label: s.label
}
'''


def graph(source: str = PROGRAM):
    (g,) = compile_source(source).graphs.values()
    return g


def rows(counts: dict[str, int], start: int = 0) -> list[Example]:
    """`counts[label]` rows per label, interleaved, texts `LABEL story N`."""
    out = []
    for i in range(max(counts.values())):
        for label, n in counts.items():
            if i < n:
                text = f"{label} story {i}"
                out.append(Example({"text": text}, {"label": label}, f"train.jsonl:{start + len(out) + 1}",
                                   {"text": text, "label": label}))
    return out


def always(label: str):
    """A collapsed model: the same label for every row (only that label's rows pass)."""
    return lambda f, demos, req: {"label": label}


def right(f, demos, req):
    return {"label": f["text"].split()[0]}


def context(train, dev=(), answer=always("sport"), **kw):
    models = {"m": FakeModel("m", answer), "other": FakeModel("other", answer)}
    return track(OptimizeContext(trainset=list(train), devset=list(dev), metric=exact_label, log=lambda _: None,
                                 models=models, **kw))


def labels(demos) -> Counter:
    return Counter(d["outputs"]["label"] for d in demos)


TRAIN = rows({"sport": 12, "tech": 6, "money": 6, "world": 5, "health": 5})


def test_bootstrap_on_a_collapsed_teacher_covers_every_label():
    result = BootstrapFewShot(max_demos=4, max_labeled=4).compile(graph(), context(TRAIN))
    demos = result.graph.nodes["s"]["demos"]
    assert len(demos) == 4 and len(labels(demos)) == 4, demos  # 4 slots, 4 different labels
    assert labels(demos)["sport"] == 1  # its fair share: ceil(4 / 5)
    assert [d["kind"] for d in demos if d["outputs"]["label"] == "sport"] == ["bootstrapped"]
    assert all(d["kind"] == "labeled" for d in demos if d["outputs"]["label"] != "sport")
    node = result.report["nodes"]["s"]
    assert sum(node["labels"].values()) == 4 and node["labels"]["sport"] == 1
    assert node["labels_not_passed"] == ["health", "money", "tech", "world"]
    # every label, once there are as many slots as labels
    result = BootstrapFewShot(max_demos=5, max_labeled=0).compile(graph(), context(TRAIN))
    assert labels(result.graph.nodes["s"]["demos"]) == Counter(dict.fromkeys(TOPICS, 1))


def test_balance_false_restores_the_collapse():
    result = BootstrapFewShot(max_demos=4, max_labeled=4, balance=False).compile(graph(), context(TRAIN))
    demos = result.graph.nodes["s"]["demos"]
    assert labels(demos) == Counter(sport=4) and {d["kind"] for d in demos} == {"bootstrapped"}
    assert "labels_not_passed" in result.report["nodes"]["s"]  # the report still says so


@pytest.mark.parametrize("slots", [2, 4, 8, 10, 16])
def test_no_label_takes_more_than_its_fair_share(slots):
    demos = BootstrapFewShot(max_demos=slots, max_labeled=slots).compile(graph(), context(TRAIN)).graph.nodes["s"]["demos"]
    assert len(demos) == slots
    assert max(labels(demos).values()) <= math.ceil(slots / len(TOPICS))
    assert len({d["source"] for d in demos}) == slots, "no row twice"


def test_a_label_takes_more_only_when_the_data_has_nothing_else():
    # 8 slots, 2 labels: 4 each, but `tech` has a single row, so `sport` takes the rest
    train = rows({"sport": 10, "tech": 1})
    demos = BootstrapFewShot(max_demos=8, max_labeled=8).compile(graph(), context(train)).graph.nodes["s"]["demos"]
    assert labels(demos) == Counter(sport=7, tech=1)
    # the bootstrapped demos are capped too: a teacher passing every row gives 4 + 4 of 8
    train = rows({"sport": 10, "tech": 6})
    demos = BootstrapFewShot(max_demos=8, max_labeled=0).compile(graph(), context(train, answer=right)).graph.nodes["s"]["demos"]
    assert labels(demos) == Counter(sport=4, tech=4) and {d["kind"] for d in demos} == {"bootstrapped"}


def test_when_every_label_passes_nothing_changes():
    # the round-robin over bootstrapped demos that came before: balance on and off agree
    train = rows({"sport": 6, "tech": 3, "money": 3})
    on = BootstrapFewShot(max_demos=4, max_labeled=0, seed=3).compile(graph(), context(train, answer=right))
    off = BootstrapFewShot(max_demos=4, max_labeled=0, seed=3, balance=False).compile(graph(), context(train, answer=right))
    assert to_json(on.graph) == to_json(off.graph)


def test_seeded_and_independent_of_the_row_order():
    def run(train, seed):
        return to_json(BootstrapFewShot(max_demos=4, max_labeled=6, seed=seed).compile(graph(), context(train)).graph)

    assert run(TRAIN, 1) == run(list(reversed(TRAIN)), 1)
    assert any(run(TRAIN, s) != run(TRAIN, 1) for s in range(2, 6))


def test_a_node_that_cannot_take_labeled_demos_covers_what_passed():
    two = HEADER + '''
type Topic = "sport" | "tech" | "money" | "world" | "health"
signature Clean = text -> cleaned: str
signature Classify = text -> label: Topic
pipeline topic(text: str) -> (label: Topic) {
    c = predict Clean(text: text)
    s = predict Classify(text: c.cleaned)
    return label: s.label
}
'''

    def answer(f, demos, req):
        if "cleaned" in req.json_schema["properties"]:
            return {"cleaned": f["text"]}
        return {"label": "sport"}

    result = BootstrapFewShot(max_demos=4, max_labeled=4).compile(graph(two), context(TRAIN, answer=answer))
    assert labels(result.graph.nodes["s"]["demos"]) == Counter(sport=4)  # nothing else to show
    assert "labeled_skipped" in result.report["nodes"]["s"]


def test_random_search_candidates_cover_every_label():
    dev = rows({t: 2 for t in TOPICS}, start=100)
    result = RandomSearch(candidates=5, max_demos=4, max_labeled=4).compile(graph(), context(TRAIN, dev))
    boot = [c for c in result.report["candidates"] if c["kind"] == "bootstrapped"]
    assert len(boot) == 3
    for c in boot:
        node = c["nodes"]["s"]
        assert len(node["labels"]) == min(sum(node["labels"].values()), len(TOPICS)), node
        assert max(node["labels"].values()) == 1
    off = RandomSearch(candidates=3, max_demos=4, max_labeled=4, balance=False).compile(graph(), context(TRAIN, dev))
    assert off.report["candidates"][2]["nodes"]["s"]["labels"] == {"sport": 4}


def test_bayesian_demo_sets_cover_every_label():
    dev = rows({t: 2 for t in TOPICS}, start=100)
    ctx = context(TRAIN, dev)
    opt = Bayesian(trials=1, instructions=1, demo_sets=3, minibatch=10, max_demos=4)
    sets, _, _ = opt._demo_sets(graph(), ctx, 0)
    assert len(sets["s"]) == 3
    first = sets["s"][1]
    assert len(first) == 4 and len(labels(first)) == 4
    for demos in sets["s"][1:]:
        assert max(labels(demos).values()) == 1
    off, _, _ = Bayesian(trials=1, instructions=1, demo_sets=2, max_demos=4, balance=False)._demo_sets(graph(), ctx, 0)
    assert labels(off["s"][1]) == Counter(sport=4)


class OneDim(Embedder):
    identity = "test:onedim"
    dim = 2

    def embed(self, texts):
        return [[1.0, float(len(t) % 7)] for t in texts]


def test_knn_pool_covers_every_label():
    register_embedder("onedim", OneDim)
    try:
        result = KNNFewShot(k=2, embedder="onedim").compile(graph(), context(TRAIN))
        pool = result.graph.nodes["s"]["knn"]["pool"]
        # a pool as large as the passing runs (12 `sport` rows), shared fairly by the 5 labels
        assert len(pool) == 12 and set(labels(pool)) == set(TOPICS)
        assert max(labels(pool).values()) == math.ceil(12 / 5)
        assert result.report["nodes"]["s"]["labels"] == dict(sorted(labels(pool).items()))
        off = KNNFewShot(k=2, embedder="onedim", balance=False).compile(graph(), context(TRAIN))
        assert labels(off.graph.nodes["s"]["knn"]["pool"]) == Counter(sport=12)
    finally:
        register_embedder("onedim", None)


def test_the_checker_reads_balance_from_the_option_table():
    source = PROGRAM + '''
optimize topic {
    train "t.jsonl"
    dev "d.jsonl"
    metric exact_match(label)
    strategy bootstrap_few_shot(balance: false) then random_search(balance: true)
}
'''
    compile_source(source)  # accepted
    with pytest.raises(CompileError, match=r"`bootstrap_few_shot`: `balance` takes true or false, not 3"):
        compile_source(source.replace("balance: false", "balance: 3"))
    with pytest.raises(CompileError, match=r"`labeled_few_shot` takes no option `balance`"):
        compile_source(source.replace("bootstrap_few_shot(balance: false)", "labeled_few_shot(balance: false)"))


def test_the_build_report_lists_demo_labels_and_the_shape_of_the_answers():
    from lmpc.optimizers.build import build, make_optimizers

    dev = rows({t: 2 for t in TOPICS}, start=100)
    logged: list[str] = []
    ctx = context(TRAIN, dev)
    ctx.log = logged.append
    chain = make_optimizers([{"name": "bootstrap_few_shot", "options": {"max_demos": 5, "max_labeled": 0}}])
    _, report = build(graph(), chain, ctx)
    assert report["demo_labels"] == {"s": dict.fromkeys(sorted(TOPICS), 1)}
    # the fake student answers `sport` whatever the demos: collapsed before and after
    for key in ("labels_before", "labels_after"):
        stats = report[key]["label"]
        assert stats["predicted"] == {"sport": 10} and stats["gold"] == dict.fromkeys(TOPICS, 2)
        assert stats["collapsed"] is True and stats["confusion"]["tech"]["sport"] == 2
    assert any(line.startswith("warning: result on dev: `label`: 100% of the predictions are 'sport'")
               for line in logged), logged
