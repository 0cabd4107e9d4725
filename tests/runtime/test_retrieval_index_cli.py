"""`lmpc index FILE` (lmpc/cli_index.py): builds the embedded indexes and fills the Qdrant
collections a program's pipelines search, ahead of a run and with the run's keys, so that
`lmpc run` then opens them without building or uploading anything."""

import json
import subprocess
import sys

import pytest

pytest.importorskip("bm25s")
pytest.importorskip("faiss")
pytest.importorskip("qdrant_client")

CLI = [sys.executable, "-m", "lmpc"]
PASSAGES = [("paris", "Paris is the capital of France."), ("tokyo", "Tokyo is the capital of Japan."),
            ("everest", "Mount Everest is Earth's highest mountain.")]


def lmpc(tmp_path, *args):
    return subprocess.run(CLI + list(args) + ["--cache-dir", str(tmp_path / "c")], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)


@pytest.fixture
def program(tmp_path):
    (tmp_path / "wiki.jsonl").write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in PASSAGES))
    src = tmp_path / "p.lmp"
    src.write_text('retriever words = index(corpus: "wiki.jsonl", mode: "bm25")\n'
                   'retriever vdb = qdrant(path: "qd", collection: "wiki", corpus: "wiki.jsonl")\n'
                   "pipeline p(q: str) -> (a: list[str], b: list[str]) {\n"
                   "    x = retrieve words(query: q, k: 1)\n    y = retrieve vdb(query: q, k: 1)\n"
                   "    return a: x.ids, b: y.ids\n}\n")
    return src


def test_index_then_run_builds_nothing_more(tmp_path, program):
    first = lmpc(tmp_path, "index", "p.lmp")
    assert first.returncode == 0, first.stderr
    lines = sorted(first.stdout.splitlines())
    assert lines[0].startswith('retriever vdb: collection "wiki" at the local Qdrant folder ')
    assert "built in" in lines[0] and "(3 passages)" in lines[0]
    assert lines[1].startswith("retriever words: index ") and "built in" in lines[1] and "(3 passages)" in lines[1]
    indexes = sorted((tmp_path / "c" / "indexes").iterdir())
    again = lmpc(tmp_path, "index", "p.lmp", "--retriever", "words")
    assert again.returncode == 0 and again.stdout.count("up to date (3 passages)") == 1 and "vdb" not in again.stdout
    ran = lmpc(tmp_path, "run", "p.lmp", "-i", "q=capital of Japan")
    assert ran.returncode == 0, ran.stderr
    assert 'a: ["tokyo"]' in ran.stdout and 'b: ["tokyo"]' in ran.stdout
    assert sorted((tmp_path / "c" / "indexes").iterdir()) == indexes and "uploading" not in ran.stderr


def test_index_errors(tmp_path, program):
    unknown = lmpc(tmp_path, "index", "p.lmp", "--retriever", "nope")
    assert unknown.returncode == 2 and "no pipeline of p.lmp searches a retriever named `nope`" in unknown.stderr
    program.write_text(program.read_text().replace('mode: "bm25"', 'mode: "fuzzy"'))
    bad = lmpc(tmp_path, "index", "p.lmp")
    assert bad.returncode == 1 and "error[bad-retriever]" in bad.stderr
    program.write_text(program.read_text().replace('mode: "fuzzy"', 'mode: "bm25"'))
    (tmp_path / "wiki.jsonl").write_text('{"id": "a", "text": "the"}\n')  # no word BM25 indexes
    empty = lmpc(tmp_path, "index", "p.lmp", "--retriever", "words")
    assert empty.returncode == 1 and "Traceback" not in empty.stderr
    assert "retriever `words`: no passage has a word that BM25 indexes" in empty.stderr
