"""Bootstrapping with `check` statements: only runs that pass their checks (hard and soft)
become demos, and an attempt a check rejected is never one, even when a retry repaired it."""

from __future__ import annotations

from lmpc.optimizers import BootstrapFewShot, OptimizeContext
from lmpc.runtime.metrics import BUILTIN_METRICS

from .fake import HEADER, FakeModel, examples, graph, track, truth

SOURCE = HEADER + '''
signature Sentiment = text -> label: Label, why: str
pipeline classify(text: str) -> (label: Label) {
    s = predict Sentiment(text: text)
    check len(s.why) <= 5 else "Explain in one word" OPTIONS
    return label: s.label
}
'''


def _answer(repairable: bool):
    def answer(f, demos, req):
        told = "Instruction: Explain in one word" in req.messages[-1]["content"]
        return {"label": truth(f["text"]), "why": "tone" if told and repairable else "because of the tone"}
    return answer


def _compile(options: str, repairable: bool):
    fake = FakeModel("m", _answer(repairable))
    ctx = track(OptimizeContext(trainset=examples(["good day"]), devset=[],
                                metric=BUILTIN_METRICS["exact_match"](["label"]), models={"m": fake},
                                log=lambda _: None))
    return BootstrapFewShot(max_rounds=1).compile(graph(SOURCE.replace("OPTIONS", options)), ctx), fake


def test_a_repaired_run_gives_its_repaired_output_not_the_rejected_attempt():
    result, fake = _compile("", repairable=True)
    assert len(fake.requests) == 2
    demos = result.graph.nodes["s"]["demos"]
    assert [d["outputs"] for d in demos] == [{"label": "positive", "why": "tone"}]
    assert result.report["nodes"]["s"]["candidates"] == 1


def test_a_run_that_fails_a_soft_check_gives_no_demo_even_when_the_metric_passes():
    result, fake = _compile("soft retries 0", repairable=False)
    assert len(fake.requests) == 1
    assert result.graph.nodes["s"]["demos"] == [] or all(d["kind"] == "labeled" for d in result.graph.nodes["s"]["demos"])
    assert result.report["passed"] == 0 and result.report["failed_checks"] == 1
