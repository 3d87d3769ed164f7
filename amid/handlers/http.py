"""HTTP delivery shared by the slack and webhook handlers: one try, classified, no secrets.

aiohttp's exceptions and reprs embed the request URL, and a webhook URL is a
secret (Slack's path is the credential). So every failure is re-raised as a
HandlerError whose message names only the method, the destination kind and the
exception type, and the original exception is not chained.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import aiohttp

from amid import __version__
from amid.handlers.base import HandlerError

USER_AGENT = f"amid/{__version__}"
_BODY_EXCERPT_BYTES = 512
_RETRYABLE_STATUSES = frozenset({408, 429})
_SECONDS = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*$")
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]+")


def _utcnow() -> datetime:
    return datetime.now(UTC)


def parse_retry_after(value: str | None, *, now: Callable[[], datetime] = _utcnow) -> float | None:
    """`Retry-After` as seconds from now: delay-seconds or an HTTP-date; None if absent or bad."""
    if value is None:
        return None
    match = _SECONDS.match(value)
    if match:
        return float(match.group(1))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP-date is always GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now()).total_seconds())


def scrub(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret replaced, cut short and made printable (a receiver may echo)."""
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) > 1:
            text = text.replace(secret, "***")
    return _UNPRINTABLE.sub(" ", text).strip()[:200]


def classify_status(
    status: int,
    headers: Mapping[str, str],
    *,
    what: str,
    excerpt: str = "",
) -> HandlerError | None:
    """None for 2xx; else the HandlerError that says whether a retry can help."""
    if 200 <= status < 300:
        return None
    retryable = status in _RETRYABLE_STATUSES or 500 <= status < 600
    message = f"{what} answered HTTP {status}"
    if excerpt:
        message += f": {excerpt}"
    return HandlerError(
        message,
        retryable=retryable,
        reason=f"http_{status}" if 100 <= status < 600 else "http_other",
        retry_after=parse_retry_after(headers.get("Retry-After")) if retryable else None,
    )


async def deliver(
    session: aiohttp.ClientSession,
    *,
    method: str,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    what: str,
    secrets: Iterable[str] = (),
    accept: frozenset[int] | None = None,
) -> None:
    """Send one request; return on 2xx, else raise a classified HandlerError.

    `accept` narrows success to these statuses (PagerDuty's 202); another 2xx is then a
    permanent failure: the destination did not take the request as documented.

    Redirects are not followed: a webhook that moves is a configuration error, and
    following one would hand the headers (tokens) to wherever it points.
    Cancellation (the caller's timeout) propagates; `async with` releases the connection.
    """
    try:
        async with session.request(
            method,
            url,
            data=body,
            headers={"User-Agent": USER_AGENT, **headers},
            allow_redirects=False,
        ) as response:
            if 200 <= response.status < 300:
                if accept is None or response.status in accept:
                    return
                wanted = " or ".join(map(str, sorted(accept)))
                raise HandlerError(
                    f"{what} answered HTTP {response.status}, not {wanted}",
                    retryable=False,
                    reason=f"http_{response.status}",
                )
            raw = await response.content.read(_BODY_EXCERPT_BYTES)
            text = raw.decode("utf-8", "replace")
            hidden = _secrets(url, secrets)
            if len(raw) == _BODY_EXCERPT_BYTES:
                # Cut at the limit, the tail could be the start of a secret: drop it.
                text = text[: -max(len(secret) for secret in hidden)]
            excerpt = scrub(text, hidden)
            error = classify_status(response.status, response.headers, what=what, excerpt=excerpt)
            if error is not None:
                raise error
    except aiohttp.ServerTimeoutError:
        raise HandlerError(
            f"{method} to {what} timed out", retryable=True, reason="timeout"
        ) from None
    except aiohttp.ClientConnectionError as exc:
        raise HandlerError(
            f"{method} to {what} failed: {_describe(exc)}", retryable=True, reason="connection"
        ) from None
    except aiohttp.ClientError as exc:
        raise HandlerError(
            f"{method} to {what} failed: {type(exc).__name__}", retryable=True, reason="http_client"
        ) from None


def _secrets(url: str, secrets: Iterable[str]) -> list[str]:
    """What an error text must not show; worked out only when there is an error to show."""
    # The credential in a webhook URL is usually its path (Slack) or its query (a token).
    parts = urlsplit(url)
    return [url, parts.path, parts.query, *secrets]


def _describe(exc: aiohttp.ClientConnectionError) -> str:
    # The errno name (ECONNREFUSED) helps an operator; the OS error's text names host and port.
    if isinstance(exc, aiohttp.ClientConnectorError):
        name = errno.errorcode.get(exc.os_error.errno or 0)
        if name:
            return f"{type(exc).__name__} ({name})"
    return type(exc).__name__
