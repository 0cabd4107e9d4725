"""`check` on the embedded SmolLM2 model (llama.cpp, temperature 0): a length check that fails
first and is repaired by the retry whose prompt carries the message; a hard check that still
fails ends its row with the message while the rest of the batch goes on; `lmpc eval` counts it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lmpc.compiler.api import compile_source
from lmpc.runtime.program import Program
from lmpc.runtime.trace import TraceLog

SOURCE = '''
signature Answer = "Answer the question." question -> answer: str
pipeline qa(question: str) -> (answer: str) {
    a = predict Answer(question: question)
    check len(a.answer) <= 30 else "Answer in one short phrase" retries 1
    return answer: a.answer
}
'''
REPAIRED = "How do airplanes fly?"  # a long answer first, a short one when told
STILL_LONG = "Why is the sky blue?"  # long both times
SHORT = "What is the capital of France?"  # short at once

pytestmark = pytest.mark.usefixtures("smollm2_path")


def test_a_long_answer_is_repaired_by_the_retry_and_a_hard_failure_ends_only_its_row(tmp_path):
    log = tmp_path / "traces.jsonl"
    g = compile_source(SOURCE).graphs["qa"]
    with Program(g, cache=tmp_path / "calls.sqlite", trace_log=TraceLog(log)) as prog:
        fixed, failed, short = prog.batch([{"question": q} for q in (REPAIRED, STILL_LONG, SHORT)])

    events = [json.loads(line) for line in log.read_text().splitlines()]
    first, retry = [e for e in events if e["row"] == 0]
    assert len(json.loads(first["raw"])["answer"]) > 30 and first["extra"]["checks_failed"] == ["<string>:5"]
    assert retry["messages"][-1]["content"] == f"question: {REPAIRED}\n\nInstruction: Answer in one short phrase"
    assert retry["extra"]["feedback"]["previous"] == json.loads(first["raw"])
    assert fixed.error is None and len(fixed.answer) <= 30 and fixed.answer == json.loads(retry["raw"])["answer"]
    assert fixed.checks[0]["failed"] == 1 and fixed.checks[0]["passed"]

    assert failed.values is None and failed.error.step == "a"
    assert "check failed after 2 attempt(s): Answer in one short phrase" in str(failed.error)
    assert len([e for e in events if e["row"] == 1]) == 2
    assert short.error is None and len(short.answer) <= 30 and len([e for e in events if e["row"] == 2]) == 1


def test_lmpc_eval_reports_how_often_the_check_failed_and_was_repaired(tmp_path):
    (tmp_path / "qa.lmp").write_text(SOURCE)
    rows = [{"question": q, "answer": a} for q, a in ((REPAIRED, "wings"), (STILL_LONG, "scattering"),
                                                      (SHORT, "Paris"))]
    (tmp_path / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = subprocess.run([sys.executable, "-m", "lmpc", "eval", "qa.lmp", "--data", "dev.jsonl", "--metric",
                          "contains(answer)", "--cache-dir", str(tmp_path / "cache"), "--json"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["errors"] == 1 and summary["calls"] == 5
    assert summary["checks"]["qa.lmp:5"] == {"text": "len(a.answer) <= 30", "message": "Answer in one short phrase",
                                             "soft": False, "step": "a", "runs": 3, "failures": 2, "repaired": 1,
                                             "still_failing": 1, "retries": 2}
