"""Models behind an OpenAI-compatible HTTP API (OpenAI, llama.cpp's server, vLLM, ...).

Requests run on one asyncio loop per model (a daemon thread) through openai's AsyncOpenAI
client, because only there can a request be bounded and cancelled as a whole: the client's
own timeout applies to each connect, write and read separately (a server that trickles one
byte every 0.5 s never trips it), and a socket read blocked in a thread cannot be stopped.

Time bounds (docs/runtime.md): each attempt (connect, send and every read) ends after
`timeout` seconds. Retries are ours (max_retries=0 in the client), so attempt counts in
messages are exact: connection failures, timeouts, truncated or non-JSON bodies, 429 and 5xx
are retried; other 4xx are not, since sending the same request again cannot fix them. Between
attempts: the server's Retry-After on 429/503 (seconds or an HTTP date, at most 60 s), else
exponential backoff with jitter (at most max_backoff_s). One call never takes longer than
(max_retries + 1) * timeout + max_retries * max_backoff_s; a Retry-After that does not fit in
what is left of that fails the call at once.

Pools: base_url may list several endpoints, replicas of one model (endpoints.py chooses
among them: least in flight, down ones skipped until a probe answers, 429/Retry-After held
per endpoint). A failed attempt is retried on another endpoint at once when one is healthy;
max_retries and the time bound above count every attempt, wherever it went. Before the first
call, every endpoint's GET /models is compared (a mix of models would share cache entries).

Cancellation: generate() watches the request's CancelToken (the executor cancels it on
Ctrl-C or a configuration error); the in-flight attempt ends at once (its connection is
closed) and the call raises Interrupted. close() cancels whatever is still in flight.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import email.utils
import json
import os
import random
import threading
import time
from typing import Any

from lmpc.compiler.options import PROVIDER_OPTIONS, STRUCTURED_OUTPUT_MODES
from lmpc.runtime.errors import (
    AuthenticationError,
    EndpointNotFoundError,
    Interrupted,
    LmpcRuntimeError,
    ModelConfigError,
    ServerError,
    ServerUnreachableError,
)
from lmpc.runtime.models.base import Completion, GenerationRequest, Model, check_options
from lmpc.runtime.models.endpoints import Endpoint, EndpointPool, base_urls
from lmpc.runtime.redact import register_secret, register_url, safe_url

OPTIONS = tuple(PROVIDER_OPTIONS["openai"])  # the checker's table: one definition
NO_KEY = "sk-no-key"  # local servers want some bearer token, and check none
MAX_RETRY_AFTER_S = 60.0  # a longer Retry-After is waited this long at most (as openai-python)
SNIPPET = 120  # characters of a bad body quoted in messages

# Ways of asking for schema-constrained output, tried in this order by structured_output auto:
#  json_schema  OpenAI's response_format (OpenAI, vLLM, llama.cpp's C++ llama-server)
#  json_object  llama-cpp-python's server: {"type": "json_object", "schema": ...}; it knows
#               only "text" | "json_object", and answers json_schema with a 500 (its request
#               validation error goes through a catch-all handler)
#  none         no response_format; the caller validates the text and reports bad output
FORMATS = ("json_schema", "json_object", "none")


class _FormatRejected(Exception):
    """The server refused the response_format we sent (a capability, not a transient error)."""


class _BadBody(Exception):
    """An answer that cannot be read: not JSON (a transient proxy page, a broken server)."""


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
        # One base URL, or a pool of them (endpoints.py): replicas of one model.
        self.base_urls = base_urls(name, options.get("base_url"))
        for url in self.base_urls:
            register_url(url)  # user:pass@ and ?key= never reach a message or a trace
        self.base_url = self.base_urls[0]
        self.shown_url = ", ".join(safe_url(u) for u in self.base_urls)
        self.timeout = float(options.get("timeout", 60))
        self.max_retries = int(options.get("max_retries", 3))
        if not (0 < self.timeout < 1e6) or self.max_retries < 0:
            raise ModelConfigError(f"model `{name}`: timeout must be > 0 s (and under 10^6) and max_retries >= 0")
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
            register_secret(api_key)  # a server that echoes it back gets *** in every message
        self.api_key_env: str | None = var
        import openai

        # max_retries=0: the retry loop below counts every attempt. The client's timeout is a
        # per-operation backstop; _attempt bounds the whole request. One client per endpoint.
        self._pool = EndpointPool(
            [Endpoint(url, safe_url(url), openai.AsyncOpenAI(api_key=api_key, base_url=url, timeout=self.timeout,
                                                             max_retries=0)) for url in self.base_urls],
            probe=self._served_models)
        del api_key  # the key lives only inside the clients from here on
        self._started = False  # a pool's startup check (_start_pool) ran
        self._start_lock: asyncio.Lock | None = None
        self._config_error: ModelConfigError | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # started on the first call
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def identity(self) -> str:
        # A pool's endpoints are replicas of one model (checked at startup against their
        # /models lists): its calls are cached by the model name, whichever endpoint answered
        # and whatever the pool's membership (a replaced or added server keeps the cache).
        if self._pool.size > 1:
            return f"openai-pool:{self.model}"
        return f"openai:{self.shown_url}:{self.model}"

    def endpoint_stats(self) -> list[dict[str, Any]]:
        """Per endpoint: requests sent, answered, failed, rate-limited, probes, in flight, down."""
        return self._pool.stats()

    @property
    def supports_concurrency(self) -> bool:
        return True

    @property
    def budget_s(self) -> float:
        """The longest one generate() call can take, retries and waits included."""
        return (self.max_retries + 1) * self.timeout + self.max_retries * self.max_backoff_s

    def __repr__(self) -> str:
        return f"<OpenAIModel {self.name!r} {self.model} at {self.shown_url}>"

    # -- the calling threads ----------------------------------------------------------------
    def generate(self, req: GenerationRequest) -> Completion:
        cancel = req.cancel
        if cancel is not None and cancel.cancelled:
            raise Interrupted(f"model `{self.name}`: not sent, the batch was interrupted")
        loop = self._running_loop()
        fut = asyncio.run_coroutine_threadsafe(self._outcome(req), loop)
        # Cancelling the future cancels the task on the loop, which closes its connection.
        remove = cancel.on_cancel(fut.cancel) if cancel is not None else None
        try:
            completion, error = fut.result()
            if error is not None:
                raise error
            return completion
        except concurrent.futures.CancelledError:
            raise Interrupted(f"model `{self.name}`: the call to {self.shown_url} was cancelled") from None
        except BaseException:
            fut.cancel()  # Ctrl-C in a caller's own thread stops the request too
            raise
        finally:
            if remove is not None:
                remove()

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._closed:
                raise LmpcRuntimeError(f"model `{self.name}` was used after it was closed")
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name=f"lmpc-http-{self.name}", daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return  # never used: no connection was opened

        async def shutdown() -> None:
            me = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not me]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for ep in self._pool.endpoints:
                await ep.client.close()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(timeout=5)
        except Exception:  # noqa: BLE001 - closing is best effort; the loop stops regardless
            pass
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        if not thread.is_alive():
            loop.close()

    # -- on the model's loop ----------------------------------------------------------------
    async def _outcome(self, req: GenerationRequest) -> tuple[Completion | None, BaseException | None]:
        """_generate's result or error as a value. A caller that stopped waiting (its batch
        was interrupted) cancels the future, and asyncio would then log the task's unretrieved
        error with a traceback on stderr; as a value, nothing is left unretrieved."""
        try:
            return await self._generate(req), None
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - re-raised in the calling thread
            return None, e

    async def _generate(self, req: GenerationRequest) -> Completion:
        while True:
            fmt = self._format if req.json_schema is not None else "none"
            try:
                return await self._send_with_retries(req, fmt)
            except _FormatRejected as e:
                # A one-time capability probe, not a silent re-send: the request failed
                # without producing anything, and from now on this instance sends the next
                # weaker format first (ending with none, where the caller validates the text).
                if self.structured_output == "json_schema":
                    raise ModelConfigError(
                        f"model `{self.name}`: the server at {self.shown_url} does not accept "
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

    async def _attempt(self, ep: Endpoint, params: dict[str, Any], seconds: float) -> dict[str, Any]:
        """One HTTP request to one endpoint, bounded as a whole; the answer's JSON body."""
        raw = await asyncio.wait_for(ep.client.chat.completions.with_raw_response.create(**params), seconds)
        return _json_body(raw.http_response)

    async def _served_models(self, ep: Endpoint) -> frozenset[str] | None:
        """The model ids `ep` lists at GET /models (None: it has no such list); raises when the
        endpoint cannot answer. A pool's startup check and its health probe."""
        import openai

        with self._lock:
            self.requests_sent += 1
        ep.probes += 1
        try:
            page = await asyncio.wait_for(ep.client.models.list(), min(self.timeout, 10.0))
        except openai.APIStatusError as e:
            if e.status_code >= 500 or e.status_code == 429:
                raise
            return None  # no /models here (404), or not for this key: nothing to compare
        ids = frozenset(m.id for m in getattr(page, "data", []) if isinstance(getattr(m, "id", None), str))
        return ids or None

    async def _start_pool(self) -> None:
        """Once per pool: ask every endpoint which models it serves. One that does not answer
        starts down (probed later); endpoints listing different models are a configuration
        error, since their answers would share cache entries."""
        if not self._started:
            if self._start_lock is None:
                self._start_lock = asyncio.Lock()
            async with self._start_lock:
                if not self._started:
                    eps = self._pool.endpoints
                    found = await asyncio.gather(*(self._served_models(ep) for ep in eps), return_exceptions=True)
                    problems = []
                    for ep, served in zip(eps, found):
                        if isinstance(served, BaseException):
                            self._pool.failed(ep, f"no answer to GET /models at startup ({type(served).__name__})")
                        elif (why := self._pool.check_served(ep, served)) is not None:
                            problems.append(why)
                    if problems:
                        self._config_error = ModelConfigError(
                            f"model `{self.name}`: the endpoints of a pool must serve the same model (their "
                            f"answers share cache entries), but {'; '.join(problems)}; list only replicas "
                            "of one model in base_url")
                    self._started = True
        if self._config_error is not None:
            raise self._config_error

    async def _send_with_retries(self, req: GenerationRequest, fmt: str) -> Completion:
        import openai

        pool = self._pool
        if pool.size > 1:
            await self._start_pool()
        params = self._params(req, fmt)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.budget_s
        attempts = 0
        not_before: dict[int, float] = {}  # endpoint index -> this call's backoff on it ends
        last: dict[str, tuple[str, int | None]] = {}  # endpoint -> its last failure for this call
        retry_after: float | None = None
        failure: tuple[str, int | None] = ("", None)
        while True:
            ep = await self._next_endpoint(not_before, deadline, last, attempts, retry_after, failure)
            url = ep.shown
            attempts += 1
            with self._lock:
                self.requests_sent += 1
            ep.sent += 1
            ep.in_flight += 1
            retry_after = None
            try:
                data = await self._attempt(ep, params, min(self.timeout, deadline - loop.time()))
            except (asyncio.TimeoutError, openai.APITimeoutError):
                failure = (f"no answer within {self.timeout:g} s (timeout bounds the whole request: "
                           "connect, send and every read)", None)
            except openai.APIConnectionError as e:
                failure = _connection_failure(e, url)
            except openai.APIStatusError as e:
                status = e.status_code
                if fmt != "none" and _rejects_response_format(e):
                    raise _FormatRejected(f"HTTP {status}: {_server_message(e)}") from None
                if status != 429 and status < 500:
                    cls = AuthenticationError if status in (401, 403) else (
                        EndpointNotFoundError if status == 404 else ServerError)
                    raise cls(
                        f"the server at {url} refused the request for model `{self.model}` "
                        f"with HTTP {status}: {_server_message(e)}{_status_hint(status, self.api_key_env)}",
                        status=status, attempts=attempts,
                    ) from None
                failure = (f"HTTP {status}: {_server_message(e)}", status)
                if status in (429, 503):
                    retry_after = _retry_after(e.response.headers.get("retry-after"))
            except _BadBody as e:
                failure = (str(e), None)
            except openai.OpenAIError as e:
                raise ServerError(
                    f"the server at {url} sent an answer that is not a chat completion "
                    f"({type(e).__name__}: {str(e)[:200]})", attempts=attempts,
                ) from None
            else:
                pool.succeeded(ep)
                return _completion(data, url)
            finally:
                ep.in_flight -= 1
            ep.failed += 1
            last.pop(url, None)
            last[url] = failure  # in the order of their last failures
            if retry_after is not None:  # the server said when: that replaces our backoff
                delay = min(retry_after, MAX_RETRY_AFTER_S)
            else:
                delay = min(self.max_backoff_s, self.backoff_s * 2 ** (attempts - 1))
                delay = min(self.max_backoff_s, delay * (0.75 + 0.5 * random.random()))  # jitter
            now = loop.time()
            if failure[1] == 429 or retry_after is not None:
                # a rate limit, not a broken endpoint: every call holds off it until then
                ep.rate_limited += failure[1] == 429
                pool.blocked(ep, now + delay)
            else:
                pool.failed(ep, failure[0])  # out of the rotation until a probe answers
            if attempts > self.max_retries:
                raise self._final_error(attempts, last)
            not_before[pool.endpoints.index(ep)] = now + delay

    async def _next_endpoint(self, not_before: dict[int, float], deadline: float,
                             last: dict[str, tuple[str, int | None]], attempts: int,
                             retry_after: float | None, failure: tuple[str, int | None]) -> Endpoint:
        """The endpoint for this call's next attempt: a healthy one at once (a retry goes
        elsewhere without waiting), else the first one ready, after waiting for it (its
        Retry-After, this call's backoff, or a probe that brings one back)."""
        pool, loop = self._pool, asyncio.get_running_loop()
        while True:
            now = loop.time()
            ep = pool.pick(now, not_before)
            if ep is not None:
                return ep
            ready = pool.ready_at(now, not_before)
            if ready is None:
                raise ModelConfigError(f"model `{self.name}`: no endpoint of its pool can be used: "
                                       + "; ".join(e.excluded or "" for e in pool.endpoints))
            ep, at = ready
            left = deadline - now
            if at - now >= left:
                reason, status = failure
                reason = reason or "every endpoint is held off by its Retry-After"
                if retry_after is not None:
                    reason = (f"{reason}; the server asked to wait {retry_after:g} s before retrying, more than "
                              f"the {max(left, 0):.1f} s left of this call's time budget")
                else:
                    reason = f"{reason}; no endpoint is ready within this call's time budget"
                last.pop(ep.shown, None)
                last[ep.shown] = (reason, status)
                raise self._final_error(attempts, last)
            if at <= now:
                return ep  # every endpoint is down: try one anyway (an attempt is a probe too)
            await pool.changed(at - now)

    def _final_error(self, attempts: int, last: dict[str, tuple[str, int | None]]) -> LmpcRuntimeError:
        if len(last) == 1 or self._pool.size == 1:
            url, failure = list(last.items())[-1]
            return _final_error(url, self.model, attempts, failure)
        statuses = [status for _, status in last.values()]
        each = "; ".join(f"{url}: {reason}" for url, (reason, _) in last.items())
        if all(s == -1 for s in statuses):
            return ServerUnreachableError(
                f"cannot reach any endpoint of model `{self.name}` after {attempts} attempts ({each}); "
                "are the servers running, and are the base_url entries right?")
        return ServerError(f"{len(last)} endpoints failed {attempts} attempts for model `{self.model}`; the last "
                           f"failure of each: {each}", status=statuses[-1], attempts=attempts)


def _final_error(url: str, model: str, attempts: int, failure: tuple[str, int | None]) -> LmpcRuntimeError:
    reason, status = failure
    plural = "s" if attempts > 1 else ""
    if status == -1:
        return ServerUnreachableError(
            f"cannot reach the OpenAI-compatible server at {url} after {attempts} attempt{plural}: "
            f"{reason}; is it running, and is base_url right?"
        )
    return ServerError(f"the server at {url} failed {attempts} attempt{plural} for model `{model}`; the last: "
                       f"{reason}", status=status, attempts=attempts)


def _json_body(resp: Any) -> dict[str, Any]:
    content: bytes = resp.content
    try:
        data = json.loads(content)
    except ValueError as e:
        snippet = content[:SNIPPET].decode("utf-8", "replace")
        more = "…" if len(content) > SNIPPET else ""
        raise _BadBody(f"HTTP {resp.status_code} with a body that is not JSON ({str(e)[:80]}): "
                       f"{snippet!r}{more}") from None
    if not isinstance(data, dict):
        raise _BadBody(f"HTTP {resp.status_code} with JSON that is not an object: {content[:SNIPPET]!r}")
    return data


def _completion(data: dict[str, Any], url: str) -> Completion:
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ServerError(f"the server at {url} answered a chat completion without choices")
    choice = choices[0]
    message = choice.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    return Completion(
        text=content if isinstance(content, str) else "",
        prompt_tokens=_count(usage.get("prompt_tokens")),
        completion_tokens=_count(usage.get("completion_tokens")),
        finish_reason=choice.get("finish_reason"),
        endpoint=url,
    )


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _retry_after(value: str | None) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date (RFC 9110 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - time.time()
    if seconds != seconds or seconds == float("inf"):
        return None
    return max(0.0, seconds)


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


def _connection_failure(e: BaseException, url: str) -> tuple[str, int | None]:
    """(reason in words, -1 when no connection was made | None when the server was reached)."""
    seen: set[int] = set()
    cur: BaseException | None = e
    last, connect = str(e), False
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        text = str(cur)
        low = text.lower()
        if isinstance(cur, ConnectionRefusedError) or "connection refused" in low:
            return "connection refused", -1
        if "complete message body" in low or "incomplete" in low:
            detail = text.split(":", 1)[1].strip() if ":" in text else text
            return (f"a truncated response from {url}: the connection closed before the whole body arrived"
                    f" ({' '.join(detail.split())[:120]})", None)
        if "without sending a response" in low or "disconnected" in low:
            return f"the server at {url} closed the connection without answering", None
        # DNS, TLS handshake, no route: never reached (by name: openai uses httpx or httpx2)
        connect = connect or any(c.__name__ in ("ConnectError", "ConnectTimeout") for c in type(cur).__mro__)
        if text:
            last = text
        group = getattr(cur, "exceptions", None)  # an ExceptionGroup of connection attempts
        cur = cur.__cause__ or cur.__context__ or (group[0] if group else None)
    return " ".join(last.split())[:200] or "connection error", (-1 if connect else None)
