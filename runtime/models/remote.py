"""Models behind an OpenAI-compatible HTTP API (OpenAI, llama.cpp's server, vLLM, ...).

Retries are ours, not the client's (max_retries=0 there), so attempt counts in messages are
exact: connection errors, timeouts, 429 and 5xx are retried with exponential backoff; other
4xx are not, since sending the same request again cannot fix them.
"""

from __future__ import annotations

import os
import random
import threading
import time
from typing import Any

from lmpc.runtime.errors import (
    ModelConfigError,
    ServerError,
    ServerUnreachableError,
)
from lmpc.runtime.models.base import Completion, GenerationRequest, Model, check_options

OPTIONS = (
    "model", "base_url", "api_key_env", "temperature", "max_tokens", "seed", "timeout",
    "max_retries", "structured_output",
)
STRUCTURED_OUTPUT_MODES = ("auto", "json_schema", "none")
DEFAULT_BASE_URL = "https://api.openai.com/v1"
NO_KEY = "sk-no-key"  # local servers want some bearer token, and check none

# Ways of asking for schema-constrained output, tried in this order by structured_output auto:
#  json_schema  OpenAI's response_format (OpenAI, vLLM, llama.cpp's C++ llama-server)
#  json_object  llama-cpp-python's server: {"type": "json_object", "schema": ...}; it knows
#               only "text" | "json_object", and answers json_schema with a 500 (its request
#               validation error goes through a catch-all handler)
#  none         no response_format; the caller validates the text and reports bad output
FORMATS = ("json_schema", "json_object", "none")


class _FormatRejected(Exception):
    """The server refused the response_format we sent (a capability, not a transient error)."""


class OpenAIModel(Model):
    # Seconds before the first retry; doubled for each further one, with jitter, capped.
    backoff_s: float = 0.5
    max_backoff_s: float = 8.0

    def __init__(self, name: str, options: dict[str, Any]) -> None:
        check_options(name, "openai", options, OPTIONS)
        self.name = name
        model = options.get("model")
        if not isinstance(model, str) or not model:
            raise ModelConfigError(f"openai model `{name}` needs the option model, e.g. model: \"gpt-4o-mini\"")
        self.model = model
        self.base_url = str(options.get("base_url") or DEFAULT_BASE_URL).rstrip("/")
        self.timeout = float(options.get("timeout", 60))
        self.max_retries = int(options.get("max_retries", 3))
        if self.timeout <= 0 or self.max_retries < 0:
            raise ModelConfigError(f"model `{name}`: timeout must be > 0 and max_retries >= 0")
        mode = options.get("structured_output", "auto")
        if mode not in STRUCTURED_OUTPUT_MODES:
            raise ModelConfigError(
                f"model `{name}`: structured_output is one of {', '.join(STRUCTURED_OUTPUT_MODES)}, not {mode!r}"
            )
        self.structured_output: str = mode
        # The format that works with this server, learnt once per instance (auto mode).
        self._format = {"auto": "json_schema", "json_schema": "json_schema", "none": "none"}[mode]
        self._lock = threading.Lock()
        self.requests_sent = 0  # HTTP requests, retries and capability probes included

        var = options.get("api_key_env")
        if var is None:
            api_key = NO_KEY
        else:
            api_key = os.environ.get(str(var), "")
            if not api_key:
                raise ModelConfigError(
                    f"model `{name}`: its API key comes from the environment variable {var} "
                    f"(api_key_env), which is not set; set it, e.g. `export {var}=...`"
                )
        self.api_key_env: str | None = var
        import openai

        # max_retries=0: the retry loop below counts every attempt.
        self._client = openai.OpenAI(
            api_key=api_key, base_url=self.base_url, timeout=self.timeout, max_retries=0
        )
        del api_key  # the key lives only inside the client from here on

    @property
    def identity(self) -> str:
        return f"openai:{self.base_url}:{self.model}"

    @property
    def supports_concurrency(self) -> bool:
        return True

    def __repr__(self) -> str:
        return f"<OpenAIModel {self.name!r} {self.model} at {self.base_url}>"

    def close(self) -> None:
        self._client.close()

    def generate(self, req: GenerationRequest) -> Completion:
        while True:
            fmt = self._format if req.json_schema is not None else "none"
            try:
                return self._send_with_retries(req, fmt)
            except _FormatRejected as e:
                # A one-time capability probe, not a silent re-send: the request failed
                # without producing anything, and from now on this instance sends the next
                # weaker format first (ending with none, where the caller validates the text).
                if self.structured_output == "json_schema":
                    raise ModelConfigError(
                        f"model `{self.name}`: the server at {self.base_url} does not accept "
                        f"response_format json_schema ({e}); use structured_output: \"auto\" "
                        "or \"none\""
                    ) from None
                with self._lock:
                    if self._format == fmt:
                        self._format = FORMATS[FORMATS.index(fmt) + 1]

    def _params(self, req: GenerationRequest, fmt: str) -> dict[str, Any]:
        params: dict[str, Any] = dict(
            model=self.model,
            messages=[{"role": m["role"], "content": m["content"]} for m in req.messages],
            max_tokens=req.max_tokens,
            temperature=req.temperature,
            seed=req.seed,
        )
        if req.stop:
            params["stop"] = list(req.stop)
        if fmt == "json_schema":
            params["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": req.json_schema, "strict": True},
            }
        elif fmt == "json_object":
            params["response_format"] = {"type": "json_object", "schema": req.json_schema}
        return params

    def _send_with_retries(self, req: GenerationRequest, fmt: str) -> Completion:
        import openai

        params = self._params(req, fmt)
        attempts = 0
        while True:
            attempts += 1
            with self._lock:
                self.requests_sent += 1
            try:
                resp = self._client.chat.completions.create(**params)
            except openai.APITimeoutError:
                failure: tuple[str, int | None] = (f"no answer within {self.timeout:g} s", None)
            except openai.APIConnectionError as e:
                failure = (_connection_reason(e), -1)
            except openai.APIStatusError as e:
                status = e.status_code
                if fmt != "none" and _rejects_response_format(e):
                    raise _FormatRejected(f"HTTP {status}: {_server_message(e)}") from None
                if status != 429 and status < 500:
                    raise ServerError(
                        f"the server at {self.base_url} refused the request for model `{self.model}` "
                        f"with HTTP {status}: {_server_message(e)}{_status_hint(status, self.api_key_env)}",
                        status=status, attempts=attempts,
                    ) from None
                failure = (f"HTTP {status}: {_server_message(e)}", status)
            except openai.OpenAIError as e:
                raise ServerError(
                    f"the server at {self.base_url} sent an answer that is not a chat completion "
                    f"({type(e).__name__}: {str(e)[:200]})", attempts=attempts,
                ) from None
            else:
                return _completion(resp, self.base_url)
            if attempts > self.max_retries:
                reason, status = failure
                if status == -1:
                    raise ServerUnreachableError(
                        f"cannot reach the OpenAI-compatible server at {self.base_url} after "
                        f"{attempts} attempt{'s' if attempts > 1 else ''}: {reason}; is it running, "
                        "and is base_url right?"
                    )
                raise ServerError(
                    f"the server at {self.base_url} failed {attempts} attempt"
                    f"{'s' if attempts > 1 else ''} for model `{self.model}`; the last: {reason}",
                    status=status, attempts=attempts,
                )
            delay = min(self.max_backoff_s, self.backoff_s * 2 ** (attempts - 1))
            time.sleep(delay * (0.75 + 0.5 * random.random()))  # jitter spreads parallel retries


def _completion(resp: Any, base_url: str) -> Completion:
    if not getattr(resp, "choices", None):
        raise ServerError(f"the server at {base_url} answered a chat completion without choices")
    choice = resp.choices[0]
    usage = getattr(resp, "usage", None)
    return Completion(
        text=(choice.message.content if choice.message is not None else None) or "",
        prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
        completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
        finish_reason=choice.finish_reason,
    )


def _server_message(e: Any) -> str:
    body = getattr(e, "body", None)
    msg = None
    if isinstance(body, dict):
        err = body.get("error", body)
        msg = err.get("message") if isinstance(err, dict) else str(err)
        if msg is None and "detail" in body:  # FastAPI-style validation errors
            msg = str(body["detail"])
    text = str(msg if msg is not None else getattr(e, "message", e))
    return " ".join(text.split())[:300]


def _rejects_response_format(e: Any) -> bool:
    # 400/422: the usual answer to an unknown field value; 500: llama-cpp-python's server.
    if e.status_code not in (400, 422, 500):
        return False
    text = f"{getattr(e, 'message', '')} {getattr(e, 'body', '')}".lower()
    return "response_format" in text or "json_schema" in text


def _status_hint(status: int, api_key_env: str | None) -> str:
    if status in (401, 403):
        where = f"the variable {api_key_env}" if api_key_env else "api_key_env (none is set)"
        return f"; check the API key in {where}"
    if status == 404:
        return "; check base_url and the model name"
    return ""


def _connection_reason(e: BaseException) -> str:
    """The innermost cause of a connection failure, in words ("connection refused", ...)."""
    seen: set[int] = set()
    cur: BaseException | None = e
    last = str(e)
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, ConnectionRefusedError) or "connection refused" in str(cur).lower():
            return "connection refused"
        if str(cur):
            last = str(cur)
        cur = cur.__cause__ or cur.__context__
    return " ".join(last.split())[:200] or "connection error"

