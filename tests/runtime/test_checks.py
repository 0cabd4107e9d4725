"""`check` statements at run time on the fake model: retries with feedback, hard and soft
failures, the outcomes a row records, and their summary (runtime/checks.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from lmpc.compiler.api import compile_source
from lmpc.runtime.checks import summarize
from lmpc.runtime.program import Program

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "optimizers"))
from fake import FakeModel  # noqa: E402

SOURCE = '''
model m = llama_cpp(builtin: "smollm2-135m")
signature Answer = question -> answer: str
pipeline p(question: str) -> (answer: str) {
    a = predict Answer(question: question)
    check len(a.answer) <= 10 else "Answer in one short phrase" CHECK_OPTIONS
    return answer: a.answer
}
'''


def _graph(options: str = ""):
    return compile_source(SOURCE.replace("CHECK_OPTIONS", options)).graphs["p"]


def _long_then_short(f, demos, req):
    """Long at first; short once told to be short (the feedback is in the prompt)."""
    last = [m for m in req.messages if m["role"] == "user"][-1]["content"]
    return {"answer": "ok" if "Instruction: Answer in one short phrase" in last else "a very long answer indeed"}


def _always_long(f, demos, req):
    return {"answer": "a very long answer indeed"}


def _run(g, answer, rows):
    fake = FakeModel("m", answer)
    with Program(g, cache=False, trace_log=False, models={"m": fake}) as prog:
        return prog.batch(rows), fake


def test_a_failed_check_retries_with_its_message_and_traces_the_failed_output():
    (res,), fake = _run(_graph(), _long_then_short, [{"question": "q"}])
    assert res.error is None and res.values == {"answer": "ok"}
    assert len(fake.requests) == 2
    second = fake.requests[1].messages[-1]["content"]
    assert second == "question: q\n\nInstruction: Answer in one short phrase"
    first, retry = res.trace
    assert first.extra["checks_failed"] == ["<string>:6"] and "checks_failed" not in retry.extra
    assert retry.extra["attempt"] == 2 and retry.trace_id.endswith("-a-1")
    assert retry.extra["feedback"]["previous"] == {"answer": "a very long answer indeed"}  # traced, not shown
    assert fake.requests[1].temperature == 0 and fake.requests[1].seed == fake.requests[0].seed
    assert res.checks == [{"id": "<string>:6", "step": "a", "text": "len(a.answer) <= 10",
                           "message": "Answer in one short phrase", "soft": False, "attempts": 2, "failed": 1,
                           "passed": True}]


def test_retries_after_the_second_attempt_are_new_seeded_draws():
    (res,), fake = _run(_graph("retries 3"), _always_long, [{"question": "q"}])
    assert [r.temperature for r in fake.requests] == [0, 0, 0.7, 0.7]
    assert [r.seed for r in fake.requests] == [0, 0, 1, 2]
    assert [e.extra.get("attempt") for e in res.trace] == [None, 2, 3, 4]


def test_a_hard_check_that_still_fails_ends_the_row_with_its_message_and_the_batch_goes_on():
    def answer(f, demos, req):
        return _always_long(f, demos, req) if f["question"] == "bad" else {"answer": "fine"}

    bad, good = _run(_graph("retries 1"), answer, [{"question": "bad"}, {"question": "good"}])[0]
    assert bad.values is None and "Answer in one short phrase" in str(bad.error)
    assert "check failed after 2 attempt(s)" in str(bad.error) and bad.error.step == "a"
    assert good.error is None and good.values == {"answer": "fine"}
    assert [o["passed"] for o in good.checks] == [True] and good.checks[0]["failed"] == 0
    assert len(bad.trace) == 2 and all(e.extra["checks_failed"] for e in bad.trace)


def test_a_soft_check_records_the_failure_and_the_row_goes_on():
    (res,), fake = _run(_graph("soft retries 0"), _always_long, [{"question": "q"}])
    assert res.error is None and res.values == {"answer": "a very long answer indeed"}
    assert len(fake.requests) == 1
    assert res.checks[0]["soft"] and not res.checks[0]["passed"] and res.checks[0]["failed"] == 1


@pytest.mark.parametrize("options, calls", [("", 3), ("retries 0", 1), ("retries 4", 5)])
def test_retries_are_bounded(options, calls):
    (res,), fake = _run(_graph(options), _always_long, [{"question": "q"}])
    assert res.error is not None and len(fake.requests) == calls


def test_summary_counts_failures_repairs_and_still_failing():
    def answer(f, demos, req):
        if f["question"] == "never":
            return _always_long(f, demos, req)
        if f["question"] == "fixable":
            return _long_then_short(f, demos, req)
        return {"answer": "fine"}

    results, _ = _run(_graph(), answer, [{"question": q} for q in ("never", "fixable", "fine", "fine")])
    (s,) = summarize([r.checks for r in results]).values()
    assert (s["runs"], s["failures"], s["repaired"], s["still_failing"], s["retries"]) == (4, 2, 1, 1, 3)


def test_a_check_in_a_called_pipeline_reads_the_callers_values():
    source = '''
model m = llama_cpp(builtin: "smollm2-135m")
signature Answer = question -> answer: str
pipeline inner(question: str, limit: int) -> (answer: str) {
    a = predict Answer(question: question)
    check len(a.answer) <= limit else "Shorter"
    return answer: a.answer
}
pipeline p(question: str) -> (answer: str) {
    c = inner(question: question, limit: 3)
    return answer: c.answer
}
'''
    g = compile_source(source).graphs["p"]

    def answer(f, demos, req):
        last = req.messages[-1]["content"]
        return {"answer": "abc" if "Instruction: Shorter" in last else "abcdef"}

    (res,), fake = _run(g, answer, [{"question": "q"}])
    assert res.values == {"answer": "abc"} and len(fake.requests) == 2
    assert g.nodes["c/a"]["checks"][0]["cond"]["args"][1] == {"lit": 3}


def test_evaluate_reports_each_checks_failures_repairs_and_still_failing(capsys):
    from lmpc.cli_eval import print_checks
    from lmpc.runtime.data import Example
    from lmpc.runtime.evaluate import evaluate

    def answer(f, demos, req):
        if f["question"] == "never":
            return _always_long(f, demos, req)
        return _long_then_short(f, demos, req) if f["question"] == "fixable" else {"answer": "fine"}

    examples = [Example({"question": q}, {"answer": "fine"}, f"d:{i}", {}) for i, q in
                enumerate(["never", "fixable", "fine"])]
    fake = FakeModel("m", answer)
    with Program(_graph(), cache=False, trace_log=False, models={"m": fake}) as prog:
        report = evaluate(prog, examples, lambda ex, pred: float(pred.get("answer") == "fine"))
    assert report.errors == 1 and "Answer in one short phrase" in report.results[0].error
    checks = report.summary()["checks"]
    assert checks == {"<string>:6": {"text": "len(a.answer) <= 10", "message": "Answer in one short phrase",
                                     "soft": False, "step": "a", "runs": 3, "failures": 2, "repaired": 1,
                                     "still_failing": 1, "retries": 3}}
    assert report.results[1].checks[0]["passed"] and report.results[1].to_json()["checks"]
    print_checks(checks)
    assert capsys.readouterr().out == ("check <string>:6 `len(a.answer) <= 10` (hard, step `a`): failed on 2 of 3, "
                                       "repaired 1, still failing 1 (3 retries)\n")


def test_a_check_inside_a_mapped_pipeline_retries_the_item_and_reports_per_item():
    source = '''
model m = llama_cpp(builtin: "smollm2-135m")
signature Answer = question -> answer: str
pipeline one(question: str) -> (answer: str) {
    a = predict Answer(question: question)
    check len(a.answer) <= 10 else "Answer in one short phrase" soft retries 1
    return answer: a.answer
}
pipeline p(questions: list[str]) -> (answers: list[str]) {
    each = map one(question: q) for q in questions
    return answers: each.answer
}
'''
    g = compile_source(source).graphs["p"]

    def answer(f, demos, req):
        if f["question"] == "fixable":
            return _long_then_short(f, demos, req)
        return _always_long(f, demos, req) if f["question"] == "never" else {"answer": "fine"}

    (res,), fake = _run(g, answer, [{"questions": ["fine", "fixable", "never"]}])
    assert res.error is None and res.values == {"answers": ["fine", "ok", "a very long answer indeed"]}
    assert len(fake.requests) == 5
    assert [(o["failed"], o["passed"]) for o in res.checks] == [(0, True), (1, True), (2, False)]
    assert [e.step for e in res.trace if e.extra.get("attempt")] == ["each[1]/one/a", "each[2]/one/a"]


def test_a_check_on_a_conditional_step_runs_only_when_the_step_runs():
    source = '''
model m = llama_cpp(builtin: "smollm2-135m")
signature Answer = question -> answer: str
pipeline p(question: str) -> (answer: str?) {
    a = predict Answer(question: question) when len(question) > 3
    check a.answer == null or len(a.answer) <= 10 else "Answer in one short phrase"
    return answer: a.answer
}
'''
    skipped, ran = _run(compile_source(source).graphs["p"], _long_then_short,
                        [{"question": "hi"}, {"question": "hello there"}])[0]
    assert skipped.values == {"answer": None} and skipped.checks == [] and skipped.trace == []
    assert ran.values == {"answer": "ok"} and ran.checks[0]["failed"] == 1 and ran.checks[0]["passed"]


def test_show_previous_puts_the_rejected_outputs_in_the_retrys_prompt():
    """`show_previous` (DSPy's layout): the retry's prompt shows the rejected outputs before
    the message; without it they are only traced (the test above)."""
    (res,), fake = _run(_graph("show_previous"), _long_then_short, [{"question": "q"}])
    assert res.error is None and res.values == {"answer": "ok"}
    second = fake.requests[1].messages[-1]["content"]
    assert second == ('question: q\n\nPrevious attempt (rejected): {"answer": "a very long answer indeed"}\n\n'
                      "Instruction: Answer in one short phrase")
    assert _graph("soft retries 1 show_previous").nodes["a"]["checks"][0]["show_previous"] is True
    assert _graph().nodes["a"]["checks"][0]["show_previous"] is False
