"""`retrieve` steps at run time: the queries of a batch embedded together, the index built
once and reopened, results cached (not counted as model calls) and traced; one run on the
real embedded model (SmolLM2) answering from the passages; artifacts name the corpus from
their folder, and one outside it needs approval."""

import json

import pytest

pytest.importorskip("bm25s")
pytest.importorskip("faiss")

from lmpc.compiler import compile_file  # noqa: E402
import lmpc  # noqa: E402
from lmpc.compiler.artifact import ArtifactTrustError, make_artifact, relocate_paths, write_artifact  # noqa: E402
from lmpc.compiler.retrievers import MODES as CHECKED_MODES  # noqa: E402
from lmpc.runtime.embed import E5Embedder, register_embedder  # noqa: E402
from lmpc.runtime.program import Program  # noqa: E402
from lmpc.runtime.retrieval import MODES, RetrievalError  # noqa: E402

PASSAGES = [
    ("paris", "Paris is the capital and most populous city of France."),
    ("tokyo", "Tokyo is the capital of Japan."),
    ("photo", "Photosynthesis is how plants use sunlight to make sugar from carbon dioxide."),
    ("everest", "Mount Everest is Earth's highest mountain, in the Himalayas."),
]


class Counting(E5Embedder):
    calls = 0

    def embed(self, texts):
        Counting.calls += 1
        return super().embed(texts)


@pytest.fixture(autouse=True)
def own_cache_dir(tmp_path, monkeypatch):
    """Indexes of runs without a call cache go to the default cache dir: here, the test's own."""
    monkeypatch.setenv("LMPC_CACHE_DIR", str(tmp_path / "default-cache"))


@pytest.fixture
def counting():
    register_embedder("counting-e5", Counting)
    Counting.calls = 0
    yield Counting
    register_embedder("counting-e5", None)


def write(tmp_path, mode, embedder="counting-e5", body=None):
    (tmp_path / "wiki.jsonl").write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in PASSAGES))
    src = tmp_path / "p.lmp"
    src.write_text(f'model m = llama_cpp(builtin: "smollm2-135m")\n'
                   f'retriever wiki = index(corpus: "wiki.jsonl", mode: "{mode}", embedder: "{embedder}")\n'
                   + (body or "pipeline p(q: str) -> (ids: list[str], passages: list[str]) {\n"
                      "    ctx = retrieve wiki(query: q, k: 2)\n    return ids: ctx.ids, passages: ctx.passages\n}\n"))
    return src


def test_the_checker_and_the_runtime_know_the_same_modes():
    assert CHECKED_MODES == MODES


def test_a_batch_is_searched_together_then_cached_and_traced(tmp_path, counting):
    g = compile_file(write(tmp_path, "dense")).graphs["p"]
    rows = [{"q": "how do plants turn light into food"}, {"q": "tallest peak on Earth"}, {"q": "capital of Japan"}]
    with Program(g, base_dir=tmp_path, cache=tmp_path / "calls.sqlite", trace_log=False) as prog:
        first = prog.batch(rows)
    assert [r.error for r in first] == [None] * 3
    assert [r.values["ids"][0] for r in first] == ["photo", "everest", "tokyo"]
    assert counting.calls == 2  # the corpus once, then the three queries in one call
    event = first[2].trace[0]
    assert event.kind == "retrieve" and event.model is None and not event.cache_hit
    assert event.extra["retrieval"] == {"retriever": "wiki", "query": "capital of Japan",
                                        "ids": first[2].values["ids"]}
    with Program(g, base_dir=tmp_path, cache=tmp_path / "calls.sqlite", trace_log=False) as prog:
        again = prog.batch(rows)
    assert [r.values for r in again] == [r.values for r in first]
    assert counting.calls == 2  # the index reopened and every search cached: nothing embedded
    assert all(r.trace[0].cache_hit for r in again)
    assert list((tmp_path / "indexes").iterdir())  # beside the call cache


def test_bm25_needs_no_embedder_and_k_defaults_to_three(tmp_path, counting):
    body = ("pipeline p(q: str) -> (ids: list[str]) {\n    ctx = retrieve wiki(query: q)\n"
            "    return ids: ctx.ids\n}\n")
    g = compile_file(write(tmp_path, "bm25", body=body)).graphs["p"]
    with Program(g, base_dir=tmp_path, cache=False, trace_log=False) as prog:
        [res] = prog.batch([{"q": "the capital city of France, and Everest"}])
    assert res.error is None and res.values["ids"][0] == "paris" and len(res.values["ids"]) == 3
    assert counting.calls == 0


def test_a_bad_corpus_row_stops_the_run_naming_file_and_line(tmp_path, counting):
    g = compile_file(write(tmp_path, "bm25")).graphs["p"]
    with open(tmp_path / "wiki.jsonl", "a") as f:
        f.write('{"id": "x"}\n')
    with Program(g, base_dir=tmp_path, cache=False, trace_log=False) as prog:
        with pytest.raises(RetrievalError, match=r"wiki\.jsonl:5: the row has no `text` column; `skip_bad_rows: true`"):
            prog.batch([{"q": "capital of Japan"}])


def test_bad_corpus_rows_are_skipped_with_a_warning_naming_file_and_line(tmp_path, counting, capsys):
    src = write(tmp_path, "bm25")
    src.write_text(src.read_text().replace('mode: "bm25"', 'mode: "bm25", skip_bad_rows: true'))
    g = compile_file(src).graphs["p"]
    with open(tmp_path / "wiki.jsonl", "a") as f:
        f.write('{"id": "x"}\n')
    with Program(g, base_dir=tmp_path, cache=False, trace_log=False) as prog:
        [res] = prog.batch([{"q": "capital of Japan"}])
    assert res.error is None and res.values["ids"][0] == "tokyo"
    err = capsys.readouterr().err
    assert "skipped 1 bad corpus row(s)" in err and "wiki.jsonl:5" in err and "no `text` column" in err


def test_a_missing_corpus_at_run_time_stops_the_batch_with_its_path(tmp_path, counting):
    g = compile_file(write(tmp_path, "bm25")).graphs["p"]
    (tmp_path / "wiki.jsonl").unlink()
    with Program(g, base_dir=tmp_path, cache=False, trace_log=False) as prog:
        with pytest.raises(RetrievalError, match="wiki.jsonl"):  # a configuration error: every row would fail
            prog.batch([{"q": "x"}, {"q": "y"}])


def _artifact(tmp_path, out):
    checked = compile_file(write(tmp_path, "bm25"))
    graphs, optimize = relocate_paths({"p": checked.graphs["p"]}, {}, tmp_path, out)
    write_artifact(out, make_artifact(checked, "p", graphs, out, optimize, {}))
    return out


def test_an_artifact_beside_its_corpus_runs_without_approval(tmp_path, counting):
    out = _artifact(tmp_path, tmp_path / "p.lmpc.json")
    node = json.loads(out.read_text())["graphs"]["p"]["nodes"]
    assert any(n.get("retriever", {}).get("corpus") == "wiki.jsonl" for n in node)
    with lmpc.load(out, cache=False, trace_log=False) as prog:
        [res] = prog.batch([{"q": "capital of Japan"}])
    assert res.error is None and res.values["ids"][0] == "tokyo"


def test_an_artifact_whose_corpus_is_outside_its_folder_needs_approval(tmp_path, counting):
    (tmp_path / "out").mkdir()
    out = _artifact(tmp_path, tmp_path / "out" / "p.lmpc.json")
    with pytest.raises(ArtifactTrustError, match=r"retriever `wiki` reads the corpus file \.\./wiki\.jsonl, outside"):
        lmpc.load(out, cache=False, trace_log=False)
    with lmpc.load(out, cache=False, trace_log=False, trust_models=True) as prog:  # approved: found from its folder
        [res] = prog.batch([{"q": "capital of Japan"}])
    assert res.error is None and res.values["ids"][0] == "tokyo"


def test_retrieve_then_predict_on_smollm2(tmp_path):
    body = ('signature Answer = "Answer from the context." question, context: list[str] -> answer\n'
            "pipeline p(q: str) -> (answer: str, ids: list[str]) {\n    ctx = retrieve wiki(query: q, k: 1)\n"
            "    a = predict Answer(question: q, context: ctx.passages)\n    return answer: a.answer, ids: ctx.ids\n}\n")
    g = compile_file(write(tmp_path, "hybrid", embedder="e5-small", body=body)).graphs["p"]
    with Program(g, base_dir=tmp_path, cache=False, trace_log=False) as prog:
        [res] = prog.batch([{"q": "What is the capital of France?"}])
    assert res.error is None, res.error
    assert res.values["ids"] == ["paris"]
    predict = [e for e in res.trace if e.kind == "predict"][0]
    assert predict.model == "m" and predict.inputs["context"] == [PASSAGES[0][1]]
    assert "Paris is the capital" in json.dumps(predict.messages)
    assert isinstance(res.values["answer"], str) and res.values["answer"]


def test_lmpc_inspect_shows_the_query_and_the_passages(tmp_path):
    import subprocess
    import sys

    src = write(tmp_path, "bm25")
    cli = [sys.executable, "-m", "lmpc"]
    run = subprocess.run(cli + ["run", str(src), "-i", "q=capital of Japan", "--cache-dir", str(tmp_path / "c")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    shown = subprocess.run(cli + ["inspect", "-n", "1", "--full", "--cache-dir", str(tmp_path / "c")],
                           capture_output=True, text=True, timeout=60).stdout
    assert "ctx (retrieve" in shown and "query: capital of Japan" in shown and "passages: tokyo" in shown
    assert "tokyo (" in shown and "Tokyo is the capital of Japan." in shown


def test_a_retrieve_step_in_a_mapped_sub_pipeline(tmp_path, counting):
    body = ("pipeline one(q: str) -> (ids: list[str]) {\n    ctx = retrieve wiki(query: q, k: 1)\n    return ids: ctx.ids\n}\n"
            "pipeline many(qs: list[str]) -> (ids: list[list[str]]) {\n    r = map one(q: q) for q in qs\n"
            "    return ids: r.ids\n}\n")
    g = compile_file(write(tmp_path, "dense", body=body)).graphs["many"]
    with Program(g, base_dir=tmp_path, cache=False, trace_log=False) as prog:
        [res] = prog.batch([{"qs": ["capital of Japan", "plants and sunlight", "the Himalayas"]}])
    assert res.error is None and res.values["ids"] == [["tokyo"], ["photo"], ["everest"]]
    assert counting.calls == 2  # the corpus, then the three items' queries together
