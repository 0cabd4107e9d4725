"""Secrets never reach what lmpc writes: traces.jsonl, --out results, stdout, stderr. The secrets:
the API key (read from its variable), and a password or key inside base_url."""

from __future__ import annotations

from pathlib import Path

from lmpc.runtime import redact

from .hostile import HostileServer, Reply, ok
from .programs import lmpc_env, run_lmpc, write_project

KEY = "sk-redact-test-9f8e7d6c5b4a"
PASSWORD = "hunter2-pass-word"
QUERY_KEY = "qk-0123456789"


def _echo_key(n: int, r) -> Reply:
    key = r.headers.get("authorization", "").removeprefix("Bearer ")
    return Reply(status=401, payload={"error": {"message": f"Incorrect API key provided: {key}"}})


def _written(tmp: Path, *streams: str) -> str:
    files = [p.read_text(errors="replace") for p in tmp.rglob("*") if p.is_file() and p.suffix in (".jsonl", ".txt")]
    return "\n".join([*streams, *files])


def test_a_401_echoing_the_key_leaves_no_copy_anywhere(tmp_path: Path):
    prog, data = write_project(tmp_path, rows=3, retries=0, extra=', api_key_env: "LMPC_REDACT_KEY"')
    with HostileServer(_echo_key) as server:
        env = lmpc_env(server.base_url, LMPC_REDACT_KEY=KEY)
        ev = run_lmpc(["eval", str(prog), "--data", str(data), "--metric", "exact_match(label)",
                       "--out", str(tmp_path / "out.jsonl"), "--cache-dir", str(tmp_path / "c")], env)
        run = run_lmpc(["run", str(prog), "-i", "text=hi", "--json", "--cache-dir", str(tmp_path / "c")], env)
    assert server.requests and all(r.headers["authorization"] == f"Bearer {KEY}" for r in server.requests)
    assert ev.returncode == 1 and run.returncode == 1
    assert "Incorrect API key provided: ***" in ev.stderr + run.stderr
    traces = (tmp_path / "c" / "traces.jsonl").read_text()
    assert "Incorrect API key provided: ***" in traces  # the error is traced, masked
    everything = _written(tmp_path, ev.stdout, ev.stderr, run.stdout, run.stderr)
    assert KEY not in everything


def test_credentials_in_base_url_leave_no_copy_anywhere(tmp_path: Path):
    prog, data = write_project(tmp_path, rows=3, retries=0)
    with HostileServer(lambda n, r: Reply(status=500, payload={"error": {"message": "down"}})) as server:
        url = server.base_url.replace("http://", f"http://bob:{PASSWORD}@") + f"?api_key={QUERY_KEY}"
        env = lmpc_env(url)
        ev = run_lmpc(["eval", str(prog), "--data", str(data), "--metric", "exact_match(label)",
                       "--out", str(tmp_path / "out.jsonl"), "--cache-dir", str(tmp_path / "c")], env)
        run = run_lmpc(["run", str(prog), "-i", "text=hi", "--json", "--cache-dir", str(tmp_path / "c")], env)
    assert ev.returncode == 1 and run.returncode == 1, (ev.stdout, ev.stderr)
    assert "http://***@127.0.0.1" in ev.stderr + run.stderr  # the URL is named, without its credentials
    everything = _written(tmp_path, ev.stdout, ev.stderr, run.stdout, run.stderr)
    assert PASSWORD not in everything and QUERY_KEY not in everything


def test_redact_masks_registered_values_and_url_credentials():
    redact.register_secret("sk-unit-test-secret-value")
    assert redact.redact("key sk-unit-test-secret-value!") == "key ***!"
    assert redact.redact("https://u:p@host/v1?token=abc&x=1") == "https://***@host/v1?token=***&x=1"
    assert redact.redact("no secrets, a=1 & b=2") == "no secrets, a=1 & b=2"
    redact.register_secret("ab")  # too short to mask by value: it would mangle every text
    assert redact.redact("abc") == "abc"
    assert redact.redact_json({"m": ["sk-unit-test-secret-value"]}) == {"m": ["***"]}


def test_an_answer_that_echoes_the_key_is_masked_in_output_errors_and_traces(tmp_path: Path):
    prog, _ = write_project(tmp_path, rows=1, retries=0, extra=', api_key_env: "LMPC_REDACT_KEY", '
                                                                'structured_output: "none"')

    def echo(n: int, r) -> Reply:
        key = r.headers.get("authorization", "").removeprefix("Bearer ")
        return ok(f"Sure! Your key is {key}")  # not JSON: an output error that keeps the raw text

    with HostileServer(echo) as server:
        env = lmpc_env(server.base_url, LMPC_REDACT_KEY=KEY)
        plain = run_lmpc(["run", str(prog), "-i", "text=hi", "--cache-dir", str(tmp_path / "c")], env)
        as_json = run_lmpc(["run", str(prog), "-i", "text=hi", "--json", "--no-cache",
                            "--cache-dir", str(tmp_path / "c")], env)
    assert plain.returncode == 1 and "raw model output: 'Sure! Your key is ***'" in plain.stderr, plain.stderr
    assert "Your key is ***" in (tmp_path / "c" / "traces.jsonl").read_text()
    assert KEY not in _written(tmp_path, plain.stdout, plain.stderr, as_json.stdout, as_json.stderr)
    assert KEY.encode() not in b"".join(p.read_bytes() for p in (tmp_path / "c").iterdir())  # nor the cache
