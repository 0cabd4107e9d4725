"""`best_of` on the embedded SmolLM2 model: the samples differ (seeded draws after the first),
and the step keeps the one the reward scores highest, as its trace shows."""

from __future__ import annotations

import pytest

from lmpc.compiler.api import compile_source
from lmpc.runtime.program import Program

SOURCE = '''
signature Answer = "Answer the question." question -> answer: str
pipeline qa(question: str) -> (answer: str) {
    b = best_of Answer(question: question) n 4 reward "rewards.py:shortest"
    return answer: b.answer
}
'''

pytestmark = pytest.mark.usefixtures("smollm2_path")


def test_best_of_keeps_the_sample_with_the_highest_reward(tmp_path):
    (tmp_path / "rewards.py").write_text("def shortest(question, answer):\n    return 1 / (1 + len(answer))\n")
    g = compile_source(SOURCE).graphs["qa"]
    with Program(g, base_dir=tmp_path, cache=tmp_path / "calls.sqlite", trace_log=False) as prog:
        (res,) = prog.batch([{"question": "Why is the sky blue?"}])
    assert res.error is None
    samples = [e for e in res.trace if e.kind == "best_of"]
    answers = [e.parsed["answer"] for e in samples]
    assert len(samples) == 4 and len(set(answers)) > 1, answers  # the draws differ
    rewards = [e.extra["best_of"]["reward"] for e in samples]
    assert rewards == [pytest.approx(1 / (1 + len(a))) for a in answers]
    best = rewards.index(max(rewards))
    assert res.answer == answers[best] and len(res.answer) == min(len(a) for a in answers)
    assert [e.extra["best_of"]["chosen"] for e in samples] == [i == best for i in range(4)]
