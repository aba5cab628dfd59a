"""`SpanRecord`: one finished span as plain data, the hub between every place a span is kept.

The store writes records, ``otel-rai replay`` turns them back into SDK spans for an OTLP exporter,
`otlpjson` reads and writes them as OTLP JSON, `sdk` converts them to and from the OTel SDK's spans,
and every query backend yields them. Attribute values
keep their OTel types: str, bool, int, float, or a list of one of those.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from otel_rai import semconv

#: OTLP's status code of an error.
ERROR = 2


@dataclass
class SpanRecord:
    """A finished span. Ids are lowercase hex; times are Unix nanoseconds; `kind` and
    `status_code` use the OTLP numbering (kind 1 = INTERNAL; status 0 unset, 1 ok, 2 error)."""

    trace_id: str
    span_id: str
    name: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    parent_span_id: str | None = None
    parent_is_remote: bool = False
    kind: int = 1
    status_code: int = 0
    status_message: str = ""
    trace_state: str = ""
    #: {"name", "time_ns", "attributes"}. A record without any holds the empty tuple, which all records share:
    #: an empty list a record would live as long as it, one more object for the garbage collector to move
    #: on (bench/RESULTS.md, sixteenth pass). Links alike.
    events: Sequence[dict[str, Any]] = ()
    #: {"trace_id", "span_id", "trace_state", "attributes"}
    links: Sequence[dict[str, Any]] = ()
    resource: dict[str, Any] = field(default_factory=dict)
    resource_schema_url: str = ""
    scope_name: str = ""
    scope_version: str = ""

    @property
    def service(self) -> str | None:
        """The resource's ``service.name``, if it has one."""
        value = self.resource.get(semconv.SERVICE_NAME)
        return None if value is None else str(value)
