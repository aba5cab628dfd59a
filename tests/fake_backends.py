"""Jaeger and Tempo query APIs over real HTTP, serving given spans, for the query backend tests.

Neither server runs on these machines. These fakes answer in the documented response shapes (and, for
Jaeger's legacy JSON, exactly as Jaeger renders OTLP: `test_query_jaeger` checks that against Jaeger's
own fixture pair), and apply the documented search semantics and limits.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

from otel_rai.codec import otlpjson
from otel_rai.codec.records import SpanRecord

Route = Callable[[str, dict[str, list[str]]], "tuple[int, Any]"]


class FakeServer:
    """An HTTP server on a free local port; `route(path, query)` returns (status, JSON value or text)."""

    def __init__(self, route: Route) -> None:
        self.requests: list[tuple[str, dict[str, list[str]]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                parts = urlsplit(self.path)
                query = parse_qs(parts.query)
                outer.requests.append((parts.path, query))
                status, body = route(parts.path, query)
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain" if isinstance(body, str) else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _rfc3339_ns(text: str) -> int:
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?Z", text)
    seconds = datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp()
    return int(seconds) * 10**9 + int((match.group(2) or "0")[:9].ljust(9, "0"))


def _traces(spans: list[SpanRecord]) -> dict[str, list[SpanRecord]]:
    traces: dict[str, list[SpanRecord]] = {}
    for s in spans:
        traces.setdefault(s.trace_id, []).append(s)
    return traces


# --- Jaeger --------------------------------------------------------------------------------------


def _go_string(value: Any) -> str:
    """An array attribute as Jaeger's model keeps it: the JSON text (pcommon's AsString)."""
    return json.dumps(value, separators=(",", ":"))


def _jaeger_tag(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"key": key, "type": "bool", "value": value}
    if isinstance(value, int):
        return {"key": key, "type": "int64", "value": value}
    if isinstance(value, float):
        return {"key": key, "type": "float64", "value": value}
    if isinstance(value, (list, dict)):
        return {"key": key, "type": "string", "value": _go_string(value)}
    return {"key": key, "type": "string", "value": value}


_KIND_NAMES = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


def otlp_to_legacy(otlp: dict[str, Any]) -> list[dict[str, Any]]:
    """OTLP JSON rendered as Jaeger's legacy ``/api/traces`` ``data``, as Jaeger's query service does."""
    spans = list(otlpjson.decode(otlp))
    out = []
    for trace_id, members in _traces(spans).items():
        processes: dict[str, dict[str, Any]] = {}
        rendered = []
        for s in members:
            process = {"serviceName": s.service,
                       "tags": [_jaeger_tag(k, v) for k, v in s.resource.items() if k != "service.name"]}
            pid = next((p for p, v in processes.items() if v == process), f"p{len(processes) + 1}")
            processes[pid] = process
            tags = [_jaeger_tag("otel.scope.name", s.scope_name)] if s.scope_name else []
            tags += [_jaeger_tag("otel.scope.version", s.scope_version)] if s.scope_version else []
            tags += [_jaeger_tag(k, v) for k, v in s.attributes.items()]
            tags += [_jaeger_tag("span.kind", _KIND_NAMES[s.kind])] if s.kind in _KIND_NAMES else []
            if s.status_code == 2:
                tags += [_jaeger_tag("otel.status_code", "ERROR"), _jaeger_tag("error", True)]
                tags += [_jaeger_tag("otel.status_description", s.status_message)] if s.status_message else []
            elif s.status_code == 1:
                tags += [_jaeger_tag("otel.status_code", "OK")]
            refs = ([{"refType": "CHILD_OF", "traceID": trace_id, "spanID": s.parent_span_id}]
                    if s.parent_span_id else [])
            logs = [{"timestamp": e["time_ns"] // 1000,
                     "fields": [_jaeger_tag("event", e["name"])]
                     + [_jaeger_tag(k, v) for k, v in e["attributes"].items()]}
                    for e in s.events]
            rendered.append({
                "traceID": trace_id, "spanID": s.span_id, "operationName": s.name, "references": refs,
                "startTime": s.start_ns // 1000, "duration": (s.end_ns - s.start_ns) // 1000,
                "tags": tags, "logs": logs, "processID": pid, "warnings": None,
            })
        out.append({"traceID": trace_id, "spans": rendered, "processes": processes, "warnings": None})
    return out


def _stringified(otlp: dict[str, Any]) -> dict[str, Any]:
    """api_v3 over a Jaeger storage that keeps arrays as JSON strings (every v1 storage backend)."""
    spans = list(otlpjson.decode(otlp))
    for s in spans:
        s.attributes = {k: _go_string(v) if isinstance(v, list) else v for k, v in s.attributes.items()}
    return otlpjson.encode(spans)


class FakeJaeger(FakeServer):
    """Jaeger's query service. `ignores_attributes`: before v2.19 (query.attributes had no effect over
    HTTP). `legacy_only`: Jaeger without api_v3. `stringified_arrays`: a storage without array values."""

    def __init__(self, spans: list[SpanRecord], *, ignores_attributes: bool = False, legacy_only: bool = False,
                 stringified_arrays: bool = False) -> None:
        self.spans = spans
        self.ignores_attributes = ignores_attributes
        self.legacy_only = legacy_only
        self.stringified_arrays = stringified_arrays
        super().__init__(self.route)

    def _search(self, service: str, start: int, end: int, tags: dict[str, str], depth: int) -> list[list[SpanRecord]]:
        def matches(s: SpanRecord) -> bool:
            values = {**s.resource, **s.attributes}
            return (s.service == service and start <= s.start_ns <= end
                    and all(str(values.get(k)) == v for k, v in tags.items()))

        hits = [members for members in _traces(self.spans).values() if any(map(matches, members))]
        hits.sort(key=lambda members: -max(s.start_ns for s in members))  # most recent first, cut at depth
        return hits[:depth]

    def route(self, path: str, q: dict[str, list[str]]) -> tuple[int, Any]:
        services = sorted({s.service for s in self.spans})
        if path.startswith("/api/v3/"):
            if self.legacy_only:
                return 404, "404 page not found\n"
            if path == "/api/v3/services":
                return 200, {"services": services}
            if "query.start_time_min" not in q or "query.start_time_max" not in q:
                return 400, {"error": {"httpCode": 400, "message": "start time min and max are required"}}
            tags = {} if self.ignores_attributes else json.loads(q.get("query.attributes", ["{}"])[0])
            hits = self._search(q["query.service_name"][0], _rfc3339_ns(q["query.start_time_min"][0]),
                                _rfc3339_ns(q["query.start_time_max"][0]), tags, int(q["query.search_depth"][0]))
            if not hits:
                return 404, {"error": {"httpCode": 404, "message": "trace not found"}}
            result = otlpjson.encode([s for members in hits for s in members])
            return 200, {"result": _stringified(result) if self.stringified_arrays else result}
        if path == "/api/services":
            return 200, {"data": services, "total": len(services), "limit": 0, "offset": 0, "errors": None}
        if path == "/api/traces":
            hits = self._search(q["service"][0], int(q["start"][0]) * 1000, int(q["end"][0]) * 1000,
                                json.loads(q.get("tags", ["{}"])[0]), int(q["limit"][0]))
            data = otlp_to_legacy(otlpjson.encode([s for members in hits for s in members])) if hits else []
            return 200, {"data": data, "total": 0, "limit": 0, "offset": 0, "errors": None}
        return 404, "404 page not found\n"


# --- Tempo ---------------------------------------------------------------------------------------

_CONDITION = re.compile(r'(span|resource)\.([\w.]+) (=|!=) ("(?:[^"\\]|\\.)*"|nil)')


def base64_ids(otlp: dict[str, Any]) -> dict[str, Any]:
    """OTLP JSON in protobuf's JSON mapping (as Tempo writes it): the same but for base64 ids."""
    for rs in otlp["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for s in ss["spans"]:
                for item in (s, *s.get("links", ())):
                    for key in ("traceId", "spanId", "parentSpanId"):
                        if key in item:
                            item[key] = base64.b64encode(bytes.fromhex(item[key])).decode()
    return otlp


class FakeTempo(FakeServer):
    """Tempo's query frontend. `before_v2_5`: no ``/api/v2/traces`` (``/api/traces`` answers ``batches``)."""

    def __init__(self, spans: list[SpanRecord], *, before_v2_5: bool = False) -> None:
        self.spans = spans
        self.before_v2_5 = before_v2_5
        super().__init__(self.route)

    def _matcher(self, text: str) -> Callable[[SpanRecord], bool]:
        body = text.strip()
        assert body.startswith("{") and body.endswith("}"), text
        conditions = [_CONDITION.fullmatch(c.strip()) for c in body[1:-1].split("&&")]
        assert all(conditions), f"not TraceQL this fake understands: {text}"

        def matches(s: SpanRecord) -> bool:
            for scope, key, op, literal in (c.groups() for c in conditions):
                value = (s.attributes if scope == "span" else s.resource).get(key)
                if op == "!=" and value is None or op == "=" and value != json.loads(literal):
                    return False
            return True

        return matches

    def route(self, path: str, q: dict[str, list[str]]) -> tuple[int, Any]:
        traces = _traces(self.spans)
        if path == "/api/search":
            matches = self._matcher(q["q"][0])
            start, end = int(q["start"][0]) * 10**9, int(q["end"][0]) * 10**9
            found = []
            for trace_id, members in traces.items():
                first, last = min(s.start_ns for s in members), max(s.end_ns for s in members)
                hits = [s for s in members if matches(s)]
                if hits and first <= end and last >= start:
                    found.append((first, trace_id, members, hits))
            found.sort()
            limit = int(q.get("limit", ["20"])[0])
            return 200, {
                "traces": [
                    {
                        "traceID": trace_id.lstrip("0"),  # as Tempo's search writes trace ids
                        "rootServiceName": members[0].service,
                        "rootTraceName": members[0].name,
                        "startTimeUnixNano": str(first),
                        "durationMs": (max(s.end_ns for s in members) - first) // 10**6,
                        "spanSets": [{"spans": [{"spanID": h.span_id, "startTimeUnixNano": str(h.start_ns),
                                                 "durationNanos": str(h.end_ns - h.start_ns), "attributes": []}
                                                for h in hits[: int(q.get("spss", ["3"])[0])]],
                                      "matched": len(hits)}],
                    }
                    for first, trace_id, members, hits in found[:limit]
                ],
                "metrics": {"inspectedTraces": len(traces), "inspectedBytes": "1024", "totalBlocks": 1},
            }
        trace_id = path.rsplit("/", 1)[-1]
        if trace_id not in traces:
            return 404, "trace not found\n"
        otlp = base64_ids(otlpjson.encode(traces[trace_id]))
        if path.startswith("/api/v2/traces/") and not self.before_v2_5:
            return 200, {"trace": otlp, "metrics": {}}
        if path.startswith("/api/traces/"):
            return 200, {"batches": otlp["resourceSpans"]}
        return 404, "404 page not found\n"
