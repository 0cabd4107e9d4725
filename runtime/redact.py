"""Keep secrets out of everything lmpc writes: messages, exceptions, traces and results.

Two mechanisms, used together wherever text leaves the process (errors.py for every runtime
error, trace.py for traces.jsonl, the CLI for --out files, stdout and stderr):

- known secret values: an API key read from its environment variable, and the user/password
  or token of a base_url, are registered when they are read; each later occurrence of the
  value is replaced by ***, wherever it appears (a server that echoes the key in a 401 body);
- URL credentials: `scheme://user:pass@host` and query parameters such as `?key=`/`token=`
  are masked structurally in any URL lmpc shows (safe_url) or writes (redact).

Values shorter than MIN_SECRET_LEN are masked only structurally: replacing every "ab" in a
trace would destroy it and protect nothing.
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

MASK = "***"
MIN_SECRET_LEN = 4
# Query parameters whose values are credentials (compared lower-case, '-' as '_').
SECRET_PARAMS = frozenset({
    "key", "api_key", "apikey", "token", "access_token", "auth", "secret", "client_secret",
    "password", "sig", "signature", "x_api_key",
})

_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None

# scheme://userinfo@ : the userinfo is everything up to the last @ before the host part
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)([^\s/@?#\"'<>]+)@")
_PARAM = re.compile(r"(?i)([?&])([a-z0-9_\-]+)=([^&#\s\"'<>]*)")


def register_secret(value: str | None) -> None:
    """Remember a secret value (and its URL-decoded form) so that redact() masks it."""
    global _pattern
    if not value:
        return
    forms = {value, unquote(value), json.dumps(value)[1:-1]}
    with _lock:
        new = {f for f in forms if len(f) >= MIN_SECRET_LEN} - _secrets
        if not new:
            return
        _secrets.update(new)
        # longest first, so that a secret containing another is masked whole
        _pattern = re.compile("|".join(re.escape(s) for s in sorted(_secrets, key=len, reverse=True)))


def register_url(url: str | None) -> None:
    """Register the secrets a URL carries: its password and secret query values (a user name
    is not one, and masking it everywhere would mangle traces; URLs shown are masked whole)."""
    if not url:
        return
    try:
        parts = urlsplit(url)
    except ValueError:
        return
    register_secret(parts.password)
    for name, value in parse_qsl(parts.query, keep_blank_values=False):
        if _is_secret_param(name):
            register_secret(value)


def _is_secret_param(name: str) -> bool:
    return name.lower().replace("-", "_") in SECRET_PARAMS


def _mask_param(m: re.Match[str]) -> str:
    sep, name, value = m.group(1), m.group(2), m.group(3)
    return f"{sep}{name}={MASK}" if value and _is_secret_param(name) else m.group(0)


def safe_url(url: str) -> str:
    """A URL for messages: credentials in the userinfo and in secret query values masked."""
    return redact(url)


def redact(text: str) -> str:
    """Mask registered secret values and URL credentials in text."""
    if not text:
        return text
    pattern = _pattern
    if pattern is not None:
        text = pattern.sub(MASK, text)
    if "://" in text:
        text = _USERINFO.sub(lambda m: f"{m.group(1)}{MASK}@", text)
    if "=" in text and ("?" in text or "&" in text):
        text = _PARAM.sub(_mask_param, text)
    return text


def redact_known(text: str) -> str:
    """Mask only registered secret values (for user data, where URL-looking text is the user's)."""
    pattern = _pattern
    return pattern.sub(MASK, text) if (pattern is not None and text) else text


def redact_json(value: Any) -> Any:
    """A copy of a JSON-like value with registered secrets masked in every string."""
    if _pattern is None:
        return value
    if isinstance(value, str):
        return redact_known(value)
    if isinstance(value, dict):
        return {redact_known(k) if isinstance(k, str) else k: redact_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_json(v) for v in value]
    return value


def dumps(value: Any, **kw: Any) -> str:
    """json.dumps of a record, with registered secrets masked (the writer of traces and results)."""
    return json.dumps(redact_json(value), **kw)
