"""recall_at_k: the share of the gold passage ids among a prediction's first k ids, scored by
the runtime and checked (name, option type and range, positioned) by `lmpc check`."""

from __future__ import annotations

from typing import Any

import pytest

from lmpc.compiler.api import analyze
from lmpc.runtime.data import Example
from lmpc.runtime.metrics import MetricError, make_metric


def recall(*fields: str, **options: Any):
    return make_metric({"name": "recall_at_k", "kind": "builtin", "fields": list(fields), "options": options})


def ex(gold: dict[str, Any]) -> Example:
    return Example({"question": "q"}, gold, "dev.jsonl:4", {})


def test_share_of_gold_ids_in_the_first_k() -> None:
    gold = ex({"sources": ["a", "b"]})
    assert recall("sources", k=5)(gold, {"sources": ["x", "a", "y", "z", "b", "w"]}) == 1.0
    assert recall("sources", k=4)(gold, {"sources": ["x", "a", "y", "z", "b", "w"]}) == 0.5  # b is 5th
    assert recall("sources", k=1)(gold, {"sources": ["x", "a"]}) == 0.0
    assert recall("sources")(gold, {"sources": ["x", "y", "z", "w", "v", "b"]}) == 0.5  # no k: the whole list
    assert recall("sources", k=3)(gold, {"sources": ["a", "a", "a"]}) == 0.5  # a repeated id counts once
    assert recall("sources", k=3)(gold, {"sources": []}) == 0.0


def test_one_gold_id_integers_and_missing_predictions() -> None:
    assert recall("sources", k=2)(ex({"sources": "b"}), {"sources": ["a", "b"]}) == 1.0  # one id, not a list
    assert recall("sources", k=2)(ex({"sources": [7]}), {"sources": ["7"]}) == 1.0  # ids compare as text
    assert recall("sources", k=2)(ex({"sources": ["a"]}), {"sources": "a"}) == 0.0  # not a list of ids
    assert recall("sources", k=2)(ex({"sources": ["a"]}), {}) == 0.0  # the program gave nothing
    # averaged over the named outputs, as the other builtins are
    two = ex({"first": ["a"], "second": ["b"]})
    assert recall("first", "second", k=1)(two, {"first": ["a"], "second": ["c"]}) == 0.5


def test_gold_that_cannot_be_scored_and_bad_k() -> None:
    with pytest.raises(MetricError, match="empty list; recall needs at least one gold id"):
        recall("sources", k=3)(ex({"sources": []}), {"sources": ["a"]})
    with pytest.raises(MetricError, match=r"example dev\.jsonl:4 has no gold value for `sources`"):
        recall("sources", k=3)(ex({"answer": "x"}), {"sources": ["a"]})
    for bad in (0, -1, 2.5, True, "5"):
        with pytest.raises(MetricError, match="k must be a whole number >= 1"):
            recall("sources", k=bad)


PROGRAM = '''retriever docs = index(corpus: "p.jsonl")

signature Answer = question, context: list[str] -> answer: str

pipeline rag(question: str) -> (answer: str, sources: list[str]) {
    ctx = retrieve docs(query: question, k: 5)
    a = predict Answer(question: question, context: ctx.passages)
    return answer: a.answer, sources: ctx.ids
}

optimize rag {
    train  "train.jsonl"
    metric METRIC
}
'''


def diagnostics(metric: str) -> list:
    _, diags = analyze(PROGRAM.replace("METRIC", metric), "rag.lmp")
    return [d for d in diags if d.is_error]


def test_lmpc_check_accepts_recall_at_k() -> None:
    assert diagnostics("recall_at_k(sources, k: 5)") == []
    assert diagnostics("recall_at_k(sources)") == []


@pytest.mark.parametrize("metric, code, col, message", [
    ("recall_at_k(sources, k: 0)", "bad-optimize-option", 36, "`recall_at_k`: `k` must be 1 or more, not 0"),
    ("recall_at_k(sources, k: 2.5)", "bad-optimize-option", 36, "`k` takes an integer, not 2.5"),
    ('recall_at_k(sources, k: "5")', "bad-optimize-option", 36, "`k` takes an integer, not the string '5'"),
    ("recall_at_k(sources, depth: 5)", "bad-optimize-option", 33, "`recall_at_k` takes no option `depth`"),
    ("recall_at_k(source, k: 5)", "unknown-field", 24, "pipeline `rag` has no output `source`"),
    ("recal_at_k(sources, k: 5)", "unknown-metric", 12, "unknown metric `recal_at_k`"),
])
def test_lmpc_check_positions_bad_recall_options(metric: str, code: str, col: int, message: str) -> None:
    errors = diagnostics(metric)
    assert len(errors) == 1, errors
    d = errors[0]
    assert d.code == code and message in d.message, d
    assert (d.span.line, d.span.col) == (13, col), d
