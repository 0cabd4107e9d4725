"""The embedded retrieval index (runtime/retrieval.py) on a tiny real-text corpus, with the
real e5-small embedder: each mode finds the expected passage; the index is built once and
reopened without embedding anything; a changed corpus rebuilds it; bad rows are reported by
file:line, fatal as in data files unless skip_bad_rows."""

import json

import pytest

pytest.importorskip("bm25s")
pytest.importorskip("faiss")

from lmpc.runtime.embed import E5Embedder  # noqa: E402
from lmpc.runtime.retrieval import RetrievalError, RetrievalIndex, read_corpus  # noqa: E402

PASSAGES = [
    ("paris", "Paris is the capital and most populous city of France, on the river Seine."),
    ("tokyo", "Tokyo is the capital of Japan and the seat of its government and the Emperor."),
    ("photo", "Photosynthesis is the process by which plants use sunlight to make sugar from carbon dioxide."),
    ("everest", "Mount Everest is Earth's highest mountain above sea level, in the Himalayas."),
    ("python", "Python is a high-level programming language created by Guido van Rossum."),
]


class Counting(E5Embedder):
    """The real e5-small embedder, counting the texts it embeds."""

    def __init__(self):
        super().__init__()
        self.texts = 0

    def embed(self, texts):
        self.texts += len(texts)
        return super().embed(texts)


@pytest.fixture(scope="module")
def embedder():
    return Counting()


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def corpus(tmp_path):
    return write(tmp_path / "wiki.jsonl", [{"id": i, "text": t} for i, t in PASSAGES])


@pytest.mark.parametrize("mode,query,want", [
    ("bm25", "which city is the capital of France", "paris"),
    ("dense", "how do plants turn light into food", "photo"),  # no shared word with the passage
    ("hybrid", "tallest peak in the Himalayas", "everest"),
    ("hybrid", "who created the Python language", "python"),
])
def test_each_mode_finds_the_passage(tmp_path, corpus, embedder, mode, query, want):
    index = RetrievalIndex.open(corpus, "text", "id", mode, embedder, tmp_path / "cache")
    [hits] = index.search([query], 2)
    assert hits[0].id == want
    assert len(hits) == 2 and hits[0].score >= hits[1].score


def test_built_once_then_reopened_without_embedding(tmp_path, corpus, embedder):
    first = RetrievalIndex.open(corpus, "text", "id", "dense", embedder, tmp_path / "cache")
    assert first.built and embedder.texts >= len(PASSAGES)
    before = embedder.texts
    again = RetrievalIndex.open(corpus, "text", "id", "dense", embedder, tmp_path / "cache")
    assert not again.built and again.folder == first.folder
    assert embedder.texts == before  # opening embedded nothing
    [hits] = again.search(["capital of Japan"], 1)
    assert hits[0].id == "tokyo" and embedder.texts == before + 1  # only the query


def test_a_changed_corpus_rebuilds(tmp_path, corpus):
    first = RetrievalIndex.open(corpus, "text", "id", "bm25", None, tmp_path / "cache")
    write(corpus, [{"id": i, "text": t} for i, t in PASSAGES] + [{"id": "nile", "text": "The Nile is a river in Africa."}])
    second = RetrievalIndex.open(corpus, "text", "id", "bm25", None, tmp_path / "cache")
    assert second.built and second.folder != first.folder
    assert second.search(["river in Africa"], 1)[0][0].id == "nile"


def test_bad_rows_are_fatal_like_data_files_unless_skipped(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"id": "a", "text": "alpha"}\n[1]\n{"id": "b"}\n{"id": "a", "text": "again"}\n'
                    '{"id": "c", "text": "gamma"}\n')
    # the data-file rule (runtime/data.load_examples): the first bad row, how many more, how to skip them
    with pytest.raises(RetrievalError, match=r"c\.jsonl:2:.*not a JSON object.*\(and 2 more bad rows\); "
                                             r"`skip_bad_rows: true` on the retriever skips them"):
        read_corpus(path, "text", "id", skip_bad_rows=False)
    with pytest.raises(RetrievalError, match="c.jsonl:2"):
        RetrievalIndex.open(path, "text", "id", "bm25", None, tmp_path / "cache")
    corpus = read_corpus(path, "text", "id", skip_bad_rows=True)
    assert corpus.ids == ["a", "c"]
    assert [e.line for e in corpus.bad] == [2, 3, 4]
    assert "no `text` column" in str(corpus.bad[1]) and "c.jsonl:3" in str(corpus.bad[1])
    index = RetrievalIndex.open(path, "text", "id", "bm25", None, tmp_path / "cache", skip_bad_rows=True)
    assert index.built and len(index.bad) == 3 and index.search(["gamma"], 1)[0][0].id == "c"


def test_errors_are_clear(tmp_path, corpus):
    with pytest.raises(RetrievalError, match="unknown retrieval mode"):
        RetrievalIndex.open(corpus, "text", "id", "fuzzy", None, tmp_path)
    with pytest.raises(RetrievalError, match="(?i)no such file"):
        RetrievalIndex.open(tmp_path / "none.jsonl", "text", "id", "bm25", None, tmp_path)
    with pytest.raises(RetrievalError, match=r"wiki\.jsonl:1: the row has no `body` column \(and 4 more"):
        RetrievalIndex.open(corpus, "body", "id", "bm25", None, tmp_path)
    with pytest.raises(RetrievalError, match="no usable passages"):
        RetrievalIndex.open(corpus, "body", "id", "bm25", None, tmp_path, skip_bad_rows=True)


def test_a_query_with_no_corpus_word_finds_nothing_by_bm25(tmp_path, corpus):
    index = RetrievalIndex.open(corpus, "text", "id", "bm25", None, tmp_path / "cache")
    assert index.search(["zzzz qqqq", "Seine"], 3)[0] == []


def test_without_the_extra_the_error_says_how_to_install_it(tmp_path, corpus, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "bm25s", None)  # as if not installed: import raises ImportError
    with pytest.raises(RetrievalError, match=r"bm25s.*pip install 'lmpc\[retrieval\]'"):
        RetrievalIndex.open(corpus, "text", "id", "bm25", None, tmp_path / "cache")


def test_a_large_corpus_gets_an_inverted_file_that_finds_what_the_exact_index_finds(monkeypatch):
    """Above IVF_MIN passages the dense index is FAISS's IVF (searched in NPROBE lists): on
    clustered vectors (as real embeddings are) its top 5 match the exact scan's, and the same
    vectors build the same index (fixed k-means seed)."""
    import faiss
    import numpy as np

    from lmpc.runtime import retrieval

    monkeypatch.setattr(retrieval, "IVF_MIN", 1000)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(40, 64))
    vectors = (centres[rng.integers(0, 40, 4000)] + 0.3 * rng.normal(size=(4000, 64))).astype("float32")
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[rng.integers(0, 4000, 50)] + 0.05 * rng.normal(size=(50, 64)).astype("float32")
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype("float32")

    ivf = retrieval.dense_index(vectors)
    assert isinstance(ivf, faiss.IndexIVFFlat) and ivf.nprobe == retrieval.NPROBE
    exact = retrieval.dense_index(vectors[:1000])
    assert isinstance(exact, faiss.IndexFlatIP)
    flat = faiss.IndexFlatIP(64)
    flat.add(vectors)
    _, want = flat.search(queries, 5)
    _, got = retrieval._search(ivf, queries[:3], 5)  # the one-thread path
    _, got_all = retrieval._search(ivf, queries, 5)
    assert (got == got_all[:3]).all()
    overlap = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(want, got_all)])
    assert overlap >= 0.95, overlap
    _, again = retrieval._search(retrieval.dense_index(vectors), queries, 5)
    assert (again == got_all).all()
