"""The built artifact is the program the build scored (issue 10 §2), on the embedded model.

After `lmpc build`, `lmpc eval` of the artifact on the same dev data must be served entirely
from the call cache (every prompt and decoding grammar identical to the build's) and give the
build's score: for a multi-field chain_of_thought program whose fields are declared out of
alphabetical order (format 1 re-sorted them), and for the sentiment example."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Inputs review, label and outputs verdict, explanation: both out of alphabetical order.
CHECK = '''
model local = llama_cpp(builtin: "smollm2-135m", temperature: 0)
type Verdict = "agree" | "disagree"
signature Check {
    "Does the label fit the review? Answer briefly."
    review: str
    label: str
    ->
    verdict: Verdict
    explanation: str  "at most ten words"
}
pipeline check(review: str, label: str) -> (verdict: Verdict, explanation: str) {
    c = chain_of_thought Check(review: review, label: label)
    return verdict: c.verdict, explanation: c.explanation
}
optimize check {
    train "train.jsonl"
    dev "dev.jsonl"
    metric exact_match(verdict)
    strategy labeled_few_shot(k: 1)
}
'''
ROWS = [
    {"review": "Great!", "label": "positive", "verdict": "agree"},
    {"review": "Awful.", "label": "positive", "verdict": "disagree"},
]


def lmpc(*args: str, cache: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lmpc", *args, "--cache-dir", str(cache)],
                          capture_output=True, text=True, timeout=900)


def build_then_eval(src: Path, out: Path, cache: Path, *extra: str) -> tuple[dict, dict]:
    r = lmpc("build", str(src), "-o", str(out), *extra, cache=cache)
    assert r.returncode == 0, r.stderr
    report = json.loads(out.read_text())["report"]
    r = lmpc("eval", str(out), "--json", cache=cache)
    assert r.returncode == 0, r.stderr
    return report, json.loads(r.stdout.strip().splitlines()[-1])


def test_a_multi_field_chain_of_thought_artifact_replays_the_builds_calls(tmp_path):
    train = {**ROWS[1], "review": "Bad.", "explanation": "The review is negative."}
    (tmp_path / "train.jsonl").write_text(json.dumps(train) + "\n")
    (tmp_path / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    src = tmp_path / "check.lmp"
    src.write_text(CHECK)
    out = tmp_path / "build" / "check.lmpc.json"  # another folder: paths must follow the artifact
    report, summary = build_then_eval(src, out, tmp_path / "cache")
    node = next(n for n in json.loads(out.read_text())["graphs"]["check"]["nodes"] if n["id"] == "c")
    assert [f["name"] for f in node["inputs"]] == ["review", "label"]
    assert [f["name"] for f in node["outputs"]] == ["reasoning", "verdict", "explanation"]
    assert len(node["demos"]) == 1
    assert summary["score"] == round(report["score_after"], 4)
    assert summary["examples"] == len(ROWS)
    assert summary["cache_hits"] == summary["calls"] == len(ROWS), summary  # no new model call


def test_the_sentiment_example_artifact_replays_the_builds_calls(tmp_path):
    example = ROOT / "examples" / "sentiment"
    shutil.copy(example / "sentiment.lmp", tmp_path / "sentiment.lmp")
    data = tmp_path / "data"
    data.mkdir()
    for split, n in (("train", 6), ("dev", 6)):
        lines = (example / "data" / f"{split}.jsonl").read_text().splitlines()[:n]
        (data / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "sentiment.lmpc.json"
    report, summary = build_then_eval(tmp_path / "sentiment.lmp", out, tmp_path / "cache",
                                      "--strategy", "bootstrap_few_shot(max_demos: 2, max_labeled: 1)")
    assert summary["score"] == round(report["score_after"], 4)
    assert summary["cache_hits"] == summary["calls"] == 6, summary


UPPER = '''
signature Shout = text: str -> loud: str
signature Sentiment = "Classify the sentiment." text: str -> label: "positive" | "negative"
pipeline p(text: str) -> (label: "positive" | "negative", loud: str) {
    u = call "helpers/shout.py:shout" Shout(text: text)
    s = predict Sentiment(text: u.loud)
    return label: s.label, loud: u.loud
}
optimize p {
    train "d.jsonl"
    dev "d.jsonl"
    metric exact_match(label)
    strategy labeled_few_shot(k: 1)
}
'''


def test_build_places_the_python_files_beside_the_artifact_and_running_them_needs_trust(tmp_path):
    (tmp_path / "helpers").mkdir()
    (tmp_path / "helpers" / "shout.py").write_text("def shout(text):\n    return text.upper()\n")
    (tmp_path / "d.jsonl").write_text(json.dumps({"text": "great", "label": "positive"}) + "\n")
    src = tmp_path / "p.lmp"
    src.write_text(UPPER)
    out = tmp_path / "dist" / "p.lmpc.json"
    r = lmpc("build", str(src), "-o", str(out), cache=tmp_path / "c")
    assert r.returncode == 0, r.stderr
    copied = tmp_path / "dist" / "helpers" / "shout.py"
    assert copied.read_text() == (tmp_path / "helpers" / "shout.py").read_text()
    assert json.loads(out.read_text())["code"][0]["file"] == "helpers/shout.py"

    refused = lmpc("run", str(out), "-i", "text=fine", cache=tmp_path / "c")
    assert refused.returncode == 2 and "helpers/shout.py" in refused.stderr and "--trust-code" in refused.stderr
    ran = lmpc("run", str(out), "-i", "text=fine", "--trust-code", "--json", cache=tmp_path / "c")
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout.splitlines()[-1])["outputs"]["loud"] == "FINE"

    # A different file already where the build would copy it is never overwritten.
    other = tmp_path / "other"
    (other / "helpers").mkdir(parents=True)
    (other / "helpers" / "shout.py").write_text("def shout(text):\n    return 'pwned'\n")
    clash = lmpc("build", str(src), "-o", str(other / "p.lmpc.json"), cache=tmp_path / "c")
    assert clash.returncode == 2 and "exists and differs" in clash.stderr
    assert "pwned" in (other / "helpers" / "shout.py").read_text() and not (other / "p.lmpc.json").exists()
