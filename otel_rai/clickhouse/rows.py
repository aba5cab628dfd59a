"""Spans as rows of ``otel_traces``: what the exporter writes for a span (`row`), and the span a row holds
(`record`).

The exporter's row of a span: the start time in nanoseconds, hex ids (the parent's empty for a root), the
W3C trace state, the span name, the kind and status code as pdata names them (``Internal``, ``Error``), the
service name (the resource's ``service.name``), resource and span attributes as text (`values`), the scope
name and version, the duration in nanoseconds, and events and links as parallel arrays. The resource's
schema URL, the scope's attributes and whether the parent is remote are not kept.
"""

from __future__ import annotations

from typing import Any, Sequence

from otel_rai import semconv
from otel_rai.clickhouse import values
from otel_rai.codec.records import SpanRecord

#: OTLP span kinds (records.SpanRecord.kind) as pdata's SpanKind.String() writes them, and back.
KINDS = ("Unspecified", "Internal", "Server", "Client", "Producer", "Consumer")
STATUSES = ("Unset", "Ok", "Error")
#: What exporters before pdata's String() names wrote (``traceutil``), read back too.
_OLD_KINDS = {f"SPAN_KIND_{k.upper()}": i for i, k in enumerate(KINDS)}
_OLD_STATUSES = {f"STATUS_CODE_{s.upper()}": i for i, s in enumerate(STATUSES)}
_KIND_CODES = {**{k: i for i, k in enumerate(KINDS)}, **_OLD_KINDS}
_STATUS_CODES = {**{s: i for i, s in enumerate(STATUSES)}, **_OLD_STATUSES}

#: The columns of the exporter's INSERT, in its order.
COLUMNS = (
    "Timestamp", "TraceId", "SpanId", "ParentSpanId", "TraceState", "SpanName", "SpanKind", "ServiceName",
    "ResourceAttributes", "ScopeName", "ScopeVersion", "SpanAttributes", "Duration", "StatusCode", "StatusMessage",
    "Events.Timestamp", "Events.Name", "Events.Attributes", "Links.TraceId", "Links.SpanId", "Links.TraceState",
    "Links.Attributes",
)
#: The same columns as SELECT expressions, times as integer nanoseconds (a DateTime64 would come back as a
#: datetime, which keeps microseconds only).
SELECT = ", ".join(
    "toUnixTimestamp64Nano(Timestamp)" if c == "Timestamp"
    else "arrayMap(t -> toUnixTimestamp64Nano(t), `Events.Timestamp`)" if c == "Events.Timestamp"
    else f"`{c}`" for c in COLUMNS
)


def row(r: SpanRecord) -> list[Any]:
    """The exporter's row of `r`, in `COLUMNS` order."""
    service = r.resource.get(semconv.SERVICE_NAME)
    return [
        r.start_ns, r.trace_id, r.span_id, r.parent_span_id or "", r.trace_state, r.name,
        KINDS[r.kind] if 0 <= r.kind < len(KINDS) else "", "" if service is None else values.as_string(service),
        values.attributes(r.resource), r.scope_name, r.scope_version, values.attributes(r.attributes),
        max(r.end_ns - r.start_ns, 0), STATUSES[r.status_code] if 0 <= r.status_code < len(STATUSES) else "",
        r.status_message,
        [e.get("time_ns", 0) for e in r.events], [e.get("name", "") for e in r.events],
        [values.attributes(e.get("attributes") or {}) for e in r.events],
        [link.get("trace_id", "") for link in r.links], [link.get("span_id", "") for link in r.links],
        [link.get("trace_state", "") for link in r.links],
        [values.attributes(link.get("attributes") or {}) for link in r.links],
    ]


def record(columns: Sequence[Any]) -> SpanRecord:
    """The span of a row selected with `SELECT`."""
    (start, trace_id, span_id, parent, trace_state, name, kind, _service, resource, scope_name, scope_version,
     attributes, duration, status, message, event_times, event_names, event_attributes, link_traces, link_spans,
     link_states, link_attributes) = columns
    return SpanRecord(
        trace_id=trace_id, span_id=span_id, name=name, start_ns=int(start), end_ns=int(start) + int(duration),
        attributes=values.parse_attributes(attributes), parent_span_id=parent or None,
        kind=_KIND_CODES.get(kind, 0), status_code=_STATUS_CODES.get(status, 0), status_message=message,
        trace_state=trace_state,
        events=[{"name": n, "time_ns": int(t), "attributes": values.parse_other(a)}
                for t, n, a in zip(event_times, event_names, event_attributes)] or (),
        links=[{"trace_id": t, "span_id": s, "trace_state": ts, "attributes": values.parse_other(a)}
               for t, s, ts, a in zip(link_traces, link_spans, link_states, link_attributes)] or (),
        resource=values.parse_other(resource), scope_name=scope_name, scope_version=scope_version,
    )
