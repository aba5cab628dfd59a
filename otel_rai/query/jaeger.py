"""Jaeger as a query backend: the api_v3 HTTP API, or the legacy ``/api/traces`` of Jaeger 1.x to 2.20.

A Jaeger search needs a service: without one, every service Jaeger lists is searched. The model name
and version go to Jaeger as a filter (``query.attributes`` in api_v3, ``tags`` in the legacy API) and are
checked again here, because Jaeger before v2.19 ignores ``query.attributes`` over HTTP and returns every
trace of the service. Decision ids and input hashes are array attributes, which Jaeger cannot search;
they are matched here. A search returns at most `search_depth` traces, so a time window that returns
that many is halved and searched again: no result is silently cut off.
"""

from __future__ import annotations

import json
from typing import Any, Iterator

from otel_rai import semconv
from otel_rai._time import rfc3339
from otel_rai.codec import otlpjson
from otel_rai.codec.records import SpanRecord
from otel_rai.query import Query
from otel_rai.query._remote import Http, HttpError, lookback, unexpected, windows

DEFAULT_URL = "http://localhost:16686"
#: Traces one Jaeger search asks for; a window that returns this many is split and searched again.
SEARCH_DEPTH = 1000
#: A search's spans, and whether the search may have been cut off at the search depth.
Found = tuple[list[SpanRecord], bool]
_MICROSECOND = 1000  # the legacy API's time resolution, and so the narrowest window worth searching
_KINDS = {"internal": 1, "server": 2, "client": 3, "producer": 4, "consumer": 5}
#: Tags Jaeger derives from OTLP span fields, which go back into those fields.
_FIELD_TAGS = frozenset({
    "span.kind", "otel.status_code", "otel.status_description", "otel.scope.name", "otel.scope.version",
    "otel.library.name", "otel.library.version", "error", "internal.span.format", "w3c.tracestate",
})


def _tag(tag: dict[str, Any]) -> Any:
    value, kind = tag.get("value"), tag.get("type", "string")
    if kind == "bool":
        return value if isinstance(value, bool) else str(value).lower() == "true"
    if kind == "int64":
        return int(value)
    if kind == "float64":
        return float(value)
    return value


def legacy_records(trace: dict[str, Any]) -> Iterator[SpanRecord]:
    """The spans of one trace of the legacy API (``{"traceID", "spans", "processes"}``)."""
    processes = trace.get("processes") or {}
    for s in trace.get("spans") or ():
        tags = {t["key"]: _tag(t) for t in s.get("tags") or ()}
        process = processes.get(s.get("processID")) or s.get("process") or {}
        resource = {t["key"]: _tag(t) for t in process.get("tags") or ()}
        resource["service.name"] = process.get("serviceName")
        trace_id = str(s["traceID"]).rjust(32, "0")
        parent = next(
            (str(r["spanID"]).rjust(16, "0") for r in s.get("references") or ()
             if r.get("refType") == "CHILD_OF" and str(r.get("traceID", "")).rjust(32, "0") == trace_id),
            None,
        )
        code = tags.get("otel.status_code")
        start = int(s["startTime"]) * 1000
        yield SpanRecord(
            trace_id=trace_id,
            span_id=str(s["spanID"]).rjust(16, "0"),
            name=str(s.get("operationName", "")),
            start_ns=start,
            end_ns=start + int(s.get("duration") or 0) * 1000,
            attributes={k: v for k, v in tags.items() if k not in _FIELD_TAGS},
            parent_span_id=parent,
            kind=_KINDS.get(str(tags.get("span.kind", "internal")), 1),
            status_code=2 if code == "ERROR" or tags.get("error") is True else (1 if code == "OK" else 0),
            status_message=str(tags.get("otel.status_description") or ""),
            trace_state=str(tags.get("w3c.tracestate") or ""),
            events=[_event(log) for log in s.get("logs") or ()] or (),
            resource=resource,
            scope_name=str(tags.get("otel.scope.name", tags.get("otel.library.name", ""))),
            scope_version=str(tags.get("otel.scope.version", tags.get("otel.library.version", ""))),
        )


def _event(log: dict[str, Any]) -> dict[str, Any]:
    fields = {f["key"]: _tag(f) for f in log.get("fields") or ()}
    name = str(fields.pop("event", ""))
    return {"name": name, "time_ns": int(log.get("timestamp", 0)) * 1000, "attributes": fields}


class Jaeger:
    """`api` is ``"v3"``, ``"legacy"`` or ``"auto"`` (api_v3 if the server has it, else legacy)."""

    def __init__(self, url: str, *, api: str = "auto", search_depth: int = SEARCH_DEPTH) -> None:
        self.http = Http(url, "jaeger", example=DEFAULT_URL)
        self.api = api
        self.search_depth = search_depth

    def _api(self) -> str:
        if self.api == "auto":
            try:
                self.http.get("/api/v3/services")
                self.api = "v3"
            except HttpError as exc:
                if exc.status != 404 or isinstance(exc.body, dict):  # a JSON 404 is api_v3's own answer
                    raise
                self.api = "legacy"
        return self.api

    def _services(self) -> list[str]:
        if self._api() == "v3":
            return list(self.http.get("/api/v3/services").get("services") or [])
        return list(self.http.get("/api/services").get("data") or [])

    def _search_v3(self, service: str, tags: dict[str, str], lo: int, hi: int) -> Found:
        params = [
            ("query.service_name", service),
            ("query.start_time_min", rfc3339(lo)),
            ("query.start_time_max", rfc3339(hi)),
            ("query.search_depth", str(self.search_depth)),
        ]
        if tags:
            params.append(("query.attributes", json.dumps(tags)))
        try:
            data = self.http.get("/api/v3/traces", params)
        except HttpError as exc:
            if exc.status == 404 and isinstance(exc.body, dict) and "error" in exc.body:
                return [], False  # api_v3 says "no traces" with a 404
            raise
        records = list(otlpjson.decode(data["result"]))
        return records, len({r.trace_id for r in records}) >= self.search_depth

    def _search_legacy(self, service: str, tags: dict[str, str], lo: int, hi: int) -> Found:
        params = [
            ("service", service),
            ("start", str(lo // 1000)),
            ("end", str(-(-hi // 1000))),
            ("limit", str(self.search_depth)),
        ]
        if tags:
            params.append(("tags", json.dumps(tags)))
        traces = self.http.get("/api/traces", params).get("data") or []
        return [r for t in traces for r in legacy_records(t)], len(traces) >= self.search_depth

    def spans(self, query: Query) -> Iterator[SpanRecord]:
        """Search every service (or the query's), window by window, with the model filters as tags."""
        start, end = lookback(query.start_ns, query.end_ns)
        tags = {k: v for k, v in ((semconv.MODEL_VERSION, query.model_version),
                                  (semconv.MODEL_NAME, query.model_name)) if v is not None}
        try:
            services = [query.service] if query.service else self._services()
            search_one = self._search_v3 if self._api() == "v3" else self._search_legacy

            def search(lo: int, hi: int) -> Found:
                found, saturated = [], False
                for service in services:
                    records, full = search_one(service, tags, lo, hi)
                    found += records
                    saturated = saturated or full
                return found, saturated

            for chunk in windows(start, end, search, min_width_ns=_MICROSECOND, backend="jaeger"):
                yield from chunk
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise unexpected("jaeger", exc) from None


def connect(url: str | None) -> Jaeger:
    """Jaeger at `url`, else at `DEFAULT_URL`."""
    return Jaeger(url or DEFAULT_URL)
