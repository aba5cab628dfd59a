"""The seam between the audit and where its spans go: `Sink`, a span processor fed by the audit worker's
thread and committed once per worker cycle; `SpanQueue`, what an exporter drains; and the encoded form
of a span that every queue keeps (`encoded`, `batches`).
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, Optional, Protocol, Sequence, TypeVar

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from otel_rai import semconv
from otel_rai.codec import otlpproto
from otel_rai.codec.records import SpanRecord
from otel_rai.codec.sdk import readable

#: How long a sink's `shutdown` may take when a provider shuts it down (the SDK's processor default).
SHUTDOWN_TIMEOUT = 30.0


class Sink(SpanProcessor):
    """A destination for ended audit spans, on the audit worker's thread: `on_record` from otel-rai's own
    audit tracer, `on_end` from an application's tracer provider."""

    def on_record(self, record: SpanRecord, resource: Resource, scope: InstrumentationScope) -> None:
        """An audit span of otel-rai's own tracer, which ends as a record (no SDK span is built for it).
        By default, `on_end` of the SDK span it stands for."""
        self.on_end(readable(record, resource, scope))

    def commit(self) -> set[str] | None:
        """End of an audit worker cycle: make the spans received since the last commit durable. Returns
        the decision ids of spans set aside because they could not be kept (counted as dropped)."""
        return None

    def pending(self) -> int:
        """Spans received but not yet delivered."""
        return 0

    def exported(self) -> int:
        """Spans this process delivered to the OTLP backend."""
        return 0

    def durable(self, timeout: float) -> bool:
        """Wait until the committed spans outlive this process (written to disk, or delivered);
        False on timeout. By default: delivered."""
        return self.force_flush(int(timeout * 1000))

    def dropped(self) -> int:
        """Spans given up: they will never be delivered (only at shutdown, and never by default)."""
        return 0

    def close(self, timeout: float) -> None:
        """Stop within about `timeout` seconds; later calls do nothing. Spans not delivered by then stay
        spooled, or are counted in `dropped` when they were held in memory only."""

    def shutdown(self) -> None:
        """`close` within `SHUTDOWN_TIMEOUT` seconds (the SDK's processor shutdown)."""
        self.close(SHUTDOWN_TIMEOUT)


T = TypeVar("T")


def _rows(span: ReadableSpan) -> int:
    return len((span.attributes or {}).get(semconv.DECISION_IDS) or ())


def batches(spans: Iterable[T], max_spans: int, max_rows: int,
            rows_of: Callable[[T], int] = _rows) -> Iterator[list[T]]:
    """`spans` cut into export requests of at most `max_spans` spans and about `max_rows` decisions
    (a span with more rows than that goes alone)."""
    batch: list[T] = []
    rows = 0
    for span in spans:
        n = rows_of(span)
        if batch and (len(batch) >= max_spans or rows + n > max_rows):
            yield batch
            batch, rows = [], 0
        batch.append(span)
        rows += n
    if batch:
        yield batch


class SpanQueue(Protocol):
    """Spans waiting for export, oldest first. Only the exporter's thread calls `take` and `done`."""

    def take(self, max_spans: int, max_rows: int) -> Sequence[ReadableSpan]:
        """The oldest spans not yet delivered, within the limits; empty when none are ready.
        Until `done`, another call returns the same spans."""

    def done(self) -> None:
        """The spans of the last `take` were delivered."""

    def pending(self) -> int:
        """Spans not yet delivered."""

    def waiting(self) -> bool:
        """Whether any span is not yet delivered: `pending` not 0, which may be cheaper to tell."""


#: A span encoded for the export (`otlpproto.encode_span`), with its resource, scope and decisions.
Encoded = tuple[Resource, Optional[InstrumentationScope], bytes, int]


def encoded(span: ReadableSpan) -> Encoded:
    """`span` as a queue keeps it: its resource, its scope, its OTLP encoding, its decisions."""
    return span.resource, span.instrumentation_scope or None, otlpproto.encode_span(span), _rows(span)


def encoded_record(record: SpanRecord, resource: Resource, scope: InstrumentationScope) -> Encoded:
    """`encoded` of a record of the audit tracer, whose `resource` and `scope` it was given."""
    return resource, scope, otlpproto.encode_record(record), len(record.attributes.get(semconv.DECISION_IDS) or ())
