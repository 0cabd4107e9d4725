"""`--executor ray` (lmpc/ray_executor.py, docs/cluster.md): rows on a local Ray cluster that the
test starts (2 CPUs, no dashboard, a small object store).

- the sentiment example's first dev rows on the embedded SmolLM2: the same scores and
  predictions as one process, the calls and tokens counted, traces written by the driver, and
  the shared cache filled so that a rerun makes no model call;
- a worker that dies mid-chunk: its rows run again on a new worker; a row whose worker dies
  twice is reported as an error, none lost;
- Ray not installed (exit 2, the install hint) and a cluster that cannot be reached (exit 1).
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import pytest

from lmpc.cli import main

ROOT = Path(__file__).resolve().parents[1]
SENTIMENT = ROOT / "examples" / "sentiment" / "sentiment.lmp"


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else 2
    out, err = capsys.readouterr()
    return rc, out, err


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_ray_not_installed_is_a_usage_error(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    rc, out, err = run(["eval", str(SENTIMENT), "--limit", "1", "--executor", "ray",
                        "--cache-dir", str(tmp_path)], capsys)
    assert rc == 2
    assert err.strip() == "lmpc: error: --executor ray needs Ray, which is not installed: pip install 'lmpc[ray]'"
    assert "Traceback" not in err
    rc, _, err = run(["eval", str(SENTIMENT), "--limit", "1", "--ray-workers", "2"], capsys)
    assert rc == 2 and "need --executor ray" in err


def test_unreachable_cluster_fails_fast(tmp_path, capsys) -> None:
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("a cluster is already joined in this process")
    rc, out, err = run(["eval", str(SENTIMENT), "--limit", "1", "--executor", "ray", "--ray-address",
                        "127.0.0.1:1", "--cache-dir", str(tmp_path)], capsys)
    assert rc == 1
    assert "the Ray cluster at 127.0.0.1:1 cannot be reached" in err and "Traceback" not in err
    assert not ray.is_initialized()


@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray")
    sigterm = signal.getsignal(signal.SIGTERM)
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=96 * 1024 * 1024,
             log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()
    signal.signal(signal.SIGTERM, sigterm)  # Ray leaves its own handler: later tests get the usual one


@pytest.mark.slow
def test_ray_eval_matches_one_process_and_fills_the_shared_cache(cluster, tmp_path, capsys) -> None:
    common = ["eval", str(SENTIMENT), "--limit", "4", "--json", "--worst", "0"]
    rc, out, err = run(common + ["--out", str(tmp_path / "one.jsonl"), "--cache-dir", str(tmp_path / "one")], capsys)
    assert rc == 0, err
    one = json.loads(out)
    rc, out, err = run(common + ["--out", str(tmp_path / "ray.jsonl"), "--cache-dir", str(tmp_path / "ray"),
                                 "--executor", "ray", "--ray-workers", "2"], capsys)
    assert rc == 0, err
    dist = json.loads(out)
    for key in ("score", "examples", "errors", "calls", "cache_hits", "prompt_tokens", "completion_tokens", "labels"):
        assert dist[key] == one[key], key
    assert dist["calls"] == 4 and dist["cache_hits"] == 0
    a, b = lines(tmp_path / "one.jsonl"), lines(tmp_path / "ray.jsonl")
    assert [(r["index"], r["prediction"], r["score"], r["error"]) for r in b] == \
           [(r["index"], r["prediction"], r["score"], r["error"]) for r in a]
    # the workers' finished calls are in the driver's trace log, with tokens
    traced = lines(tmp_path / "ray" / "traces.jsonl")
    assert len(traced) == 4 and all(e["model"] and e["prompt_tokens"] > 0 for e in traced)
    assert sorted(e["trace_id"] for e in traced) == sorted(t for r in b for t in r["trace_ids"])
    # the cache the workers wrote through the driver: a rerun (one process) makes no model call
    rc, out, err = run(common + ["--cache-dir", str(tmp_path / "ray")], capsys)
    again = json.loads(out)
    assert rc == 0 and again["calls"] == 4 and again["cache_hits"] == 4 and again["score"] == one["score"]


CRASHY = '''
signature Count = text -> words: int

pipeline count(text: str) -> (words: int) {
    n = call "crashy.py:count" Count(text: text)
    return words: n.words
}
'''

CRASHY_PY = '''
import os
from pathlib import Path


def count(text):
    # "crash once": the first worker to run it dies; "crash always": every one does
    if text.startswith("crash"):
        marker = Path(__file__).with_name("ran-" + text.replace(" ", "-"))
        if text == "crash always" or not marker.exists():
            marker.touch()
            os._exit(1)
    return {"words": len(text.split())}
'''


def test_a_dying_worker_loses_no_row(cluster, tmp_path, capsys) -> None:
    (tmp_path / "crashy.lmp").write_text(CRASHY)
    (tmp_path / "crashy.py").write_text(CRASHY_PY)
    rows = [("one two", 2), ("crash once", 2), ("three four five", 3), ("crash always", 2)]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps({"text": t, "words": w}) + "\n" for t, w in rows))
    rc, out, err = run(["eval", str(tmp_path / "crashy.lmp"), "--data", str(tmp_path / "rows.jsonl"),
                        "--metric", "exact_match(words)", "--json", "--out", str(tmp_path / "out.jsonl"),
                        "--cache-dir", str(tmp_path / "cache"), "--executor", "ray", "--ray-workers", "2"], capsys)
    assert rc == 0, err
    assert "a Ray worker died" in err and "running them again" in err
    results = lines(tmp_path / "out.jsonl")
    assert [r["index"] for r in results] == [0, 1, 2, 3]
    assert [r["score"] for r in results] == [1.0, 1.0, 1.0, 0.0]
    assert results[1]["error"] is None  # ran again on a new worker
    assert "died twice" in results[3]["error"]
    assert json.loads(out)["errors"] == 1


@pytest.mark.slow
def test_the_call_budget_is_one_counter_for_driver_and_workers(cluster, tmp_path) -> None:
    from lmpc.api import compile_file, load_data, resolve_metric
    from lmpc.ray_executor import RayRunner
    from lmpc.runtime.budget import BudgetExceededError
    from lmpc.runtime.cache import CallCache
    from lmpc.runtime.evaluate import evaluate

    cache = CallCache(tmp_path / "calls.sqlite")
    runner = RayRunner(workers=2, cache=cache)
    try:
        budget = runner.budget(3)
        prog = compile_file(SENTIMENT, cache=cache, trace_log=False, budget=budget)
        examples = load_data(prog, str(SENTIMENT.parent / "data" / "dev.jsonl"))[:6]
        with pytest.raises(BudgetExceededError, match="budget of 3 model calls is spent"):
            evaluate(prog, examples, resolve_metric(prog), runner=runner)
        # every call charged was finished and cached (the chunk still running was waited for)
        assert budget.used == 3 and cache.count() == 3
        with pytest.raises(BudgetExceededError):
            budget.charge()  # the driver's programs charge the same counter
        prog.close()
    finally:
        runner.close()
