"""What the remote backends share: JSON over HTTP with one-line errors, and time windows that are
split until no search result was cut off."""

from __future__ import annotations

import base64
import http.client
import json
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable, Iterator, Mapping, Sequence

from otel_rai import semconv
from otel_rai.codec.records import SpanRecord
from otel_rai.errors import PREFIX, BackendError

#: How far back a remote search looks when no time window is given.
DEFAULT_LOOKBACK_NS = 7 * 86_400 * 1_000_000_000
#: How long one HTTP request to a backend may take.
TIMEOUT_S = 30.0


class HttpError(BackendError):
    """An HTTP error status from a backend, with the status and the JSON body (if any)."""

    def __init__(self, message: str, status: int, body: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


def check_url(url: str, backend: str, example: str) -> str:
    """`url` if it is an http(s) URL with a host, else ValueError (a usage error) showing `example`, the
    backend's own default URL."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"otel-rai: {backend}: {url!r} is not an http(s) URL like {example}")
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError:
        raise ValueError(f"otel-rai: {backend}: {url!r} has an invalid port") from None
    return url.rstrip("/")


def _redacted(url: str) -> str:
    """`url` without user:password, for messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=host))


class Http:
    """GETs JSON from one base URL. ``user:password@`` in the URL becomes basic authentication. `example`: the
    backend's default URL, shown when `base_url` is not one."""

    def __init__(self, base_url: str, backend: str, headers: Mapping[str, str] | None = None, *,
                 example: str) -> None:
        parts = urllib.parse.urlsplit(check_url(base_url, backend, example))
        self.backend = backend
        self.headers = {"Accept": "application/json", **(headers or {})}
        if parts.username is not None:
            user = urllib.parse.unquote(parts.username)
            password = urllib.parse.unquote(parts.password or "")
            token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            self.headers["Authorization"] = f"Basic {token}"
        self.base = _redacted(base_url.rstrip("/"))

    def get(self, path: str, params: Sequence[tuple[str, str]] = ()) -> Any:
        """The JSON answer to ``GET base + path ? params``; `HttpError` for an HTTP error status."""
        url = self.base + path + ("?" + urllib.parse.urlencode(params) if params else "")
        request = urllib.request.Request(url, headers=self.headers)
        where = f"{self.backend} at {self.base}"
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                payload = json.loads(raw)
            except ValueError:
                payload = None
            text = raw.decode("utf-8", "replace").strip().replace("\n", " ")[:200]
            raise HttpError(f"{where} answered HTTP {exc.code} to {path}: {text}", exc.code, payload) from None
        except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError, ssl.SSLError,
                http.client.HTTPException) as exc:  # the last: a cut-off answer, or a URL we refuse to send
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, (socket.timeout, TimeoutError)):
                detail = f"no answer within {TIMEOUT_S:g} s"
            else:
                detail = getattr(reason, "strerror", None) or str(reason)
            raise BackendError(f"cannot reach {where}: {detail}") from None
        try:
            return json.loads(body)
        except ValueError:
            raise BackendError(f"{where} answered {path} with something that is not JSON") from None


def unexpected(backend: str, exc: BaseException) -> BackendError:
    """The error for a response whose shape we do not understand."""
    return BackendError(f"unexpected response from {backend} ({type(exc).__name__}: {str(exc).removeprefix(PREFIX)})")


Search = Callable[[int, int], "tuple[list[SpanRecord], bool]"]


def windows(
    start_ns: int, end_ns: int, search: Search, *, min_width_ns: int, backend: str
) -> Iterator[list[SpanRecord]]:
    """Run `search` over [start, end), halving any window whose search says it may be cut off (it
    returned as many traces as it was allowed to); yields each complete window's spans that start in
    it, in time order, oldest window first. So results are complete, never silently truncated."""
    pending = [(start_ns, end_ns)]
    while pending:
        lo, hi = pending.pop()
        spans, saturated = search(lo, hi)
        if saturated:
            if hi - lo <= min_width_ns:
                raise BackendError(
                    f"{backend}: more traces than one search returns start within {_width(hi - lo)}; "
                    "raise the search depth"
                )
            mid = (lo + hi) // 2
            pending += [(mid, hi), (lo, mid)]  # the older half is searched first
            continue
        yield sorted((s for s in spans if lo <= s.start_ns < hi), key=time_order)


def time_order(span: SpanRecord) -> tuple[int, str, int, str]:
    """The order of search results: start time; the chunks of one call (same start, same trace) by
    row offset, as the local store writes them; then span id (any fixed order would do)."""
    offset = span.attributes.get(semconv.BATCH_OFFSET)
    return span.start_ns, span.trace_id, offset if isinstance(offset, int) else -1, span.span_id


def _width(ns: int) -> str:
    return f"{ns / 1e9:g} s" if ns >= 1_000_000_000 else f"{ns / 1e3:g} µs"


def lookback(start_ns: int | None, end_ns: int | None) -> tuple[int, int]:
    """The search window of a remote backend: the query's, else the last `DEFAULT_LOOKBACK_NS`."""
    end = end_ns if end_ns is not None else time.time_ns()
    return (start_ns if start_ns is not None else end - DEFAULT_LOOKBACK_NS), end
