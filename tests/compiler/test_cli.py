"""`lmpc check` and `lmpc graph` as a user runs them (a subprocess), and the compile API."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lmpc.compiler import CompileError, analyze, compile_file, compile_source
from lmpc.compiler.diagnostics import CODES

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
EXAMPLE = DATA / "ok" / "composed.lmp"  # two pipelines, one calling the other
SENTIMENT = ROOT / "examples" / "sentiment" / "sentiment.lmp"
BAD = DATA / "names_unknown_type.lmp"  # four unknown-type errors
WARN_ONLY = DATA / "graph_unused.lmp"


def lmpc(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lmpc", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=60)


# ---- check: exit codes ----------------------------------------------------------------------


def test_check_clean_file_exits_0():
    r = lmpc("check", SENTIMENT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{SENTIMENT}: ok (classify)"
    assert r.stderr == ""


def test_check_quiet_prints_nothing_for_clean_files():
    r = lmpc("check", "-q", SENTIMENT)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")


def test_check_warnings_only_exits_0_and_prints_them():
    r = lmpc("check", WARN_ONLY)
    assert r.returncode == 0
    assert "warning[unused-step]" in r.stderr and "warning[unused-input]" in r.stderr
    assert "error[" not in r.stderr


def test_check_errors_exit_1():
    r = lmpc("check", BAD)
    assert r.returncode == 1
    assert r.stderr.count("error[unknown-type]") == 4
    assert "Traceback" not in r.stderr


def test_check_several_files_exit_1_if_any_has_errors():
    r = lmpc("check", SENTIMENT, BAD)
    assert r.returncode == 1
    assert f"{SENTIMENT}: ok" in r.stdout
    assert f"{BAD}:7:12: error[unknown-type]" in r.stderr


def test_check_without_files_is_a_usage_error():
    r = lmpc("check")
    assert r.returncode == 2
    assert "usage:" in r.stderr


def test_no_command_is_a_usage_error():
    r = lmpc()
    assert r.returncode == 2


@pytest.mark.parametrize("target", ["does/not/exist.lmp", "tests"])
def test_check_unreadable_path_exits_2_without_traceback(target: str):
    r = lmpc("check", target)
    assert r.returncode == 2
    assert r.stderr.startswith("lmpc: error: ")
    assert target in r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_check_missing_file_message(tmp_path: Path):
    r = lmpc("check", tmp_path / "nope.lmp")
    assert r.stderr.strip() == f"lmpc: error: no such file: {tmp_path / 'nope.lmp'}"


def test_check_non_utf8_file_exits_2(tmp_path: Path):
    f = tmp_path / "latin1.lmp"
    f.write_bytes('signature S = x -> y  # caf\xe9\n'.encode("latin-1"))
    r = lmpc("check", f)
    assert r.returncode == 2
    assert "cannot read" in r.stderr and "Traceback" not in r.stderr


# ---- check: rendering -----------------------------------------------------------------------


def test_check_renders_location_source_line_caret_and_hint(tmp_path: Path):
    f = tmp_path / "t.lmp"
    f.write_text('type Label = "a" | "b"\nsignature S {\n    text: str\n    ->\n    label: Lable\n}\n')
    r = lmpc("check", "t.lmp", cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.splitlines() == [
        "t.lmp:5:12: error[unknown-type]: unknown type `Lable`",
        " 5 |     label: Lable",
        "   |            ^^^^^",
        "  hint: did you mean `Label`?",
    ]


def test_caret_of_a_syntax_error_on_the_next_line(tmp_path: Path):
    f = tmp_path / "t.lmp"
    f.write_text("signature S {\n    text: str\n    label: str\n}\n")
    r = lmpc("check", "t.lmp", cwd=tmp_path)
    lines = r.stderr.splitlines()
    assert lines[0] == "t.lmp:4:1: error[missing-arrow]: expected `->` before `}`"
    assert lines[1:3] == [" 4 | }", "   | ^"]


def test_caret_width_is_clamped_to_the_line():
    src = 'signature S = x -> y: Nope\n'
    _, diags = analyze(src, "t.lmp")
    (d,) = diags
    out = d.render(src).splitlines()
    assert out[2] == "   |                       ^^^^"
    # without the source, only the header (and hint) are printed
    assert d.render(None).splitlines()[0] == out[0]


# ---- check --json ---------------------------------------------------------------------------


def test_check_json_shape_with_errors():
    r = lmpc("check", "--json", BAD, SENTIMENT)
    assert r.returncode == 1
    report = json.loads(r.stdout)
    assert set(report) == {"ok", "diagnostics"}
    assert report["ok"] is False
    assert len(report["diagnostics"]) == 4
    for d in report["diagnostics"]:
        assert set(d) == {"code", "severity", "message", "hint", "file", "line", "col", "end_line", "end_col"}
        assert d["code"] in CODES and d["severity"] == CODES[d["code"]][0]
        assert d["file"] == str(BAD)
        assert isinstance(d["line"], int) and isinstance(d["col"], int)
    first = report["diagnostics"][0]
    assert (first["line"], first["col"], first["end_col"]) == (5, 11, 17)
    assert first["message"] == "unknown type `string`" and first["hint"] == "did you mean `str`?"
    assert r.stderr == ""  # nothing human-readable mixed in


def test_check_json_clean_and_warnings():
    r = lmpc("check", "--json", SENTIMENT)
    assert r.returncode == 0 and json.loads(r.stdout) == {"ok": True, "diagnostics": []}
    r = lmpc("check", "--json", WARN_ONLY)
    report = json.loads(r.stdout)
    assert r.returncode == 0 and report["ok"] is True
    assert sorted(d["code"] for d in report["diagnostics"]) == ["unused-input", "unused-step"]
    assert {d["severity"] for d in report["diagnostics"]} == {"warning"}


# ---- graph ----------------------------------------------------------------------------------


def test_graph_mermaid():
    r = lmpc("graph", EXAMPLE)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert out.startswith("flowchart TD\n  %% pipeline headline\n")
    assert 'n_s_2f_s["s/s = predict Summarize using slow -> (summary: str)"]' in out  # inlined call
    assert "n_t" in out and "n_out_3a_title" in out
    assert '-->|"summary → summary: str"| n_t' in out


def test_graph_dot():
    r = lmpc("graph", EXAMPLE, "--format", "dot")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith('digraph "headline" {')
    assert '"s/s" -> "t" [label="summary → summary: str"];' in r.stdout
    assert r.stdout.rstrip().endswith("}")


def test_graph_json_and_pipeline_choice():
    r = lmpc("graph", EXAMPLE, "--format", "json", "--pipeline", "summarize")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["graph"]["name"] == "summarize"
    assert {n["id"] for n in data["nodes"]} == {"in:text", "s", "out:summary"}
    assert {(e["source"], e["target"]) for e in data["edges"]} == {("in:text", "s"), ("s", "out:summary")}


def test_graph_writes_a_file(tmp_path: Path):
    out = tmp_path / "g.mmd"
    r = lmpc("graph", EXAMPLE, "-o", out)
    assert r.returncode == 0 and out.read_text().startswith("flowchart TD")


def test_graph_unknown_pipeline_is_a_usage_error():
    r = lmpc("graph", EXAMPLE, "--pipeline", "nope")
    assert r.returncode == 2
    assert "has no pipeline `nope`" in r.stderr and "Traceback" not in r.stderr


def test_graph_of_a_bad_file_prints_diagnostics_and_exits_1():
    r = lmpc("graph", BAD)
    assert r.returncode == 1
    assert "error[unknown-type]" in r.stderr and r.stdout == ""


def test_graph_needs_pipeline_choice_when_several_entries(tmp_path: Path):
    f = tmp_path / "two.lmp"
    f.write_text("signature S = x -> y\n"
                 "pipeline a(x: str) -> (y: str) { s = predict S(x: x) return y: s.y }\n"
                 "pipeline b(x: str) -> (y: str) { s = predict S(x: x) return y: s.y }\n")
    r = lmpc("graph", f)
    assert r.returncode == 2 and "--pipeline" in r.stderr


# ---- API ------------------------------------------------------------------------------------


def test_compile_source_raises_compile_error_with_every_diagnostic():
    text = BAD.read_text(encoding="utf-8")
    with pytest.raises(CompileError) as info:
        compile_source(text, "bad.lmp")
    err = info.value
    _, diags = analyze(text, "bad.lmp")
    assert err.diagnostics == diags
    assert [d.code for d in err.diagnostics] == ["unknown-type"] * 4
    message = str(err)
    assert message.startswith("4 error(s)\n")
    assert "bad.lmp:7:12: error[unknown-type]: unknown type `Lable`" in message
    assert " 7 |     label: Lable" in message  # rendered with the source


def test_compile_error_counts_only_errors_but_carries_warnings():
    text = (DATA / "warnings_and_errors.lmp").read_text(encoding="utf-8")
    with pytest.raises(CompileError) as info:
        compile_source(text, "w.lmp")
    assert str(info.value).startswith("1 error(s)\n")
    assert {d.code for d in info.value.diagnostics} == {"unused-input", "unused-step", "unknown-field"}


def test_compile_file_and_warnings_on_the_program():
    program = compile_file(WARN_ONLY)
    assert program.path == str(WARN_ONLY)
    assert sorted(d.code for d in program.diagnostics) == ["unused-input", "unused-step"]
    assert set(program.graphs) == {"qa"}
    with pytest.raises(FileNotFoundError):
        compile_file(DATA / "nope.lmp")
