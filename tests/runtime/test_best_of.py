"""`best_of` on the fake model: n samples (seeded draws, each cached), the reward (an
expression or a Python function) picks one, early stop at the threshold, the trace, the
artifact, bootstrapping and --dry-run bounds."""

from __future__ import annotations

import sys
from pathlib import Path

from lmpc.compiler.api import compile_source
from lmpc.compiler.ir import calls_per_row
from lmpc.runtime.cache import CallCache
from lmpc.runtime.program import Program

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "optimizers"))
from fake import FakeModel  # noqa: E402

HEADER = '''
model m = llama_cpp(builtin: "smollm2-135m")
signature Answer = question -> answer: str
'''


def _graph(step: str):
    src = HEADER + f'''
pipeline p(question: str) -> (answer: str) {{
    {step}
    return answer: b.answer
}}
'''
    return compile_source(src).graphs["p"]


LENGTHS = {0: 12, 1: 3, 2: 7, 3: 3}  # sample (seed) -> answer length


def by_seed(f, demos, req):
    return {"answer": "x" * LENGTHS[req.seed]}


def _run(g, rows, answer=by_seed, **kw):
    fake = FakeModel("m", answer)
    with Program(g, trace_log=False, models={"m": fake}, **{"cache": False, **kw}) as prog:
        return prog.batch(rows), fake


def test_the_sample_the_reward_scores_highest_is_kept():
    (res,), fake = _run(_graph("b = best_of Answer(question: question) n 4 reward len(b.answer) <= 7"),
                        [{"question": "q"}])
    assert res.values == {"answer": "xxx"}  # samples 1 to 3 score 1: the tie keeps the earliest
    assert [(r.temperature, r.seed) for r in fake.requests] == [(0, 0), (0.7, 1), (0.7, 2), (0.7, 3)]
    notes = [e.extra["best_of"] for e in res.trace]
    assert notes == [{"sample": 0, "reward": 0.0, "chosen": False}, {"sample": 1, "reward": 1.0, "chosen": True},
                     {"sample": 2, "reward": 1.0, "chosen": False}, {"sample": 3, "reward": 1.0, "chosen": False}]


def test_sampling_stops_at_the_threshold():
    (res,), fake = _run(_graph("b = best_of Answer(question: question) n 4 reward len(b.answer) < 10 threshold 1"),
                        [{"question": "q"}])
    assert res.values == {"answer": "xxx"} and len(fake.requests) == 2


def test_a_python_reward_gets_the_steps_inputs_and_outputs(tmp_path):
    (tmp_path / "rewards.py").write_text("def score(question, answer):\n    return len(answer) / 100 + (question == 'q')\n")
    g = _graph('b = best_of Answer(question: question) n 3 reward "rewards.py:score"')
    (res,), fake = _run(g, [{"question": "q"}], base_dir=tmp_path)
    assert res.values == {"answer": "x" * 12} and len(fake.requests) == 3
    rewards = [e for e in res.trace if e.kind == "call"]
    assert [e.parsed for e in rewards] == [{"reward": 1.12}, {"reward": 1.03}, {"reward": 1.07}]


def test_samples_are_cached_per_sample_index(tmp_path):
    g = _graph("b = best_of Answer(question: question) n 3 reward len(b.answer)")
    cache = tmp_path / "calls.sqlite"
    (first,), fake = _run(g, [{"question": "q"}], cache=cache)
    (again,), fake2 = _run(g, [{"question": "q"}], cache=CallCache(cache))
    assert len(fake.requests) == 3 and fake2.requests == []
    assert again.values == first.values == {"answer": "x" * 12}
    assert all(e.cache_hit for e in again.trace)


def test_a_check_on_a_best_of_step_samples_again_with_feedback():
    def answer(f, demos, req):
        told = "Instruction: Be brief" in req.messages[-1]["content"]
        return {"answer": "x" * (2 if told else LENGTHS[req.seed])}

    g = _graph("b = best_of Answer(question: question) n 2 reward len(b.answer)\n"
               '    check len(b.answer) <= 5 else "Be brief"')
    (res,), fake = _run(g, [{"question": "q"}], answer=answer)
    assert res.values == {"answer": "xx"} and len(fake.requests) == 4
    assert calls_per_row(g) == 2 * (1 + 2)


def test_bootstrapping_takes_the_kept_sample_only():
    from lmpc.optimizers import BootstrapFewShot, OptimizeContext
    from lmpc.runtime.data import Example

    from fake import track

    g = _graph("b = best_of Answer(question: question) n 3 reward len(b.answer) <= 5")
    ctx = track(OptimizeContext(trainset=[Example({"question": "q"}, {"answer": "xxx"}, "t:1", {})], devset=[],
                                metric=lambda ex, pred: float(pred["answer"] == "xxx"),
                                models={"m": FakeModel("m", by_seed)}, log=lambda _: None))
    result = BootstrapFewShot(max_rounds=1).compile(g, ctx)
    demos = result.graph.nodes["b"]["demos"]
    assert [d["outputs"] for d in demos if d["kind"] == "bootstrapped"] == [{"answer": "xxx"}]
    assert result.report["nodes"]["b"]["candidates"] == 1


def test_an_artifact_carries_the_python_reward_and_runs_it_only_when_trusted(tmp_path):
    import pytest

    import lmpc
    from lmpc.compiler import compile_file
    from lmpc.compiler.artifact import ArtifactTrustError, make_artifact, place_code, write_artifact

    src_dir, out_dir = tmp_path / "src", tmp_path / "out"
    src_dir.mkdir()
    out_dir.mkdir()
    (src_dir / "rewards.py").write_text("def score(question, answer):\n    return len(answer)\n")
    (src_dir / "p.lmp").write_text(HEADER + '''
pipeline p(question: str) -> (answer: str) {
    b = best_of Answer(question: question) n 2 reward "rewards.py:score"
    return answer: b.answer
}
''')
    checked = compile_file(src_dir / "p.lmp")
    out = out_dir / "p.lmpc.json"
    graphs = {"p": checked.graphs["p"]}
    place_code(graphs, {}, src_dir, out)
    write_artifact(out, make_artifact(checked, "p", graphs, out, {}, {}))
    assert (out_dir / "rewards.py").exists()
    with pytest.raises(ArtifactTrustError, match="rewards.py"):
        lmpc.load(out, cache=False, trace_log=False)
    fake = FakeModel("m", by_seed)
    with lmpc.load(out, trust_code=True, cache=False, trace_log=False, models={"m": fake}) as prog:
        assert prog(question="q").answer == "x" * 12


JUDGE = '''
signature Judge = question, answer -> good: bool
pipeline judge(question: str, answer: str) -> (good: bool) {
    j = predict Judge(question: question, answer: answer)
    return good: j.good
}
'''


def judged(f, demos, req):
    if "good" in req.json_schema["properties"]:  # the judge: short answers are good
        return {"good": len(f["answer"]) <= 5}
    return by_seed(f, demos, req)


def test_a_judge_pipeline_scores_each_sample_until_the_threshold(tmp_path):
    from lmpc.compiler import compile_file
    from lmpc.compiler.artifact import load_artifact, make_artifact, write_artifact

    src = tmp_path / "p.lmp"
    src.write_text(HEADER + JUDGE + '''
pipeline p(question: str) -> (answer: str) {
    b = best_of Answer(question: question) n 4 reward judge threshold 1
    return answer: b.answer
}
''')
    checked = compile_file(src)
    g = checked.graphs["p"]
    assert calls_per_row(g) == 4 + 4  # 4 samples, each judged once
    out = tmp_path / "p.lmpc.json"
    write_artifact(out, make_artifact(checked, "p", {"p": g}, out, {}, {}))
    loaded = load_artifact(out).graph
    for graph in (g, loaded):
        (res,), fake = _run(graph, [{"question": "q"}], answer=judged)
        assert res.values == {"answer": "xxx"} and len(fake.requests) == 4  # sample, judge, sample, judge
        assert [e.step for e in res.trace] == ["b", "b[0]/judge/j", "b", "b[1]/judge/j"]
        assert len({e.trace_id for e in res.trace}) == 4
        assert [e.extra["best_of"] for e in res.trace if e.step == "b"] == [
            {"sample": 0, "reward": 0.0, "chosen": False}, {"sample": 1, "reward": 1.0, "chosen": True}]


def test_graph_draws_the_judge_as_the_subgraph_of_each_sample():
    from lmpc.compiler.render import to_dot, to_mermaid

    g = compile_source(HEADER + JUDGE + '''
pipeline p(question: str) -> (answer: str) {
    b = best_of Answer(question: question) n 4 reward judge threshold 1
    return answer: b.answer
}
''').graphs["p"]
    text = to_mermaid(g)
    assert "b = best_of Answer -> (answer: str) [best of 4 by judge `judge`, until 1.0]" in text
    assert '["b: the judge of each sample"]' in text and "judge/j = predict Judge" in text
    assert 'label="b: the judge of each sample";' in to_dot(g)
