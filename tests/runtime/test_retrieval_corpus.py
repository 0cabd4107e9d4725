"""Corpora of every supported shape (runtime/corpus.py): JSONL, CSV and a folder of text files
(ids are relative paths; a non-UTF-8 file is a bad row), chunking by words with overlap (ids
`ID#n`), index keys that follow the chunking and a folder's files, and the progress bar shown
while a corpus is embedded (only on a terminal)."""

import io
import json
import sys

import pytest

pytest.importorskip("bm25s")
pytest.importorskip("faiss")

from lmpc.compiler import compile_file  # noqa: E402
from lmpc.runtime.corpus import chunk_text, corpus_digest, read_corpus  # noqa: E402
from lmpc.runtime.embed import E5Embedder  # noqa: E402
from lmpc.runtime.program import Program  # noqa: E402
from lmpc.runtime.retrieval import RetrievalError, RetrievalIndex, embed_corpus  # noqa: E402

NILE = ("The Nile is a major north-flowing river in northeastern Africa. It flows into the Mediterranean Sea. "
        "The Nile is among the longest rivers in the world.")


def folder(tmp_path):
    docs = tmp_path / "docs"
    (docs / "geo").mkdir(parents=True)
    (docs / "geo" / "nile.md").write_text("# The Nile\n\n" + NILE + "\n")
    (docs / "tokyo.txt").write_text("Tokyo is the capital of Japan.\n")
    (docs / "notes.pdf").write_bytes(b"%PDF-1.4 not read")  # not a text suffix: ignored
    (docs / ".hidden.md").write_text("a hidden file is left out")
    return docs


def test_a_csv_corpus(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text('pid,body\n7,"Paris is the capital of France, on the Seine."\n8,Tokyo is the capital of Japan.\n')
    corpus = read_corpus(path, "body", "pid", skip_bad_rows=False)
    assert corpus.ids == ["7", "8"] and corpus.texts[0].startswith("Paris")
    index = RetrievalIndex.open(path, "body", "pid", "bm25", None, tmp_path / "cache")
    assert index.search(["capital of Japan"], 1)[0][0].id == "8"


def test_a_bad_csv_record_is_reported_by_line(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("id,text\na,alpha\nb,beta,extra\nc,\n")
    with pytest.raises(RetrievalError, match=r"c\.csv:3: the record has 3 fields.*\(and 1 more bad row\)"):
        read_corpus(path, skip_bad_rows=False)
    corpus = read_corpus(path, skip_bad_rows=True)
    assert corpus.ids == ["a"] and [e.line for e in corpus.bad] == [3, 4]


def test_a_folder_corpus_ids_are_relative_paths(tmp_path):
    corpus = read_corpus(folder(tmp_path), skip_bad_rows=False)
    assert corpus.ids == ["geo/nile.md", "tokyo.txt"]
    assert corpus.texts[0].startswith("# The Nile") and corpus.texts[1] == "Tokyo is the capital of Japan.\n"
    index = RetrievalIndex.open(tmp_path / "docs", "text", "id", "bm25", None, tmp_path / "cache")
    assert index.search(["river flowing into the Mediterranean"], 1)[0][0].id == "geo/nile.md"


def test_a_non_utf8_file_in_a_folder_is_a_bad_row(tmp_path):
    docs = folder(tmp_path)
    (docs / "latin1.txt").write_bytes("line one\ncaf\xe9 au lait\n".encode("latin-1"))
    with pytest.raises(RetrievalError, match=r"latin1\.txt:2:4: the file is not UTF-8 text; `skip_bad_rows: true`"):
        read_corpus(docs, skip_bad_rows=False)
    corpus = read_corpus(docs, skip_bad_rows=True)
    assert corpus.ids == ["geo/nile.md", "tokyo.txt"] and "latin1.txt:2:4" in str(corpus.bad[0])


def test_an_empty_folder_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(RetrievalError, match="holds no text files"):
        read_corpus(tmp_path / "empty")


def test_chunks_are_word_windows_with_overlap_keeping_the_text():
    text = "one two  three\nfour five six seven"
    assert chunk_text(text, 3, 1) == ["one two  three", "three\nfour five", "five six seven"]
    assert chunk_text(text, 3, 0) == ["one two  three", "four five six", "seven"]
    assert chunk_text(" short text ", 5, 2) == ["short text"]
    assert chunk_text(text, 7, 3) == [text]


def test_chunked_ids_and_search(tmp_path):
    docs = folder(tmp_path)
    corpus = read_corpus(docs, chunk=12, overlap=4)
    # 29 words, windows of 12 starting every 8 words: 0-11, 8-19, 16-27, 24-28
    assert corpus.ids == ["geo/nile.md#1", "geo/nile.md#2", "geo/nile.md#3", "geo/nile.md#4", "tokyo.txt#1"]
    assert corpus.texts[1].split()[:4] == corpus.texts[0].split()[-4:]  # the overlap
    index = RetrievalIndex.open(docs, "text", "id", "bm25", None, tmp_path / "cache", chunk=12, overlap=4)
    [hits] = index.search(["longest rivers in the world"], 1)
    assert hits[0].id == "geo/nile.md#4" and hits[0].text == "longest rivers in the world."
    with pytest.raises(RetrievalError, match="overlap between 0 and chunk - 1"):
        read_corpus(docs, chunk=4, overlap=4)


def test_the_index_key_follows_chunking_and_the_folders_files(tmp_path):
    docs = folder(tmp_path)
    cache = tmp_path / "cache"
    plain = RetrievalIndex.open(docs, "text", "id", "bm25", None, cache)
    chunked = RetrievalIndex.open(docs, "text", "id", "bm25", None, cache, chunk=12, overlap=4)
    other = RetrievalIndex.open(docs, "text", "id", "bm25", None, cache, chunk=12, overlap=2)
    assert len({plain.folder, chunked.folder, other.folder}) == 3 and chunked.built and other.built
    assert not RetrievalIndex.open(docs, "text", "id", "bm25", None, cache, chunk=12, overlap=4).built
    before = corpus_digest(docs)
    (docs / "notes.pdf").write_bytes(b"changed, but not a corpus file")
    assert corpus_digest(docs) == before
    (docs / "tokyo.txt").write_text("Tokyo is the capital of Japan and its largest city.\n")
    changed = RetrievalIndex.open(docs, "text", "id", "bm25", None, cache)
    assert changed.built and changed.folder != plain.folder
    (docs / "tokyo.txt").rename(docs / "tokio.txt")  # same content, another name: another corpus
    renamed = RetrievalIndex.open(docs, "text", "id", "bm25", None, cache)
    assert renamed.built and renamed.ids[-1] == "tokio.txt"


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_embedding_a_corpus_shows_progress_on_a_terminal_only(monkeypatch):
    embedder = E5Embedder()
    texts = [f"passage number {i} about rivers" for i in range(70)]  # two batches
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    quiet = embed_corpus(embedder, texts, "retriever wiki: embedding 70 passages")
    assert sys.stderr.getvalue() == ""  # a pipe or a log file: nothing
    monkeypatch.setattr(sys, "stderr", Tty())
    shown = embed_corpus(embedder, texts, "retriever wiki: embedding 70 passages")
    out = sys.stderr.getvalue()
    assert "retriever wiki: embedding 70 passages" in out and "70/70" in out and "score" not in out
    assert quiet.shape == shown.shape == (70, embedder.dim) and (quiet == shown).all()


def test_a_folder_retriever_in_a_program(tmp_path):
    folder(tmp_path)
    src = tmp_path / "p.lmp"
    src.write_text('retriever notes = index(corpus: "docs/", chunk: 12, overlap: 4, mode: "bm25")\n'
                   "pipeline p(q: str) -> (ids: list[str]) {\n    ctx = retrieve notes(query: q, k: 1)\n"
                   "    return ids: ctx.ids\n}\n")
    g = compile_file(src).graphs["p"]
    spec = next(d["retriever"] for _, d in g.nodes(data=True) if d.get("kind") == "retrieve")
    assert spec["chunk"] == 12 and spec["overlap"] == 4 and spec["kind"] == "index"
    with Program(g, base_dir=tmp_path, cache=False, trace_log=False) as prog:
        [res] = prog.batch([{"q": "it flows from northeastern Africa"}])
    assert res.error is None and res.values["ids"] == ["geo/nile.md#2"]
    assert json.dumps(res.values)
