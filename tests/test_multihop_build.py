"""A multi-hop retrieval program (query, retrieve, next query from the passages, retrieve,
answer: examples/multihop/hops.lmp) compiles end to end with bootstrap_few_shot on SmolLM2 over
the real corpus of examples/multihop/data; `lmpc build` writes the artifact, whose demos carry
the passages trimmed to max_prompt_tokens; the artifact loads in a fresh process and answers
from the saved index (not built again) with exactly the prompts and outputs of the build."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("bm25s")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples/multihop"
BUDGET = 600  # mean prompt tokens per example: zero-shot is 378, untrimmed demos take it over

# In a fresh process: the artifact run with the index building refused (it must be reopened).
FRESH = '''
import json, sys
import lmpc
from lmpc.runtime.retrieval import RetrievalIndex

def refuse(*args, **kwargs):
    raise AssertionError("the index was built again")

RetrievalIndex._build = classmethod(refuse)
with lmpc.load(sys.argv[1], cache=False, trace_log=False) as prog:
    result = prog.batch([{"question": sys.argv[2]}])[0]
print(json.dumps({"ok": result.ok, "error": str(result.error), "values": result.values,
                  "messages": [e.messages for e in result.trace if e.messages]}))
'''


def lines(name: str, numbers: list[int]) -> str:
    rows = (EXAMPLE / "data" / name).read_text().splitlines()
    return "".join(rows[n - 1] + "\n" for n in numbers)


def lmpc_cli(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lmpc", *args], capture_output=True, text=True, timeout=900,
                          env=env)


def test_multihop_builds_and_its_artifact_answers_in_a_fresh_process_from_the_saved_index(tmp_path):
    (tmp_path / "data").mkdir()
    shutil.copy(EXAMPLE / "hops.lmp", tmp_path / "hops.lmp")
    shutil.copy(EXAMPLE / "data/passages.jsonl", tmp_path / "data/passages.jsonl")
    (tmp_path / "train.jsonl").write_text(lines("train.jsonl", [1, 4]))  # Eiffel Tower, Big Ben
    (tmp_path / "dev.jsonl").write_text(lines("dev.jsonl", [6]))  # the Forbidden City
    cache = tmp_path / "cache"
    art = tmp_path / "hops.lmpc.json"

    plan = lmpc_cli("build", str(tmp_path / "hops.lmp"), "--train", str(tmp_path / "train.jsonl"),
                    "--dev", str(tmp_path / "dev.jsonl"), "--dry-run")
    assert plan.returncode == 0, plan.stderr
    assert "12  model calls in all" in plan.stdout, plan.stdout  # 3 prompt steps x (1 + 2 + 1) rows
    assert "8  searches of retrieve steps in all" in plan.stdout  # 2 retrieve steps x 4 rows: not model calls

    built = lmpc_cli("build", str(tmp_path / "hops.lmp"), "--train", str(tmp_path / "train.jsonl"),
                     "--dev", str(tmp_path / "dev.jsonl"), "--max-prompt-tokens", str(BUDGET),
                     "--cache-dir", str(cache), "-o", str(art))
    assert built.returncode == 0, built.stderr
    artifact = json.loads(art.read_text())
    report = artifact["report"]
    assert report["strategies"][0]["passed"] >= 1, report["strategies"][0]
    assert report["prompt_tokens_after"] <= BUDGET, report  # the real tokenizer's count
    fitted = {n: e["passages"] for n, e in report["strategies"][0]["nodes"].items() if "passages" in e}
    assert fitted == {"q2": {"trimmed": ["train.jsonl:2"]}, "a": {"trimmed": ["train.jsonl:2"]}}, fitted
    print(f"prompt tokens {report['prompt_tokens_before']} -> {report['prompt_tokens_after']} (budget {BUDGET}); "
          f"passages fitted: {fitted}; dev {report['score_before']} -> {report['score_after']}")
    nodes = {n["step"]: n for n in artifact["graphs"]["hops"]["nodes"] if "step" in n}
    demos = nodes["a"]["demos"] + nodes["q2"]["demos"]
    assert demos, "the steps after a retrieve step got demos"
    passages = {json.loads(r)["text"] for r in (tmp_path / "data/passages.jsonl").read_text().splitlines()}
    for d in demos:  # their passages are the corpus's (some cut short, marked)
        for value in d["inputs"].values():
            if isinstance(value, list):
                assert all(p in passages or p.endswith(" [...]") for p in value), value
    indexes = sorted((cache / "indexes").iterdir())
    assert len(indexes) == 1
    stamp = (indexes[0] / "passages.json").stat().st_mtime_ns

    question = json.loads(lines("dev.jsonl", [6]))["question"]
    # 1. with the build's call cache: every call a hit (the artifact renders the very prompts scored)
    cached = lmpc_cli("run", str(art), "--cache-dir", str(cache), "--json", "-i", f"question={question}")
    assert cached.returncode == 0, cached.stderr
    assert "3 model call(s), 3 from cache" in cached.stderr, cached.stderr
    outputs = json.loads(cached.stdout)["outputs"]
    # 2. nothing cached, the index building refused: the saved index answers, same outputs
    env = {**__import__("os").environ, "LMPC_CACHE_DIR": str(cache)}
    fresh = subprocess.run([sys.executable, "-c", FRESH, str(art), question], capture_output=True, text=True,
                           timeout=900, env=env)
    assert fresh.returncode == 0, fresh.stderr
    got = json.loads(fresh.stdout)
    assert got["ok"], got["error"]
    assert got["values"] == outputs
    assert sorted((cache / "indexes").iterdir()) == indexes
    assert (indexes[0] / "passages.json").stat().st_mtime_ns == stamp


# The dense variant on the fake model (fast): the artifact, loaded in a fresh process with the
# same fake injected, searches the FAISS index the build saved (the corpus is not embedded
# again: building is refused) and renders the prompts, and gives the outputs, of the build.
FRESH_FAKE = '''
import importlib.util, json, sys
import lmpc
from lmpc.runtime.retrieval import RetrievalIndex

spec = importlib.util.spec_from_file_location("fake", sys.argv[3])
fake = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fake)

def refuse(*args, **kwargs):
    raise AssertionError("the index was built again")

def answer(f, demos, req):
    if "query" in req.json_schema["properties"]:
        return {"query": json.loads(f["passages"])[0] if "passages" in f else f["question"]}
    return {"answer": " ".join(json.loads(f["first"]) + json.loads(f["second"]))}

RetrievalIndex._build = classmethod(refuse)
model = fake.FakeModel("local", answer)
with lmpc.load(sys.argv[1], cache=False, trace_log=False, models={"local": model}) as prog:
    result = prog.batch([{"question": sys.argv[2]}])[0]
print(json.dumps({"ok": result.ok, "values": result.values, "messages": [r.messages for r in model.requests]}))
'''


def test_dense_multihop_artifact_reuses_the_saved_faiss_index_in_a_fresh_process(tmp_path, monkeypatch):
    pytest.importorskip("faiss")
    import os

    from lmpc.compiler import compile_file
    from lmpc.compiler.artifact import make_artifact, relocate_paths, write_artifact
    from lmpc.compiler.ir import site
    from lmpc.optimizers import BootstrapFewShot, OptimizeContext
    from lmpc.optimizers.build import build
    from lmpc.runtime.program import Program

    from lmpc.runtime.data import Example

    monkeypatch.syspath_prepend(str(ROOT / "tests/optimizers"))
    from fake import FakeModel  # the optimizer tests' deterministic fake model

    def rows(name: str) -> list[Example]:
        return [Example({"question": r["question"]}, {"answer": r["answer"]}, f"{name}:{i + 1}", r)
                for i, r in enumerate(map(json.loads, (EXAMPLE / "data" / name).read_text().splitlines()))]

    def contains(ex: Example, pred: dict) -> float:
        return float(ex.gold["answer"].lower() in str(pred.get("answer", "")).lower())

    def answer(f, demos, req):  # as FRESH_FAKE's: the queries as in the plan test, the answer all passages
        if "query" in req.json_schema["properties"]:
            return {"query": json.loads(f["passages"])[0] if "passages" in f else f["question"]}
        return {"answer": " ".join(json.loads(f["first"]) + json.loads(f["second"]))}

    monkeypatch.setenv("LMPC_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "data").mkdir()
    shutil.copy(EXAMPLE / "data/passages.jsonl", tmp_path / "data/passages.jsonl")
    (tmp_path / "hops.lmp").write_text((EXAMPLE / "hops.lmp").read_text().replace('mode: "bm25"', 'mode: "dense"'))
    checked = compile_file(tmp_path / "hops.lmp")
    fake = FakeModel("local", answer)
    ctx = OptimizeContext(rows("train.jsonl")[:4], rows("dev.jsonl")[:2], contains, base_dir=tmp_path,
                          models={"local": fake}, log=lambda _: None)
    try:
        graph, report = build(checked.graphs["hops"], [BootstrapFewShot(max_demos=2, max_labeled=0)], ctx)
    finally:
        ctx.close()
    assert site(graph, "a")["demos"] and site(graph, "q2")["demos"]
    out = tmp_path / "hops.lmpc.json"
    graphs, optimize = relocate_paths({"hops": graph}, {}, tmp_path, out)
    write_artifact(out, make_artifact(checked, "hops", graphs, out, optimize, report))
    (index,) = (tmp_path / "cache" / "indexes").iterdir()
    assert (index / "dense.faiss").is_file()

    question = "In which country is the Taj Mahal?"
    here = FakeModel("local", answer)
    with Program(graph, base_dir=tmp_path, cache=False, trace_log=False, models={"local": here}) as prog:
        [mine] = prog.batch([{"question": question}])
    assert mine.ok and mine.values["second_ids"]
    env = {**os.environ, "LMPC_CACHE_DIR": str(tmp_path / "cache")}
    fresh = subprocess.run([sys.executable, "-c", FRESH_FAKE, str(out), question,
                            str(ROOT / "tests/optimizers/fake.py")],
                           capture_output=True, text=True, timeout=300, env=env)
    assert fresh.returncode == 0, fresh.stderr
    got = json.loads(fresh.stdout)
    assert got["ok"] and got["values"] == mine.values
    assert got["messages"] == [r.messages for r in here.requests]  # the prompts of the build's program
    assert [p.name for p in (tmp_path / "cache" / "indexes").iterdir()] == [index.name]
