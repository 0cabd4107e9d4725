"""Evaluation: error isolation and --max-errors, an LM judge written in .lmp on the real model,
`lmpc eval` end to end, and the progress display in and out of a terminal."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

import lmpc
from lmpc.runtime.cache import CallCache
from lmpc.runtime.progress import Progress

ROOT = Path(__file__).resolve().parents[2]

FLAKY = '''
signature Half = n: int -> half: int
pipeline halve(n: int) -> (half: int) {
    h = call "tools.py:halve" Half(n: n)
    return half: h.half
}
'''


@pytest.fixture
def flaky(tmp_path):
    (tmp_path / "tools.py").write_text("def halve(n):\n    if n % 2:\n        raise ValueError(f'{n} is odd')\n"
                                       "    return n // 2\n")
    src = tmp_path / "halve.lmp"
    src.write_text(FLAKY)
    rows = [{"n": n, "half": n // 2} for n in [2, 3, 4, 5, 6, 7, 8]]
    prog = lmpc.compile_file(src, cache=False, trace_log=False)
    yield prog, rows
    prog.close()


def test_failing_examples_score_zero_and_the_run_goes_on(flaky):
    prog, rows = flaky
    report = lmpc.evaluate(prog, rows, "exact_match(half)", chunk_size=3)
    assert len(report.results) == 7 and report.errors == 3
    assert report.score == pytest.approx(4 / 7)
    odd = [r for r in report.results if r.inputs["n"] % 2]
    assert all(r.score == 0 and "is odd" in r.error for r in odd)
    assert [r.index for r in report.worst(3)] == [1, 3, 5]


def test_max_errors_stops_the_run_early(flaky):
    prog, rows = flaky
    report = lmpc.evaluate(prog, rows, "exact_match(half)", max_errors=2, chunk_size=3)
    assert report.errors == 2 and len(report.results) == 4  # stops at the example that hit the limit
    assert "max_errors 2" in report.stopped_early


JUDGED = '''
type Label = "positive" | "negative"
signature Sentiment = text -> label: Label
pipeline classify(text: str) -> (label: Label) {
    s = predict Sentiment(text: text)
    return label: s.label
}
signature Agree {
    "Do the two labels say the same thing?"
    label: str
    gold_label: str
    ->
    same: bool
}
pipeline judge(label: str, gold_label: str) -> (same: bool) {
    a = predict Agree(label: label, gold_label: gold_label)
    return same: a.same
}
optimize classify { metric judge }
'''


def test_lm_judge_metric_written_in_lmp_runs_on_the_real_model(tmp_path):
    src = tmp_path / "judged.lmp"
    src.write_text(JUDGED)
    prog = lmpc.compile_file(src, cache=CallCache(tmp_path / "c.sqlite"), trace_log=False)
    assert prog.name == "classify"  # the judge is not an entry pipeline
    rows = [{"text": "I love it", "label": "positive"}, {"text": "I hate it", "label": "negative"},
            {"text": "Great!", "label": "positive"}]
    report = lmpc.evaluate(prog, rows)  # metric from the optimize block
    assert report.errors == 0 and len(report.results) == 3
    assert all(r.score in (0.0, 1.0) for r in report.results)
    stats = prog.cache.stats  # identical judge inputs are served from the cache
    assert report.calls == 6, "every call counts: the pipeline's and the judge's, one each per example"
    assert stats.misses + stats.hits + stats.deduplicated == report.calls
    prog.close()


def _eval(*args: str, cache_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lmpc", "eval", *args, "--cache-dir", str(cache_dir)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)


def test_lmpc_eval_on_the_sentiment_example_is_reproducible(tmp_path):
    out = tmp_path / "results.jsonl"
    example = "examples/sentiment/sentiment.lmp"
    first = _eval(example, "--limit", "6", "--out", str(out), "--json", "--no-cache", cache_dir=tmp_path)
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert summary["examples"] == 6 and summary["errors"] == 0 and summary["calls"] == 6
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 6
    assert set(rows[0]) >= {"inputs", "gold", "prediction", "score", "error", "trace_ids"}
    assert rows[0]["source"].endswith("dev.jsonl:1")
    assert sum(r["score"] for r in rows) / 6 == pytest.approx(summary["score"], abs=1e-4)
    # Not a terminal: plain progress lines, readable in CI logs.
    assert "eval classify: 6/6 (100%)" in first.stderr

    second = _eval(example, "--limit", "6", "--json", "--no-cache", cache_dir=tmp_path)
    assert json.loads(second.stdout)["score"] == summary["score"]

    text = _eval(example, "--limit", "6", "--worst", "3", cache_dir=tmp_path)
    assert text.returncode == 0 and text.stdout.startswith("score ")


def test_lmpc_eval_reports_bad_data_with_its_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok", "label": "positive"}\n{"text": "meh", "label": "neutral"}\n{"label": "negative"}\n')
    r = _eval("examples/sentiment/sentiment.lmp", "--data", str(bad), cache_dir=tmp_path)
    assert r.returncode == 2 and f"{bad}:2" in r.stderr and "Traceback" not in r.stderr
    assert "1 more" in r.stderr

    r = _eval("examples/sentiment/sentiment.lmp", "--data", str(bad), "--skip-bad-rows", "--json",
              cache_dir=tmp_path)
    assert r.returncode == 0 and "skipped 2 bad row(s)" in r.stderr
    assert json.loads(r.stdout)["examples"] == 1

    r = _eval("examples/sentiment/sentiment.lmp", "--metric", "exact_mach(label)", cache_dir=tmp_path)
    assert r.returncode == 2 and "did you mean `exact_match`" in r.stderr  # a flag's value: usage error


def test_progress_is_a_live_bar_in_a_terminal_and_plain_lines_otherwise():
    plain = io.StringIO()
    p = Progress(4, label="eval x", stream=plain, live=False)
    p.update(2, 0.5, 1)
    p.update(4, 0.75, 1)
    p.close()
    lines = plain.getvalue().splitlines()
    assert lines[0].startswith("eval x: 2/4 (50%), score 0.500, errors 1, ETA")
    assert lines[-1] == "eval x: 4/4 (100%), score 0.750, errors 1"

    tty = io.StringIO()
    p = Progress(4, label="eval x", stream=tty, live=True)
    p.update(4, 0.75, 0)
    p.close()
    assert "4/4" in tty.getvalue() and "score 0.750" in tty.getvalue()
