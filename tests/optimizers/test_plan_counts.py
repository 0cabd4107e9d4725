"""Every model call is counted, a judge metric's included: in evaluation reports, in the
build's report, and in the --dry-run plan, which must bound the calls a build makes."""

from __future__ import annotations

from typing import Any

import pytest

from lmpc.api import program_from_checked, resolve_metric
from lmpc.compiler.api import compile_source
from lmpc.optimizers import OptimizeContext
from lmpc.optimizers.build import build, make_optimizers, plan
from lmpc.runtime.evaluate import evaluate
from lmpc.runtime.models import GenerationRequest

from .fake import HEADER, FakeModel, correct, examples, track

JUDGED = HEADER + '''
signature Sentiment = text -> label: Label
pipeline classify(text: str) -> (label: Label) {
    s = predict Sentiment(text: text)
    return label: s.label
}
signature Agree = label: str, gold_label: str -> same: bool
pipeline judge(label: str, gold_label: str) -> (same: bool) {
    a = predict Agree(label: label, gold_label: gold_label)
    return same: a.same
}
'''


def judge_or_correct(f: dict[str, str], demos: int, req: GenerationRequest) -> dict[str, Any]:
    if "same" in req.json_schema["properties"]:
        return {"same": f.get("label") == f.get("gold_label")}
    return correct(f, demos, req)


@pytest.fixture
def judged():
    """(the classify program, its judge metric, the fake model both run on)."""
    fake = FakeModel("m", judge_or_correct)
    checked = compile_source(JUDGED)
    prog = program_from_checked(checked, "classify", cache=False, trace_log=False, models={"m": fake})
    yield prog, resolve_metric(prog, "judge"), fake, checked
    prog.close()


def test_evaluation_counts_the_judges_calls(judged):
    prog, metric, fake, _ = judged
    report = evaluate(prog, examples(["good a", "bad b", "good c"]), metric)
    assert report.score == 1.0 and report.errors == 0
    assert len(fake.requests) == 6  # 3 classify + 3 judge calls
    assert report.calls == 6 and report.prompt_tokens == 60
    assert report.prompt_tokens_per_example == 10  # the program's own prompts: a judge's are not shipped


CHAINS = [
    "labeled_few_shot(k: 2)",
    "bootstrap_few_shot(max_demos: 2, max_rounds: 2)",
    "random_search(candidates: 4, max_demos: 2) then ensemble(size: 2)",
    "bayesian(trials: 3, instructions: 1, demo_sets: 3, minibatch: 2, full_eval_every: 2)",
]


@pytest.mark.parametrize("chain", CHAINS)
def test_the_plan_bounds_every_call_a_build_makes_judge_included(judged, chain):
    from lmpc.compiler.api import strategy_from_text

    prog, metric, fake, checked = judged
    train = examples(["good 1", "bad 2", "good 3", "bad 4", "good 5"])
    dev = examples(["good 6", "bad 7", "bad 8"], start=10)
    optimizers = make_optimizers(strategy_from_text(chain))
    stages = plan(prog.graph, optimizers, len(train), len(dev), judge=checked.graphs["judge"])
    planned = sum(s.calls for s in stages)
    assert stages[0].calls == len(dev) * 2  # the pipeline's call and the judge's, per dev example
    ctx = track(OptimizeContext(train, dev, metric, models={"m": fake}, log=lambda _: None))
    _, report = build(prog.graph, optimizers, ctx)
    made = len(fake.requests)
    assert report["calls"] == made  # the build's own count: every call, the judge's too
    if "ensemble" not in chain:  # zero-shot and final evaluations, judge included (an ensemble runs more)
        assert report["eval_calls"] == 2 * (2 * len(dev))
    assert made <= planned, f"{chain}: the plan said {planned} calls, the build made {made}"


def test_build_progress_names_each_stage_on_stderr(judged, capsys):
    prog, metric, fake, _ = judged
    train = examples(["good 1", "bad 2", "good 3"])
    dev = examples(["good 6", "bad 7"], start=10)
    ctx = track(OptimizeContext(train, dev, metric, models={"m": fake}, log=lambda _: None, progress=True))
    build(prog.graph, make_optimizers([{"name": "random_search", "options": {"candidates": 3}}]), ctx)
    out, err = capsys.readouterr()
    assert out == ""  # stdout stays clean for the command's own output
    for line in ("zero-shot on dev: 2/2 (100%), score 1.000, errors 0",
                 "random_search: teacher round 1/1: 3/3 (100%)",
                 "random_search: candidate 0 (1/3): 2/2 (100%)", "random_search: candidate 2 (3/3): 2/2 (100%)",
                 "result on dev: 2/2 (100%)"):
        assert line in err, err
