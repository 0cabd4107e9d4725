"""bayesian: proposer candidates, the ask/tell search, minibatches, full-dev promotion, budgets."""

from __future__ import annotations

import json

import pytest

from lmpc.compiler.ir import to_json
from lmpc.optimizers import Bayesian, OptimizeContext, OptimizerConfigError
from lmpc.optimizers.build import build
from lmpc.optimizers.instructions import TIPS, clean, dedupe_key, describe_program, summarize_data
from lmpc.runtime.models import Completion

from .fake import TWO_STEP, FakeModel, correct, exact_label, examples, graph, track, truth

PLANTED = "You are an expert. Compare the words of the text with care."


def proposer_answer(f, demos, req):
    """The fake proposer: its instruction depends on the tip (the persona tip plants the best)."""
    if "persona" in f["tip"]:
        return {"instruction": PLANTED}
    if "beginner" in f["tip"]:
        return {"instruction": "  \"Classify the text.\" "}  # a duplicate of another after cleaning
    return {"instruction": f"Classify the text. {f['tip']}"}


def student_answer(f, demos, req):
    """Right on every row only with the planted instruction and two or more demos; the
    instruction alone gets the positive rows, the demos alone the negative ones."""
    if "instruction" in req.json_schema["properties"]:
        return proposer_answer(f, demos, req)
    planted = PLANTED in req.messages[0]["content"]
    if planted and demos >= 2:
        return {"label": truth(f["text"])}
    if planted:
        return {"label": "positive"}
    if demos >= 2:
        return {"label": "negative"}
    return {"label": "positive" if truth(f["text"]) == "negative" else "negative"}


class TokenCountingFake(FakeModel):
    """A fake whose prompt_tokens grow with the prompt (so demos cost tokens)."""

    def generate(self, req):
        c = super().generate(req)
        return Completion(c.text, prompt_tokens=sum(len(m["content"]) for m in req.messages) // 4,
                          completion_tokens=3)


def data():
    train = examples([f"good {i}" for i in range(5)] + [f"bad {i}" for i in range(5)])
    dev = examples([f"good d{i}" for i in range(6)] + [f"bad d{i}" for i in range(6)], start=100)
    return train, dev


def context(train, dev, student=None, teacher=None, **kw):
    student = student or FakeModel("m", student_answer)
    teacher = teacher or FakeModel("other", correct)
    return track(OptimizeContext(trainset=train, devset=dev, metric=exact_label, log=lambda _: None,
                                 models={"m": student, "other": teacher}, **kw))


OPTIONS = dict(trials=10, instructions=4, demo_sets=3, minibatch=6, full_eval_every=3, max_demos=2,
               teacher="other", seed=0)


def test_the_search_finds_the_planted_best_combination_within_the_trial_budget():
    train, dev = data()
    g = graph()
    before = to_json(g)
    result = Bayesian(**OPTIONS).compile(g, context(train, dev))
    r = result.report
    node = result.graph.nodes["s"]
    assert node["instructions"] == PLANTED and len(node["demos"]) >= 2
    assert r["best_score"] == 1.0 and r["scored_on"] == "dev"
    # candidates: the original first, proposals cleaned and deduplicated
    texts = r["instructions"]["s"]
    assert texts[0] == g.nodes["s"]["instructions"] and PLANTED in texts and len(texts) <= 4
    assert len({dedupe_key(t) for t in texts}) == len(texts)
    # every trial is reported with its choices, minibatch score, calls and tokens
    assert [t["trial"] for t in r["trials"]] == list(range(1, 11))
    for t in r["trials"]:
        assert set(t["choices"]["s"]) == {"instruction", "demos"}
        assert t["minibatch"] == 6 and t["calls"] == 6 and t["prompt_tokens"] > 0
    promoted = [t["promoted"] for t in r["trials"] if "promoted" in t]
    assert promoted and len(promoted) <= 4, "full-dev scores at trials 3, 6, 9 and 10 at most"
    # the input program was scored on the whole dev set first; every full score is listed
    assert r["score_vs_tokens"][0]["choices"]["s"] == {"instruction": 0, "demos": 0}
    assert r["score_vs_tokens"][0]["score"] == 0.0
    assert max(x["score"] for x in r["score_vs_tokens"]) == 1.0
    assert to_json(g) == before, "the input graph is not mutated"
    assert [c.score for c in result.candidates] == sorted((c.score for c in result.candidates), reverse=True)


def test_the_same_seed_gives_the_same_program_and_report():
    train, dev = data()
    a = Bayesian(**OPTIONS).compile(graph(), context(train, dev))
    b = Bayesian(**OPTIONS).compile(graph(), context(list(reversed(train)), dev))
    assert to_json(a.graph) == to_json(b.graph)
    assert json.dumps(a.report, sort_keys=True) == json.dumps(b.report, sort_keys=True)
    c = Bayesian(**{**OPTIONS, "seed": 7}).compile(graph(), context(train, dev))
    assert [t["choices"] for t in c.report["trials"]] != [t["choices"] for t in a.report["trials"]]


def test_planned_calls_bound_the_calls_made():
    train, dev = data()
    student, teacher = FakeModel("m", student_answer), FakeModel("other", correct)
    opt = Bayesian(**OPTIONS)
    plan = opt.planned_calls(graph(), len(train), len(dev))
    assert plan == {"teacher": 10, "proposer": 2 * 3, "trials": 10 * 6, "full dev evaluations": (1 + 4) * 12}
    opt.compile(graph(), context(train, dev, student, teacher))
    assert len(teacher.requests) <= plan["teacher"]
    assert len(student.requests) <= plan["proposer"] + plan["trials"] + plan["full dev evaluations"]


def test_a_minibatch_as_large_as_dev_scores_each_trial_on_all_of_it():
    train, dev = data()
    opt = Bayesian(**{**OPTIONS, "minibatch": 100})
    assert opt.planned_calls(graph(), len(train), len(dev))["full dev evaluations"] == len(dev)
    r = opt.compile(graph(), context(train, dev)).report
    assert all("promoted" not in t and t["minibatch"] == len(dev) for t in r["trials"])
    assert r["best_score"] == 1.0


def test_max_prompt_tokens_rules_out_the_long_prompts():
    train, dev = data()
    free = Bayesian(**OPTIONS).compile(graph(), context(train, dev, TokenCountingFake("m", student_answer)))
    assert free.report["best_score"] == 1.0
    budget = int(free.report["best"]["prompt_tokens"]) - 1  # the planted best needs two demos: too long now
    limited = Bayesian(**OPTIONS).compile(graph(), context(train, dev, TokenCountingFake("m", student_answer),
                                                          max_prompt_tokens=budget))
    r = limited.report
    assert r["max_prompt_tokens"] == budget
    assert r["best"]["prompt_tokens"] <= budget and r["best_score"] < 1.0
    assert len(limited.graph.nodes["s"]["demos"]) < 2
    assert any(t.get("over_budget") for t in r["trials"]), "the long combination was tried and ruled out"
    fits = [x for x in r["score_vs_tokens"] if not x["over_budget"]]
    assert r["best_score"] == max(x["score"] for x in fits)


def test_proposer_option_runs_the_proposer_on_that_model_and_sees_the_program():
    train, dev = data()
    student = FakeModel("m", student_answer)
    big = FakeModel("other", lambda f, d, req: proposer_answer(f, d, req) if "instruction" in req.json_schema[
        "properties"] else correct(f, d, req))
    g = graph(TWO_STEP)
    result = Bayesian(trials=2, instructions=3, demo_sets=1, minibatch=4, proposer="other").compile(
        g, context(train, dev, student, big))
    asked = [r for r in big.requests if "instruction" in r.json_schema["properties"]]
    assert len(asked) == 2 * 2, "two new candidates for each of the two prompt nodes, on the proposer model"
    assert not [r for r in student.requests if "instruction" in r.json_schema["properties"]]
    seen = asked[0].messages[-1]["content"]
    assert "t = predict Topic(text: text)" in seen and "j = predict Judge(text: text, topic: t.topic)" in seen
    assert "10 training examples." in seen and "gold label: bad" not in seen
    assert result.report["proposer"]["model"] == {"t": "other", "j": "other"}


def test_summaries_and_cleaning():
    train, _ = data()
    text = summarize_data(train)
    assert "10 training examples." in text and "gold label: negative (5), positive (5)." in text
    assert "input text: text of 5-6 characters (mean 5)" in text
    assert clean('  "Instruction: Say   it."  ') == "Say it."
    assert dedupe_key("Say it!") == dedupe_key("say it")
    program = describe_program(graph(TWO_STEP), "j")
    assert program.splitlines()[0] == "pipeline two(text: str) -> (label: Label)"
    assert program.splitlines()[-1] == "  return label: j.label"
    assert len(TIPS) == len(set(TIPS))


def test_bad_options_and_settings_are_config_errors():
    with pytest.raises(OptimizerConfigError, match="`trials` must be 1 or more"):
        Bayesian(trials=0)
    with pytest.raises(OptimizerConfigError, match="takes no option"):
        Bayesian(candidates=3)
    train, dev = data()
    with pytest.raises(OptimizerConfigError, match="proposer `nope` is not a declared model"):
        Bayesian(trials=1, instructions=2, demo_sets=1, proposer="nope").compile(graph(), context(train, dev))
    with pytest.raises(OptimizerConfigError, match="needs training examples"):
        Bayesian(trials=1).compile(graph(), context([], dev))


def test_a_build_chain_with_bayesian_reports_every_trial():
    train, dev = data()
    ctx = context(train, dev)
    out, report = build(graph(), [Bayesian(**OPTIONS)], ctx)
    assert report["score_before"] == 0.0 and report["score_after"] == 1.0
    (step,) = report["strategies"]
    assert step["strategy"] == "bayesian" and len(step["trials"]) == 10
    assert 0 < report["prompt_tokens_before"] and report["prompt_tokens_after"] > 0


def test_a_build_whose_result_is_over_the_token_budget_says_so():
    from lmpc.optimizers import BootstrapFewShot

    train, dev = data()
    lines = []
    ctx = context(train, dev, TokenCountingFake("m", student_answer), max_prompt_tokens=10)
    ctx.log = lines.append
    _, report = build(graph(), [BootstrapFewShot(max_demos=2, teacher="other")], ctx)
    assert report["prompt_tokens_after"] > 10
    assert any(line.startswith("warning: the result averages") and "over max_prompt_tokens 10" in line
               for line in lines)


def test_bayesian_then_ensemble_votes_over_its_best_full_dev_combinations():
    from lmpc.optimizers import Ensemble

    train, dev = data()
    ctx = context(train, dev)
    out, report = build(graph(), [Bayesian(**OPTIONS), Ensemble(size=3)], ctx)
    search, ens = report["strategies"]
    full = sorted((x["score"] for x in search["score_vs_tokens"] if not x["over_budget"]), reverse=True)
    assert [m["score"] for m in ens["members"]] == full[:3]
    assert all(set(m["choices"]["s"]) == {"instruction", "demos"} for m in ens["members"])
    # the best member alone scores 1.0; a vote with two weaker members cannot beat it
    assert ens["best_member_score"] == 1.0 and report["score_after"] == 1.0
