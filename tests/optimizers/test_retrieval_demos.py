"""Demos of a step after a `retrieve` step carry the retrieved passages, trimmed to fit
max_prompt_tokens when the strategy chooses them (optimizers/passages.py), so the artifact
stores, and later renders, exactly the demos the build scored. On the fake model (its prompt
tokens: characters / 4) and once on SmolLM2."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

pytest.importorskip("bm25s")

import lmpc  # noqa: E402
from lmpc.compiler import compile_file  # noqa: E402
from lmpc.compiler.artifact import make_artifact, relocate_paths, write_artifact  # noqa: E402
from lmpc.compiler.ir import site  # noqa: E402
from lmpc.optimizers import BootstrapFewShot, OptimizeContext  # noqa: E402
from lmpc.optimizers.build import build  # noqa: E402
from lmpc.optimizers.passages import TRIM_MARKER, PromptScale, fit_passages, trim_demo  # noqa: E402
from lmpc.runtime.data import Example  # noqa: E402
from lmpc.runtime.models import Completion, GenerationRequest  # noqa: E402

from .fake import FakeModel, fields, track  # noqa: E402

TOPICS = ["paris", "tokyo", "everest", "amazon", "sahara", "danube", "kilimanjaro", "nile"]

PROGRAM = '''model m = llama_cpp(builtin: "smollm2-135m")
retriever wiki = index(corpus: "wiki.jsonl", mode: "bm25")
signature Answer = "Answer from the context." question, context: list[str] -> answer: str
pipeline rag(question: str) -> (answer: str) {
    ctx = retrieve wiki(query: question, k: 3)
    a = predict Answer(question: question, context: ctx.passages)
    return answer: a.answer
}
'''


def passage(topic: str) -> str:
    """A long passage (~600 characters) about one topic, its name first and last."""
    filler = " ".join(f"Sentence {i} about {topic} adds one more detail that a reader may need later on."
                      for i in range(7))
    return f"{topic.capitalize()} is the topic here. {filler} That is all about {topic}."


class Tokens(FakeModel):
    """The fake model, reporting a prompt's tokens as its characters / 4."""

    def generate(self, req: GenerationRequest) -> Completion:
        c = super().generate(req)
        chars = sum(len(m["content"]) for m in req.messages)
        return Completion(c.text, prompt_tokens=math.ceil(chars / 4), completion_tokens=c.completion_tokens)


def answer(f: dict[str, str], demos: int, req: GenerationRequest) -> dict[str, Any]:
    return {"answer": f["question"].split()[-1]}  # always right: every teacher run passes


def example(topic: str, i: int) -> Example:
    return Example({"question": f"tell me about {topic}"}, {"answer": topic}, f"train.jsonl:{i + 1}", {})


def exact(ex: Example, pred: dict[str, Any]) -> float:
    return float(pred.get("answer") == ex.gold["answer"])


@pytest.fixture
def rag(tmp_path, monkeypatch):
    monkeypatch.setenv("LMPC_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "wiki.jsonl").write_text("".join(json.dumps({"id": t, "text": passage(t)}) + "\n" for t in TOPICS))
    (tmp_path / "rag.lmp").write_text(PROGRAM)
    return tmp_path, compile_file(tmp_path / "rag.lmp")


def run_build(tmp_path, checked, budget, strategy=None):
    fake = Tokens("m", answer)
    train = [example(t, i) for i, t in enumerate(TOPICS[:5])]
    dev = [example(t, 10 + i) for i, t in enumerate(TOPICS[5:])]
    ctx = track(OptimizeContext(train, dev, exact, base_dir=tmp_path, models={"m": fake}, log=lambda _: None,
                                max_prompt_tokens=budget))
    graph, report = build(checked.graphs["rag"], [strategy or BootstrapFewShot(max_demos=3, max_labeled=0)], ctx)
    return graph, report, fake


def test_demos_carry_the_passages_and_are_trimmed_to_the_budget(rag):
    tmp_path, checked = rag
    full, full_report, _ = run_build(tmp_path, checked, None)
    demos = site(full, "a")["demos"]
    assert len(demos) == 3 and all(len(d["inputs"]["context"]) == 3 for d in demos)  # the passages, as retrieved
    assert all(p in {passage(t) for t in TOPICS} for d in demos for p in d["inputs"]["context"])
    budget = 900
    assert full_report["prompt_tokens_after"] > budget  # untrimmed, these demos do not fit

    graph, report, fake = run_build(tmp_path, checked, budget)
    assert report["prompt_tokens_after"] <= budget, report["prompt_tokens_after"]
    trimmed = site(graph, "a")["demos"]
    assert trimmed and all(d["kind"] == "bootstrapped" for d in trimmed)
    for d in trimmed:
        ctx = d["inputs"]["context"]
        assert 1 <= len(ctx) < 3  # fewer passages first ...
        assert ctx[0].lower().startswith(d["outputs"]["answer"])  # ... keeping the one with the answer
    assert any(p.endswith(TRIM_MARKER) for d in trimmed for p in d["inputs"]["context"])  # ... then cut, marked
    node_report = report["strategies"][0]["nodes"]["a"]
    assert node_report["passages"]["trimmed"] == [d["source"] for d in trimmed]
    assert report["prompt_tokens_after"] < report["prompt_tokens_before"] + budget  # a real gain over zero-shot

    # The artifact stores the trimmed demos, and renders the prompts the build scored.
    out = tmp_path / "rag.lmpc.json"
    graphs, optimize = relocate_paths({"rag": graph}, {}, tmp_path, out)
    write_artifact(out, make_artifact(checked, "rag", graphs, out, optimize, report))
    scored = {r.messages[-1]["content"]: r.messages for r in fake.requests}  # the last: the dev evaluation's
    replay = Tokens("m", answer)
    with lmpc.load(out, cache=False, trace_log=False, models={"m": replay}) as prog:
        assert site(prog.graph, "a")["demos"] == trimmed
        results = prog.batch([{"question": f"tell me about {t}"} for t in TOPICS[5:]])
    assert all(r.ok for r in results)
    for req in replay.requests:
        assert req.messages == scored[req.messages[-1]["content"]]


def test_the_same_demos_and_budget_give_the_same_cuts(rag):
    """Deterministic: trimming twice gives equal demos; a demo that fits is left as it is."""
    _, checked = rag
    g = checked.graphs["rag"]
    node = site(g, "a")
    demo = {"inputs": {"question": "q nile", "context": [passage("nile"), passage("tokyo"), passage("amazon")]},
            "outputs": {"answer": "nile"}, "source": "train.jsonl:1", "kind": "bootstrapped"}
    a, b = trim_demo(node, demo, 500), trim_demo(node, demo, 500)
    assert a == b and a is not demo
    assert len(a["inputs"]["context"]) == 1 and a["inputs"]["context"][0].startswith("Nile")  # it holds the answer
    assert trim_demo(node, demo, 10**6) is demo
    assert trim_demo(node, demo, 20) is None  # not even one passage fits: the demo is dropped
    g2 = g.copy()
    g2.nodes["a"]["demos"] = [demo, {**demo, "source": "train.jsonl:2"}]
    report = fit_passages(g2, PromptScale(4.0, {"a": 300}), budget=120)
    assert report == {"a": {"dropped": ["train.jsonl:1", "train.jsonl:2"]}} and g2.nodes["a"]["demos"] == []
    assert fit_passages(g2, PromptScale(), budget=None) == {}


def test_knn_pools_hold_passages_trimmed_so_any_k_shown_fit_the_budget(rag):
    from lmpc.optimizers import KNNFewShot

    tmp_path, checked = rag
    full, full_report, _ = run_build(tmp_path, checked, None, KNNFewShot(k=2))
    assert all(len(d["inputs"]["context"]) == 3 for d in site(full, "a")["knn"]["pool"])
    assert full_report["prompt_tokens_after"] > 900
    graph, report, _ = run_build(tmp_path, checked, 900, KNNFewShot(k=2))
    pool = site(graph, "a")["knn"]["pool"]
    assert len(pool) == 5 and all(1 <= len(d["inputs"]["context"]) < 3 for d in pool)
    assert report["prompt_tokens_after"] <= 900, report["prompt_tokens_after"]
    assert set(report["strategies"][0]["nodes"]["a"]["passages"]["trimmed"]) == {d["source"] for d in pool}
