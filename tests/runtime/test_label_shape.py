"""The shape of a classifier's answers (runtime/labels.py, issue 12): label counts, the
confusion table with errors in their own column, per-label precision/recall/F1, and the
warning when a program answers one label for almost everything, in lmpc.evaluate, in
`lmpc eval` (text and --json) and escaped when printed."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

import lmpc
from lmpc.cli_labels import print_labels
from lmpc.runtime.labels import field_stats, label_fields

ROOT = Path(__file__).resolve().parents[2]
TOPICS = ["sport", "tech", "money", "world"]

# A planted degenerate program: a Python step that answers `sport` for every text but one
# (`tech`), and fails on texts that say "boom". No model: deterministic and fast.
DEGENERATE = '''
type Topic = "sport" | "tech" | "money" | "world"
signature Classify = text: str -> label: Topic
pipeline classify(text: str) -> (label: Topic) {
    c = call "tools.py:classify" Classify(text: text)
    return label: c.label
}
'''
TOOLS = '''
def classify(text):
    if "boom" in text:
        raise ValueError("boom")
    return "tech" if text == "tech 0" else "sport"
'''
FAIR = TOOLS.replace('return "tech" if text == "tech 0" else "sport"', "return text.split()[0]")


def rows() -> list[dict]:
    out = [{"text": f"{t} {i}", "label": t} for i in range(3) for t in TOPICS]  # 12 rows, 3 per topic
    return out + [{"text": "money boom", "label": "money"}]


@pytest.fixture
def planted(tmp_path):
    def make(tools: str) -> Path:
        (tmp_path / "tools.py").write_text(tools)
        src = tmp_path / "classify.lmp"
        src.write_text(DEGENERATE)
        (tmp_path / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows()))
        return src
    return make


def test_counts_confusion_and_per_label_figures():
    data = [({"label": "a"}, {"label": "a"}, False), ({"label": "a"}, {"label": "b"}, False),
            ({"label": "b"}, {"label": "b"}, False), ({"label": "b"}, None, True), ({}, {"label": "c"}, False)]
    s = field_stats("label", ["a", "b", "c"], data)
    assert s["predicted"] == {"a": 1, "b": 2, "c": 1} and s["errors"] == 1
    assert s["gold"] == {"a": 2, "b": 2}  # the row without gold counts in `predicted` only
    assert s["confusion"] == {"a": {"a": 1, "b": 1, "c": 0, "error": 0}, "b": {"a": 0, "b": 1, "c": 0, "error": 1}}
    assert s["per_label"]["a"] == {"precision": 1.0, "recall": 0.5, "f1": 0.6667, "support": 2}
    assert s["per_label"]["b"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert s["per_label"]["c"]["support"] == 0 and s["macro_f1"] == pytest.approx((0.6667 + 0.5) / 2, abs=1e-4)
    assert s["collapsed"] is False


def test_collapse_needs_one_dominant_label_and_spread_gold():
    spread = [({"label": t}, {"label": "sport"}, False) for t in TOPICS * 3]
    assert field_stats("label", TOPICS, spread)["collapsed"] is True
    # gold that is itself 75% `sport`: answering `sport` is not a collapse
    skewed = [({"label": t}, {"label": "sport"}, False) for t in ["sport"] * 9 + ["tech"] * 3]
    assert field_stats("label", TOPICS, skewed)["collapsed"] is False
    # 80% exactly is not more than 80%; and too few rows say nothing
    edge = [({"label": t}, {"label": "sport" if i < 8 else "tech"}, False) for i, t in enumerate(TOPICS * 2 + TOPICS[:2])]
    assert field_stats("label", TOPICS, edge)["top_predicted"]["share"] == 0.8
    assert field_stats("label", TOPICS, edge)["collapsed"] is False
    assert field_stats("label", TOPICS, spread[:4])["collapsed"] is False


def test_bool_and_optional_enum_outputs_are_label_fields():
    outputs = {"ok": {"schema": {"type": "boolean"}}, "n": {"schema": {"type": "integer"}},
               "tag": {"schema": {"anyOf": [{"type": "string", "enum": ["x", "y"]}, {"type": "null"}]}}}
    assert label_fields(outputs) == {"ok": ["true", "false"], "tag": ["x", "y"]}
    s = field_stats("ok", ["true", "false"], [({"ok": True}, {"ok": False}, False)])
    assert s["confusion"] == {"true": {"true": 0, "false": 1, "error": 0}}


def test_a_degenerate_program_is_flagged_by_evaluate(planted):
    prog = lmpc.compile_file(planted(TOOLS), cache=False, trace_log=False)
    try:
        report = lmpc.evaluate(prog, rows(), "exact_match(label)")
    finally:
        prog.close()
    stats = report.labels["label"]
    assert stats["predicted"] == {"sport": 11, "tech": 1} and stats["errors"] == 1
    assert stats["gold"] == {"sport": 3, "tech": 3, "money": 4, "world": 3}
    assert stats["confusion"]["money"] == {"sport": 3, "tech": 0, "money": 0, "world": 0, "error": 1}
    assert stats["collapsed"] is True and stats["top_predicted"] == {"label": "sport", "share": 0.9167}
    assert report.summary()["labels"] == report.labels  # what --json prints


def _eval(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lmpc", "eval", *args, "--no-cache"], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)


def test_lmpc_eval_prints_the_tables_and_the_warning(planted):
    src = planted(TOOLS)
    args = (str(src), "--data", str(src.parent / "dev.jsonl"), "--metric", "exact_match(label)", "--worst", "0")
    text = _eval(*args)
    assert text.returncode == 0, text.stderr
    out = text.stdout
    assert "`label`: labels (13 rows" in out and "`label`: confusion (rows: gold, columns: predicted" in out
    lines = out.splitlines()
    assert any(line.split() == ["sport", "3", "11", "85%", "0.27", "1.00", "0.43"] for line in lines), out
    assert any(line.split() == ["3", "money", "3", "0", "0", "0", "1"] for line in lines), out  # error column
    assert any(line.split() == ["predicted", "11", "1", "0", "0", "1"] for line in lines), out
    assert "warning: `label`: 92% of the predictions are 'sport' while the most frequent gold label is 31%" in out

    js = _eval(*args, "--json")
    assert js.returncode == 0, js.stderr
    summary = json.loads(js.stdout)  # stdout is one JSON object
    assert summary["labels"]["label"]["collapsed"] is True
    assert summary["labels"]["label"]["confusion"]["sport"] == {"sport": 3, "tech": 0, "money": 0, "world": 0,
                                                                "error": 0}
    assert "lmpc: warning: `label`: 92% of the predictions are 'sport'" in js.stderr


def test_a_program_that_answers_every_label_gets_no_warning(planted):
    src = planted(FAIR)
    text = _eval(str(src), "--data", str(src.parent / "dev.jsonl"), "--metric", "exact_match(label)")
    assert text.returncode == 0, text.stderr
    assert "confusion" in text.stdout and "warning" not in text.stdout
    assert json.loads(_eval(str(src), "--data", str(src.parent / "dev.jsonl"), "--metric", "exact_match(label)",
                            "--json").stdout)["labels"]["label"]["collapsed"] is False


def test_labels_are_escaped_when_printed():
    evil = "a\x1b[2J"
    s = field_stats("label", [evil, "b"], [({"label": evil}, {"label": evil}, False)] * 6
                    + [({"label": "b"}, {"label": evil}, False)] * 6)
    for live in (False, True):
        buf = io.StringIO()
        warnings = print_labels({"label": s}, buf, live=live)
        assert "\x1b" not in buf.getvalue() and "a\\x1b[2J" in buf.getvalue()
        assert warnings and all("\x1b" not in w for w in warnings)


def test_lmpc_build_prints_demo_labels_and_the_results_tables(capsys):
    from lmpc.cli_build import print_label_report

    stats = field_stats("label", TOPICS, [({"label": t}, {"label": "sport"}, False) for t in TOPICS * 2])
    print_label_report({"demo_labels": {"s": {"sport": 1, "tech\x07": 1}}, "labels_before": {"label": stats},
                        "labels_after": {"label": stats}})
    out = capsys.readouterr().out
    assert "demo labels of `s`: sport 1, tech\\x07 1" in out
    assert "zero-shot predictions of `label` on dev: sport 8" in out
    assert "result on dev: `label`: labels (8 rows" in out and "result on dev: `label`: confusion" in out
