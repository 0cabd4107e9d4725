"""Prompt nodes inside a map's body are parameter sites: optimizers reach them by site id
(`j[*]/Judge`), bootstrap collects their demos from the items' traces, and what they set
survives the artifact round trip."""

from __future__ import annotations

from lmpc.compiler.artifact_graph import graph_from_json, graph_to_json
from lmpc.compiler.ir import parameter_sites, site
from lmpc.optimizers import BootstrapFewShot, OptimizeContext
from lmpc.runtime.data import Example

from .fake import HEADER, FakeModel, graph, track

MAPPED = HEADER + '''
signature Split = text -> parts: list[str]
signature Judge = part: str -> label: Label
pipeline p(text: str) -> (labels: list[Label]) {
    s = predict Split(text: text)
    j = map Judge(part: x) for x in s.parts
    return labels: j.label
}
'''


def answer(f, demos, req):
    if "parts" in req.json_schema["properties"]:
        return {"parts": f["text"].split()}
    return {"label": "positive" if f["part"].startswith("good") else "negative"}


def metric(example, prediction):
    return float(prediction.get("labels") == example.gold["labels"])


def test_bootstrap_sets_demos_on_a_body_site_and_they_survive_the_artifact():
    g = graph(MAPPED)
    assert parameter_sites(g) == ["s", "j[*]/Judge"]
    train = [Example({"text": t}, {"labels": [("positive" if w.startswith("good") else "negative") for w in t.split()]},
                     f"train.jsonl:{i + 1}", {}) for i, t in enumerate(["good bad", "bad good good"])]
    ctx = track(OptimizeContext(trainset=train, devset=[], metric=metric, models={"m": FakeModel("m", answer)},
                                log=lambda _: None))
    result = BootstrapFewShot(max_demos=2, max_labeled=0).compile(g, ctx)
    demos = site(result.graph, "j[*]/Judge")["demos"]
    assert len(demos) == 2 and all(d["kind"] == "bootstrapped" for d in demos)
    assert {d["outputs"]["label"] for d in demos} == {"positive", "negative"}  # label coverage per item
    assert site(g, "j[*]/Judge")["demos"] == [], "the input graph is not mutated"
    back = graph_from_json(graph_to_json(result.graph), "graphs/p")
    assert site(back, "j[*]/Judge")["demos"] == demos
