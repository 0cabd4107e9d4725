"""`lmpc build --dry-run` counts a check's retries and best_of's samples as upper bounds."""

from __future__ import annotations

import json
import subprocess
import sys

PROGRAM = '''
type Label = "positive" | "negative"
signature Sentiment = "Classify the sentiment." text -> label: Label, why: str
signature Polish = text, label: Label -> summary: str
pipeline classify(text: str) -> (label: Label, summary: str) {
    s = predict Sentiment(text: text)
    check len(s.why) <= 80 else "Explain in one short sentence" retries 3
    p = best_of Polish(text: text, label: s.label) n 4 reward len(p.summary) <= 40 threshold 1
    return label: s.label, summary: p.summary
}
optimize classify {
    train "train.jsonl"
    dev "dev.jsonl"
    metric exact_match(label)
    strategy bootstrap_few_shot(max_demos: 2, max_rounds: 1)
}
'''


def test_dry_run_counts_every_retry_and_sample(tmp_path):
    rows = [{"text": t, "label": l} for t, l in (("good", "positive"), ("bad", "negative"), ("fine", "positive"))]
    for split in ("train", "dev"):
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "c.lmp").write_text(PROGRAM)
    plan = subprocess.run([sys.executable, "-m", "lmpc", "build", "c.lmp", "--dry-run", "--cache-dir", str(tmp_path / "cache")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert plan.returncode == 0, plan.stderr
    per_row = (1 + 3) + 4  # the checked step and its 3 retries, 4 samples of the best_of step
    assert f"{3 * per_row:>7}  evaluate zero-shot on dev" in plan.stdout
    assert f"{3 * per_row:>7}  bootstrap_few_shot: teacher" in plan.stdout
