"""`qdrant(...)` retrievers (runtime/qdrant_store.py) through the official qdrant-client, in its
embedded local mode (a folder; no server can be installed here): lmpc uploads the corpus once
with its own embedder and reuses the collection, re-uploads a changed corpus, never touches a
collection it did not make, searches a foreign one as it is; an unreachable server is a clear
error with a non-zero exit; artifacts carry the spec and follow the trust model."""

import json
import re
import socket
import subprocess
import sys

import pytest

pytest.importorskip("qdrant_client")
pytest.importorskip("bm25s")
pytest.importorskip("faiss")

import lmpc  # noqa: E402
from lmpc.compiler import compile_file  # noqa: E402
from lmpc.compiler.artifact import ArtifactTrustError, make_artifact, relocate_paths, write_artifact  # noqa: E402
from lmpc.runtime.embed import E5Embedder, register_embedder  # noqa: E402
from lmpc.runtime.program import Program  # noqa: E402
from lmpc.runtime.retrieval import RetrievalError, RetrievalIndex  # noqa: E402

PASSAGES = [
    ("paris", "Paris is the capital and most populous city of France."),
    ("tokyo", "Tokyo is the capital of Japan."),
    ("photo", "Photosynthesis is how plants use sunlight to make sugar from carbon dioxide."),
    ("everest", "Mount Everest is Earth's highest mountain, in the Himalayas."),
]
QUERIES = ["how do plants turn light into food", "tallest peak on Earth", "capital of Japan"]
BODY = ("pipeline p(q: str) -> (ids: list[str], scores: list[float]) {\n    ctx = retrieve docs(query: q, k: 2)\n"
        "    return ids: ctx.ids, scores: ctx.scores\n}\n")


class Counting(E5Embedder):
    texts = 0

    def embed(self, texts):
        Counting.texts += len(texts)
        return super().embed(texts)


@pytest.fixture(autouse=True)
def counting(tmp_path, monkeypatch):
    monkeypatch.setenv("LMPC_CACHE_DIR", str(tmp_path / "default-cache"))
    register_embedder("counting-e5", Counting)
    Counting.texts = 0
    yield Counting
    register_embedder("counting-e5", None)


def write(tmp_path, options, passages=PASSAGES, body=BODY):
    (tmp_path / "wiki.jsonl").write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in passages))
    src = tmp_path / "p.lmp"
    src.write_text(f"retriever docs = qdrant({options})\n" + body)
    return src


def run(src, tmp_path, queries=QUERIES):
    g = compile_file(src).graphs["p"]
    with Program(g, base_dir=tmp_path, cache=False, trace_log=False) as prog:
        return prog.batch([{"q": q} for q in queries])


def local(tmp_path, extra=""):
    return f'path: "{tmp_path}/qdrant", collection: "wiki", corpus: "wiki.jsonl", embedder: "counting-e5"{extra}'


def test_the_corpus_is_uploaded_once_then_searched_like_the_embedded_index(tmp_path, counting, capsys):
    src = write(tmp_path, local(tmp_path))
    first = run(src, tmp_path)
    assert [r.error for r in first] == [None] * 3
    assert [r.values["ids"][0] for r in first] == ["photo", "everest", "tokyo"]
    assert counting.texts == len(PASSAGES) + len(QUERIES)  # the corpus, then the queries
    again = run(src, tmp_path)
    assert [r.values["ids"] for r in again] == [r.values["ids"] for r in first]
    for a, b in zip(again, first):
        assert a.values["scores"] == pytest.approx(b.values["scores"], abs=1e-5)
    assert counting.texts == len(PASSAGES) + 2 * len(QUERIES)  # the collection reused: only the queries
    # the same ranking and cosine scores as the exact FAISS index over the same vectors
    index = RetrievalIndex.open(tmp_path / "wiki.jsonl", "text", "id", "dense", E5Embedder(), tmp_path / "c")
    for hits, res in zip(index.search(QUERIES, 2), first):
        assert [h.id for h in hits] == res.values["ids"]
        assert [h.score for h in hits] == pytest.approx(res.values["scores"], abs=1e-4)
    assert "uploading it again" not in capsys.readouterr().err


def test_a_changed_corpus_is_uploaded_again(tmp_path, counting, capsys):
    src = write(tmp_path, local(tmp_path))
    run(src, tmp_path, ["capital of Japan"])
    write(tmp_path, local(tmp_path), PASSAGES + [("nile", "The Nile is the longest river in Africa.")])
    [res] = run(src, tmp_path, ["the longest river of Africa"])
    assert res.values["ids"][0] == "nile"
    assert "holds another corpus (or an interrupted upload): uploading it again" in capsys.readouterr().err


def test_chunked_corpus_ids(tmp_path):
    src = write(tmp_path, local(tmp_path, ", chunk: 4, overlap: 1"))
    [res] = run(src, tmp_path, ["Mount Everest"])
    assert res.values["ids"][0] == "everest#1"


def _foreign(tmp_path, payload_text="body"):
    """A collection another program made: its own payload fields and point ids."""
    from qdrant_client import QdrantClient, models

    from lmpc.runtime import qdrant_store

    embedder = E5Embedder()
    folder = str((tmp_path / "qdrant").resolve())
    client = QdrantClient(path=folder)
    client.create_collection("theirs", vectors_config=models.VectorParams(size=embedder.dim,
                                                                          distance=models.Distance.COSINE))
    vectors = embedder.embed([t for _, t in PASSAGES])
    client.upsert("theirs", points=[models.PointStruct(id=n + 100, vector=v, payload={payload_text: t, "slug": i})
                                    for n, ((i, t), v) in enumerate(zip(PASSAGES, vectors))])
    client.close()  # lmpc opens the folder itself (one client per folder and process)
    qdrant_store._local.pop(folder, None)


def test_a_foreign_collection_is_searched_as_it_is_and_never_changed(tmp_path, counting):
    _foreign(tmp_path)
    src = write(tmp_path, f'path: "{tmp_path}/qdrant", collection: "theirs", text: "body", id: "slug", '
                          'embedder: "counting-e5"')
    [res] = run(src, tmp_path, ["capital of Japan"])
    assert res.error is None and res.values["ids"][0] == "tokyo"
    assert counting.texts == 1  # only the query: nothing uploaded
    owned = write(tmp_path, f'path: "{tmp_path}/qdrant", collection: "theirs", corpus: "wiki.jsonl"')
    with pytest.raises(RetrievalError, match="holds points that lmpc did not upload, and lmpc never changes"):
        run(owned, tmp_path, ["x"])
    no_text = write(tmp_path, f'path: "{tmp_path}/qdrant", collection: "theirs"')  # text: defaults to "text"
    with pytest.raises(RetrievalError, match="has no text field `text` in its payload; name the field with `text:`"):
        run(no_text, tmp_path, ["x"])


def test_a_missing_collection_without_a_corpus(tmp_path):
    src = write(tmp_path, f'path: "{tmp_path}/qdrant", collection: "nothing"')
    with pytest.raises(RetrievalError, match=r"has no collection \"nothing\"; give the retriever `corpus:`"):
        run(src, tmp_path, ["x"])


def test_an_embedder_of_another_size_is_refused(tmp_path):
    _foreign(tmp_path)
    src = write(tmp_path, f'path: "{tmp_path}/qdrant", collection: "theirs", text: "body"')
    from lmpc.runtime import embed

    class Small(E5Embedder):
        dim = 3

    register_embedder("small", Small)
    try:
        src.write_text(src.read_text().replace('text: "body"', 'text: "body", embedder: "small"'))
        with pytest.raises(RetrievalError, match="vectors of size 384, but the embedder small makes vectors of size 3"):
            run(src, tmp_path, ["x"])
    finally:
        embed.register_embedder("small", None)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


def test_an_unreachable_server_is_a_clear_error_without_a_traceback(tmp_path):
    src = write(tmp_path, 'url: env("QDRANT_URL"), collection: "wiki", corpus: "wiki.jsonl"')
    url = f"http://127.0.0.1:{_closed_port()}"
    cli = [sys.executable, "-m", "lmpc", "run", str(src), "-i", "q=capital of Japan", "--no-cache"]
    env = {"QDRANT_URL": url, "LMPC_CACHE_DIR": str(tmp_path / "c"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(cli, capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert f"retriever `docs`: could not check the collection at the Qdrant server {url}" in out.stderr
    assert "docker run -p 6333:6333 qdrant/qdrant" in out.stderr
    unset = subprocess.run(cli, capture_output=True, text=True, timeout=120,
                           env={k: v for k, v in env.items() if k != "QDRANT_URL"})
    assert unset.returncode != 0 and "Traceback" not in unset.stderr
    assert "its url comes from the environment variable QDRANT_URL, which is not set" in unset.stderr


def test_an_api_key_comes_from_its_variable_and_is_never_shown(tmp_path, monkeypatch):
    src = write(tmp_path, f'url: "http://127.0.0.1:{_closed_port()}", api_key_env: "MY_QDRANT_KEY", '
                          'collection: "wiki", corpus: "wiki.jsonl"')
    with pytest.raises(RetrievalError, match="MY_QDRANT_KEY \\(api_key_env\\), which is not set"):
        run(src, tmp_path, ["x"])
    monkeypatch.setenv("MY_QDRANT_KEY", "qd-secret-value-123")
    with pytest.raises(RetrievalError) as e:
        run(src, tmp_path, ["x"])
    assert "could not check the collection" in str(e.value) and "qd-secret-value-123" not in str(e.value)


def _artifact(tmp_path, options, out):
    checked = compile_file(write(tmp_path, options))
    graphs, optimize = relocate_paths({"p": checked.graphs["p"]}, {}, tmp_path, out)
    write_artifact(out, make_artifact(checked, "p", graphs, out, optimize, {}))
    return out


def test_an_artifact_names_its_local_folder_and_loads_in_a_fresh_process(tmp_path):
    out = _artifact(tmp_path, 'path: "qdrant", collection: "wiki", corpus: "wiki.jsonl"', tmp_path / "p.lmpc.json")
    [node] = [n for n in json.loads(out.read_text())["graphs"]["p"]["nodes"] if n.get("kind") == "retrieve"]
    assert node["retriever"] == {"kind": "qdrant", "name": "docs", "collection": "wiki", "url": None,
                                 "path": "qdrant", "api_key_env": None, "timeout": None, "corpus": "wiki.jsonl",
                                 "text": "text", "id": "id", "embedder": "e5-small", "chunk": None, "overlap": 0,
                                 "skip_bad_rows": False, "mode": "dense"}
    code = ("import lmpc, json, sys\nwith lmpc.load(sys.argv[1], cache=False, trace_log=False) as p:\n"
            "    print(json.dumps(p.batch([{'q': 'capital of Japan'}])[0].values['ids']))\n")
    for _ in range(2):  # uploads, then reuses the collection
        done = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, timeout=180,
                              cwd="/")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)[0] == "tokyo"


def test_an_artifact_naming_a_server_needs_approval(tmp_path, monkeypatch):
    out = _artifact(tmp_path, 'url: "https://user:pw@qdrant.example.com:6333", api_key_env: "QKEY", '
                              'collection: "wiki"', tmp_path / "p.lmpc.json")
    with pytest.raises(ArtifactTrustError) as e:
        lmpc.load(out, cache=False, trace_log=False)
    text = str(e.value)
    assert "retriever `docs` sends your queries' vectors to the Qdrant server https://***@qdrant.example.com:6333" in text
    assert "retriever `docs` sends the value of the environment variable QKEY as its API key" in text
    assert "pw" not in text
    env_url = _artifact(tmp_path, 'url: env("QDRANT_URL"), collection: "wiki"', tmp_path / "q.lmpc.json")
    with pytest.raises(ArtifactTrustError, match="retriever `docs` reads the environment variable QDRANT_URL"):
        lmpc.load(env_url, cache=False, trace_log=False)
    lmpc.load(env_url, cache=False, trace_log=False, trust_models=True).close()  # approved: loads
    (tmp_path / "sub").mkdir()
    outside = _artifact(tmp_path, 'path: "qdrant", collection: "wiki"', tmp_path / "sub" / "p.lmpc.json")
    with pytest.raises(ArtifactTrustError, match=r"opens the Qdrant folder \.\./qdrant, outside the artifact's folder"):
        lmpc.load(outside, cache=False, trace_log=False)


def test_a_tampered_spec_is_refused_when_loaded(tmp_path):
    out = _artifact(tmp_path, 'path: "qdrant", collection: "wiki"', tmp_path / "p.lmpc.json")
    data = json.loads(out.read_text())
    node = next(n for n in data["graphs"]["p"]["nodes"] if n.get("kind") == "retrieve")
    original = dict(node["retriever"])
    for change, message in [({"url": "http://x"}, "exactly one of url, path"), ({"mode": "bm25"}, "/mode"),
                            ({"extra": 1}, "a qdrant retriever is {"), ({"kind": "pinecone"}, "/kind"),
                            ({"chunk": True}, "/chunk"), ({"collection": None}, "/collection")]:
        node["retriever"] = {**original, **change}
        out.write_text(json.dumps(data))
        with pytest.raises(lmpc.LmpcError, match=re.escape(message)):
            lmpc.load(out, cache=False, trace_log=False)


def test_lmpc_build_then_lmpc_run_the_artifact_in_a_fresh_process(tmp_path):
    """The real commands: the build uploads the corpus into the local folder; the artifact
    beside them runs from another working directory, reusing the collection."""
    src = write(tmp_path, 'path: "qdrant", collection: "wiki", corpus: "wiki.jsonl"',
                body="pipeline p(q: str) -> (ids: list[str]) {\n    ctx = retrieve docs(query: q, k: 1)\n"
                     "    return ids: ctx.ids\n}\n")
    train = tmp_path / "train.jsonl"
    train.write_text('{"q": "capital of Japan", "ids": ["tokyo"]}\n{"q": "the highest mountain", "ids": ["everest"]}\n')
    cli = [sys.executable, "-m", "lmpc"]
    env = {"LMPC_CACHE_DIR": str(tmp_path / "c"), "PATH": "/usr/bin:/bin"}
    built = subprocess.run(cli + ["build", str(src), "--train", str(train), "--dev", str(train), "--metric",
                                  "exact_match", "--strategy", "bootstrap_few_shot", "--no-cache"],
                           capture_output=True, text=True, timeout=300, env=env)
    assert built.returncode == 0, built.stderr
    assert "dev score 1.000" in built.stderr + built.stdout
    out = tmp_path / "p.lmpc.json"
    ran = subprocess.run(cli + ["run", str(out), "-i", "q=plants and sunlight", "--no-cache"],
                         capture_output=True, text=True, timeout=300, env=env, cwd="/")
    assert ran.returncode == 0, ran.stderr
    assert 'ids: ["photo"]' in ran.stdout and "uploading" not in ran.stderr
