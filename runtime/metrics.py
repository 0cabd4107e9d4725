"""Metrics: score one prediction against one example's gold values, from 0 to 1.

A metric is a plain callable (example, predicted outputs) -> float, so optimizers and the
evaluation loop treat builtins, Python functions and LM judges alike. A prediction that lacks
a scored output scores 0 (models fail; that is what is being measured); an example that lacks
the gold value is a MetricError, since no score can be right for it.
"""

from __future__ import annotations

import inspect
import math
import numbers
import re
import string
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from lmpc.runtime.calls import load_function
from lmpc.runtime.data import Example
from lmpc.compiler.errors import EXIT_USAGE
from lmpc.runtime.errors import LmpcRuntimeError

Metric = Callable[[Example, dict[str, Any]], float]


class MetricError(LmpcRuntimeError):
    """A metric cannot score: missing gold, a bad option, or a metric that returned nonsense."""

    exit_code = EXIT_USAGE  # a metric that cannot be made; one that fails on a row scores it 0


# --- text normalization -----------------------------------------------------------------------

_ASCII_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def _is_punctuation(ch: str) -> bool:
    # SQuAD strips string.punctuation (which includes symbols such as $ and +); also strip
    # Unicode punctuation, so curly quotes and dashes from a model do not break a match.
    return ch in _ASCII_PUNCTUATION or unicodedata.category(ch).startswith("P")


def normalize_text(s: str) -> str:
    """SQuAD-style: lowercase, drop punctuation and the articles a/an/the, collapse whitespace.

    NFKC first, so composed and decomposed accents (and full-width letters) compare equal."""
    s = unicodedata.normalize("NFKC", s).casefold()
    s = "".join(ch for ch in s if not _is_punctuation(ch))
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# --- field handling shared by the builtins ---------------------------------------------------

Compare = Callable[[Any, Any], float]  # (gold value, predicted value) -> score


def _fields_metric(name: str, fields: list[str], compare: Compare, alternatives: bool = True) -> Metric:
    """A metric over `fields` (all gold outputs when empty), averaging per-field scores.

    alternatives: a list gold value for a non-list prediction is a list of acceptable
    answers, scored by the best of them."""
    chosen = list(fields)

    def metric(example: Example, prediction: dict[str, Any]) -> float:
        names = chosen or list(example.gold)
        if not names:
            raise MetricError(f"{name}: example {example.source} has no gold value for any output")
        total = 0.0
        for field in names:
            if field not in example.gold:
                raise MetricError(f"{name}: example {example.source} has no gold value for `{field}`")
            gold, predicted = example.gold[field], prediction.get(field)
            if predicted is None and gold is not None:
                continue  # the model gave nothing: 0 for this field
            if alternatives and isinstance(gold, list) and not isinstance(predicted, list):
                total += max((compare(g, predicted) for g in gold), default=0.0)
            else:
                total += compare(gold, predicted)
        return total / len(names)

    metric.__name__ = name
    return metric


def _equal(a: Any, b: Any) -> bool:
    # True == 1 in Python, but a boolean output is not the number 1
    return isinstance(a, bool) == isinstance(b, bool) and a == b


# --- the builtins -----------------------------------------------------------------------------


def exact_match(fields: list[str]) -> Metric:
    def compare(gold: Any, predicted: Any) -> float:
        if isinstance(gold, str) and isinstance(predicted, str):
            return float(normalize_text(gold) == normalize_text(predicted))
        return float(_equal(gold, predicted))

    return _fields_metric("exact_match", fields, compare)


def accuracy(fields: list[str]) -> Metric:
    return _fields_metric("accuracy", fields, lambda gold, predicted: float(_equal(gold, predicted)))


def _f1(gold: Any, predicted: Any) -> float:
    gold_tokens = normalize_text(_text(gold)).split()
    pred_tokens = normalize_text(_text(predicted)).split()
    if not gold_tokens or not pred_tokens:
        return float(gold_tokens == pred_tokens)
    common = sum((Counter(gold_tokens) & Counter(pred_tokens)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred_tokens), common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def f1(fields: list[str]) -> Metric:
    return _fields_metric("f1", fields, _f1)


def _contains(gold: Any, predicted: Any) -> float:
    g, p = normalize_text(_text(gold)), normalize_text(_text(predicted))
    if not g:
        return float(not p)
    # whole tokens: the answer "4" is not contained in "42"
    return float(f" {g} " in f" {p} ")


def contains(fields: list[str]) -> Metric:
    return _fields_metric("contains", fields, _contains)


_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)?(?:\.\d+)?(?:[eE][-+]?\d+)?")


def _parse_number(value: Any) -> float | None:
    """A number, or the first number written in a string ("12 apples" -> 12.0); else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Real):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, str):
        for match in _NUMBER.finditer(value):
            digits = match.group().replace(",", "")
            if any(ch.isdigit() for ch in digits.split("e")[0].split("E")[0]):
                try:
                    number = float(digits)
                except ValueError:
                    continue
                return number if math.isfinite(number) else None
    return None


def numeric_match(fields: list[str], tolerance: float = 0) -> Metric:
    if isinstance(tolerance, bool) or not isinstance(tolerance, numbers.Real) or not tolerance >= 0:
        raise MetricError(f"numeric_match: tolerance must be a number >= 0, not {tolerance!r}")

    def compare(gold: Any, predicted: Any) -> float:
        g = _parse_number(gold)
        if g is None:
            raise MetricError(f"numeric_match: the gold value {gold!r} is not a number")
        p = _parse_number(predicted)
        if p is None:
            return 0.0
        # a hair of slack for binary floating point: 0.1 + 0.2 should match 0.3 at tolerance 0
        return float(abs(g - p) <= float(tolerance) + 1e-9 * max(1.0, abs(g)))

    return _fields_metric("numeric_match", fields, compare)


def set_match(fields: list[str]) -> Metric:
    def compare(gold: Any, predicted: Any) -> float:
        if not isinstance(gold, list):
            raise MetricError(f"set_match: the gold value {gold!r} is not a list")
        if not isinstance(predicted, list):
            return 0.0
        return float({normalize_text(_text(v)) for v in gold} == {normalize_text(_text(v)) for v in predicted})

    return _fields_metric("set_match", fields, compare, alternatives=False)


def recall_at_k(fields: list[str], k: int | None = None) -> Metric:
    """The share of the gold ids (a list, or one id) among the first k predicted ids (all of
    them without k): recall@k of a retrieve step's `ids`. Ids compare as text, exactly."""
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise MetricError(f"recall_at_k: k must be a whole number >= 1, not {k!r}")

    def compare(gold: Any, predicted: Any) -> float:
        wanted = {_text(g) for g in (gold if isinstance(gold, list) else [gold])}
        if not wanted:
            raise MetricError("recall_at_k: the gold value is an empty list; recall needs at least one gold id")
        if not isinstance(predicted, list):
            return 0.0
        found = {_text(p) for p in (predicted if k is None else predicted[:k])}
        return len(wanted & found) / len(wanted)

    return _fields_metric("recall_at_k", fields, compare, alternatives=False)


# name -> factory(fields, **options); the names and options are those of
# compiler/optimize_spec.METRICS (a test checks that the two agree).
BUILTIN_METRICS: dict[str, Callable[..., Metric]] = {
    "exact_match": exact_match,
    "accuracy": accuracy,
    "f1": f1,
    "contains": contains,
    "numeric_match": numeric_match,
    "set_match": set_match,
    "recall_at_k": recall_at_k,
}


# --- Python and judge metrics -----------------------------------------------------------------


def _as_score(value: Any, what: str) -> float:
    """A metric's result as a score: a bool, or a finite number from 0 to 1."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, numbers.Real) and math.isfinite(float(value)) and 0.0 <= float(value) <= 1.0:
        return float(value)
    raise MetricError(f"{what} returned {value!r}; a metric must return a bool or a number from 0 to 1")


def python_metric(ref: str, base_dir: Path) -> Metric:
    """`file.py:function`, called as function(gold, prediction, inputs) -> bool or 0..1."""
    try:
        fn = load_function(ref, base_dir)  # now, so a wrong name fails before any model call
    except LmpcRuntimeError as e:
        message, prefix = str(e), f'call "{ref}": '
        raise MetricError(f'metric "{ref}": {message.removeprefix(prefix)}') from None

    def metric(example: Example, prediction: dict[str, Any]) -> float:
        # copies: a user's function that edits its arguments must not change the example
        value = fn(dict(example.gold), dict(prediction), dict(example.inputs))
        return _as_score(value, f'metric "{ref}"')

    metric.__name__ = ref
    return metric


def _judge_score(value: Any, name: str) -> float:
    if isinstance(value, str):
        word = value.strip().lower()
        if word in ("yes", "true"):
            return 1.0
        if word in ("no", "false"):
            return 0.0
        raise MetricError(f"the judge pipeline `{name}` answered {value!r}; a string score must be "
                          "yes, no, true or false")
    return _as_score(value, f"the judge pipeline `{name}`")


def judge_metric(name: str, judge: Callable[[dict[str, Any]], dict[str, Any]],
                 judge_inputs: set[str] | None = None) -> Metric:
    """An LM judge: the pipeline `name` run on the example's inputs, the prediction's outputs
    and the gold values (as gold_<output>); its first output is the score."""

    def metric(example: Example, prediction: dict[str, Any]) -> float:
        # the prediction is what is judged: it wins over an input of the same name
        available = {**example.inputs, **prediction, **{f"gold_{k}": v for k, v in example.gold.items()}}
        if judge_inputs is None:
            arguments = available
        else:
            missing = sorted(judge_inputs - set(available))
            for field in missing:
                if field.startswith("gold_"):
                    raise MetricError(f"the judge pipeline `{name}` takes `{field}`, but example "
                                      f"{example.source} has no gold value for `{field[5:]}`")
            if missing:
                raise MetricError(f"the judge pipeline `{name}` takes `{missing[0]}`, which is neither an "
                                  "input nor an output of the judged pipeline, nor gold_<output>")
            arguments = {k: available[k] for k in judge_inputs}
        outputs = judge(arguments)
        if not outputs:
            raise MetricError(f"the judge pipeline `{name}` returned no output to use as the score")
        return _judge_score(next(iter(outputs.values())), name)

    metric.__name__ = name
    return metric


def make_metric(spec: dict[str, Any], base_dir: Path | None = None,
                judge: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                judge_inputs: set[str] | None = None) -> Metric:
    """A Metric from the compiler's spec: {"name", "kind": builtin|python|pipeline, "fields", "options"}.

    judge runs the judge pipeline (inputs dict -> outputs dict) for kind "pipeline";
    judge_inputs, the names it takes, selects what it is given."""
    name, kind = spec["name"], spec.get("kind", "builtin")
    fields, options = list(spec.get("fields") or []), dict(spec.get("options") or {})
    if kind == "python":
        return python_metric(name, Path(base_dir) if base_dir is not None else Path.cwd())
    if kind == "pipeline":
        if judge is None:
            raise MetricError(f"the metric is the judge pipeline `{name}`, but no judge was given to run it")
        return judge_metric(name, judge, judge_inputs)
    if kind != "builtin":
        raise MetricError(f"unknown metric kind `{kind}` (builtin, python or pipeline)")
    factory = BUILTIN_METRICS.get(name)
    if factory is None:
        raise MetricError(f"unknown metric `{name}`; available: {', '.join(BUILTIN_METRICS)}, "
                          'a judge pipeline, or "file.py:function"')
    allowed = [p for p in inspect.signature(factory).parameters if p != "fields"]
    for option in options:
        if option not in allowed:
            raise MetricError(f"`{name}` takes no option `{option}` "
                              f"({'options: ' + ', '.join(allowed) if allowed else 'it takes none'})")
    return factory(fields, **options)
