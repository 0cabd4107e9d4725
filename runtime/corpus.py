"""A retriever's corpus as (ids, passages): a data file (JSONL, JSON, CSV, TSV; one passage
per row, read by runtime/data.read_rows) or a folder of text files (one passage per file, its
id the path relative to the folder), optionally cut into chunks of words.

Bad rows follow the data-file rule (runtime/data.load_examples): the first one is fatal,
naming file:line and how many more there are, unless the retriever says `skip_bad_rows: true`;
then they are skipped and reported as a warning when the index is built.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from lmpc.runtime.data import DataError, read_rows
from lmpc.runtime.errors import ConfigurationError

TEXT_SUFFIXES = (".txt", ".md", ".markdown")  # the files a folder corpus reads; others are ignored
_WORD = re.compile(r"\S+")


class RetrievalError(ConfigurationError):
    """A corpus that cannot be read, a missing package, a bad mode, an unreachable vector
    database: every row would fail the same way."""


@dataclass
class Corpus:
    ids: list[str]
    texts: list[str]
    bad: list[DataError] = field(default_factory=list)  # the skipped rows (skip_bad_rows only)


def corpus_files(folder: Path) -> list[Path]:
    """The text files of a folder corpus, sorted; hidden files and folders are left out."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in TEXT_SUFFIXES and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def corpus_digest(path: Path) -> str:
    """sha256 of a corpus file, or over a folder's file names and contents (a renamed, added,
    removed or changed file gives another digest)."""
    try:
        if path.is_dir():
            h = hashlib.sha256(b"folder\0")
            for f in corpus_files(path):
                h.update(f.relative_to(path).as_posix().encode() + b"\0")
                h.update(hashlib.sha256(f.read_bytes()).digest())
            return h.hexdigest()
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as e:
        raise RetrievalError(f"corpus {path}: {e.strerror or e}") from None


def chunk_text(text: str, size: int, overlap: int) -> list[str]:
    """`text` cut into pieces of `size` words, each starting `size - overlap` words after the
    previous one; a piece is the original text from its first word to its last (line breaks
    and spacing kept). A text of at most `size` words is one piece."""
    spans = [m.span() for m in _WORD.finditer(text)]
    if len(spans) <= size:
        return [text.strip()]
    out = []
    for start in range(0, len(spans), size - overlap):
        end = min(start + size, len(spans))
        out.append(text[spans[start][0]:spans[end - 1][1]])
        if end == len(spans):
            break
    return out


def read_corpus(path: Path, text: str = "text", id: str = "id", chunk: int | None = None, overlap: int = 0,
                skip_bad_rows: bool = True) -> Corpus:
    """The passages of a corpus file or folder. chunk: cut each passage into pieces of that many
    words (overlap: words shared by consecutive pieces); piece n (from 1) of passage ID has the
    id `ID#n`, whatever the number of pieces. skip_bad_rows False: the first bad row raises."""
    path = Path(path)
    if chunk is not None and not (isinstance(chunk, int) and chunk > 0 and 0 <= overlap < chunk):
        raise RetrievalError(f"chunk must be a positive number of words and overlap between 0 and chunk - 1 "
                             f"(got chunk {chunk!r}, overlap {overlap!r})")
    if path.is_dir():
        rows = _folder_rows(path)
    else:
        rows = _file_rows(path, text, id)
    ids: list[str] = []
    texts: list[str] = []
    bad: list[DataError] = []
    seen: set[str] = set()
    for where, doc_id, body in rows:
        if isinstance(where, DataError):
            bad.append(where)
            continue
        if doc_id in seen:
            bad.append(DataError(f"duplicate id {doc_id!r}", *where))
            continue
        seen.add(doc_id)
        pieces = chunk_text(body, chunk, overlap) if chunk else [body]
        ids += [f"{doc_id}#{n}" for n in range(1, len(pieces) + 1)] if chunk else [doc_id]
        texts += pieces
    if bad and not skip_bad_rows:
        first, more = bad[0], len(bad) - 1
        extra = f" (and {more} more bad row{'s' if more > 1 else ''})" if more else ""
        raise RetrievalError(f"corpus: {first}{extra}; `skip_bad_rows: true` on the retriever skips them")
    if not ids:
        raise RetrievalError(f"corpus {path}: no usable passages" + (f" ({bad[0]})" if bad else ""))
    return Corpus(ids, texts, bad)


def _file_rows(path: Path, text: str, id: str):
    """(where, id, text) per good row, (DataError, None, None) per bad one."""
    display = str(path)
    try:
        rows = read_rows(path)
        for line, row in rows:
            if isinstance(row, DataError):
                yield row, None, None
                continue
            missing = next((col for col in (text, id) if col not in row), None)
            if missing is not None:
                yield DataError(f"the row has no `{missing}` column", display, line), None, None
                continue
            t, i = row[text], row[id]
            if not isinstance(t, str) or not t.strip():
                yield DataError(f"`{text}` should be non-empty text", display, line), None, None
            elif not isinstance(i, (str, int)) or isinstance(i, bool) or not str(i).strip():
                yield DataError(f"`{id}` should be non-empty text or an integer", display, line), None, None
            else:
                yield (display, line), str(i), t
    except DataError as e:  # the whole file: missing, unknown format, not a JSON list
        raise RetrievalError(f"corpus: {e}") from None


def _folder_rows(folder: Path):
    files = corpus_files(folder)
    if not files:
        raise RetrievalError(f"corpus {folder}: the folder holds no text files ({', '.join(TEXT_SUFFIXES)})")
    for f in files:
        display = str(f)
        try:
            data = f.read_bytes()
        except OSError as e:
            yield DataError(f"cannot read the file: {e.strerror or e}", display), None, None
            continue
        try:
            body = data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            line = data.count(b"\n", 0, e.start) + 1
            col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
            yield DataError("the file is not UTF-8 text", display, line, col), None, None
            continue
        if not body.strip():
            yield DataError("the file is empty", display, 1), None, None
            continue
        yield (display, 1), f.relative_to(folder).as_posix(), body
