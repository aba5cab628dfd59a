"""Records to and from the OTel SDK's spans: `from_readable` as spans end, `ReadableSpans` to send stored
records again through an OTLP exporter (``otel-rai replay``, the store's outbox upgrade)."""

from __future__ import annotations

from typing import Any, Mapping

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from otel_rai.codec.records import ERROR, SpanRecord

#: OTLP numbers span kinds from 1 (INTERNAL); the SDK's enum starts at 0.
_KIND_OFFSET = 1
#: The OTLP numbers of the SDK's span kinds and status codes (looked up: an enum's ``.value`` is slower).
KINDS = {kind: kind.value + _KIND_OFFSET for kind in SpanKind}
STATUS_CODES = {code: code.value for code in StatusCode}


#: Attribute value types that `plain` keeps as they are (the audit spans' attributes are all of these).
_PLAIN_TYPES = frozenset({str, bool, int, float, list})


def plain(attributes: Mapping[str, Any] | None, *, copy: bool = True) -> dict[str, Any]:
    """`attributes` as a record keeps them: a dict, arrays as lists. Without `copy`, a dict that is
    already so is returned as it is (its owner gives it up)."""
    if not attributes:
        return {}
    if _PLAIN_TYPES.issuperset(map(type, attributes.values())):  # no tuple: a copy, made in C
        return dict(attributes) if copy or type(attributes) is not dict else attributes
    return {k: list(v) if isinstance(v, tuple) else v for k, v in attributes.items()}


#: id(Resource) -> (the Resource, kept alive so that its id stays unique; its attributes as a dict).
#: A process has a resource or two, shared by all its spans: their records share one dict too.
_resources: dict[int, tuple[Resource, dict[str, Any]]] = {}
#: Resources `_resources` holds before it is emptied.
_MAX_RESOURCES = 64


def resource_attributes(resource: Resource) -> dict[str, Any]:
    """The attributes of `resource` as a plain dict, one per resource (see `_resources`)."""
    found = _resources.get(id(resource))
    if found is None or found[0] is not resource:
        if len(_resources) > _MAX_RESOURCES:
            _resources.clear()
        found = _resources[id(resource)] = (resource, plain(resource.attributes))
    return found[1]


def from_readable(span: ReadableSpan, *, owned: bool = False) -> SpanRecord:
    """The record of an ended SDK span (or of a span with the same fields); `owned`: the record may take
    over the span's dict of attributes (see `plain`)."""
    ctx = span.get_span_context()
    parent = span.parent
    scope = span.instrumentation_scope
    resource = span.resource
    status = span.status
    events, links = span.events, span.links
    return SpanRecord(  # positional, in the order of its fields: keywords cost a third of this function
        f"{ctx.trace_id:032x}",
        f"{ctx.span_id:016x}",
        span.name,
        span.start_time or 0,
        span.end_time or 0,
        plain(span.attributes, copy=not owned),
        None if parent is None else f"{parent.span_id:016x}",
        bool(parent is not None and parent.is_remote),
        KINDS[span.kind],
        STATUS_CODES[status.status_code],
        status.description or "",
        ctx.trace_state.to_header() if ctx.trace_state else "",
        # Audit spans have neither: no list to build from them (the shared empty tuple, as `AuditTracer` gives).
        [{"name": e.name, "time_ns": e.timestamp, "attributes": plain(e.attributes)} for e in events]
        if events else (),
        [
            {
                "trace_id": f"{link.context.trace_id:032x}",
                "span_id": f"{link.context.span_id:016x}",
                "trace_state": link.context.trace_state.to_header() if link.context.trace_state else "",
                "attributes": plain(link.attributes),
            }
            for link in links
        ] if links else (),
        resource_attributes(resource),
        resource.schema_url or "",
        scope.name if scope else "",
        (scope.version or "") if scope else "",
    )


def span_context(trace_id: int, span_id: int, trace_state: str = "", remote: bool = False) -> SpanContext:
    """The context of a sampled span rebuilt from what was kept of it (`trace_state` as its header)."""
    return SpanContext(
        trace_id,
        span_id,
        is_remote=remote,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState.from_header([trace_state]) if trace_state else TraceState(),
    )


def to_resource(attributes: Mapping[str, Any], schema_url: str) -> Resource:
    """The SDK `Resource` of a record's resource attributes (arrays as tuples, as the SDK keeps them)."""
    return Resource({k: tuple(v) if isinstance(v, list) else v for k, v in attributes.items()}, schema_url or None)


class ReadableSpans:
    """Turns records back into SDK spans, sharing one `Resource` per distinct resource so that the
    OTLP encoder groups the spans of one process under one resource, as the original export did."""

    def __init__(self) -> None:
        # Keyed by the records' resource dict (shared by the records of one origin), kept alive here.
        self._resources: dict[tuple[int, str], tuple[dict[str, Any], Resource]] = {}

    def _resource(self, record: SpanRecord) -> Resource:
        key = (id(record.resource), record.resource_schema_url)
        found = self._resources.get(key)
        if found is None or found[0] is not record.resource:
            found = self._resources[key] = (record.resource, to_resource(record.resource, record.resource_schema_url))
        return found[1]

    def __call__(self, record: SpanRecord) -> ReadableSpan:
        return readable(record, self._resource(record),
                        InstrumentationScope(record.scope_name, record.scope_version or None))


def readable(record: SpanRecord, resource: Resource, scope: InstrumentationScope | None) -> ReadableSpan:
    """The SDK span of `record`, under `resource` and `scope`."""
    parent = None
    if record.parent_span_id:
        parent = span_context(int(record.trace_id, 16), int(record.parent_span_id, 16), remote=record.parent_is_remote)
    return ReadableSpan(
        name=record.name,
        context=span_context(int(record.trace_id, 16), int(record.span_id, 16), record.trace_state),
        parent=parent,
        resource=resource,
        attributes=record.attributes,
        events=[Event(e["name"], e["attributes"], e["time_ns"]) for e in record.events],
        links=[
            Link(span_context(int(link["trace_id"], 16), int(link["span_id"], 16), link["trace_state"]),
                 link["attributes"])
            for link in record.links
        ],
        kind=SpanKind(record.kind - _KIND_OFFSET if record.kind > 0 else 0),
        status=Status(StatusCode(record.status_code), record.status_message if record.status_code == ERROR else None),
        start_time=record.start_ns,
        end_time=record.end_ns,
        instrumentation_scope=scope,
    )

