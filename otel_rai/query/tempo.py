"""Grafana Tempo as a query backend: a TraceQL search, then a fetch of each trace found.

The search selects decision spans by model version, model name and service (``{ span.ml.model.version
= "1.4.2" && ... }``); decision ids and input hashes are matched here, because TraceQL matches array
attributes only in recent Tempo versions. Tempo returns the first `search_limit` traces it finds, so a
time window that returns that many is halved and searched again, down to Tempo's one-second resolution.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterator

from otel_rai import semconv
from otel_rai.codec import otlpjson
from otel_rai.codec.records import SpanRecord
from otel_rai.query import Query
from otel_rai.query._remote import Http, HttpError, lookback, unexpected, windows

DEFAULT_URL = "http://localhost:3200"
#: Traces one Tempo search asks for; a window that returns this many is split and searched again.
SEARCH_LIMIT = 500
_SECOND = 1_000_000_000
_TRACE_ID = re.compile(r"[0-9a-fA-F]{32}")


def traceql(query: Query) -> str:
    """The TraceQL spanset filter for `query`'s span-level filters."""
    conditions = [
        f"{field} = {json.dumps(value)}"
        for field, value in (
            (f"span.{semconv.MODEL_VERSION}", query.model_version),
            (f"span.{semconv.MODEL_NAME}", query.model_name),
            ("resource.service.name", query.service),
        )
        if value is not None
    ]
    return "{ " + (" && ".join(conditions) or f"span.{semconv.MODEL_VERSION} != nil") + " }"


class Tempo:
    """Tempo's HTTP API at `url`, `search_limit` traces per search."""

    def __init__(self, url: str, *, search_limit: int = SEARCH_LIMIT) -> None:
        self.http = Http(url, "tempo", example=DEFAULT_URL)
        self.search_limit = search_limit
        self._trace_paths = ["/api/v2/traces/", "/api/traces/"]  # v2 since Tempo 2.5

    def trace(self, trace_id: str) -> list[SpanRecord]:
        """Every span of one trace; none if Tempo no longer has it."""
        for path in list(self._trace_paths):
            try:
                data: Any = self.http.get(path + trace_id)
            except HttpError as exc:
                if exc.status != 404:
                    raise
                continue
            if len(self._trace_paths) > 1:
                self._trace_paths = [path]  # this Tempo answers here
            return list(otlpjson.decode(data.get("trace", data)))
        return []

    def _search(self, text: str, lo: int, hi: int) -> tuple[list[SpanRecord], bool]:
        params = [
            ("q", text),
            ("start", str(lo // _SECOND)),
            ("end", str(-(-hi // _SECOND))),
            ("limit", str(self.search_limit)),
            ("spss", "1"),
        ]
        traces = self.http.get("/api/search", params).get("traces") or []
        # Search results drop leading zeros from trace ids.
        ids = [str(t["traceID"]).rjust(32, "0") for t in traces]
        if not all(_TRACE_ID.fullmatch(i) for i in ids):
            raise ValueError("a search result's traceID is not a hex trace id")
        found = [r for i in ids for r in self.trace(i)]
        return found, len(traces) >= self.search_limit

    def spans(self, query: Query) -> Iterator[SpanRecord]:
        """Search with TraceQL, window by window, and fetch each trace found."""
        start, end = lookback(query.start_ns, query.end_ns)
        text = traceql(query)
        try:
            for chunk in windows(start, end, lambda lo, hi: self._search(text, lo, hi),
                                 min_width_ns=_SECOND, backend="tempo"):
                yield from chunk
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise unexpected("tempo", exc) from None


def connect(url: str | None) -> Tempo:
    """Tempo at `url`, else at `DEFAULT_URL`."""
    return Tempo(url or DEFAULT_URL)
