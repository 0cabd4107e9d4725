"""bootstrap_few_shot end to end on the real embedded model (SmolLM2-135M through llama.cpp)."""

from __future__ import annotations

import json
from pathlib import Path

from lmpc.compiler.api import compile_file
from lmpc.compiler.ir import prompt_nodes
from lmpc.optimizers import BootstrapFewShot, OptimizeContext
from lmpc.runtime.data import Example
from lmpc.runtime.models import create_model

from .fake import exact_label

ROOT = Path(__file__).resolve().parents[2]
SENTIMENT = ROOT / "examples/sentiment"


def test_bootstrap_on_smollm2_yields_demos_with_valid_labels():
    g = compile_file(SENTIMENT / "sentiment.lmp").graphs["classify"]
    lines = (SENTIMENT / "data/train.jsonl").read_text().splitlines()[:6]
    train = []
    for i, line in enumerate(lines):
        row = json.loads(line)
        train.append(Example({"text": row["text"]}, {"label": row["label"]}, f"train.jsonl:{i + 1}", row))
    spec = g.graph["models"]["local"]
    model = create_model("local", spec["provider"], spec["options"])  # one instance, shared
    ctx = OptimizeContext(trainset=train, devset=[], metric=exact_label, models={"local": model},
                          log=lambda _: None)
    try:
        result = BootstrapFewShot(max_demos=2).compile(g, ctx)
        prog = ctx.program(result.graph)
        after = prog.batch([{"text": "I love this, best day ever!"}])[0]
    finally:
        ctx.close()
        model.close()
    (nid,) = prompt_nodes(result.graph)
    demos = result.graph.nodes[nid]["demos"]
    report = result.report
    assert report["calls"] == 6 and report["errors"] == 0 and report["rounds"] == 1
    boot = [d for d in demos if d["kind"] == "bootstrapped"]
    assert len(boot) == min(2, report["passed"])
    assert len(demos) == len(boot) + min(16 - len(boot), 6 - len(boot))  # labeled fill from the rest
    assert all(d["outputs"]["label"] in ("positive", "negative") for d in demos)
    gold = {ex.source: ex.gold["label"] for ex in train}
    assert all(d["outputs"]["label"] == gold[d["source"]] for d in demos), "demos carry correct labels"
    assert after.ok and after.values["label"] in ("positive", "negative")


def test_coverage_and_label_shape_on_smollm2_intents():
    """Seven intents, one training row each: whatever the model passes, the 4 demo slots hold
    4 different intents (fair share 1), and the evaluation's label counts add up."""
    from collections import Counter

    from lmpc.runtime.evaluate import evaluate

    intents = ROOT / "examples/intents"
    g = compile_file(intents / "intents.lmp").graphs["recognize"]

    def one_per_intent(split: str) -> list[Example]:
        out, seen = [], set()
        for i, line in enumerate((intents / f"data/{split}.jsonl").read_text().splitlines()):
            row = json.loads(line)
            if row["intent"] not in seen:
                seen.add(row["intent"])
                out.append(Example({"text": row["text"]}, {"intent": row["intent"]}, f"{split}.jsonl:{i + 1}", row))
        return out

    train, dev = one_per_intent("train"), one_per_intent("dev")
    assert len(train) == len(dev) == 7
    spec = g.graph["models"]["local"]
    model = create_model("local", spec["provider"], spec["options"])
    metric = lambda ex, pred: float(pred.get("intent") == ex.gold["intent"])  # noqa: E731
    ctx = OptimizeContext(trainset=train, devset=dev, metric=metric, models={"local": model}, log=lambda _: None)
    try:
        result = BootstrapFewShot(max_demos=4, max_labeled=4).compile(g, ctx)
        report = evaluate(ctx.program(result.graph), dev, metric)
    finally:
        ctx.close()
        model.close()
    demos = result.graph.nodes["r"]["demos"]
    counts = Counter(d["outputs"]["intent"] for d in demos)
    assert len(demos) == 4 and max(counts.values()) == 1, counts
    gold = {ex.source: ex.gold["intent"] for ex in train}
    assert all(d["outputs"]["intent"] == gold[d["source"]] for d in demos)
    node = result.report["nodes"]["r"]
    # one row per intent: each passing row covers its intent
    assert len(node.get("labels_not_passed", [])) == 7 - result.report["passed"]
    stats = report.labels["intent"]
    assert sum(stats["predicted"].values()) + stats["errors"] == 7
    assert stats["gold"] == {t: 1 for t in stats["gold"]} and len(stats["gold"]) == 7
    assert all(sum(line.values()) == 1 for line in stats["confusion"].values())
    assert sum(stats["confusion"][t].get(t, 0) for t in stats["confusion"]) == round(report.score * 7)
