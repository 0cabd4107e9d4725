"""OpenAI-compatible models against the real llama.cpp server (SmolLM2) and loopback servers
scripted to fail. Every server here is a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import pytest

from lmpc.runtime.errors import ModelConfigError, ServerError, ServerUnreachableError
from lmpc.runtime.models import GenerationRequest, create_model
from lmpc.runtime.models.remote import OpenAIModel

from .conftest import LoopbackServer, free_port

LABEL = {
    "type": "object",
    "properties": {"label": {"type": "string", "enum": ["positive", "negative"]}},
    "required": ["label"],
}


def ask(text: str, schema: dict | None = LABEL) -> GenerationRequest:
    return GenerationRequest(
        messages=[{"role": "system", "content": "Classify the sentiment of the text."},
                  {"role": "user", "content": text}],
        json_schema=schema, max_tokens=24,
    )


def remote(base_url: str, **options) -> OpenAIModel:
    model = create_model("srv", "openai", {"model": "smollm2", "base_url": base_url, **options})
    assert isinstance(model, OpenAIModel)
    model.backoff_s = 0.02  # keep retry tests fast; the policy is the same
    return model


# -- the real llama.cpp server -------------------------------------------------------------

def test_structured_output_from_the_llama_cpp_server(llama_server: str):
    model = remote(llama_server)
    try:
        for text in ["I love it!", "This is awful.", "Best day ever"]:
            c = model.generate(ask(text))
            assert json.loads(c.text)["label"] in ("positive", "negative")
            assert c.prompt_tokens > 10 and c.completion_tokens > 0
        # llama-cpp-python 0.3.36 answers OpenAI's json_schema response_format with a 500 and
        # takes {"type": "json_object", "schema": ...}: auto learnt that once, then kept it.
        assert model._format == "json_object"
        assert model.requests_sent == 4
    finally:
        model.close()


def test_four_concurrent_requests_to_the_real_server(llama_server: str):
    model = remote(llama_server, structured_output="auto")
    assert model.supports_concurrency
    try:
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda t: model.generate(ask(t)), ["good", "bad", "nice", "awful"]))
        assert all(json.loads(c.text)["label"] in ("positive", "negative") for c in results)
    finally:
        model.close()


# -- failures ----------------------------------------------------------------------------

def test_server_down_is_unreachable_error_naming_the_url_fast():
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    model = remote(url, max_retries=2)
    t0 = time.monotonic()
    with pytest.raises(ServerUnreachableError) as e:
        model.generate(ask("hi"))
    assert time.monotonic() - t0 < 5
    assert str(e.value).startswith(f"cannot reach the OpenAI-compatible server at {url} after 3 attempts: "
                                   "connection refused")
    assert model.requests_sent == 3


def test_503_twice_then_success(flaky_server: Callable[..., LoopbackServer]):
    server = flaky_server(fail_first=2, fail_status=503)
    model = remote(server.base_url, max_retries=3)
    c = model.generate(ask("hi"))
    assert json.loads(c.text) == {"label": "positive"} and c.prompt_tokens == 7
    assert len(server.bodies) == 3 and model.requests_sent == 3


def test_always_503_is_server_error_after_the_retries(flaky_server: Callable[..., LoopbackServer]):
    server = flaky_server(fail_first=10**6, fail_status=503)
    model = remote(server.base_url, max_retries=2)
    with pytest.raises(ServerError) as e:
        model.generate(ask("hi"))
    assert e.value.status == 503 and e.value.attempts == 3 and len(server.bodies) == 3
    assert server.base_url in str(e.value) and "3 attempts" in str(e.value) and "503" in str(e.value)


def test_timeouts_are_retried_then_a_server_error(flaky_server: Callable[..., LoopbackServer]):
    server = flaky_server(delay_s=1.0)
    model = remote(server.base_url, timeout=0.2, max_retries=1)
    with pytest.raises(ServerError) as e:
        model.generate(ask("hi"))
    assert e.value.attempts == 2 and e.value.status is None
    assert "no answer within 0.2 s" in str(e.value) and server.base_url in str(e.value)


def test_429_is_retried_but_other_4xx_are_not(flaky_server: Callable[..., LoopbackServer]):
    busy = flaky_server(fail_first=1, fail_status=429)
    assert remote(busy.base_url, max_retries=1).generate(ask("hi")).text
    assert len(busy.bodies) == 2

    denied = flaky_server(fail_first=10**6, fail_status=401)
    with pytest.raises(ServerError) as e:
        remote(denied.base_url, max_retries=3).generate(ask("hi"))
    assert e.value.status == 401 and len(denied.bodies) == 1 and "API key" in str(e.value)


def test_server_without_structured_output_returns_its_text_as_is(garbage_server: LoopbackServer):
    model = remote(garbage_server.base_url)
    first = model.generate(ask("hi"))
    assert first.text == "Sure! The label is: positive :)"  # the caller raises OutputError
    # the one-time capability probe: json_schema, then json_object, both refused with 400
    kinds = [b.get("response_format", {}).get("type") for b in garbage_server.bodies]
    assert kinds == ["json_schema", "json_object", None]
    n = len(garbage_server.bodies)
    second = model.generate(ask("hello"))
    assert second.text == first.text
    assert len(garbage_server.bodies) == n + 1 and "response_format" not in garbage_server.bodies[-1]


def test_structured_output_none_never_sends_response_format(flaky_server: Callable[..., LoopbackServer]):
    server = flaky_server()
    remote(server.base_url, structured_output="none").generate(ask("hi"))
    assert len(server.bodies) == 1 and "response_format" not in server.bodies[0]
    assert server.bodies[0]["temperature"] == 0.0 and server.bodies[0]["seed"] == 0


def test_structured_output_json_schema_on_a_server_without_it_is_a_config_error(garbage_server: LoopbackServer):
    model = remote(garbage_server.base_url, structured_output="json_schema")
    with pytest.raises(ModelConfigError, match='structured_output: "auto"'):
        model.generate(ask("hi"))
    assert len(garbage_server.bodies) == 1


# -- configuration and secrets -------------------------------------------------------------

def test_unset_api_key_variable_is_a_config_error_naming_it(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("LMPC_TEST_NO_SUCH_KEY", raising=False)
    with pytest.raises(ModelConfigError) as e:
        create_model("srv", "openai", {"model": "m", "api_key_env": "LMPC_TEST_NO_SUCH_KEY"})
    assert "LMPC_TEST_NO_SUCH_KEY" in str(e.value)


def test_the_api_key_is_sent_but_never_shown(monkeypatch: pytest.MonkeyPatch,
                                              flaky_server: Callable[..., LoopbackServer]):
    secret = "sk-test-0123456789abcdef"
    monkeypatch.setenv("LMPC_TEST_KEY", secret)
    server = flaky_server(fail_first=10**6, fail_status=401)
    model = remote(server.base_url, api_key_env="LMPC_TEST_KEY")
    with pytest.raises(ServerError) as e:
        model.generate(ask("hi"))
    assert server.auth_headers == [f"Bearer {secret}"]
    for shown in (model.identity, repr(model), str(e.value)):
        assert secret not in shown
    assert "LMPC_TEST_KEY" in str(e.value)
    assert model.identity == f"openai:{server.base_url}:smollm2"
    # without api_key_env a placeholder goes out (local servers want some bearer token)
    open_server = flaky_server()
    remote(open_server.base_url).generate(ask("hi"))
    assert open_server.auth_headers == ["Bearer sk-no-key"]


@pytest.mark.parametrize("options, words", [
    ({}, ["needs the option model"]),
    ({"model": "m", "structured_output": "xml"}, ["auto, json_schema, none"]),
    ({"model": "m", "api_key": "sk-x"}, ["api_key", "api_key_env"]),
])
def test_bad_options_are_config_errors(options: dict, words: list[str]):
    with pytest.raises(ModelConfigError) as e:
        create_model("srv", "openai", options)
    assert all(w in str(e.value) for w in words)
    assert "sk-x" not in str(e.value)
