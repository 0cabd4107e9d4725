"""Programs on OpenAI-compatible servers: the real llama.cpp server, plus loopback stubs for
failure modes and timing."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import lmpc
from lmpc.runtime.cache import CallCache

from .stub_server import StubServer

REMOTE = '''
model srv = openai(model: "smollm2", base_url: env("LMPC_TEST_BASE_URL"), max_retries: 1, timeout: 60{extra})
type Label = "positive" | "negative"
signature Sentiment = text -> label: Label
pipeline classify(text: str) -> (label: Label) {{
    s = predict Sentiment(text: text)
    return label: s.label
}}
'''


def remote_program(base_url: str, monkeypatch, extra: str = "", **kw):
    monkeypatch.setenv("LMPC_TEST_BASE_URL", base_url)
    return lmpc.compile_source(REMOTE.format(extra=extra), cache=CallCache(enabled=False), trace_log=False, **kw)


def test_same_pipeline_on_the_real_llama_cpp_server_gives_typed_outputs(llama_server, monkeypatch):
    prog = remote_program(llama_server, monkeypatch)
    results = prog.batch([{"text": t} for t in ["I love it", "This is awful", "Great!"]])
    assert all(r.ok for r in results), [str(r.error) for r in results]
    assert {r.label for r in results} <= {"positive", "negative"}
    assert all(r.trace[0].model == "srv" and r.trace[0].prompt_tokens > 0 for r in results)
    prog.close()


def test_unreachable_server_is_a_clear_error_naming_the_url(monkeypatch, tmp_path):
    url = "http://127.0.0.1:9/v1"  # the discard port: nothing listens there
    prog = remote_program(url, monkeypatch)
    r = prog.batch([{"text": "hi"}])[0]
    assert not r.ok and url in str(r.error) and "step `s`" in str(r.error)
    prog.close()

    src = tmp_path / "r.lmp"
    src.write_text(REMOTE.format(extra=""))
    p = subprocess.run([sys.executable, "-m", "lmpc", "run", str(src), "-i", "text=hi", "--cache-dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=120, env={**__import__("os").environ,
                                                                          "LMPC_TEST_BASE_URL": url})
    assert p.returncode == 1 and url in p.stderr and "Traceback" not in p.stderr


def test_garbage_output_is_a_typed_error_with_raw_text_and_the_batch_goes_on(monkeypatch):
    def reply(body: dict) -> str:
        text = body["messages"][-1]["content"]
        return "Sure! I think it is good." if "BAD" in text else json.dumps({"label": "positive"})

    with StubServer(reply) as server:
        prog = remote_program(server.base_url, monkeypatch, extra=', structured_output: "none"')
        results = prog.batch([{"text": "one"}, {"text": "BAD two"}, {"text": "three"}])
        assert [r.ok for r in results] == [True, False, True]
        err = results[1].error
        assert isinstance(err, lmpc.LmpcRuntimeError) and err.raw_text == "Sure! I think it is good."
        assert "not JSON" in str(err)
        assert len(server.requests) == 3  # one call per row: no silent re-sends
        assert all("response_format" not in body for _, _, body in server.requests)
        prog.close()


FAN_OUT = '''
model srv = openai(model: "stub", base_url: env("LMPC_TEST_BASE_URL"))
signature A = text -> a: str
signature B = text -> b: str
pipeline both(text: str) -> (a: str, b: str) {
    x = predict A(text: text)
    y = predict B(text: text)
    return a: x.a, b: y.b
}
'''


def test_independent_remote_steps_overlap_in_time(monkeypatch):
    def reply(body: dict) -> str:
        system = body["messages"][0]["content"]
        return json.dumps({"a": "A"} if '"a"' in system else {"b": "B"})

    with StubServer(reply, delay_s=1.0) as server:
        monkeypatch.setenv("LMPC_TEST_BASE_URL", server.base_url)
        prog = lmpc.compile_source(FAN_OUT, cache=CallCache(enabled=False), trace_log=False)
        t0 = time.monotonic()
        r = prog(text="hello")
        wall = time.monotonic() - t0
        assert (r.a, r.b) == ("A", "B")
        (s1, e1, _), (s2, e2, _) = sorted(server.requests)
        assert s2 < e1, "the second request started only after the first ended"
        assert wall < 1.9
        prog.close()
