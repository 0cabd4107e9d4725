"""A pool of OpenAI-compatible endpoints serving one model: base_url's URLs, and which
endpoint gets the next request.

Used by remote.py (on its model's asyncio loop; nothing here is thread-safe, and nothing
needs to be: every method runs on that one loop).

Balancing: least requests in flight, ties broken round robin. A llama.cpp server decodes
its requests one (or `--parallel` few) at a time, so its in-flight count is its queue: a
slow or busy server gets fewer new requests, where plain round robin would keep queueing on
it. With equal servers and steady load the two are the same.

Health: an endpoint that fails a request (no connection, a timeout, a 5xx, a body that is not
JSON) is marked down; no call picks it until a probe (GET {base_url}/models, in the
background) answers. Probes start after `probe_s` and back off (doubling, at most
`max_probe_s`). A 429, or a 503 with Retry-After, is not a failure of the endpoint: it is
blocked for every call until the time the server gave (`blocked_until`), then used again.
A pool of one endpoint is never marked down (the call's own retry backoff applies, as before
pools existed).
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from lmpc.compiler.options import base_url_problem
from lmpc.runtime.errors import ModelConfigError
from lmpc.runtime.redact import safe_url

PROBE_S = 1.0  # first probe of a down endpoint after this long
MAX_PROBE_S = 30.0
DEFAULT_BASE_URL = "https://api.openai.com/v1"


def base_urls(name: str, value: Any) -> list[str]:
    """base_url's value as a list of URLs: a string (commas separate several, as an env()
    value may hold them), a list of strings and {"env": VAR} references, or None (OpenAI's)."""
    if value is None:
        return [DEFAULT_BASE_URL]
    items = value if isinstance(value, list) else [value]
    urls: list[str] = []
    for item in items:
        if isinstance(item, dict) and "env" in item:
            var = str(item["env"])
            if var not in os.environ:
                raise ModelConfigError(f"model `{name}`: an entry of base_url comes from the environment "
                                       f"variable {var}, which is not set")
            item = os.environ[var]
        if not isinstance(item, str):
            raise ModelConfigError(f"model `{name}`: base_url takes URL strings, not {item!r}")
        urls += [part.strip().rstrip("/") for part in item.split(",") if part.strip()]
    if not urls:
        raise ModelConfigError(f"model `{name}`: base_url names no URL; e.g. base_url: \"http://127.0.0.1:8000/v1\"")
    for url in urls:
        why = base_url_problem(url)
        if why is not None:
            raise ModelConfigError(f"model `{name}`: base_url {safe_url(url)!r} {why}")
    seen: set[str] = set()
    for url in urls:
        if url in seen:
            raise ModelConfigError(f"model `{name}`: base_url lists {safe_url(url)} twice")
        seen.add(url)
    return urls


@dataclass
class Endpoint:
    url: str  # the base URL (may hold credentials: never shown)
    shown: str  # the URL for messages and traces (redacted)
    client: Any  # its openai.AsyncOpenAI
    in_flight: int = 0
    sent: int = 0  # chat requests sent to it (retries included)
    answered: int = 0  # chat requests it answered with a completion
    failed: int = 0  # chat requests that failed on it (429s included)
    rate_limited: int = 0  # 429 answers
    probes: int = 0  # health probes sent to it
    down: bool = False
    down_reason: str = ""
    blocked_until: float = 0.0  # loop time: a 429 / Retry-After holds every call off until then
    excluded: str | None = None  # why it is never used (it serves another model)
    served: frozenset[str] | None = None  # the model ids its /models lists (None: unknown)
    probe_task: Any = field(default=None, repr=False)

    def stats(self) -> dict[str, Any]:
        return {"url": self.shown, "sent": self.sent, "answered": self.answered, "failed": self.failed,
                "rate_limited": self.rate_limited, "probes": self.probes, "in_flight": self.in_flight,
                "down": self.down, **({"down_reason": self.down_reason} if self.down else {}),
                **({"excluded": self.excluded} if self.excluded else {})}


class EndpointPool:
    def __init__(self, endpoints: list[Endpoint], probe: Callable[[Endpoint], Awaitable[frozenset[str] | None]],
                 probe_s: float = PROBE_S, max_probe_s: float = MAX_PROBE_S) -> None:
        """probe(endpoint) -> the model ids it serves (None: it has no /models list); raises
        when the endpoint cannot answer."""
        self.endpoints = endpoints
        self._probe = probe
        self.probe_s, self.max_probe_s = probe_s, max_probe_s
        self._rr = 0  # round-robin offset for ties
        self._changed: asyncio.Event | None = None
        self.reference: frozenset[str] | None = None  # the model ids the pool serves (first seen)
        self.reference_url: str | None = None

    @property
    def size(self) -> int:
        return len(self.endpoints)

    # -- choosing ---------------------------------------------------------------------------
    def pick(self, now: float, not_before: dict[int, float]) -> Endpoint | None:
        """The endpoint for a request now (least in flight, ties round robin), or None when
        every endpoint is down, excluded, blocked, or held back by this call's own backoff."""
        n = len(self.endpoints)
        best: tuple[int, int] | None = None
        chosen = None
        for i, ep in enumerate(self.endpoints):
            if ep.down or ep.excluded or ep.blocked_until > now or not_before.get(i, 0.0) > now:
                continue
            rank = (ep.in_flight, (i - self._rr) % n)
            if best is None or rank < best:
                best, chosen = rank, ep
        if chosen is not None:
            self._rr = (self.endpoints.index(chosen) + 1) % n
        return chosen

    def ready_at(self, now: float, not_before: dict[int, float]) -> tuple[Endpoint, float] | None:
        """When no endpoint can be picked now: the one this call may try first, and when (a down
        endpoint counts as ready when the call's backoff ends: an attempt is a probe too).
        None: every endpoint is excluded."""
        best = None
        for i, ep in enumerate(self.endpoints):
            if ep.excluded:
                continue
            at = max(ep.blocked_until, not_before.get(i, 0.0), now)
            key = (at, ep.down, ep.in_flight)
            if best is None or key < best[0]:
                best = (key, ep, at)
        return None if best is None else (best[1], best[2])

    async def changed(self, timeout: float) -> None:
        """Wait until an endpoint comes back up (or `timeout` seconds)."""
        if self._changed is None:
            self._changed = asyncio.Event()
        try:
            await asyncio.wait_for(self._changed.wait(), max(0.0, timeout))
        except asyncio.TimeoutError:
            pass

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
        self._changed = asyncio.Event()  # later waiters wait for the next change

    # -- outcomes ---------------------------------------------------------------------------
    def succeeded(self, ep: Endpoint) -> None:
        ep.answered += 1
        if ep.down:  # a call tried it while down (every endpoint was): it is back
            self.mark_up(ep)

    def blocked(self, ep: Endpoint, until: float) -> None:
        ep.blocked_until = max(ep.blocked_until, until)

    def failed(self, ep: Endpoint, reason: str) -> None:
        """A request failed on `ep` for a reason of the endpoint's own: take it out of the
        rotation until a probe answers (pools of two or more only)."""
        if len(self.endpoints) < 2 or ep.down:
            return
        ep.down, ep.down_reason = True, reason
        ep.probe_task = asyncio.get_running_loop().create_task(self._probe_until_up(ep))

    def mark_up(self, ep: Endpoint) -> None:
        ep.down, ep.down_reason = False, ""
        task, ep.probe_task = ep.probe_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        self._notify()

    def check_served(self, ep: Endpoint, served: frozenset[str] | None) -> str | None:
        """Record the model ids `ep` serves; why it cannot join the pool (None: it can)."""
        ep.served = served
        if served is None:
            return None
        if self.reference is None:
            self.reference, self.reference_url = served, ep.shown
            return None
        if served != self.reference:
            return (f"{ep.shown} serves {sorted(served)}, but {self.reference_url} serves "
                    f"{sorted(self.reference)}")
        return None

    async def _probe_until_up(self, ep: Endpoint) -> None:
        delay = self.probe_s
        while True:
            await asyncio.sleep(delay)
            ep.probes += 1
            try:
                served = await self._probe(ep)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - still down: probe again later
                delay = min(self.max_probe_s, delay * 2)
                continue
            why = self.check_served(ep, served)
            if why is not None:
                ep.excluded = why  # a replaced server that serves another model: never used
                self._notify()
                return
            self.mark_up(ep)
            return

    def stats(self) -> list[dict[str, Any]]:
        return [ep.stats() for ep in self.endpoints]
