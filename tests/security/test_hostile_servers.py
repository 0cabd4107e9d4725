"""Remote models against hostile OpenAI-compatible servers on 127.0.0.1 (tests/security/hostile.py):
servers that trickle, cut bodies short, answer invalid JSON, ask to retry later or echo the key.
Every server is a real socket server; nothing is mocked."""

from __future__ import annotations

import email.utils
import json
import time

import pytest

from lmpc.runtime.errors import (
    AuthenticationError, ConfigurationError, ServerError, ServerUnreachableError,
)
from lmpc.runtime.models import GenerationRequest, create_model
from lmpc.runtime.models.remote import OpenAIModel

from .hostile import HostileServer, Reply, completion, ok

ASK = GenerationRequest(messages=[{"role": "user", "content": "hi"}], json_schema=None, max_tokens=8)
BODY = json.dumps(completion('{"label": "positive"}')).encode()


def remote(base_url: str, **options) -> OpenAIModel:
    model = create_model("srv", "openai", {"model": "m", "base_url": base_url, **options})
    assert isinstance(model, OpenAIModel)
    model.backoff_s = 0.02  # keep retry tests fast: waits here come from Retry-After only
    return model


# -- time bounds -----------------------------------------------------------------------------

def test_timeout_bounds_the_whole_request_of_a_trickling_server():
    # one byte every 0.5 s: each read is quick, so only a bound on the whole request ends it
    with HostileServer(lambda n, r: Reply(kind="trickle", raw=BODY, interval_s=0.5)) as server:
        model = remote(server.base_url, timeout=2, max_retries=0)
        t0 = time.monotonic()
        with pytest.raises(ServerError) as e:
            model.generate(ASK)
        took = time.monotonic() - t0
        model.close()
    assert 1.9 < took < 3.0, took
    assert server.base_url in str(e.value) and "no answer within 2 s" in str(e.value)
    assert "whole request" in str(e.value) and e.value.attempts == 1


def test_retries_are_counted_and_the_total_time_is_bounded():
    with HostileServer(lambda n, r: Reply(kind="trickle", raw=BODY, interval_s=0.5)) as server:
        model = remote(server.base_url, timeout=1, max_retries=2)
        t0 = time.monotonic()
        with pytest.raises(ServerError) as e:
            model.generate(ASK)
        took = time.monotonic() - t0
        model.close()
    # (max_retries + 1) * timeout + the backoffs (0.02 s and 0.04 s, with jitter)
    assert 2.9 < took < 4.0, took
    assert e.value.attempts == 3 and len(server.requests) == 3 and "3 attempts" in str(e.value)
    assert model.budget_s == 3 * 1 + 2 * model.max_backoff_s


# -- bodies that cannot be read -------------------------------------------------------------

def test_a_body_cut_short_is_a_truncated_response_from_the_url_and_retried():
    with HostileServer(lambda n, r: Reply(kind="cut", raw=BODY[:40])) as server:
        model = remote(server.base_url, timeout=5, max_retries=1)
        with pytest.raises(ServerError) as e:
            model.generate(ASK)
        model.close()
    assert not isinstance(e.value, ServerUnreachableError)
    msg = str(e.value)
    assert f"truncated response from {server.base_url}" in msg and "cannot reach" not in msg
    assert e.value.attempts == 2 and len(server.requests) == 2


def test_a_cut_body_then_a_good_one_succeeds():
    plan = lambda n, r: Reply(kind="cut", raw=BODY[:40]) if n == 1 else ok()  # noqa: E731
    with HostileServer(plan) as server:
        model = remote(server.base_url, max_retries=1)
        assert json.loads(model.generate(ASK).text) == {"label": "positive"}
        model.close()
    assert len(server.requests) == 2


@pytest.mark.parametrize("content_type", ["application/json", "text/html"])
def test_invalid_json_is_reported_with_the_url_and_a_snippet(content_type: str):
    page = b"<html><body>502 upstream exploded</body></html>"
    with HostileServer(lambda n, r: Reply(kind="raw", raw=page, headers={"Content-Type": content_type})) as server:
        model = remote(server.base_url, max_retries=1)
        with pytest.raises(ServerError) as e:
            model.generate(ASK)
        model.close()
    msg = str(e.value)
    assert server.base_url in msg and "not JSON" in msg and "502 upstream exploded" in msg
    assert "JSONDecodeError" not in msg and e.value.attempts == 2 and len(server.requests) == 2


# -- Retry-After ------------------------------------------------------------------------------

def _busy_once(status: int, retry_after: str):
    def plan(n: int, r) -> Reply:
        if n == 1:
            return Reply(status=status, payload={"error": {"message": "slow down"}}, headers={"Retry-After": retry_after})
        return ok()
    return plan


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_seconds_is_waited_instead_of_the_backoff(status: int):
    with HostileServer(_busy_once(status, "1")) as server:
        model = remote(server.base_url, max_retries=2)
        assert model.generate(ASK).text
        model.close()
    first, second = server.times()
    assert 0.95 < second - first < 1.6, second - first  # backoff alone would be 0.02 s


def test_retry_after_as_an_http_date():
    when = email.utils.formatdate(time.time() + 2, usegmt=True)  # whole seconds: 1 to 2 s from now
    with HostileServer(_busy_once(429, when)) as server:
        model = remote(server.base_url, max_retries=1)
        assert model.generate(ASK).text
        model.close()
    first, second = server.times()
    assert 0.9 < second - first < 2.6, second - first


def test_a_retry_after_beyond_the_time_budget_fails_at_once():
    with HostileServer(lambda n, r: Reply(status=429, payload={"error": {"message": "quota"}},
                                          headers={"Retry-After": "3600"})) as server:
        model = remote(server.base_url, timeout=1, max_retries=3)
        t0 = time.monotonic()
        with pytest.raises(ServerError) as e:
            model.generate(ASK)
        took = time.monotonic() - t0
        model.close()
    assert took < 1.0 and len(server.requests) == 1
    assert "asked to wait 3600 s" in str(e.value) and e.value.status == 429


# -- credentials -----------------------------------------------------------------------------

SECRET = "sk-hostile-0123456789abcdefXYZ"


def _echo_key(n: int, r) -> Reply:
    key = r.headers.get("authorization", "").removeprefix("Bearer ")
    return Reply(status=401, payload={"error": {"message": f"Incorrect API key provided: {key}. Find yours at ..."}})


def test_a_401_that_echoes_the_key_is_an_authentication_error_with_the_key_masked(monkeypatch):
    monkeypatch.setenv("LMPC_HOSTILE_KEY", SECRET)
    with HostileServer(_echo_key) as server:
        model = remote(server.base_url, api_key_env="LMPC_HOSTILE_KEY", max_retries=3)
        with pytest.raises(AuthenticationError) as e:
            model.generate(ASK)
        model.close()
    assert server.requests[0].headers["authorization"] == f"Bearer {SECRET}"  # it was sent
    assert isinstance(e.value, ConfigurationError) and len(server.requests) == 1  # not retried
    msg = str(e.value)
    assert SECRET not in msg and SECRET not in repr(e.value) and "Incorrect API key provided: ***" in msg
    assert "LMPC_HOSTILE_KEY" in msg


def test_credentials_in_base_url_are_never_shown():
    with HostileServer(lambda n, r: Reply(status=500, payload={"error": {"message": "boom"}})) as server:
        url = server.base_url.replace("http://", "http://alice:pa55-w0rd-xyz@") + "?key=q-secret-123"
        model = remote(url, max_retries=0)
        with pytest.raises(ServerError) as e:
            model.generate(ASK)
        model.close()
    for shown in (str(e.value), repr(model), model.identity):
        assert "pa55-w0rd-xyz" not in shown and "q-secret-123" not in shown and "alice" not in shown, shown
    assert "http://***@127.0.0.1" in str(e.value) and "key=***" in str(e.value)
