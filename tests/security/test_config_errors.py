"""A configuration error fails every row the same way: the run stops at the first one, reports it
once and exits non-zero (`lmpc eval` must never print `score 0.000, errors 40` and exit 0)."""

from __future__ import annotations

from pathlib import Path

import pytest

import lmpc
from lmpc.runtime.cache import CallCache
from lmpc.runtime.errors import AuthenticationError, ConfigurationError, ModelConfigError

from .hostile import HostileServer, Reply, ok
from .programs import lmpc_env, run_lmpc, source, write_project

DENIED = lambda n, r: Reply(status=401, payload={"error": {"message": "invalid api key"}})  # noqa: E731


def test_lmpc_eval_with_the_key_variable_unset_stops_with_that_error(tmp_path: Path):
    prog, data = write_project(tmp_path, rows=40, extra=', api_key_env: "LMPC_TEST_UNSET_KEY"')
    with HostileServer(lambda n, r: ok()) as server:
        p = run_lmpc(["eval", str(prog), "--data", str(data), "--metric", "exact_match(label)",
                      "--cache-dir", str(tmp_path / "c")], lmpc_env(server.base_url))
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert "score" not in p.stdout and "Traceback" not in p.stderr
    assert p.stderr.count("lmpc: error:") == 1 and "LMPC_TEST_UNSET_KEY" in p.stderr  # once, not per row
    assert "not set" in p.stderr
    assert server.requests == []


def test_lmpc_eval_against_a_server_that_answers_401_stops_at_once(tmp_path: Path):
    prog, data = write_project(tmp_path, rows=40, retries=3)
    out = tmp_path / "r.jsonl"
    with HostileServer(DENIED) as server:
        p = run_lmpc(["eval", str(prog), "--data", str(data), "--metric", "exact_match(label)", "--out", str(out),
                      "--cache-dir", str(tmp_path / "c")], lmpc_env(server.base_url))
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert "HTTP 401" in p.stderr and "score 0.000" not in p.stdout and "Traceback" not in p.stderr
    assert p.stderr.count("lmpc: error:") == 1
    assert len(server.requests) <= 8  # the first wave of concurrent calls at most; never 40, never retried


def test_lmpc_run_with_a_model_that_cannot_load_exits_1_once(tmp_path: Path):
    src = tmp_path / "local.lmp"
    src.write_text('''model m = llama_cpp(path: "missing.gguf")
signature S = text -> label: str
pipeline p(text: str) -> (label: str) {
    s = predict S(text: text)
    return label: s.label
}
''')
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(f'{{"text": "r{i}"}}\n' for i in range(5)))
    p = run_lmpc(["run", str(src), "--input-file", str(rows), "--cache-dir", str(tmp_path / "c")], lmpc_env(""))
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert p.stderr.count("lmpc: error:") == 1 and "missing.gguf" in p.stderr, p.stderr


def test_program_batch_raises_a_configuration_error_once(monkeypatch):
    with HostileServer(DENIED) as server:
        monkeypatch.setenv("LMPC_TEST_BASE_URL", server.base_url)
        prog = lmpc.compile_source(source(), cache=CallCache(enabled=False), trace_log=False)
        with pytest.raises(AuthenticationError) as e:
            prog.batch([{"text": f"r{i}"} for i in range(30)])
        assert isinstance(e.value, ConfigurationError) and e.value.status == 401
        assert len(server.requests) <= 8
        prog.close()

    monkeypatch.delenv("LMPC_TEST_UNSET_KEY", raising=False)
    prog = lmpc.compile_source(source(extra=', api_key_env: "LMPC_TEST_UNSET_KEY"'), cache=False, trace_log=False)
    with pytest.raises(ModelConfigError, match="LMPC_TEST_UNSET_KEY"):
        lmpc.evaluate(prog, [{"text": "a", "label": "positive"}] * 5, "exact_match(label)")
    prog.close()
