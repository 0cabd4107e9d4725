"""The `majority` reducer: a pure builtin that votes across steps."""

from __future__ import annotations

import pytest

import lmpc
from lmpc.compiler.builtins import BUILTINS
from lmpc.compiler.api import analyze

majority = BUILTINS["majority"].impl


def test_majority_counts_and_breaks_ties_by_first_to_the_top():
    assert majority(["a", "b", "b"]) == "b"
    assert majority(["a", "b"]) == "a"
    assert majority(["b", "a", "a", "b"]) == "a"  # "a" reached 2 first
    assert majority([{"x": 1}, {"x": 2}, {"x": 1}]) == {"x": 1}
    assert majority([1, True, 1]) == 1  # JSON keys keep 1 and true apart
    with pytest.raises(ValueError):
        majority([])


def test_majority_is_typed_like_its_items():
    ok, diags = analyze('type L = "x" | "y"\nsignature S = t -> l: L\npipeline p(t: str) -> (l: L) {\n'
                        '  a = predict S(t: t)\n  return l: majority([a.l, a.l, "x"])\n}\n')
    assert ok is not None and not diags
    _, diags = analyze('pipeline p(t: str) -> (l: str) {\n  return l: majority(t)\n}\n')
    assert [d.code for d in diags] == ["bad-builtin-call"]


VOTE = '''
type Label = "positive" | "negative"
signature Sentiment = text -> label: Label
pipeline vote(text: str) -> (label: Label) {
    a = predict Sentiment(text: text)
    b = chain_of_thought Sentiment(text: text)
    c = predict Sentiment(text: concat("Tweet: ", text))
    return label: majority([a.label, b.label, c.label])
}
'''


def test_a_voting_pipeline_on_the_real_model():
    prog = lmpc.compile_source(VOTE, cache=False, trace_log=False)
    for text in ["I love it", "This is awful"]:
        r = prog(text=text)
        votes = [e.parsed["label"] for e in sorted(r.trace, key=lambda e: e.step)]
        assert len(votes) == 3 and r.label == majority(votes)
    assert prog.graph.nodes["a"]["level"] == prog.graph.nodes["b"]["level"]  # independent voters
    prog.close()
