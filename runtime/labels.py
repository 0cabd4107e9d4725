"""The shape of a classifier's answers: for each enum or bool output of a pipeline, the
predicted and gold label counts, a confusion table (gold x predicted, errors in their own
column), per-label precision / recall / F1, and whether the program collapsed onto one label.

A score alone hides a program that answers one label for everything: on 7 balanced intents
it still scores 1/7, and more when a few other answers happen to be right (issue 12).
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Sequence

# One label takes more than this share of the predictions ...
COLLAPSE_SHARE = 0.8
# ... while the gold labels are spread: the most frequent gold label is under this share
# (so a program that answers the true majority of a skewed set is not flagged).
SPREAD_SHARE = 0.6
# Fewer predictions than this say too little to call a collapse.
MIN_ROWS = 5
ERROR = "error"  # the confusion table's column for rows that failed or gave no value


def label_key(value: Any) -> str:
    """A label as tables and JSON keys show it: strings as they are, others as JSON (`true`)."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _allowed(schema: dict) -> list[Any] | None:
    if "enum" in schema:
        return list(schema["enum"])
    if schema.get("type") == "boolean":
        return [True, False]
    for s in schema.get("anyOf", ()):  # an optional enum or bool
        if s.get("type") != "null" and (found := _allowed(s)) is not None:
            return found
    return None


def label_fields(outputs: dict[str, dict]) -> dict[str, list[str]]:
    """Pipeline output name -> its labels in declared order, for enum and bool outputs."""
    out = {}
    for name, spec in outputs.items():
        allowed = _allowed(spec.get("schema") or {})
        if allowed is not None:
            out[name] = [label_key(v) for v in allowed]
    return out


def _share(counts: dict[str, int]) -> tuple[str | None, float]:
    total = sum(counts.values())
    if not total:
        return None, 0.0
    top = max(counts, key=lambda k: counts[k])  # first of the most frequent, in table order
    return top, counts[top] / total


def _ordered(declared: Sequence[str], seen: Iterable[str]) -> list[str]:
    """Declared labels first (in their order), then any other value seen (sorted)."""
    extra = sorted(set(seen) - set(declared))
    return list(declared) + extra


def field_stats(field: str, declared: Sequence[str], rows: Iterable[tuple[dict, dict | None, bool]]) -> dict[str, Any]:
    """rows: (gold, prediction, failed) per example. Rows without gold for `field` count in
    `predicted` only; a failed row (or one without a value for the field) is an `error`."""
    predicted: dict[str, int] = {}
    gold: dict[str, int] = {}
    pairs: list[tuple[str, str]] = []
    errors = 0
    for g, p, failed in rows:
        pred = ERROR if failed or p is None or field not in p else label_key(p[field])
        if pred == ERROR:
            errors += 1
        else:
            predicted[pred] = predicted.get(pred, 0) + 1
        if field in g:
            truth = label_key(g[field])
            gold[truth] = gold.get(truth, 0) + 1
            pairs.append((truth, pred))
    labels = _ordered(declared, list(predicted) + list(gold))
    confusion = {t: {**{p: 0 for p in labels}, ERROR: 0} for t in labels if t in gold}
    for t, p in pairs:
        confusion[t][p] += 1
    per_label = {}
    for lab in labels:
        tp = confusion.get(lab, {}).get(lab, 0)
        n_pred, n_gold = predicted.get(lab, 0), gold.get(lab, 0)
        if not n_pred and not n_gold:
            continue
        precision = tp / n_pred if n_pred else 0.0
        recall = tp / n_gold if n_gold else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_label[lab] = {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
                          "support": n_gold}
    scored = [v["f1"] for k, v in per_label.items() if v["support"]]
    top, share = _share(predicted)
    gold_top, gold_share = _share(gold)
    collapsed = (sum(predicted.values()) >= MIN_ROWS and share > COLLAPSE_SHARE and len(gold) >= 2
                 and gold_share < SPREAD_SHARE)
    return {
        "predicted": {k: predicted[k] for k in labels if k in predicted},
        "errors": errors,
        "gold": {k: gold[k] for k in labels if k in gold},
        "confusion": confusion,
        "per_label": per_label,
        "macro_f1": round(sum(scored) / len(scored), 4) if scored else 0.0,
        "top_predicted": {"label": top, "share": round(share, 4)},
        "top_gold": {"label": gold_top, "share": round(gold_share, 4)},
        "collapsed": collapsed,
    }


def collapse_warning(field: str, stats: dict[str, Any]) -> str | None:
    """One line for a collapsed field (None when it did not collapse)."""
    if not stats.get("collapsed"):
        return None
    top, gold = stats["top_predicted"], stats["top_gold"]
    return (f"`{field}`: {top['share']:.0%} of the predictions are {label_key(top['label'])!r} while the most "
            f"frequent gold label is {gold['share']:.0%} of the rows: the program answers one label for "
            f"almost every input (see the confusion table)")
