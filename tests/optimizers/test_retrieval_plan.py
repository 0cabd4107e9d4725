"""--dry-run plans count the searches of retrieve steps beside the model calls (rows x retrieve
steps per stage; not model calls, not in --max-calls), and the figures bound what a build of
the multi-hop example does, on the fake model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("bm25s")

from lmpc.compiler import compile_file  # noqa: E402
from lmpc.compiler.api import strategy_from_text  # noqa: E402
from lmpc.optimizers import OptimizeContext  # noqa: E402
from lmpc.optimizers.build import build, make_optimizers, plan, retrieve_steps  # noqa: E402
from lmpc.runtime.data import Example  # noqa: E402
from lmpc.runtime.models import GenerationRequest  # noqa: E402
from lmpc.runtime.perform import Performer  # noqa: E402

from .fake import FakeModel, track  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[2] / "examples/multihop"


def answer(f: dict[str, str], demos: int, req: GenerationRequest) -> dict[str, Any]:
    props = req.json_schema["properties"]
    if "query" in props:  # both hops: the question, then the first passage found
        return {"query": json.loads(f["passages"])[0] if "passages" in f else f["question"]}
    found = json.loads(f["second"])  # the answer: the first passage of the second hop
    return {"answer": found[0] if found else "?"}


def rows(name: str) -> list[Example]:
    out = []
    for i, line in enumerate((EXAMPLE / "data" / name).read_text().splitlines()):
        row = json.loads(line)
        out.append(Example({"question": row["question"]}, {"answer": row["answer"]}, f"{name}:{i + 1}", row))
    return out


def contains(ex: Example, pred: dict[str, Any]) -> float:
    return float(ex.gold["answer"].lower() in str(pred.get("answer", "")).lower())


@pytest.mark.parametrize("chain", ["bootstrap_few_shot(max_demos: 2, max_labeled: 0)",
                                   "random_search(candidates: 4, max_demos: 2)"])
def test_the_plan_counts_the_searches_a_build_makes(tmp_path, monkeypatch, chain):
    monkeypatch.setenv("LMPC_CACHE_DIR", str(tmp_path / "cache"))
    g = compile_file(EXAMPLE / "hops.lmp").graphs["hops"]
    assert retrieve_steps(g) == ["hop1", "hop2"]
    train, dev = rows("train.jsonl")[:4], rows("dev.jsonl")[:3]
    optimizers = make_optimizers(strategy_from_text(chain))
    stages = plan(g, optimizers, len(train), len(dev))
    assert stages[0].calls == 3 * len(dev) and stages[0].searches == 2 * len(dev)  # 3 prompt nodes, 2 searches
    assert stages[1].searches == 2 * len(train)  # the teacher runs every training row once
    made: list[str] = []
    search = Performer.retrieve

    def counted(self, node, query, k, event):
        made.append(node["step"])
        return search(self, node, query, k, event)

    monkeypatch.setattr(Performer, "retrieve", counted)
    fake = FakeModel("local", answer)
    ctx = track(OptimizeContext(train, dev, contains, base_dir=EXAMPLE, models={"local": fake}, log=lambda _: None))
    _, report = build(g, optimizers, ctx)
    planned = sum(s.searches for s in stages)
    assert 0 < len(made) <= planned, (len(made), planned)
    if chain.startswith("bootstrap"):  # every planned run happens: the bound is exact
        assert len(made) == planned == 2 * (2 * len(dev) + len(train))
    assert len(fake.requests) <= sum(s.calls for s in stages)  # searches are not model calls
    assert report["calls"] == len(fake.requests)


def test_lmpc_build_dry_run_prints_the_searches_beside_the_calls(tmp_path):
    r = subprocess.run([sys.executable, "-m", "lmpc", "build", str(EXAMPLE / "hops.lmp"), "--dry-run",
                        "--cache-dir", str(tmp_path / "c")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "12 train, 8 dev examples" in out
    assert "24  evaluate zero-shot on dev (and 16 searches)" in out
    assert "36  bootstrap_few_shot: teacher (and 24 searches)" in out
    assert "84  model calls in all" in out  # the searches are not among them
    assert "56  searches of retrieve steps in all (not model calls" in out
    assert not (tmp_path / "c" / "indexes").exists()  # a plan builds no index


def test_lmpc_eval_dry_run_plans_the_calls_and_searches_an_evaluation_makes(tmp_path, monkeypatch, capsys):
    from lmpc.api import program_from_checked, resolve_metric
    from lmpc.cli_eval import print_eval_plan
    from lmpc.runtime.evaluate import evaluate

    monkeypatch.setenv("LMPC_CACHE_DIR", str(tmp_path / "cache"))
    made: list[str] = []
    search = Performer.retrieve

    def counted(self, node, query, k, event):
        made.append(node["step"])
        return search(self, node, query, k, event)

    monkeypatch.setattr(Performer, "retrieve", counted)
    fake = FakeModel("local", answer)
    prog = program_from_checked(compile_file(EXAMPLE / "hops.lmp"), "hops", base_dir=EXAMPLE, cache=False,
                                trace_log=False, models={"local": fake})
    try:
        print_eval_plan(prog, 3, None)  # the optimize block's metric: contains(answer)
        report = evaluate(prog, rows("dev.jsonl")[:3], resolve_metric(prog))
    finally:
        prog.close()
    out = capsys.readouterr().out
    assert "eval plan for `hops`: 3 example(s)" in out
    assert "9  model calls (3 per example)" in out
    assert "6  searches of retrieve steps (2 per example: `hop1`, `hop2`; not model calls)" in out
    assert report.calls == len(fake.requests) == 9 and len(made) == 6
    cli = subprocess.run([sys.executable, "-m", "lmpc", "eval", str(EXAMPLE / "hops.lmp"), "--dry-run", "--limit", "2",
                          "--cache-dir", str(tmp_path / "c")], capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr
    assert "6  model calls" in cli.stdout and "4  searches of retrieve steps" in cli.stdout
    assert not (tmp_path / "c" / "indexes").exists()  # a plan runs nothing
