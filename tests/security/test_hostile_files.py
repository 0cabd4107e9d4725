"""Hostile and careless files (issue 11, "Hostile files"): data files with bad quoting or
absurd nesting, types nested past the compiler's limit, BOMs, control bytes, colliding graph ids.

Every file is written by the test into tmp_path; the CLI runs as a user runs it (a subprocess),
and each failure must be a message with file:line(:col), a proper exit code, no traceback.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lmpc.compiler import analyze, compile_source
from lmpc.compiler.diagnostics import printable
from lmpc.compiler.jsonsafe import JSONTooDeep, load_json_bounded, too_deep_at
from lmpc.compiler.render import to_dot, to_mermaid
from lmpc.compiler.syntax import MAX_BRACKETS
from lmpc.compiler.types import MAX_NESTING, nesting, to_schema
from lmpc.runtime.data import ROW_MAX_DEPTH, DataError, load_examples
from lmpc.runtime.values import validation_error

ROOT = Path(__file__).resolve().parents[2]
TEXT_IN = {"text": {"schema": {"type": "string"}, "type": "str"}}
LABEL_OUT = {"label": {"schema": {"type": "string"}, "type": "str"}}
# Runs without a model: the pipeline returns its input, so `lmpc run` is quick and offline.
ECHO = "pipeline echo(text: str, n: int) -> (text: str, n: int) {\n    return text: text, n: n\n}\n"


def lmpc(*args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lmpc", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8", newline="")
    return path


def deep_list(n: int) -> str:
    return "[" * n + "]" * n


# --- CSV quoting ---------------------------------------------------------------------------


def test_csv_unterminated_quote_is_reported_at_its_line_not_merged(tmp_path: Path) -> None:
    # Before: the quote ran to the end of the file and rows 3-5 silently became one text.
    path = write(tmp_path / "d.csv", 'text,label\nok,pos\n"hello,pos\nworld,neg\nbar,neg\n')
    with pytest.raises(DataError) as e:
        load_examples(path, TEXT_IN, LABEL_OUT, skip_bad_rows=True)
    assert str(e.value).startswith(f"{path}:3: invalid CSV: a quoted field that starts on this line is never closed")
    assert "line 5" in str(e.value)


def test_csv_text_after_a_closing_quote_is_reported(tmp_path: Path) -> None:
    # Before: four lines were merged into two examples, exit 0.
    path = write(tmp_path / "d.csv", 'text,label\n"hello,pos\nworld,neg\n"foo",pos\nbar,neg\n')
    with pytest.raises(DataError) as e:
        load_examples(path, TEXT_IN, LABEL_OUT)
    assert str(e.value).startswith(f"{path}:2: invalid CSV: a closing `\"` on line 4 is followed by text")


def test_csv_quoted_field_over_several_lines_still_reads(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", 'text,label\n"two\nlines, ""quoted""",pos\nnext,neg\n')
    examples, bad = load_examples(path, TEXT_IN, LABEL_OUT)
    assert bad == [] and [ex.inputs["text"] for ex in examples] == ['two\nlines, "quoted"', "next"]
    assert [ex.source for ex in examples] == [f"{path}:2", f"{path}:4"]


def test_cli_run_reports_bad_csv_quoting_without_traceback(tmp_path: Path) -> None:
    src = write(tmp_path / "echo.lmp", ECHO)
    rows = write(tmp_path / "rows.csv", 'text,n\na,1\n"b,2\nc,3\n')
    r = lmpc("run", src, "--input-file", rows, "--no-cache", "--cache-dir", tmp_path)
    assert r.returncode == 2, r.stderr
    assert f"{rows}:3: invalid CSV" in r.stderr and "Traceback" not in r.stderr
    assert r.stdout == ""


# --- JSON nested past the limit --------------------------------------------------------------


def test_load_json_bounded_positions_the_first_bracket_past_the_limit() -> None:
    text = '{"a": "[[[[[[", "b":\n  [[[[1]]]]}'
    assert load_json_bounded(text, 5) == {"a": "[[[[[[", "b": [[[[1]]]]}  # brackets in strings do not count
    with pytest.raises(JSONTooDeep) as e:
        load_json_bounded(text, 4)
    assert isinstance(e.value, json.JSONDecodeError)
    assert (e.value.lineno, e.value.colno) == (2, 6) and "more than 4 levels" in e.value.msg
    with pytest.raises(JSONTooDeep):
        load_json_bounded(deep_list(100_000), 64)  # would be a RecursionError in json.loads
    assert too_deep_at("[[1]], [[[2]]]", 2, 7, one_value=True) == (9, 14)
    assert too_deep_at("[[1]], 2", 2, 0, one_value=True) == (None, 5)


@pytest.mark.parametrize("skip", [False, True])
def test_jsonl_row_nested_1000_deep_is_a_bad_row(tmp_path: Path, skip: bool) -> None:
    path = write(tmp_path / "d.jsonl", '{"text": "a"}\n{"text": ' + deep_list(1000) + '}\n{"text": "b"}\n')
    message = f"{path}:2:{10 + ROW_MAX_DEPTH - 1}: the JSON nests more than {ROW_MAX_DEPTH} levels"
    if not skip:
        with pytest.raises(DataError) as e:
            load_examples(path, TEXT_IN, LABEL_OUT)
        assert str(e.value).startswith(message)
        return
    examples, bad = load_examples(path, TEXT_IN, LABEL_OUT, skip_bad_rows=True)
    assert [ex.inputs["text"] for ex in examples] == ["a", "b"]
    assert [str(b)[:len(message)] for b in bad] == [message]


def test_json_file_element_nested_1000_deep_is_a_bad_row(tmp_path: Path) -> None:
    path = write(tmp_path / "d.json", '[{"text": "a"},\n {"text": ' + deep_list(1000) + '},\n {"text": "b"}]')
    examples, bad = load_examples(path, TEXT_IN, LABEL_OUT, skip_bad_rows=True)
    assert [ex.inputs["text"] for ex in examples] == ["a", "b"]
    (b,) = bad
    assert (b.line, b.col) == (2, 11 + ROW_MAX_DEPTH - 1) and "nests more than" in b.message


def test_json_file_nested_1000_deep_is_a_bad_file(tmp_path: Path) -> None:
    path = write(tmp_path / "d.json", "{" * 1000 + "}" * 1000)
    with pytest.raises(DataError) as e:
        load_examples(path, TEXT_IN, LABEL_OUT, skip_bad_rows=True)
    assert (e.value.line, e.value.col) == (1, ROW_MAX_DEPTH + 1)


def test_data_rows_as_deep_as_the_deepest_type_load(tmp_path: Path) -> None:
    program = compile_source(f"pipeline p(x: {'list[' * MAX_NESTING}str{']' * MAX_NESTING}) -> (y: str) "
                             "{ return y: \"k\" }")
    inputs = program.graphs["p"].graph["inputs"]
    value = "a"
    for _ in range(MAX_NESTING):
        value = [value]
    path = write(tmp_path / "d.jsonl", json.dumps({"x": value, "y": ["k", "K"]}) + "\n")
    (example,), bad = load_examples(path, inputs, {"y": {"schema": {"type": "string"}, "type": "str"}})
    assert bad == [] and example.inputs["x"] == value


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_cli_run_deep_row_is_a_usage_error_with_file_line(tmp_path: Path, suffix: str) -> None:
    src = write(tmp_path / "echo.lmp", ECHO)
    row = '{"text": "x", "n": ' + deep_list(1000) + "}"
    rows = write(tmp_path / f"rows{suffix}", row + "\n" if suffix == ".jsonl" else "[\n" + row + "\n]")
    r = lmpc("run", src, "--input-file", rows, "--no-cache", "--cache-dir", tmp_path)
    assert r.returncode == 2, r.stderr
    assert re.search(rf"{re.escape(str(rows))}:{1 if suffix == '.jsonl' else 2}:\d+: the JSON nests more than",
                     r.stderr), r.stderr
    assert "Traceback" not in r.stderr and "RecursionError" not in r.stderr


# --- types nested past the limit -------------------------------------------------------------


@pytest.mark.parametrize("n", [MAX_NESTING + 1, MAX_BRACKETS])
def test_type_past_the_limit_is_type_too_deep(n: int) -> None:
    text = f"type T = {'list[' * n}str{']' * n}\n"
    program, diags = analyze(text, "deep.lmp")
    assert program is None
    (d,) = diags
    assert d.code == "type-too-deep" and f"nests {MAX_NESTING + 1} levels" in d.message
    assert (d.span.line, d.span.col) == (1, 10 + 5 * (n - MAX_NESTING - 1))  # the level that passes the limit


@pytest.mark.parametrize("n", [MAX_BRACKETS + 1, 200, 489, 490, 491, 5000])
def test_brackets_nested_too_deep_are_one_positioned_diagnostic(n: int) -> None:
    # 490 gave a 3,005-line lark VisitError traceback; 121-488 passed check and failed at run time.
    text = f"type T = {'list[' * n}str{']' * n}\n"
    program, diags = analyze(text, "deep.lmp")
    assert program is None
    (d,) = diags
    assert d.code == "syntax-error" and f"too many nested brackets ({n} levels; at most {MAX_BRACKETS})" in d.message
    assert (d.span.line, d.span.col) == (1, 14 + 5 * MAX_BRACKETS)  # the first `[` past the limit


def chain_of_named_types(levels: int) -> str:
    """`type L1 = list[str]` ... each adding one level: no bracket nests, the type does."""
    return "type L1 = list[str]\n" + "".join(f"type L{i} = list[L{i - 1}]\n" for i in range(2, levels + 1))


def test_type_nested_too_deep_through_named_types_is_type_too_deep() -> None:
    text = chain_of_named_types(MAX_NESTING + 5) + f"signature S = x: L{MAX_NESTING + 5} -> y\n"
    program, diags = analyze(text, "deep.lmp")
    assert program is None
    (d,) = diags  # reported once, where the limit is passed; the names built on it are not reported again
    assert d.code == "type-too-deep" and (d.span.line, d.span.col) == (MAX_NESTING + 1, 10 + len(str(MAX_NESTING + 1)))
    assert f"nests {MAX_NESTING + 1} levels" in d.message and f"at most {MAX_NESTING}" in d.message


def worst_types() -> dict[str, str]:
    """Types at the limit, each shape the schema grows fastest for."""
    obj = opt_list = "str"
    for _ in range(MAX_NESTING):
        obj = "{a: " + obj + "?, b: int}"
        opt_list = "list[" + opt_list + "?]"
    return {"lists": f"{'list[' * MAX_NESTING}str{']' * MAX_NESTING}", "optional objects": obj,
            "optional lists": opt_list}


@pytest.mark.parametrize("shape", sorted(worst_types()))
def test_types_at_the_limit_check_and_validate(shape: str) -> None:
    text = f"type T = {worst_types()[shape]}\nsignature S = x: T -> y: T\n"
    program, diags = analyze(text, "limit.lmp")
    assert diags == [] and program is not None
    t = program.types["T"]
    assert nesting(t) == MAX_NESTING
    value: object = "v"
    for _ in range(MAX_NESTING):
        value = {"a": value, "b": 1} if shape == "optional objects" else [value]
    # With a fifth of Python's recursion limit in use by the caller, validation still fits.
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(800)
    try:
        assert validation_error(value, to_schema(t)) is None
    finally:
        sys.setrecursionlimit(limit)


def test_check_reports_each_file_and_goes_on_after_a_too_deep_one(tmp_path: Path) -> None:
    deep = write(tmp_path / "deep.lmp", "type T = " + "list[" * 490 + "str" + "]" * 490 + "\n")
    chain = write(tmp_path / "chain.lmp", chain_of_named_types(200) + "signature S = x: L200 -> y\n")
    ok = write(tmp_path / "ok.lmp", "signature S = x -> y\n")
    r = lmpc("check", deep, chain, ok)
    assert r.returncode == 1
    assert f"{deep}:1:{14 + 5 * MAX_BRACKETS}: error[syntax-error]: too many nested brackets (490 levels" in r.stderr
    assert f"{chain}:{MAX_NESTING + 1}:" in r.stderr and "error[type-too-deep]" in r.stderr
    assert r.stdout.strip() == f"{ok}: ok (no pipelines)"
    assert "Traceback" not in r.stderr and len(r.stderr.splitlines()) < 20


def test_long_field_access_chain_is_a_diagnostic() -> None:
    text = ("signature S = x -> y\npipeline p(a: str) -> (y: str) {\n    s = predict S(x: a"
            + ".y" * 3000 + ")\n    return y: s.y\n}\n")
    program, diags = analyze(text, "chain.lmp")
    assert program is None and [d.code for d in diags] == ["syntax-error"]


# --- BOM -------------------------------------------------------------------------------------


def test_lmp_file_with_a_utf8_bom_compiles(tmp_path: Path) -> None:
    src = tmp_path / "bom.lmp"
    src.write_bytes(b"\xef\xbb\xbf" + ECHO.encode())
    r = lmpc("check", src)
    assert (r.returncode, r.stderr) == (0, "") and r.stdout.strip() == f"{src}: ok (echo)"
    # Columns on the first line are counted without the BOM, as editors show them.
    src.write_bytes(b"\xef\xbb\xbfpipeline p(x: str) -> (y: str) { return y: z }\n")
    r = lmpc("check", src)
    assert r.returncode == 1 and f"{src}:1:44: error[undefined-name]" in r.stderr
    assert analyze("\ufeff" + ECHO, "bom.lmp")[1] == []


def test_json_data_file_with_a_bom_reads(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps([{"text": "a"}]).encode())
    examples, bad = load_examples(path, TEXT_IN, LABEL_OUT)
    assert [ex.inputs["text"] for ex in examples] == ["a"] and bad == []


# --- control bytes -----------------------------------------------------------------------------


def test_printable_escapes_terminal_controls_only() -> None:
    assert printable("a\x1b[2Jb\x00c\rd\x9be\u202ef\x7f") == "a\\x1b[2Jb\\x00c\\x0dd\\x9be\\u202ef\\x7f"
    assert printable("line\n\ttab é ✓") == "line\n\ttab é ✓"


def test_check_never_echoes_control_bytes_from_the_file(tmp_path: Path) -> None:
    src = tmp_path / "evil.lmp"
    src.write_bytes(b"signature S = x -> y\x1b[2J\x00\npipeline p(x: str) -> (y: str) {\x07 return y: x\x1b }\n")
    r = lmpc("check", src)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", r.stderr), repr(r.stderr)
    assert "unexpected character `\\x1b`" in r.stderr
    assert " 1 | signature S = x -> y\u241b[2J\u2400" in r.stderr  # the line as control pictures
    caret = r.stderr.splitlines()[2]
    assert caret.index("^") == r.stderr.splitlines()[1].index("\u241b")  # the caret under the ESC


def test_data_errors_never_echo_control_bytes(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", "te\x1b]0;owned\x07xt,te\x1b]0;owned\x07xt\n")
    with pytest.raises(DataError) as e:
        load_examples(path, TEXT_IN, LABEL_OUT)
    assert "\x1b" not in str(e.value) and "\x07" not in str(e.value) and "te\\x1b]0;owned\\x07xt" in str(e.value)
    src = write(tmp_path / "echo.lmp", ECHO)
    r = lmpc("run", src, "--input-file", path, "--no-cache", "--cache-dir", tmp_path)
    assert r.returncode == 2 and "\x1b" not in r.stderr and "\\x1b" in r.stderr


def test_run_output_escapes_control_bytes(tmp_path: Path) -> None:
    src = write(tmp_path / "echo.lmp", ECHO)
    rows = write(tmp_path / "rows.jsonl", json.dumps({"text": "a\x1b[31mred\x00", "n": 1}) + "\n")
    r = lmpc("run", src, "--input-file", rows, "--no-cache", "--cache-dir", tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "text: a\\x1b[31mred\\x00  n: 1"


# --- lmpc run --input-file names rows by file:line ---------------------------------------------


def test_run_input_file_names_a_bad_row_by_file_and_line(tmp_path: Path) -> None:
    src = write(tmp_path / "echo.lmp", ECHO)
    rows = write(tmp_path / "rows.jsonl", '{"text": "a", "n": 1}\n\n{"text": "b"}\n{"text": "c", "n": "x"}\n')
    r = lmpc("run", src, "--input-file", rows, "--no-cache", "--cache-dir", tmp_path)
    assert r.returncode == 2, r.stderr
    assert f"lmpc: error: {rows}:3: row lacks input `n` (and 1 more bad row)" in r.stderr
    assert "row 2" not in r.stderr and "Traceback" not in r.stderr and r.stdout == ""


def test_run_input_file_reads_csv_cells_as_the_input_types(tmp_path: Path) -> None:
    src = write(tmp_path / "echo.lmp", ECHO)
    rows = write(tmp_path / "rows.csv", "text,n,gold\nhello,3,x\nbye,4,y\n")
    r = lmpc("run", src, "--input-file", rows, "--json", "--no-cache", "--cache-dir", tmp_path)
    assert r.returncode == 0, r.stderr
    out = [json.loads(line) for line in r.stdout.splitlines()]
    assert [(o["row"], o["source"], o["outputs"]) for o in out] == [
        (0, f"{rows}:2", {"text": "hello", "n": 3}), (1, f"{rows}:3", {"text": "bye", "n": 4})]


# --- graph ids ------------------------------------------------------------------------------


COLLIDE = """signature S = x -> y
pipeline inner(x: str) -> (y: str) {
    c = predict S(x: x)
    return y: c.y
}
pipeline outer(x: str) -> (a: str, b: str) {
    k = inner(x: x)
    k_c = predict S(x: x)
    return a: k.y, b: k_c.y
}
"""


def test_graph_ids_of_k_slash_c_and_k_c_do_not_collide(tmp_path: Path) -> None:
    g = compile_source(COLLIDE).graphs["outer"]
    assert {"k/c", "k_c"} <= set(g.nodes)
    mermaid = to_mermaid(g)
    node_lines = [line.split('"')[0].strip() for line in mermaid.splitlines() if '"' in line and "-->" not in line]
    ids = [re.match(r"(n_\w+)", line).group(1) for line in node_lines]
    assert len(ids) == len(set(ids)) == g.number_of_nodes()
    dot = to_dot(g)
    dot_ids = re.findall(r'^  ("(?:[^"\\]|\\.)*") \[shape', dot, flags=re.M)
    assert len(dot_ids) == len(set(dot_ids)) == g.number_of_nodes()
    src = write(tmp_path / "c.lmp", COLLIDE)
    r = lmpc("graph", src, "--pipeline", "outer")
    assert r.returncode == 0 and r.stdout == mermaid


def test_mermaid_ids_are_one_to_one() -> None:
    from lmpc.compiler.render import _mermaid_id

    names = ["k/c", "k_c", "k__c", "k_2f_c", "k.c", "k c", "é", "_", "__", "in:x", "out:x", "in_x"]
    ids = [_mermaid_id(n) for n in names]
    assert len(set(ids)) == len(names)
    assert all(re.fullmatch(r"n_[A-Za-z0-9_]+", i) for i in ids)


@pytest.mark.slow
def test_types_at_the_limit_run_on_the_real_model(tmp_path: Path) -> None:
    """What checks also runs: rows as deep as the limit are read and validated, llama.cpp
    accepts the grammar of outputs as deep as the limit, and the outputs validate."""
    names = {"lists": "A", "optional objects": "B", "optional lists": "C"}
    types = "".join(f"type {names[shape]} = {t}\n" for shape, t in worst_types().items())
    src = write(tmp_path / "deep.lmp", types + """
signature S = a: A, b: B, c: C -> a2: A, b2: B, c2: C
pipeline p(a: A, b: B, c: C) -> (a2: A, b2: B, c2: C) {
    s = predict S(a: a, b: b, c: c)
    return a2: s.a2, b2: s.b2, c2: s.c2
}
""")
    row: dict[str, object] = {"a": "v", "b": "v", "c": "v"}
    for _ in range(MAX_NESTING):
        row = {"a": [row["a"]], "b": {"a": row["b"], "b": 1}, "c": [row["c"]]}
    rows = write(tmp_path / "rows.jsonl", json.dumps(row) + "\n")
    r = lmpc("run", src, "--input-file", rows, "--json", "--no-cache", "--cache-dir", tmp_path)
    assert r.returncode == 0, r.stderr
    (out,) = [json.loads(line) for line in r.stdout.splitlines()]
    assert out["error"] is None and set(out["outputs"]) == {"a2", "b2", "c2"}
