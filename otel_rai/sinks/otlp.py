"""OTLP export: the exporter factory (the SDK's exporters, encoding with `codec.otlpproto`), the
`Exporter` thread that drains a `SpanQueue` in order and never drops a span, and `ExportSink`, which
holds spans in memory until they are sent (``spool=False``).
"""

from __future__ import annotations

import collections
import functools
import logging
import operator
import random
import threading
import time
from typing import Any, Callable, Mapping, Sequence
from urllib.parse import urlsplit

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from otel_rai import _fork, semconv, settings
from otel_rai.codec import otlpproto
from otel_rai.codec.records import SpanRecord
from otel_rai.sinks.base import Encoded, Sink, SpanQueue, batches, encoded, encoded_record

_log = logging.getLogger(__name__)

PROTOCOLS = settings.PROTOCOLS
#: Limits of one export request: spans, and decisions (a decision is about 150 bytes of OTLP).
MAX_BATCH_SPANS = 1024
MAX_BATCH_ROWS = 4096
#: The wait after the first failed attempt; it doubles with each failure, up to `max_backoff`.
_MIN_BACKOFF = 0.5
#: Each wait is a random fraction of the backoff, at least this one (jitter).
_JITTER_MIN = 0.5
#: The longest wait between two export attempts while the backend is down.
MAX_BACKOFF = 10.0
#: How often `Exporter.flush` looks at a queue that other processes may share, between deliveries.
_FLUSH_POLL = 0.05
#: How long closing waits for an export attempt in flight.
CLOSE_TIMEOUT = 5.0


def _parse_headers(headers: Mapping[str, str] | str | None) -> dict[str, str] | None:
    if headers is None or isinstance(headers, Mapping):
        return None if headers is None else dict(headers)
    pairs = [item.split("=", 1) for item in headers.split(",") if item.strip()]
    if any(len(p) != 2 for p in pairs):
        raise ValueError("otel-rai: headers must look like 'key1=value1,key2=value2'")
    return {k.strip(): v.strip() for k, v in pairs}


def otlp_exporter_factory(
    endpoint: str | None = None,
    protocol: str | None = None,
    headers: Mapping[str, str] | str | None = None,
) -> Callable[[], SpanExporter]:
    """A factory of OTLP span exporters; the SDK exporters read every ``OTEL_EXPORTER_OTLP_*``
    variable (TLS certificates, headers, timeout, compression) that an argument does not override.

    With ``http/protobuf``, an `endpoint` without a path gets ``/v1/traces`` appended, as the
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` variable does.
    """
    protocol = settings.otlp_protocol(protocol)
    parsed_headers = _parse_headers(headers)
    if endpoint is not None and not urlsplit(endpoint).scheme:
        raise ValueError(f"otel-rai: endpoint {endpoint!r} needs a scheme, e.g. http://127.0.0.1:4317")
    if protocol == "grpc":
        grpc_exporter = _grpc_exporter_class()
        return lambda: grpc_exporter(endpoint=endpoint, headers=parsed_headers)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http

    if endpoint is not None and urlsplit(endpoint).path in ("", "/"):
        endpoint = endpoint.rstrip("/") + "/v1/traces"
    return lambda: Http(endpoint=endpoint, headers=parsed_headers)


@functools.cache
def _grpc_exporter_class() -> type[SpanExporter]:
    """The SDK's OTLP/gRPC span exporter (its transport, retries and ``OTEL_EXPORTER_OTLP_*`` settings),
    encoding with `otlpproto`: the same bytes at a third of the CPU, or none when the spans were encoded
    as they were spooled. Its stub sends those bytes as they are: the SDK's stub takes a protobuf message,
    which the request would have to be parsed back into only to be serialised again."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    class EncodedRequestStub:
        """TraceService's stub, whose ``Export`` takes the ExportTraceServiceRequest already encoded."""

        def __init__(self, channel: Any) -> None:
            self.Export = channel.unary_unary(_EXPORT_METHOD, request_serializer=None,
                                              response_deserializer=ExportTraceServiceResponse.FromString)

    class AuditSpanExporter(OTLPSpanExporter):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            # Also the stub of a channel the SDK makes again (after an UNAVAILABLE error).
            self._stub = EncodedRequestStub
            self._client = EncodedRequestStub(self._channel)

        def _translate_data(self, data: Sequence[ReadableSpan]) -> bytes:  # type: ignore[override]
            return data.request() if isinstance(data, otlpproto.EncodedSpans) else otlpproto.encode_spans(data)

    return AuditSpanExporter


#: The gRPC method of OTLP's trace export.
_EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


class MemoryQueue:
    """An in-memory `SpanQueue` of spans encoded as they were put. `put` blocks while `max_backlog` spans
    wait: back-pressure, never a drop."""

    def __init__(self, max_backlog: int) -> None:
        self._max_backlog = max_backlog
        self._spans: collections.deque[Encoded] = collections.deque()
        self._taken = 0
        self._cond = threading.Condition()
        self.closed = False

    def put(self, spans: list[Encoded]) -> None:
        """Queue encoded spans; blocks while `max_backlog` spans wait, until closed."""
        with self._cond:
            self._cond.wait_for(lambda: len(self._spans) < self._max_backlog or self.closed)
            self._spans.extend(spans)

    def take(self, max_spans: int, max_rows: int) -> Sequence[ReadableSpan]:
        """The oldest spans within the limits (see `SpanQueue.take`)."""
        with self._cond:
            batch = next(batches(self._spans, max_spans, max_rows, operator.itemgetter(3)), [])
            self._taken = len(batch)
        return otlpproto.EncodedSpans(otlpproto.grouped(entry[:3] for entry in batch)) if batch else []

    def done(self) -> None:
        """Drop the spans of the last `take`, and wake a blocked `put`."""
        with self._cond:
            for _ in range(self._taken):
                self._spans.popleft()
            self._taken = 0
            self._cond.notify_all()

    def pending(self) -> int:
        """Spans queued, taken or not."""
        return len(self._spans)

    def waiting(self) -> bool:
        """Whether any span is queued."""
        return bool(self._spans)

    def close(self) -> None:
        """Stop blocking `put`: from now on it queues without waiting."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()


class Exporter:
    """Sends the spans of a `SpanQueue` over OTLP from a thread of its own, in order, and never drops one.

    A failed export is retried (exponential backoff with jitter, up to `max_backoff` seconds) until it
    succeeds, each time over a new connection: a hanging or restarted backend must not keep us waiting on
    a dead one (gRPC's own reconnect backoff grows to two minutes).
    Requests hold at most `max_batch_spans` spans and about `max_batch_rows` decisions, which keeps them
    well under the 4 MiB message limit that OTLP receivers apply by default. When the queue has nothing
    ready, the thread sleeps until `wake()` or for `poll` seconds (a queue that other processes fill).
    Its owner builds a new one in a forked child, which must not share the parent's connection.
    """

    def __init__(
        self,
        exporter_factory: Callable[[], SpanExporter],
        queue: SpanQueue,
        *,
        max_batch_spans: int = MAX_BATCH_SPANS,
        max_batch_rows: int = MAX_BATCH_ROWS,
        max_backoff: float = MAX_BACKOFF,
        poll: float | None = None,
    ) -> None:
        self._factory = exporter_factory
        self.queue = queue
        self._max_batch_spans = max_batch_spans
        self._max_batch_rows = max_batch_rows
        self._max_backoff = max_backoff
        self._poll = poll
        self._wakeup = threading.Event()
        self._delivered = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._exporter: SpanExporter | None = None
        #: Spans delivered so far.
        self.exported = 0

    def wake(self) -> None:
        """Start the export thread if needed, and have it look at the queue now."""
        if self._thread is None:
            with self._delivered:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="otel-rai-export", daemon=True)
                    self._thread.start()
        self._wakeup.set()

    def _sleep(self, seconds: float | None) -> None:
        self._wakeup.wait(seconds)
        self._wakeup.clear()

    def _run(self) -> None:
        _fork.block_sigterm()
        backoff = _MIN_BACKOFF
        while True:
            try:
                batch = self.queue.take(self._max_batch_spans, self._max_batch_rows)
            except Exception:
                _log.warning("otel-rai: reading the export queue failed; retrying", exc_info=True)
                if self._closed:
                    return
                self._sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff)
                continue
            if not batch:
                if self._closed:
                    return
                with self._delivered:  # taking nothing may have deleted what was delivered: a flush waits for that
                    self._delivered.notify_all()
                self._sleep(self._poll)
                continue
            if self._export(batch):
                backoff = _MIN_BACKOFF
                self.queue.done()
                self.exported += len(batch)
                with self._delivered:
                    self._delivered.notify_all()
                if self._closed:  # closing gave up waiting for this attempt: stop here
                    return
                continue
            if self._closed:  # shutdown gave up waiting: the spans stay unexported, and say so
                _log.error("otel-rai: %d audit spans were not exported before shutdown", self.queue.pending())
                return
            self._sleep(backoff * random.uniform(_JITTER_MIN, 1.0))
            backoff = min(backoff * 2, self._max_backoff)

    def _export(self, batch: Sequence[ReadableSpan]) -> bool:
        with _fork.quiet:
            try:
                if self._exporter is None:
                    self._exporter = self._factory()
                if self._exporter.export(batch) == SpanExportResult.SUCCESS:
                    return True
            except Exception:
                _log.warning("otel-rai: OTLP export failed; retrying", exc_info=True)
            self._discard_exporter()
            return False

    def _discard_exporter(self) -> None:
        exporter, self._exporter = self._exporter, None
        if exporter is not None:
            try:
                exporter.shutdown()
            except Exception:
                _log.debug("otel-rai: closing a failed OTLP exporter failed", exc_info=True)

    def flush(self, timeout: float) -> bool:
        """Wait until the queue is empty; False on timeout."""
        deadline = time.monotonic() + timeout
        if self.queue.waiting():
            self.wake()
        with self._delivered:
            while self.queue.waiting():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                # Woken by each delivery; the timeout re-reads a queue that other processes share.
                self._delivered.wait(min(remaining, _FLUSH_POLL))
        return True

    def close(self, timeout: float) -> bool:
        """Stop after the current attempt; what is still queued stays queued. False if an attempt
        still runs after `timeout` (a hanging backend): its thread then uses the queue once more."""
        self._closed = True
        self._wakeup.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        if thread is not None and thread.is_alive():
            return False
        with _fork.quiet:
            self._discard_exporter()
        return True


class ExportSink(Sink):
    """Exports audit spans over OTLP, held in memory until then (see `Exporter`).

    When more than `max_backlog` spans wait, `commit` blocks the audit worker, and through it new
    predictions: back-pressure, never a drop.
    """

    def __init__(self, exporter_factory: Callable[[], SpanExporter], *,
                 max_backlog: int = settings.default("max_export_backlog"), **exporter_options: Any) -> None:
        self._factory = exporter_factory
        self._max_backlog = max_backlog
        self._options = exporter_options
        self._reset()
        _fork.reset_in_child(self)

    def _reset(self) -> None:
        """Fresh state; in a forked child the parent exports what was queued before the fork."""
        # SDK spans, and the audit tracer's records with their resource and scope
        self._received: list[ReadableSpan | tuple[SpanRecord, Resource, InstrumentationScope]] = []
        self._queue = MemoryQueue(self._max_backlog)
        self._exporter = Exporter(self._factory, self._queue, **self._options)
        self._dropped = 0

    def on_end(self, span: ReadableSpan) -> None:
        """Keep `span` for the next commit."""
        self._received.append(span)

    def on_record(self, record: SpanRecord, resource: Resource, scope: InstrumentationScope) -> None:
        """Keep the audit tracer's `record` for the next commit."""
        self._received.append((record, resource, scope))

    def commit(self) -> set[str] | None:
        """Encode the spans of this cycle, queue them (blocking while the queue is full) and wake the export.
        A span that cannot be encoded is set aside; returns the decision ids of such spans."""
        if not self._received:
            return None
        received, self._received = self._received, []
        spans, rejected = [], set()
        for span in received:
            try:
                spans.append(encoded_record(*span) if type(span) is tuple else encoded(span))
            except Exception as exc:  # a span the wire cannot carry: set aside, the others go on
                self._dropped += 1
                attributes = span[0].attributes if type(span) is tuple else span.attributes
                rejected.update((attributes or {}).get(semconv.DECISION_IDS) or ())
                _log.error("otel-rai: an audit span could not be encoded for export (%s) and was set aside",
                           type(exc).__name__)
        self._queue.put(spans)
        self._exporter.wake()
        return rejected

    def pending(self) -> int:
        """Spans received and not yet exported."""
        return len(self._received) + self._queue.pending()

    def exported(self) -> int:
        """Spans exported so far."""
        return self._exporter.exported

    def dropped(self) -> int:
        """After close, the spans that were not exported (lost with the process); before it, 0."""
        return self._dropped

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Wait until every committed span is exported (the audit worker commits; we only wait)."""
        return self._exporter.flush(timeout_millis / 1000)

    def close(self, timeout: float) -> None:
        """Export what waits within `timeout` seconds, then stop; what is left is counted in `dropped`."""
        if self._queue.closed:
            return
        deadline = time.monotonic() + timeout
        self._exporter.flush(timeout)
        self._queue.close()
        self._exporter.close(min(CLOSE_TIMEOUT, max(0.0, deadline - time.monotonic())))
        self._dropped += self.pending()  # held in memory only: they end with the process
        if self._dropped:
            _log.error("otel-rai: %d audit spans were not exported and are lost (spool=False keeps them in "
                       "memory only)", self._dropped)
