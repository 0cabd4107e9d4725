"""A pool of OpenAI-compatible endpoints (base_url: [...]) against scripted loopback servers:
balancing, endpoints marked down and probed back, a retry elsewhere, 429/503 with Retry-After
honoured per endpoint, the startup check of the models served, and the checker's diagnostics.

Every server here is a real HTTP server on 127.0.0.1 (stdlib http.server): the failure paths
need answers a real llama.cpp server never gives on demand. Two real llama.cpp servers are in
test_remote_pool_llama.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

import lmpc
from lmpc.runtime.cache import CallCache
from lmpc.runtime.errors import ModelConfigError, ServerError, ServerUnreachableError
from lmpc.runtime.models import GenerationRequest, create_model
from lmpc.runtime.models.remote import OpenAIModel

from .conftest import chat_completion, free_port

# (status, headers, content of the assistant message or an error message)
Answer = tuple[int, dict[str, str], str]
OK: Answer = (200, {}, '{"label": "positive"}')


class Scripted:
    """An OpenAI-compatible chat server whose n-th chat request (1-based) gets script(n).
    Records the arrival time of each chat request; GET /models lists `models`."""

    def __init__(self, script: Callable[[int], Answer] = lambda n: OK, models: tuple[str, ...] = ("m",),
                 delay_s: float = 0.0) -> None:
        self.script, self.models, self.delay_s = script, models, delay_s
        self.arrivals: list[float] = []
        self.model_gets = 0
        self._lock = threading.Lock()
        me = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, payload: dict, headers: dict[str, str]) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    for k, v in {"Content-Type": "application/json", **headers}.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_GET(self) -> None:
                with me._lock:
                    me.model_gets += 1
                self._send(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in me.models]}, {})

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with me._lock:
                    me.arrivals.append(time.monotonic())
                    n = len(me.arrivals)
                time.sleep(me.delay_s)
                status, headers, text = me.script(n)
                if status == 200:
                    self._send(200, chat_completion(text), headers)
                else:
                    self._send(status, {"error": {"message": text, "type": "server_error"}}, headers)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def servers() -> Iterator[Callable[..., Scripted]]:
    made: list[Scripted] = []

    def make(*args: Any, **kw: Any) -> Scripted:
        made.append(Scripted(*args, **kw))
        return made[-1]

    yield make
    for s in made:
        s.stop()


def pool(*urls: str, **options: Any) -> OpenAIModel:
    model = create_model("srv", "openai", {"model": "m", "base_url": list(urls), **options})
    assert isinstance(model, OpenAIModel)
    model.backoff_s = 0.05
    model._pool.probe_s = 0.3  # probe a down endpoint soon (the policy is the same)
    return model


def ask(text: str = "hi") -> GenerationRequest:
    return GenerationRequest(messages=[{"role": "user", "content": text}], json_schema=None, max_tokens=8)


def stats(model: OpenAIModel) -> dict[str, dict[str, Any]]:
    return {s["url"]: s for s in model.endpoint_stats()}


# -- balancing ------------------------------------------------------------------------------

def test_concurrent_calls_spread_over_both_endpoints_least_in_flight(servers):
    a, b = servers(delay_s=0.3), servers(delay_s=0.3)
    model = pool(a.url, b.url)
    try:
        with ThreadPoolExecutor(8) as ex:
            done = list(ex.map(lambda i: model.generate(ask(f"row {i}")), range(8)))
        assert {c.endpoint for c in done} == {a.url, b.url}
        # least in flight: 8 calls at once go 4 and 4 (round robin breaks the ties; 5 and 3
        # when a loaded machine starts the last caller after a call ended)
        assert min(len(a.arrivals), len(b.arrivals)) >= 3 and len(a.arrivals) + len(b.arrivals) == 8
        s = stats(model)
        assert s[a.url]["answered"] == len(a.arrivals) and s[b.url]["answered"] == len(b.arrivals)
        assert not s[a.url]["down"] and not s[b.url]["down"]
    finally:
        model.close()


def test_a_slow_endpoint_gets_fewer_calls_than_a_fast_one(servers):
    fast, slow = servers(delay_s=0.05), servers(delay_s=0.6)
    model = pool(fast.url, slow.url)
    try:
        with ThreadPoolExecutor(4) as ex:
            list(ex.map(lambda i: model.generate(ask(f"row {i}")), range(16)))
        assert len(fast.arrivals) + len(slow.arrivals) == 16
        assert len(fast.arrivals) >= 3 * len(slow.arrivals), (len(fast.arrivals), len(slow.arrivals))
    finally:
        model.close()


def test_pool_identity_does_not_depend_on_the_endpoints_but_one_url_keeps_its_own(servers):
    a, b = servers(), servers()
    ab, ba = pool(a.url, b.url), pool(b.url, a.url)
    single = create_model("srv", "openai", {"model": "m", "base_url": a.url})
    assert ab.identity == ba.identity == "openai-pool:m"
    assert single.identity == f"openai:{a.url}:m"  # unchanged: the single-URL form
    for m in (ab, ba, single):
        m.close()


def test_env_value_with_commas_is_a_pool(servers, monkeypatch):
    a, b = servers(), servers()
    monkeypatch.setenv("LMPC_TEST_POOL", f"{a.url}, {b.url}")
    src = f'''
model srv = openai(model: "m", base_url: env("LMPC_TEST_POOL"), structured_output: "none")
type Label = "positive" | "negative"
signature S = text -> label: Label
pipeline p(text: str) -> (label: Label) {{
    s = predict S(text: text)
    return label: s.label
}}
'''
    prog = lmpc.compile_source(src, cache=CallCache(enabled=False), trace_log=False)
    results = prog.batch([{"text": f"row {i}"} for i in range(6)])
    assert all(r.ok for r in results)
    served = [r.trace[0].extra["endpoint"] for r in results]  # each call's server, in its trace
    assert set(served) == {a.url, b.url} and len(a.arrivals) + len(b.arrivals) == 6
    prog.close()


# -- failures: down, probed back, retried elsewhere ----------------------------------------

def test_a_dead_endpoint_at_startup_gets_no_call_and_the_others_serve(servers):
    live = servers()
    dead = f"http://127.0.0.1:{free_port()}/v1"
    model = pool(dead, live.url)
    try:
        results = [model.generate(ask(f"row {i}")) for i in range(5)]
        assert all(c.endpoint == live.url for c in results)
        s = stats(model)
        assert s[dead]["down"] and s[dead]["sent"] == 0  # the startup check found it down
        assert model.requests_sent == 5 + 2 + s[dead]["probes"] - 1  # 5 chats, startup GETs, probes
    finally:
        model.close()


def test_a_failing_call_is_retried_elsewhere_at_once_and_the_endpoint_probed_back(servers):
    bad = servers(lambda n: (500, {}, "boom") if n == 1 else OK)
    good = servers()
    model = pool(bad.url, good.url)
    model.backoff_s = 5.0  # a retry on the same endpoint would wait this long
    try:
        t0 = time.monotonic()
        c = model.generate(ask())
        assert c.endpoint == good.url and time.monotonic() - t0 < 4.0  # no 5 s backoff: elsewhere
        assert stats(model)[bad.url]["down"] and len(bad.arrivals) == 1
        model.generate(ask())
        assert len(bad.arrivals) == 1  # down: not picked
        deadline = time.monotonic() + 5
        while stats(model)[bad.url]["down"] and time.monotonic() < deadline:
            time.sleep(0.05)
        s = stats(model)[bad.url]
        assert not s["down"] and s["probes"] >= 2  # startup + the probe that found it back
        got = {model.generate(ask()).endpoint for _ in range(4)}
        assert bad.url in got  # back in the rotation
    finally:
        model.close()


def test_every_endpoint_failing_is_one_error_naming_each(servers):
    a = servers(lambda n: (503, {}, "overloaded"))
    b = servers(lambda n: (502, {}, "bad gateway"))
    model = pool(a.url, b.url, max_retries=3)
    try:
        with pytest.raises(ServerError) as e:
            model.generate(ask())
        msg = str(e.value)
        assert a.url in msg and b.url in msg and "4 attempts" in msg and "503" in msg and "502" in msg
        assert len(a.arrivals) + len(b.arrivals) == 4
    finally:
        model.close()


def test_every_endpoint_unreachable_is_server_unreachable(servers):
    urls = [f"http://127.0.0.1:{free_port()}/v1" for _ in range(2)]
    model = pool(*urls, max_retries=2)
    try:
        with pytest.raises(ServerUnreachableError) as e:
            model.generate(ask())
        assert all(u in str(e.value) for u in urls) and "connection refused" in str(e.value)
    finally:
        model.close()


# -- rate limits ---------------------------------------------------------------------------

def test_429_retry_after_holds_that_endpoint_off_for_every_call(servers):
    limited = servers(lambda n: (429, {"Retry-After": "1"}, "slow down") if n == 1 else OK)
    other = servers()
    model = pool(limited.url, other.url)
    try:
        first = model.generate(ask())  # 429 on `limited` (picked first), answered by `other`
        assert first.endpoint == other.url and len(limited.arrivals) == 1
        t429 = limited.arrivals[0]
        during = 0
        while time.monotonic() < t429 + 0.8:  # within its Retry-After: never `limited`
            assert model.generate(ask()).endpoint == other.url
            during += 1
        assert during >= 1 and len(limited.arrivals) == 1
        s = stats(model)[limited.url]
        assert s["rate_limited"] == 1 and not s["down"]  # a rate limit is not a failure
        time.sleep(max(0.0, t429 + 1.05 - time.monotonic()))
        got = [model.generate(ask()).endpoint for _ in range(2)]
        assert limited.url in got and limited.arrivals[1] - t429 >= 1.0
    finally:
        model.close()


def test_every_endpoint_rate_limited_waits_for_the_first_retry_after(servers):
    a = servers(lambda n: (429, {"Retry-After": "1"}, "slow down") if n == 1 else OK)
    b = servers(lambda n: (503, {"Retry-After": "4"}, "busy") if n == 1 else OK)
    model = pool(a.url, b.url)
    try:
        t0 = time.monotonic()
        c = model.generate(ask())
        assert c.endpoint == a.url  # a's second answer, after its Retry-After
        assert a.arrivals[1] - a.arrivals[0] >= 1.0 and len(b.arrivals) == 1
        assert time.monotonic() - t0 < 3.5  # not b's 4 s
        assert not any(s["down"] for s in model.endpoint_stats())
    finally:
        model.close()


def test_retry_after_beyond_the_budget_fails_at_once_naming_it(servers):
    a = servers(lambda n: (429, {"Retry-After": "3600"}, "quota"))
    b = servers(lambda n: (429, {"Retry-After": "3600"}, "quota"))
    model = pool(a.url, b.url, timeout=1, max_retries=2)
    try:
        t0 = time.monotonic()
        with pytest.raises(ServerError) as e:
            model.generate(ask())
        assert time.monotonic() - t0 < 5.0 and "asked to wait 3600 s" in str(e.value)  # not 60 s
        assert len(a.arrivals) == len(b.arrivals) == 1
    finally:
        model.close()


# -- the pool's model -----------------------------------------------------------------------

def test_endpoints_serving_different_models_are_a_configuration_error(servers):
    a, b = servers(models=("smollm2",)), servers(models=("qwen",))
    model = pool(a.url, b.url)
    try:
        with pytest.raises(ModelConfigError) as e:
            model.generate(ask())
        assert "same model" in str(e.value) and "smollm2" in str(e.value) and "qwen" in str(e.value)
        assert not a.arrivals and not b.arrivals  # no chat request was sent
    finally:
        model.close()


def test_a_program_row_whose_every_endpoint_failed_is_an_error_row_and_the_rest_are_answered(servers):
    def script(n: int) -> Answer:
        return (503, {}, "down for maintenance") if n >= 3 else OK  # dies after two answers

    a, b = servers(script, delay_s=0.05), servers(delay_s=0.05)
    import os

    os.environ["LMPC_A"], os.environ["LMPC_B"] = a.url, b.url
    try:
        prog = lmpc.compile_source(EVAL_SRC, cache=CallCache(enabled=False), trace_log=False)
        results = prog.batch([{"text": f"row {i}"} for i in range(8)])
        assert len(results) == 8 and all(r.ok for r in results)  # b took over a's rows
        b.stop()  # now every endpoint fails: an error row naming both, not a lost row
        [r] = prog.batch([{"text": "late"}])
        assert not r.ok and a.url in str(r.error) and b.url in str(r.error)
        prog.close()
    finally:
        del os.environ["LMPC_A"], os.environ["LMPC_B"]


# -- the checker ----------------------------------------------------------------------------

BAD = '''model srv = openai(model: "m", base_url: ["http://a:1/v1", 3, "localhost:8000", "http://a:1/v1"])
model two = openai(model: "m", base_url: [])
signature S = text -> label: str
pipeline p(text: str) -> (label: str) {
    s = predict S(text: text)
    return label: s.label
}
'''


def test_bad_base_url_entries_are_reported_at_their_position(tmp_path: Path):
    f = tmp_path / "pool.lmp"
    f.write_text(BAD)
    p = subprocess.run([sys.executable, "-m", "lmpc", "check", str(f)], capture_output=True, text=True, timeout=60)
    out = p.stderr + p.stdout
    assert p.returncode != 0 and "Traceback" not in out
    line = BAD.splitlines()[0]
    three, local, twice = line.index(" 3,") + 2, line.index('"localhost') + 1, line.rindex('"http://a:1/v1"') + 1
    assert f"{f}:1:{three}: error[bad-model-option]: `base_url` takes URL strings" in out
    assert f"{f}:1:{local}: error[bad-model-option]: `base_url` entry 'localhost:8000' is not an http" in out
    assert f"{f}:1:{twice}: error[bad-model-option]: `base_url` lists 'http://a:1/v1' twice" in out
    assert f"{f}:2:42: error[bad-model-option]: `base_url` takes at least one URL" in out


def test_good_pool_checks_and_runtime_refuses_what_the_checker_would(tmp_path: Path):
    f = tmp_path / "ok.lmp"
    f.write_text(BAD.replace('["http://a:1/v1", 3, "localhost:8000", "http://a:1/v1"]',
                             '["http://a:1/v1", env("LMPC_B")]').replace("[]", '"http://b/v1"'))
    p = subprocess.run([sys.executable, "-m", "lmpc", "check", str(f)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    with pytest.raises(ModelConfigError, match="twice"):
        create_model("srv", "openai", {"model": "m", "base_url": "http://a/v1,http://a/v1/"})
    with pytest.raises(ModelConfigError, match="not an http"):
        create_model("srv", "openai", {"model": "m", "base_url": ["http://a/v1", "a:8000"]})


def test_an_artifact_pool_needs_approval_for_each_url_and_variable():
    from lmpc.runtime.trust import _model_risks

    spec = {"provider": "openai", "options": {"model": "m", "base_url": ["http://a:1/v1", {"env": "LMPC_B"}]}}
    risks = " | ".join(_model_risks("srv", spec, set()))
    assert "reads the environment variable LMPC_B into its `base_url` option" in risks
    assert "sends your inputs to http://a:1/v1" in risks
    only_env = {"provider": "openai", "options": {"model": "m", "base_url": [{"env": "LMPC_A"}]}}
    assert "default OpenAI endpoint" not in " ".join(_model_risks("srv", only_env, set()))
    assert _model_risks("srv", spec, {"base_url"}) == []  # the user supplied the URLs


EVAL_SRC = '''
model srv = openai(model: "m", base_url: [env("LMPC_A"), env("LMPC_B")], structured_output: "none", max_retries: 1)
type Label = "positive" | "negative"
signature S = text -> label: Label
pipeline p(text: str) -> (label: Label) {
    s = predict S(text: text)
    return label: s.label
}
'''


def test_lmpc_eval_on_a_pool_accounts_for_every_row_when_endpoints_die(servers, tmp_path: Path):
    import os

    f = tmp_path / "pool.lmp"
    f.write_text(EVAL_SRC)
    data = tmp_path / "dev.jsonl"
    data.write_text("".join(json.dumps({"text": f"row {i}", "label": "positive"}) + "\n" for i in range(12)))

    def lmpc_eval(a: str, b: str, out: Path) -> tuple[subprocess.CompletedProcess, list[dict]]:
        p = subprocess.run([sys.executable, "-m", "lmpc", "eval", str(f), "--data", str(data), "--metric",
                            "exact_match(label)", "--out", str(out), "--no-cache"], capture_output=True,
                           text=True, timeout=120, env={**os.environ, "LMPC_A": a, "LMPC_B": b})
        return p, [json.loads(line) for line in out.read_text().splitlines()]

    # a dies after its 3rd answer (503 from then on): b answers the rest, no row lost
    a = servers(lambda n: OK if n <= 3 else (503, {}, "gone"))
    b = servers()
    p, rows = lmpc_eval(a.url, b.url, tmp_path / "r1.jsonl")
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    assert len(rows) == 12 and not any(r["error"] for r in rows) and all(r["score"] == 1.0 for r in rows)

    # b is dead from the start and a dies after 4 answers: the rows it could not answer are
    # error rows naming both servers, the others are scored; every row is in the results
    a2 = servers(lambda n: OK if n <= 4 else (503, {}, "gone"))
    dead = f"http://127.0.0.1:{free_port()}/v1"
    p, rows = lmpc_eval(a2.url, dead, tmp_path / "r2.jsonl")
    assert "Traceback" not in p.stderr and len(rows) == 12, p.stderr
    ok = [r for r in rows if not r["error"]]
    failed = [r for r in rows if r["error"]]
    assert len(ok) == 4 and len(failed) == 8
    assert all(a2.url in r["error"] and dead in r["error"] for r in failed)
    assert sorted(r["index"] for r in rows) == list(range(12))


def test_credentials_in_a_pool_url_never_reach_traces_stats_or_errors(servers):
    a = servers(lambda n: (503, {}, "nope"))
    b = servers(lambda n: (503, {}, "nope"))
    secret_a = a.url.replace("http://", "http://user:hunter2secret@")
    secret_b = b.url + "?key=tok3nsecret"
    model = pool(secret_a, secret_b, max_retries=1)
    try:
        with pytest.raises(ServerError) as e:
            model.generate(ask())
        shown = str(e.value) + json.dumps(model.endpoint_stats()) + model.identity + repr(model)
        assert "hunter2secret" not in shown and "tok3nsecret" not in shown
        assert "127.0.0.1" in str(e.value)
    finally:
        model.close()
