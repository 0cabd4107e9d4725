"""Loading labelled data: formats, coercion, bad rows, sampling, and Hugging Face files.

Real files in tmp_path; the Hugging Face cache is filled by huggingface_hub's own download
code from a loopback HTTP server that answers like the Hub, then read back offline.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest

from lmpc.compiler import compile_file, compile_source
from lmpc.runtime.data import DataError, Example, load_examples, read_rows, sample, split

ROOT = Path(__file__).resolve().parents[2]

PROGRAM = '''
type Label = "positive" | "negative"
pipeline p(text: str, n: int, x: float, flag: bool, note: str?, tags: list[str])
        -> (label: Label, count: int) {
    return label: "positive", count: n
}
'''


@pytest.fixture(scope="module")
def fields() -> tuple[dict[str, dict], dict[str, dict]]:
    graph = compile_source(PROGRAM).graphs["p"]
    return graph.graph["inputs"], graph.graph["outputs"]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def jsonl(path: Path, rows: list[Any]) -> Path:
    return write(path, "".join(json.dumps(r) + "\n" for r in rows))


GOOD = {"text": "hi", "n": 3, "x": 1.5, "flag": True, "note": "n", "tags": ["a"], "label": "positive", "count": 3}


# --- formats --------------------------------------------------------------------------------


def test_jsonl_loads_inputs_gold_source_and_raw_row(tmp_path: Path, fields) -> None:
    path = write(tmp_path / "d.jsonl", json.dumps({**GOOD, "extra": 1}) + "\n\n   \n"
                 + json.dumps({"text": "yo", "n": 1, "x": 2, "flag": False, "tags": []}) + "\n")
    examples, bad = load_examples(path, *fields)
    assert bad == []
    first, second = examples
    assert first.inputs == {"text": "hi", "n": 3, "x": 1.5, "flag": True, "note": "n", "tags": ["a"]}
    assert first.gold == {"label": "positive", "count": 3}
    assert first.source == f"{path}:1" and first.row["extra"] == 1
    # blank lines skipped but counted; the optional input is None; no gold is fine
    assert second.source == f"{path}:4" and second.inputs["note"] is None and second.gold == {}


def test_json_list_of_objects_with_line_numbers(tmp_path: Path, fields) -> None:
    rows = [GOOD, {**GOOD, "text": "second"}]
    path = write(tmp_path / "d.json", json.dumps(rows, indent=2))
    examples, _ = load_examples(path, *fields)
    assert [e.inputs["text"] for e in examples] == ["hi", "second"]
    text = path.read_text().splitlines()
    for e in examples:  # each source line is where that object starts
        assert text[int(e.source.rsplit(":", 1)[1]) - 1].strip() == "{"
    assert examples[0].source == f"{path}:2"


def test_json_that_is_not_a_list_or_not_json(tmp_path: Path, fields) -> None:
    with pytest.raises(DataError, match=r"d\.json:1:1: a \.json data file holds a list of objects, not a JSON"):
        load_examples(write(tmp_path / "d.json", json.dumps(GOOD)), *fields)
    with pytest.raises(DataError) as e:
        load_examples(write(tmp_path / "e.json", '[\n  {"text": "a"},\n  {"text": }\n]'), *fields)
    assert str(e.value).startswith(f"{tmp_path / 'e.json'}:3:12: invalid JSON: Expecting value")
    _, bad = load_examples(write(tmp_path / "f.json", f"[{json.dumps(GOOD)},\n 7]"), *fields, skip_bad_rows=True)
    assert [str(b) for b in bad] == [f"{tmp_path / 'f.json'}:2:2: the element is a JSON number, not a JSON object"]


def test_csv_values_are_coerced_per_schema(tmp_path: Path, fields) -> None:
    path = write(tmp_path / "d.csv",
                 "text,n,x,flag,note,tags,label,count\n"
                 'hello,3,2.5,true,12,"[""a"", ""b""]",negative,7\n'
                 "\n"
                 '"two\nlines",-1,4,FALSE,,[],,\n'
                 "x,0,0,True,null,[],positive,\n")
    examples, bad = load_examples(path, *fields)
    assert bad == []
    a, b, c = examples
    assert a.inputs == {"text": "hello", "n": 3, "x": 2.5, "flag": True, "note": "12", "tags": ["a", "b"]}
    assert a.gold == {"label": "negative", "count": 7}
    assert (a.source, b.source, c.source) == (f"{path}:2", f"{path}:4", f"{path}:6")  # first line of a record
    # an empty cell: no value (optional input -> None, no gold); "null" is None for an optional input
    assert b.inputs["text"] == "two\nlines" and b.inputs["flag"] is False and b.inputs["note"] is None
    assert b.gold == {} and c.inputs["note"] is None and c.gold == {"label": "positive"}
    assert isinstance(b.row["n"], str), "the raw row keeps the file's text"


def test_tsv_and_bom(tmp_path: Path, fields) -> None:
    path = tmp_path / "d.tsv"
    path.write_bytes("\ufefftext\tn\tx\tflag\ttags\tlabel\na, b\t1\t1\tfalse\t[]\tpositive\n".encode())
    (example,), _ = load_examples(path, *fields)
    assert example.inputs["text"] == "a, b" and example.inputs["n"] == 1 and example.gold == {"label": "positive"}


def test_csv_record_with_too_many_fields_and_duplicate_header(tmp_path: Path, fields) -> None:
    path = write(tmp_path / "d.csv", "text,n\nhi,1,extra\n")
    with pytest.raises(DataError, match=r"d\.csv:2: the record has 3 fields but the header names 2 columns"):
        load_examples(path, *fields)
    with pytest.raises(DataError, match=r"e\.csv:1: the header names column `n` twice"):
        load_examples(write(tmp_path / "e.csv", "text,n,n\n"), *fields)


def test_mapping_renames_columns(tmp_path: Path, fields) -> None:
    row = {k: v for k, v in GOOD.items() if k not in ("text", "label")} | {"sentence": "hi", "gold": "negative"}
    path = jsonl(tmp_path / "d.jsonl", [row])
    (example,), _ = load_examples(path, *fields, mapping={"text": "sentence", "label": "gold"})
    assert example.inputs["text"] == "hi" and example.gold["label"] == "negative"
    with pytest.raises(DataError, match=r"row lacks input `text` \(column `body`\)"):
        load_examples(path, *fields, mapping={"text": "body"})
    with pytest.raises(DataError, match="the column mapping names `txt`, which is not a field"):
        load_examples(path, *fields, mapping={"txt": "sentence"})


def test_gold_list_of_acceptable_answers_is_kept(tmp_path: Path, fields) -> None:
    path = jsonl(tmp_path / "d.jsonl", [{**GOOD, "label": ["positive", "negative"]}, {**GOOD, "label": ["neutral"]}])
    with pytest.raises(DataError, match=r"d\.jsonl:2: `label` should be .*\[0\]: 'neutral' is not one of"):
        load_examples(path, *fields)


def test_row_reader_yields_errors_in_place(tmp_path: Path) -> None:
    path = write(tmp_path / "d.jsonl", '{"a": 1}\n[1, 2]\n{"a": \n"s"\n')
    rows = list(read_rows(path))
    assert rows[0] == (1, {"a": 1})
    assert [(line, str(e)) for line, e in rows[1:]] == [
        (2, f"{path}:2: the line is a JSON array, not a JSON object (one object per line, keys = field names)"),
        (3, f"{path}:3:7: invalid JSON: Expecting value"),
        (4, f"{path}:4: the line is a JSON string, not a JSON object (one object per line, keys = field names)"),
    ]


# --- bad rows -------------------------------------------------------------------------------


def bad_file(tmp_path: Path) -> Path:
    rows = [json.dumps(GOOD),
            '{"text": "broken", ',  # 2: invalid JSON
            json.dumps({k: v for k, v in GOOD.items() if k != "text"}),  # 3: lacks an input
            json.dumps({**GOOD, "n": "three"}),  # 4: wrong type
            json.dumps({**GOOD, "label": "neutral"}),  # 5: gold outside the enum
            json.dumps({**GOOD, "text": "last"})]
    return write(tmp_path / "bad.jsonl", "\n".join(rows) + "\n")


def test_bad_rows_are_reported_with_their_lines(tmp_path: Path, fields) -> None:
    path = bad_file(tmp_path)
    examples, bad = load_examples(path, *fields, skip_bad_rows=True)
    assert [e.inputs["text"] for e in examples] == ["hi", "last"]
    assert [str(b) for b in bad] == [
        f"{path}:2:20: invalid JSON: Expecting property name enclosed in double quotes",
        f"{path}:3: row lacks input `text`",
        f"{path}:4: `n` should be int: 'three' is not of type 'integer'",
        f"{path}:5: `label` should be \"positive\" | \"negative\": 'neutral' is not one of ['positive', 'negative']",
    ]
    assert [(b.path, b.line) for b in bad] == [(str(path), n) for n in (2, 3, 4, 5)]


def test_without_skipping_the_first_bad_row_is_raised_with_a_count(tmp_path: Path, fields) -> None:
    path = bad_file(tmp_path)
    with pytest.raises(DataError) as e:
        load_examples(path, *fields)
    assert str(e.value) == (f"{path}:2:20: invalid JSON: Expecting property name enclosed in double quotes "
                            "(and 3 more bad rows; --skip-bad-rows skips them)")
    one = jsonl(tmp_path / "one.jsonl", [GOOD, {**GOOD, "flag": "yes"}])
    with pytest.raises(DataError) as e:
        load_examples(one, *fields)
    assert str(e.value) == f"{one}:2: `flag` should be bool: 'yes' is not of type 'boolean'"


def test_several_problems_of_one_row_are_all_named(tmp_path: Path, fields) -> None:
    path = jsonl(tmp_path / "d.jsonl", [{"n": 1.5, "x": 1, "flag": True, "tags": [1], "count": "7"}])
    with pytest.raises(DataError) as e:
        load_examples(path, *fields)
    assert str(e.value) == (f"{path}:1: row lacks input `text`; `n` should be int: 1.5 is not of type 'integer'; "
                            "`tags` should be list[str]: 0: 1 is not of type 'string'; "
                            "`count` should be int: '7' is not of type 'integer'")


def test_limit_stops_after_that_many_good_examples(tmp_path: Path, fields) -> None:
    path = jsonl(tmp_path / "d.jsonl", [{**GOOD, "n": i} for i in range(5)] + [{"bad": True}])
    examples, _ = load_examples(path, *fields, limit=2)
    assert [e.inputs["n"] for e in examples] == [0, 1]
    examples, _ = load_examples(path, *fields, limit=5)  # the bad last row is never read
    assert len(examples) == 5
    assert load_examples(path, *fields, limit=0) == ([], [])
    with pytest.raises(DataError, match=r"d\.jsonl:6: row lacks input `text`"):
        load_examples(path, *fields, limit=6)


def test_missing_file_and_unknown_format(tmp_path: Path, fields) -> None:
    with pytest.raises(DataError, match=r"nope\.jsonl: no such file$"):
        read_rows(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match=r"d\.parquet: unknown data format `\.parquet`; supported: "
                                         r"\.jsonl, \.json, \.csv, \.tsv"):
        load_examples(write(tmp_path / "d.parquet", ""), *fields)


def test_not_utf8(tmp_path: Path, fields) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b'\n{"text": "caf\xe9"}\n')
    _, bad = load_examples(path, *fields, skip_bad_rows=True)
    assert [str(b) for b in bad] == [f"{path}:2:14: the line is not UTF-8 text"]
    csv_path = tmp_path / "d.csv"
    csv_path.write_bytes(b"text\nok\ncaf\xe9\n")
    with pytest.raises(DataError, match=r"d\.csv:3:4: the file is not UTF-8 text"):
        load_examples(csv_path, *fields)


def test_data_error_str() -> None:
    assert str(DataError("m", "f.jsonl", 3, 4)) == "f.jsonl:3:4: m"
    assert str(DataError("m", "f.jsonl", 3)) == "f.jsonl:3: m"
    assert str(DataError("m", "f.jsonl")) == "f.jsonl: m"
    assert str(DataError("m")) == "m"


# --- the example programs' data --------------------------------------------------------------


@pytest.mark.parametrize("program, pipeline, output, sizes", [
    ("sentiment/sentiment.lmp", "classify", "label", {"train": 40, "dev": 60, "test": 60}),
    ("counting/counting.lmp", "count", "answer", {"train": 30, "dev": 50, "test": 50}),
])
def test_vendored_example_data_loads(program: str, pipeline: str, output: str, sizes: dict[str, int]) -> None:
    lmp = ROOT / "examples" / program
    checked = compile_file(lmp)
    assert checked.entry_pipelines() == [pipeline]
    graph = checked.graphs[pipeline]
    for part, size in sizes.items():
        examples, bad = load_examples(lmp.parent / "data" / f"{part}.jsonl", graph.graph["inputs"],
                                      graph.graph["outputs"])
        assert bad == [] and len(examples) == size
        assert all(set(e.inputs) == set(graph.graph["inputs"]) and output in e.gold for e in examples)


# --- sampling --------------------------------------------------------------------------------


def numbered(n: int) -> list[Example]:
    return [Example({"i": i}, {}, f"f:{i + 1}", {"i": i}) for i in range(n)]


def ids(examples: list[Example]) -> list[int]:
    return [e.inputs["i"] for e in examples]


def test_sample_is_seeded_and_a_prefix_of_larger_samples() -> None:
    data = numbered(20)
    assert ids(sample(data, 5, seed=1)) == ids(sample(data, 5, seed=1))
    assert ids(sample(data, 5, seed=1)) != ids(sample(data, 5, seed=2))
    assert len(set(ids(sample(data, 5, seed=1)))) == 5
    assert ids(sample(data, 8, seed=1))[:5] == ids(sample(data, 5, seed=1))
    everything = sample(data, 50, seed=3)
    assert sorted(ids(everything)) == list(range(20)) and ids(everything) != list(range(20))
    assert ids(everything) == ids(sample(data, 20, seed=3))
    assert sample([], 3, seed=0) == [] and sample(data, 0, seed=0) == []


def test_split_is_seeded_disjoint_and_complete() -> None:
    data = numbered(20)
    train, dev = split(data, 0.25, seed=7)
    assert len(dev) == 5 and len(train) == 15
    assert set(ids(train)).isdisjoint(ids(dev)) and sorted(ids(train) + ids(dev)) == list(range(20))
    assert ids(train) == sorted(ids(train)), "each part keeps file order"
    assert (ids(train), ids(dev)) == tuple(ids(p) for p in split(data, 0.25, seed=7))
    assert ids(dev) != ids(split(data, 0.25, seed=8)[1])
    assert split(numbered(3), 0.1, seed=0)[1] != [], "a fraction above 0 keeps one dev example"
    assert split(data, 0.0, seed=0) == (data, []) and split(data, 1.0, seed=0) == ([], data)
    with pytest.raises(ValueError):
        split(data, 1.5, seed=0)


# --- Hugging Face ----------------------------------------------------------------------------

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def fake_hub() -> Iterator[tuple[str, dict[str, bytes]]]:
    """A loopback server answering the Hub's file-resolve requests (HEAD for the metadata,
    GET for the bytes) for the files put in the dict, by path in the repository."""
    files: dict[str, bytes] = {}

    class Handler(BaseHTTPRequestHandler):
        def _head(self) -> bytes | None:
            prefix = "/datasets/org/repo/resolve/main/"
            body = files.get(self.path[len(prefix):]) if self.path.startswith(prefix) else None
            if body is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            self.send_response(200)
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            return body

        def do_HEAD(self) -> None:  # noqa: N802
            self._head()

        def do_GET(self) -> None:  # noqa: N802
            body = self._head()
            if body is not None:
                self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", files
    finally:
        server.shutdown()
        server.server_close()


def test_hf_file_in_the_cache_loads_offline(tmp_path: Path, fields, fake_hub, monkeypatch) -> None:
    from huggingface_hub import constants, hf_hub_download

    endpoint, files = fake_hub
    files["data/train.jsonl"] = (json.dumps(GOOD) + "\n").encode()
    files["data/dev.csv"] = b"text,n,x,flag,tags,label\nhey,2,0.5,false,[],negative\n"
    cache = tmp_path / "hub"
    with monkeypatch.context() as m:
        m.setattr(constants, "HF_HUB_OFFLINE", False)  # in case this whole run was started offline
        for name in files:  # huggingface_hub's own download writes its cache layout
            hf_hub_download("org/repo", name, repo_type="dataset", cache_dir=cache, endpoint=endpoint)
    snapshot = cache / "datasets--org--repo" / "snapshots" / COMMIT
    assert (snapshot / "data/train.jsonl").is_file()
    assert (cache / "datasets--org--repo" / "refs" / "main").read_text() == COMMIT

    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    url = "hf://datasets/org/repo/data/train.jsonl"
    (example,), _ = load_examples(url, *fields)
    assert example.inputs["text"] == "hi" and example.source == f"{url}:1"
    (example,), _ = load_examples("hf://datasets/org/repo/data/dev.csv", *fields)
    assert example.inputs == {"text": "hey", "n": 2, "x": 0.5, "flag": False, "note": None, "tags": []}
    (example,), _ = load_examples(f"hf://datasets/org/repo@{COMMIT}/data/train.jsonl", *fields)
    assert example.gold["label"] == "positive"


def test_hf_file_not_cached_offline_names_repo_and_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    url = "hf://datasets/someorg/somedata/splits/dev.jsonl"
    with pytest.raises(DataError) as e:
        read_rows(url)
    message = str(e.value)
    assert message.startswith(f"{url}: the file splits/dev.jsonl of the Hugging Face dataset someorg/somedata "
                              "is not in the local cache and HF_HUB_OFFLINE is set")
    assert "hf download someorg/somedata splits/dev.jsonl --repo-type dataset" in message
    assert str(tmp_path / "empty") in message


def test_hf_path_form_and_extension_are_checked_before_any_download(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="a Hugging Face data path has the form hf://datasets/ORG/REPO/"):
        read_rows("hf://org/repo/train.jsonl")
    with pytest.raises(DataError, match=r"unknown data format `\.parquet`"):
        read_rows("hf://datasets/org/repo/train.parquet")
