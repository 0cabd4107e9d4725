"""Metrics: normalization, the builtins, Python metrics and the judge metric (with a plain
Python function standing in for the judge pipeline; the real-model judge is tested elsewhere)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest

from lmpc.compiler.optimize_spec import METRICS
from lmpc.runtime.data import Example
from lmpc.runtime.errors import LmpcRuntimeError
from lmpc.runtime.metrics import BUILTIN_METRICS, MetricError, make_metric, normalize_text, python_metric


def ex(gold: dict[str, Any], inputs: dict[str, Any] | None = None, source: str = "d.jsonl:3") -> Example:
    return Example(inputs or {"q": "question?"}, gold, source, {})


def builtin(name: str, *fields: str, **options: Any):
    return make_metric({"name": name, "kind": "builtin", "fields": list(fields), "options": options})


# --- normalization --------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("The Cat", "cat"),
    ("  a   quick\tbrown\n fox ", "quick brown fox"),
    ("Hello, World!!!", "hello world"),
    ("An apple and THE pear", "apple and pear"),
    ("theme another", "theme another"),  # articles only as whole words
    ("don't", "dont"),
    ("$1,000.50", "100050"),
    ("“Quoted” — text…", "quoted text"),  # Unicode punctuation
    ("café", "cafe\u0301".replace("e\u0301", "é")),
    ("cafe\u0301", "café"),  # decomposed accent == composed
    ("ＡＢＣ", "abc"),  # full-width letters
    ("STRASSE", "strasse"),
    ("Straße", "strasse"),  # casefold
    ("", ""),
    ("the a an", ""),
])
def test_normalize_text(text: str, expected: str) -> None:
    assert normalize_text(text) == expected


# --- builtins -------------------------------------------------------------------------------


def test_exact_match_normalizes_strings_only() -> None:
    m = builtin("exact_match", "answer")
    assert m(ex({"answer": "The Eiffel Tower"}), {"answer": "eiffel tower."}) == 1.0
    assert m(ex({"answer": "Eiffel Tower"}), {"answer": "Tower"}) == 0.0
    assert m(ex({"answer": 7}), {"answer": 7}) == 1.0
    assert m(ex({"answer": 7}), {"answer": 7.0}) == 1.0
    assert m(ex({"answer": 1}), {"answer": True}) == 0.0, "a bool is not the number 1"
    assert m(ex({"answer": 7}), {"answer": "7"}) == 0.0
    assert m(ex({"answer": "x"}), {}) == 0.0, "a missing prediction scores 0"


def test_a_list_gold_is_a_list_of_acceptable_answers() -> None:
    gold = {"answer": ["Paris", "City of Paris", "paris, france"]}
    assert builtin("exact_match", "answer")(ex(gold), {"answer": "Paris, France"}) == 1.0
    assert builtin("exact_match", "answer")(ex(gold), {"answer": "Lyon"}) == 0.0
    assert builtin("f1", "answer")(ex(gold), {"answer": "the city of paris"}) == 1.0
    assert builtin("accuracy", "label")(ex({"label": ["a", "b"]}), {"label": "b"}) == 1.0
    assert builtin("numeric_match", "n", tolerance=1)(ex({"n": [10, 20]}), {"n": 19}) == 1.0
    # a list output is compared as a whole
    assert builtin("exact_match", "tags")(ex({"tags": ["a", "b"]}), {"tags": ["a", "b"]}) == 1.0
    assert builtin("exact_match", "tags")(ex({"tags": ["a", "b"]}), {"tags": ["a"]}) == 0.0


def test_accuracy_is_exact() -> None:
    m = builtin("accuracy", "label")
    assert m(ex({"label": "positive"}), {"label": "positive"}) == 1.0
    assert m(ex({"label": "positive"}), {"label": "Positive"}) == 0.0
    assert m(ex({"label": "positive"}), {"label": "positive."}) == 0.0


def test_f1_partial_overlap() -> None:
    m = builtin("f1", "answer")
    # gold tokens: quick brown fox (3); prediction: brown fox jumps over (4); common 2
    # precision 2/4, recall 2/3 -> F1 = 2 * 0.5 * 0.667 / 1.167 = 4/7
    assert m(ex({"answer": "the quick brown fox"}), {"answer": "Brown fox jumps over"}) == pytest.approx(4 / 7)
    assert m(ex({"answer": "a b"}), {"answer": "c d"}) == 0.0
    assert m(ex({"answer": "the"}), {"answer": "an"}) == 1.0, "both normalize to nothing"
    assert m(ex({"answer": "x"}), {"answer": "the"}) == 0.0
    assert m(ex({"answer": "an apple"}), {"answer": "The apple"}) == 1.0, "articles dropped first"
    assert m(ex({"answer": "x x y"}), {"answer": "x y y"}) == pytest.approx(2 / 3), "token counts matter"


def test_contains_on_whole_tokens() -> None:
    m = builtin("contains", "answer")
    assert m(ex({"answer": "Eiffel Tower"}), {"answer": "It is the eiffel tower, in Paris."}) == 1.0
    assert m(ex({"answer": "4"}), {"answer": "42 apples"}) == 0.0
    assert m(ex({"answer": "4"}), {"answer": "I count 4."}) == 1.0
    assert m(ex({"answer": "tower eiffel"}), {"answer": "eiffel tower"}) == 0.0


@pytest.mark.parametrize("gold, predicted, tolerance, score", [
    (12, 12, 0, 1.0),
    (12, "12", 0, 1.0),
    (12, "12 apples", 0, 1.0),
    (12, "I have 12 apples and 3 pears", 0, 1.0),
    (12, "about 13", 0, 0.0),
    (12, "about 13", 1, 1.0),
    (12, 13.5, 1, 0.0),
    (1000, "$1,000", 0, 1.0),
    (-3, "-3 degrees", 0, 1.0),
    (0.5, ".5", 0, 1.0),
    (2.5, "2.5kg", 0, 1.0),
    (0.3, 0.1 + 0.2, 0, 1.0),
    (12, "twelve", 0, 0.0),
    (12, "", 0, 0.0),
    (12, True, 0, 0.0),
    (12, None, 0, 0.0),
    (12, ["12"], 0, 0.0),
    ("12", 12, 0, 1.0),
])
def test_numeric_match(gold: Any, predicted: Any, tolerance: float, score: float) -> None:
    assert builtin("numeric_match", "n", tolerance=tolerance)(ex({"n": gold}), {"n": predicted}) == score


def test_numeric_match_rejects_bad_gold_and_tolerance() -> None:
    with pytest.raises(MetricError, match="the gold value 'many' is not a number"):
        builtin("numeric_match", "n")(ex({"n": "many"}), {"n": 3})
    with pytest.raises(MetricError, match="tolerance must be a number >= 0, not -1"):
        builtin("numeric_match", "n", tolerance=-1)
    with pytest.raises(MetricError, match="tolerance must be a number >= 0, not 'x'"):
        builtin("numeric_match", "n", tolerance="x")


def test_set_match_ignores_order_duplicates_and_case() -> None:
    m = builtin("set_match", "tags")
    assert m(ex({"tags": ["Red", "blue"]}), {"tags": ["blue", "red", "the red"]}) == 1.0
    assert m(ex({"tags": ["red", "blue"]}), {"tags": ["red"]}) == 0.0
    assert m(ex({"tags": ["red"]}), {"tags": ["red", "green"]}) == 0.0
    assert m(ex({"tags": []}), {"tags": []}) == 1.0
    assert m(ex({"tags": ["red"]}), {"tags": "red"}) == 0.0
    with pytest.raises(MetricError, match="the gold value 'red' is not a list"):
        m(ex({"tags": "red"}), {"tags": ["red"]})


def test_several_fields_score_the_mean() -> None:
    gold = {"city": "Paris", "country": "France", "year": 1889}
    prediction = {"city": "paris", "country": "Italy", "year": 1889}
    assert builtin("exact_match", "city", "country")(ex(gold), prediction) == 0.5
    # no fields: every output that has gold in this example
    assert builtin("exact_match")(ex(gold), prediction) == pytest.approx(2 / 3)
    assert builtin("exact_match")(ex({"city": "Paris"}), prediction) == 1.0


def test_missing_gold_is_an_error_naming_field_and_example() -> None:
    with pytest.raises(MetricError, match=r"exact_match: example d\.jsonl:3 has no gold value for `label`"):
        builtin("exact_match", "label")(ex({"other": "x"}), {"label": "x"})
    with pytest.raises(MetricError, match=r"f1: example train\.csv:9 has no gold value for any output"):
        builtin("f1")(ex({}, source="train.csv:9"), {"label": "x"})
    assert issubclass(MetricError, LmpcRuntimeError)


def test_registry_agrees_with_the_compiler() -> None:
    assert list(BUILTIN_METRICS) == list(METRICS)
    for name, factory in BUILTIN_METRICS.items():
        options = [p for p in inspect.signature(factory).parameters if p != "fields"]
        assert tuple(options) == METRICS[name], name


def test_unknown_metric_and_option() -> None:
    with pytest.raises(MetricError, match="unknown metric `exact`; available: exact_match, accuracy, f1, contains, "
                                          "numeric_match, set_match, recall_at_k"):
        builtin("exact")
    with pytest.raises(MetricError, match=r"`exact_match` takes no option `tolerance` \(it takes none\)"):
        builtin("exact_match", "a", tolerance=1)
    with pytest.raises(MetricError, match=r"`numeric_match` takes no option `tol` \(options: tolerance\)"):
        builtin("numeric_match", "a", tol=1)


# --- Python metrics -------------------------------------------------------------------------

METRICS_PY = '''
def as_bool(gold, prediction, inputs):
    return prediction["label"] == gold["label"]

def as_float(gold, prediction, inputs):
    return 0.25 if inputs["q"].endswith("?") else 0.0

def two(gold, prediction, inputs):
    return 2.0

def text(gold, prediction, inputs):
    return "x"

def meddles(gold, prediction, inputs):
    gold.clear()
    return 1

def raises(gold, prediction, inputs):
    raise KeyError("answer")
'''


@pytest.fixture
def metrics_dir(tmp_path: Path) -> Path:
    (tmp_path / "m.py").write_text(METRICS_PY)
    return tmp_path


def python(ref: str, base: Path):
    return make_metric({"name": ref, "kind": "python", "fields": [], "options": {}}, base_dir=base)


def test_python_metric_bool_and_float(metrics_dir: Path) -> None:
    m = python("m.py:as_bool", metrics_dir)
    assert m(ex({"label": "a"}), {"label": "a"}) == 1.0 and m(ex({"label": "a"}), {"label": "b"}) == 0.0
    assert python("m.py:as_float", metrics_dir)(ex({}), {}) == 0.25
    example = ex({"label": "a"})
    assert python_metric("m.py:meddles", metrics_dir)(example, {}) == 1.0
    assert example.gold == {"label": "a"}, "the function gets copies"


@pytest.mark.parametrize("fn, shown", [("two", "2.0"), ("text", "'x'")])
def test_python_metric_bad_values(metrics_dir: Path, fn: str, shown: str) -> None:
    with pytest.raises(MetricError, match=f'metric "m.py:{fn}" returned {shown}; a metric must return a bool '
                                          "or a number from 0 to 1"):
        python(f"m.py:{fn}", metrics_dir)(ex({}), {})


def test_python_metric_load_errors_and_its_own_exceptions(metrics_dir: Path) -> None:
    with pytest.raises(MetricError, match=r'metric "m.py:nope": m\.py has no function `nope`'):
        python("m.py:nope", metrics_dir)
    with pytest.raises(MetricError, match=r'metric "other.py:f": no file .*other\.py'):
        python("other.py:f", metrics_dir)
    with pytest.raises(KeyError):  # the evaluation loop isolates a user's exception
        python("m.py:raises", metrics_dir)(ex({}), {})


# --- judge metrics --------------------------------------------------------------------------


def judge_spec(name: str = "judge") -> dict[str, Any]:
    return {"name": name, "kind": "pipeline", "fields": ["answer"], "options": {}}


def test_judge_gets_inputs_prediction_and_gold_by_the_names_it_takes() -> None:
    seen: list[dict[str, Any]] = []

    def judge(inputs: dict[str, Any]) -> dict[str, Any]:
        seen.append(inputs)
        return {"correct": inputs["answer"] == inputs["gold_answer"], "why": "..."}

    m = make_metric(judge_spec(), judge=judge, judge_inputs={"q", "answer", "gold_answer"})
    example = ex({"answer": "42", "other": "x"}, inputs={"q": "meaning?", "unused": 1})
    assert m(example, {"answer": "42", "reasoning": "..."}) == 1.0
    assert seen[-1] == {"q": "meaning?", "answer": "42", "gold_answer": "42"}
    assert m(example, {"answer": "41"}) == 0.0


@pytest.mark.parametrize("answer, score", [
    (True, 1.0), (False, 0.0), (1, 1.0), (0, 0.0), (0.75, 0.75),
    ("yes", 1.0), (" Yes ", 1.0), ("TRUE", 1.0), ("no", 0.0), ("false", 0.0),
])
def test_judge_answers_as_scores(answer: Any, score: float) -> None:
    m = make_metric(judge_spec(), judge=lambda _: {"verdict": answer})
    assert m(ex({}), {"answer": "a"}) == score


@pytest.mark.parametrize("answer, shown", [(1.5, "1.5"), (-1, "-1"), ("maybe", "'maybe'"), (None, "None")])
def test_judge_answers_that_are_not_scores(answer: Any, shown: str) -> None:
    m = make_metric(judge_spec("grader"), judge=lambda _: {"verdict": answer})
    with pytest.raises(MetricError, match=f"the judge pipeline `grader` (answered|returned) {shown}"):
        m(ex({}), {"answer": "a"})


def test_judge_missing_values_and_no_runner() -> None:
    m = make_metric(judge_spec(), judge=lambda _: {"ok": True}, judge_inputs={"answer", "gold_answer"})
    with pytest.raises(MetricError,
                       match=r"takes `gold_answer`, but example d\.jsonl:3 has no gold value for `answer`"):
        m(ex({}), {"answer": "a"})
    m = make_metric(judge_spec(), judge=lambda _: {"ok": True}, judge_inputs={"context"})
    with pytest.raises(MetricError, match="takes `context`, which is neither an input nor an output"):
        m(ex({}), {"answer": "a"})
    with pytest.raises(MetricError, match="returned no output"):
        make_metric(judge_spec(), judge=lambda _: {})(ex({}), {"answer": "a"})
    with pytest.raises(MetricError, match="no judge was given"):
        make_metric(judge_spec())
