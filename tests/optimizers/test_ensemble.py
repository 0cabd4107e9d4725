"""ensemble: members voting with majority, in one graph (the strategy) and in Python (lmpc.ensemble)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import lmpc
from lmpc.compiler.api import analyze, compile_file
from lmpc.compiler.artifact import load_artifact, make_artifact, write_artifact
from lmpc.compiler.artifact_graph import graph_to_json
from lmpc.compiler.builtins import BUILTINS
from lmpc.compiler.ir import prompt_nodes, to_json
from lmpc.compiler.optimize_spec import STRATEGIES
from lmpc.optimizers import REGISTRY, Candidate, Ensemble, OptimizeContext, OptimizerConfigError, OptimizeResult
from lmpc.optimizers.build import build, make_optimizers, plan
from lmpc.optimizers.demos import copy_graph
from lmpc.optimizers.ensemble import ensemble_graph
from lmpc.runtime.cache import CallCache
from lmpc.runtime.errors import LmpcRuntimeError
from lmpc.runtime.models import create_model

from .fake import CLASSIFY, HEADER, FakeModel, correct, examples, exact_label, graph, track, truth

ROOT = Path(__file__).resolve().parents[2]
SENTIMENT = ROOT / "examples/sentiment"
DEV = ["good x", "bad y", "good z"]


def planted_on(wrong_on: dict[int, str]):
    """A student wrong on one dev row, a different one for each number of demos in its prompt."""
    def answer(f, demos, req):
        label = truth(f["text"])
        if wrong_on.get(demos) == f["text"]:
            label = "negative" if label == "positive" else "positive"
        return {"label": label}
    return answer


planted = planted_on({1: "good x", 2: "bad y", 3: "good z"})


def with_demos(g, n: int):
    g = copy_graph(g)
    g.nodes["s"]["demos"] = [{"inputs": {"text": f"good demo {i}"}, "outputs": {"label": "positive"},
                              "source": f"train.jsonl:{i + 1}", "kind": "labeled"} for i in range(n)]
    return g


def previous(g, scores=(2 / 3, 2 / 3, 2 / 3), demos=(1, 2, 3)):
    cands = [Candidate(with_demos(g, n), round(s, 6), {"index": i, "kind": "bootstrapped"})
             for i, (n, s) in enumerate(zip(demos, scores))]
    return OptimizeResult(cands[0].graph, {}, cands)


def context(answer=planted, dev=DEV, **kw):
    return track(OptimizeContext(trainset=examples(["good a", "bad b"]), devset=examples(dev, start=100),
                                 metric=exact_label, log=lambda _: None,
                                 models={"m": FakeModel("m", answer), "other": FakeModel("other", correct)}, **kw))


def test_three_members_each_wrong_on_a_different_row_vote_right_on_all():
    g = graph()
    ctx = context()
    ctx.previous = previous(g)
    before = to_json(ctx.previous.candidates[0].graph)
    result = Ensemble(size=3).compile(g, ctx)
    r = result.report
    assert r["chosen"] == "ensemble" and r["score"] == 1.0 and r["best_member_score"] == round(2 / 3, 6)
    assert [(m["member"], m["index"], m["demos"]) for m in r["members"]] == [(1, 0, 1), (2, 1, 2), (3, 2, 3)]
    assert r["calls"] == 3 * len(DEV) and r["errors"] == 0 and r["size"] == 3 and r["reduce"] == "majority"
    out = result.graph
    assert prompt_nodes(out) == ["s#1", "s#2", "s#3"]
    assert [len(out.nodes[n]["demos"]) for n in ("s#1", "s#2", "s#3")] == [1, 2, 3]
    assert [out.nodes[n]["step"] for n in ("s#1", "s#2", "s#3")] == ["s#1", "s#2", "s#3"]
    assert out.nodes["out:label"]["bindings"]["value"] == {"call": "majority", "args": [{"list": [
        {"ref": f"s#{k}", "path": ["label"]} for k in (1, 2, 3)]}]}
    assert {out.nodes[n]["level"] for n in ("s#1", "s#2", "s#3")} == {1}, "members run side by side"
    assert sorted(out.edges) == sorted([("in:text", f"s#{k}") for k in (1, 2, 3)]
                                       + [(f"s#{k}", "out:label") for k in (1, 2, 3)])
    assert to_json(ctx.previous.candidates[0].graph) == before, "the members are copied, not changed"
    rows = ctx.program(out).batch([{"text": t} for t in DEV])
    assert [x.values["label"] for x in rows] == [truth(t) for t in DEV]
    assert sorted(e.step for e in rows[0].trace) == ["s#1", "s#2", "s#3"]


def test_inlined_steps_and_outputs_that_read_no_step():
    source = HEADER + '''
signature Sentiment = text -> label: Label
pipeline inner(text: str) -> (label: Label) {
    s = predict Sentiment(text: text)
    return label: s.label
}
pipeline outer(text: str) -> (label: Label, echo: str) {
    c = inner(text: text)
    return label: c.label, echo: text
}
'''
    g = lmpc.compile_source(source, pipeline="outer", cache=False, trace_log=False).graph
    joined = ensemble_graph([g, copy_graph(g)])
    assert prompt_nodes(joined) == ["c/s#1", "c/s#2"]
    assert joined.nodes["c/s#2"]["step"] == "c/s#2"
    assert joined.nodes["out:echo"]["bindings"]["value"] == {"ref": "in:text", "path": []}, "no vote needed"
    assert joined.nodes["out:label"]["bindings"]["value"]["call"] == "majority"


def test_the_ensemble_graph_is_a_valid_artifact_and_runs_after_loading(tmp_path):
    lmp = tmp_path / "classify.lmp"
    lmp.write_text(CLASSIFY)
    checked = compile_file(lmp)
    g = checked.graphs["classify"]
    joined = ensemble_graph([with_demos(g, n) for n in (1, 2, 3)])
    out = tmp_path / "classify.lmpc.json"
    write_artifact(out, make_artifact(checked, "classify", {"classify": joined}, out, {}, {}))  # validates
    loaded = load_artifact(out).graph
    assert graph_to_json(loaded) == graph_to_json(joined) and loaded.graph["order"] == joined.graph["order"]
    with lmpc.load(out, cache=False, trace_log=False, models={"m": FakeModel("m", planted)}) as prog:
        rows = prog.batch([{"text": t} for t in DEV])
    assert [x.values["label"] for x in rows] == [truth(t) for t in DEV]


def test_random_search_then_ensemble_through_build():
    train = examples(["good a", "good b", "bad c", "bad d"])
    ctx = track(OptimizeContext(trainset=train, devset=examples(DEV, start=100), metric=exact_label,
                                log=lambda _: None,
                                # candidates 0, 1, 2 have 0, 1 and 3 demos: each is wrong on another row
                                models={"m": FakeModel("m", planted_on({0: "good x", 1: "bad y", 3: "good z"})),
                                        "other": FakeModel("other", correct)}))
    opts = make_optimizers([{"name": "random_search",
                             "options": {"candidates": 3, "max_demos": 3, "max_labeled": 1, "teacher": "other"}},
                            {"name": "ensemble", "options": {"size": 3, "reduce": "majority"}}])
    g = graph()
    final, report = build(g, opts, ctx)
    search, ens = report["strategies"]
    assert [c["demos"] for c in search["candidates"]] == [0, 1, 3]
    assert [c["score"] for c in search["candidates"]] == [round(2 / 3, 6)] * 3
    assert ens["strategy"] == "ensemble" and ens["options"] == {"size": 3, "reduce": "majority"}
    assert ens["chosen"] == "ensemble" and [m["index"] for m in ens["members"]] == [0, 1, 2]
    assert report["score_before"] == round(2 / 3, 6) and report["score_after"] == 1.0
    assert report["demos_per_node"] == {"s#1": 0, "s#2": 1, "s#3": 3}
    assert prompt_nodes(final) == ["s#1", "s#2", "s#3"]
    stages = {s.stage: s.calls for s in plan(g, opts, len(train), len(DEV))}
    assert stages["ensemble: ensemble"] == 3 * len(DEV)
    assert stages["ensemble: final evaluation (extra members)"] == 2 * len(DEV)


def test_with_the_cache_the_members_calls_are_the_searchs(tmp_path):
    # A member's prompts are its candidate's (step names are not in prompts): scoring the
    # ensemble and the final evaluation read the calls random_search made.
    student = FakeModel("m", planted_on({0: "good x", 1: "bad y", 3: "good z"}))
    cache = CallCache(tmp_path / "calls.sqlite")
    ctx = track(OptimizeContext(trainset=examples(["good a", "good b", "bad c", "bad d"]),
                                devset=examples(DEV, start=100), metric=exact_label, log=lambda _: None, cache=cache,
                                models={"m": student, "other": FakeModel("other", correct)}))
    opts = make_optimizers([{"name": "random_search",
                             "options": {"candidates": 3, "max_demos": 3, "max_labeled": 1, "teacher": "other"}},
                            {"name": "ensemble", "options": {}}])
    _, report = build(graph(), opts, ctx)
    cache.close()
    assert report["strategies"][1]["calls"] == 9 and report["score_after"] == 1.0
    assert len(student.requests) == 3 * len(DEV), "zero-shot, then candidates 1 and 2; the rest from the cache"


def test_a_losing_vote_keeps_the_best_member_and_says_why():
    # Members 2 and 3 are both wrong on "good z", member 1 is right everywhere: the vote loses a row.
    def answer(f, demos, req):
        wrong = demos in (2, 3) and f["text"] == "good z"
        label = truth(f["text"])
        return {"label": ("negative" if label == "positive" else "positive") if wrong else label}

    g = graph()
    ctx = context(answer)
    ctx.previous = previous(g, scores=(1.0, 2 / 3, 2 / 3))
    result = Ensemble().compile(g, ctx)
    r = result.report
    assert r["chosen"] == "member 1" and r["score"] == round(2 / 3, 6) and "below its best member's 1.000" in r["why"]
    assert prompt_nodes(result.graph) == ["s"] and len(result.graph.nodes["s"]["demos"]) == 1


def test_max_prompt_tokens_keeps_the_best_member():
    g = graph()
    ctx = context(max_prompt_tokens=15)  # the fake counts 10 prompt tokens a call: the ensemble needs 30
    ctx.previous = previous(g)
    result = Ensemble().compile(g, ctx)
    assert result.report["chosen"] == "member 1" and "over max_prompt_tokens 15" in result.report["why"]
    assert result.report["prompt_tokens"] == 30


def test_size_caps_the_members_and_fewer_distinct_candidates_shrink_it():
    g = graph()
    ctx = context()
    ctx.previous = previous(g, scores=(1, 1, 1, 1), demos=(1, 2, 3, 4))
    assert Ensemble(size=3).compile(g, ctx).report["size"] == 3
    dup = previous(g)
    dup.candidates.insert(1, Candidate(copy_graph(dup.candidates[0].graph), 1.0, {"index": 9}))
    ctx.previous = dup
    r = Ensemble(size=5).compile(g, ctx).report
    assert r["size"] == 3 and [m["index"] for m in r["members"]] == [0, 1, 2], "duplicates are not members twice"


def test_configuration_errors_are_clear():
    g = graph()
    assert tuple(Ensemble.options_spec) == STRATEGIES["ensemble"]
    assert REGISTRY["ensemble"] is Ensemble
    with pytest.raises(OptimizerConfigError, match=r"needs a search strategy before it.*random_search"):
        Ensemble().compile(g, context())
    ctx = context()
    ctx.previous = OptimizeResult(g, {})  # e.g. labeled_few_shot: no candidates
    with pytest.raises(OptimizerConfigError, match="needs a search strategy before it"):
        Ensemble().compile(g, ctx)
    ctx.previous = previous(g, scores=(1.0,), demos=(1,))
    with pytest.raises(OptimizerConfigError, match="at least 2 distinct candidates.*gave 1"):
        Ensemble().compile(g, ctx)
    with pytest.raises(OptimizerConfigError, match="`size` must be 2 or more, not 1"):
        Ensemble(size=1)
    with pytest.raises(OptimizerConfigError, match=r"`reduce` is one of majority, not 'mean'"):
        make_optimizers([{"name": "ensemble", "options": {"reduce": "mean"}}])
    with pytest.raises(OptimizerConfigError, match="`size` takes an integer, not the string '3'"):
        Ensemble(size="3")
    with pytest.raises(OptimizerConfigError, match="takes no option"):
        Ensemble(members=3)
    program, diags = analyze(CLASSIFY + '''
optimize classify {
    train "t.jsonl"
    dev "d.jsonl"
    metric exact_match(label)
    strategy random_search(candidates: 6) then ensemble(size: 3, reduce: majority)
}
''')
    assert program is not None and not [d for d in diags if d.is_error]
    assert program.optimize["classify"].settings["strategy"][1] == {"name": "ensemble",
                                                                     "options": {"size": 3, "reduce": "majority"}}


def test_planned_calls():
    g = graph()
    assert Ensemble(size=3).planned_calls(g, 20, 30) == {"ensemble": 90, "final evaluation (extra members)": 60}
    assert Ensemble(size=2).planned_calls(g, 20, 0) == {"ensemble": 40, "final evaluation (extra members)": 20}


# -- lmpc.ensemble ---------------------------------------------------------------------------


def fake_program(answer, source=CLASSIFY):
    return lmpc.compile_source(source, cache=False, trace_log=False, models={"m": FakeModel("m", answer)})


def wrong_on(text):
    def answer(f, demos, req):
        label = truth(f["text"])
        if f["text"] == text:
            return {"label": "negative" if label == "positive" else "positive"}
        return {"label": label}
    return answer


def test_lmpc_ensemble_votes_and_keeps_every_members_trace():
    progs = [fake_program(wrong_on(t)) for t in DEV]
    with lmpc.ensemble(progs) as ens:
        rows = ens.batch([{"text": t} for t in DEV])
        assert [r.values["label"] for r in rows] == [truth(t) for t in DEV]
        assert all(isinstance(r, lmpc.Result) and r.ok for r in rows)
        assert [(e.step, e.extra["member"]) for e in rows[0].trace] == [("s#1", 1), ("s#2", 2), ("s#3", 3)]
        assert ens(text="good x").label == "positive"
        report = lmpc.evaluate(ens, [{"text": t, "label": truth(t)} for t in DEV], "exact_match(label)")
        assert report.score == 1.0 and report.calls == 9


def test_lmpc_ensemble_tie_rule_is_the_builtins():
    # Two members that disagree: the first member's value reached the top count first.
    ens = lmpc.ensemble([fake_program(wrong_on("good x")), fake_program(wrong_on("none"))])
    assert ens(text="good x").label == BUILTINS["majority"].impl(["negative", "positive"]) == "negative"
    ens.close()


def test_a_failing_member_casts_no_vote_and_all_failing_is_an_error():
    from .fake import broken_on

    broken = fake_program(broken_on(lambda t: t.startswith("bad")))
    ens = lmpc.ensemble([broken, fake_program(wrong_on("none"))])
    rows = ens.batch([{"text": "bad y"}, {"text": "good x"}])
    assert rows[0].ok and rows[0].label == "negative", "the failing member did not vote"
    assert [e.step for e in rows[0].trace] == ["s#1", "s#2"] and rows[0].trace[0].error
    ens.close()
    ens = lmpc.ensemble([fake_program(broken_on(lambda t: True)), fake_program(broken_on(lambda t: True))])
    (row,) = ens.batch([{"text": "good x"}])
    assert not row.ok and "every member of the ensemble failed (member 1: " in str(row.error)
    with pytest.raises(LmpcRuntimeError, match="every member"):
        ens(text="good x")
    ens.close()


def test_lmpc_ensemble_errors():
    with pytest.raises(LmpcRuntimeError, match="needs at least one program"):
        lmpc.ensemble([])
    prog = fake_program(correct)
    with pytest.raises(LmpcRuntimeError, match=r"unknown reducer 'mean' \(accepted: majority\)"):
        lmpc.ensemble([prog], reduce="mean")
    with pytest.raises(LmpcRuntimeError, match="member 2 is a str, not a Program"):
        lmpc.ensemble([prog, "sentiment.lmpc.json"])
    other = fake_program(correct, HEADER + '''
signature S = text -> verdict: Label
pipeline judge(text: str) -> (verdict: Label) {
    s = predict S(text: text)
    return verdict: s.verdict
}
''')
    with pytest.raises(LmpcRuntimeError, match="member 2 .*returns verdict, member 1 .*returns label"):
        lmpc.ensemble([prog, other])
    prog.close()
    other.close()


# -- the real model ----------------------------------------------------------------------------


def test_an_ensemble_graph_on_smollm2_runs_every_member_and_votes():
    g = compile_file(SENTIMENT / "sentiment.lmp").graphs["classify"]
    train = [json.loads(line) for line in (SENTIMENT / "data/train.jsonl").read_text().splitlines()[:2]]
    members = []
    for n in (0, 1, 2):  # zero-shot, one labeled demo, two
        m = copy_graph(g)
        m.nodes["s"]["demos"] = [{"inputs": {"text": r["text"]}, "outputs": {"label": r["label"]},
                                  "source": f"train.jsonl:{i + 1}", "kind": "labeled"} for i, r in enumerate(train[:n])]
        members.append(m)
    joined = ensemble_graph(members)
    spec = g.graph["models"]["local"]
    model = create_model("local", spec["provider"], spec["options"])
    ctx = OptimizeContext(trainset=[], devset=[], metric=exact_label, models={"local": model}, log=lambda _: None)
    try:
        rows = ctx.program(joined).batch([{"text": "I love this, best day ever!"}, {"text": "This is awful."}])
    finally:
        ctx.close()
        model.close()
    for r in rows:
        assert r.ok and r.values["label"] in ("positive", "negative")
        votes = {e.step: e.parsed["label"] for e in r.trace}
        assert sorted(votes) == ["s#1", "s#2", "s#3"], "every member's step ran"
        assert r.values["label"] == BUILTINS["majority"].impl([votes["s#1"], votes["s#2"], votes["s#3"]])
