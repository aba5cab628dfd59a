"""Where decision spans go: the dedicated audit tracer provider and its sinks.

The seam is `Sink`: a span processor fed by the audit worker's thread, committed once per worker cycle.
`sinks` picks them: the local store (`otel_rai.store.StoreSink`) when no OTLP endpoint is configured,
the store as the write-ahead log of the OTLP export when both are asked for, and for OTLP alone a spool
file (a store that forgets what was exported) or, with ``spool=False``, `ExportSink` in memory.
An `Exporter` sends the spans of a `SpanQueue` (in memory, or the store's outbox) over OTLP from a thread
of its own, in order, retrying until the backend takes them.

Sampling: the audit provider samples with ``ALWAYS_ON`` and is separate from the application's
provider, so an application's ratio sampler never drops a decision. The decision span still joins the
request's trace (same trace id, the request span as parent), whether or not that request was sampled.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import logging
import operator
import os
import random
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Protocol, Sequence, TypeVar
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from otel_rai import _fork, config, otlpproto, semconv

_log = logging.getLogger(__name__)

PROTOCOLS = ("grpc", "http/protobuf")

#: Limits of one export request: spans, and decisions (a decision is about 150 bytes of OTLP).
MAX_BATCH_SPANS = 1024
MAX_BATCH_ROWS = 4096
_MIN_BACKOFF = 0.5
#: The longest wait between two export attempts while the backend is down.
MAX_BACKOFF = 10.0
#: Spans held in memory for export when there is no spool (``spool=False``) before the worker waits.
DEFAULT_MAX_BACKLOG = 100_000
SPOOL_ENV = "OTEL_RAI_SPOOL"
_OFF = frozenset({"0", "false", "off", "no"})
_FLUSH_POLL = 0.05
#: How long closing waits for an export attempt in flight.
CLOSE_TIMEOUT = 5.0
#: How long a sink's `shutdown` may take when a provider shuts it down (the SDK's processor default).
SHUTDOWN_TIMEOUT = 30.0

#: Audit spans must never be truncated: a cut hash or id array would misattribute decisions.
UNLIMITED = SpanLimits(
    max_attributes=SpanLimits.UNSET,
    max_span_attributes=SpanLimits.UNSET,
    max_attribute_length=SpanLimits.UNSET,
    max_span_attribute_length=SpanLimits.UNSET,
)


class Sink(SpanProcessor):
    """A destination for ended audit spans. `on_end` runs on the audit worker's thread."""

    def commit(self) -> None:
        """End of an audit worker cycle: make the spans received since the last commit durable."""

    def pending(self) -> int:
        """Spans received but not yet delivered."""
        return 0

    def exported(self) -> int:
        """Spans this process delivered to the OTLP backend."""
        return 0

    def dropped(self) -> int:
        """Spans given up: they will never be delivered (only at shutdown, and never by default)."""
        return 0

    def close(self, timeout: float) -> None:
        """Stop within about `timeout` seconds; later calls do nothing. Spans not delivered by then stay
        spooled, or are counted in `dropped` when they were held in memory only."""

    def shutdown(self) -> None:
        self.close(SHUTDOWN_TIMEOUT)


def otlp_configured(endpoint: str | None = None) -> bool:
    """Whether an OTLP endpoint is set, by argument or by the standard environment variables."""
    return bool(
        endpoint
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


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
    protocol = (
        protocol
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "grpc"
    )
    if protocol not in PROTOCOLS:
        raise ValueError(f"otel-rai: OTLP protocol {protocol!r} is not supported; use one of {PROTOCOLS}")
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
    as they were spooled. The request is parsed back into the message the SDK's gRPC stub expects
    (about 1 µs a span, in C)."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    class AuditSpanExporter(OTLPSpanExporter):
        def _translate_data(self, data: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
            encoded = data.request() if isinstance(data, otlpproto.EncodedSpans) else otlpproto.encode_spans(data)
            return ExportTraceServiceRequest.FromString(encoded)

    return AuditSpanExporter


def spool_path(spool: str | os.PathLike[str] | bool | None, endpoint: str | None,
               protocol: str | None) -> Path | None:
    """Where the spool of an OTLP-only session lives, or None for none (spans wait in memory).

    `spool` is a path, False (no spool), or None/True: ``OTEL_RAI_SPOOL`` (a path, or ``false`` for
    none), else ``spool-<endpoint digest>.db`` in the otel-rai data directory. The digest keeps
    processes that export to different endpoints apart: each spool has one destination.
    """
    if spool is False:
        return None
    env = os.environ.get(SPOOL_ENV, "").strip()
    if spool is None and env:
        return None if env.lower() in _OFF else Path(env).expanduser()
    if spool is None or spool is True:
        target = (endpoint or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                  or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "")
        tag = hashlib.blake2b(f"{protocol or ''} {target}".encode(), digest_size=4).hexdigest()
        return config.data_dir() / f"spool-{tag}.db"
    return Path(spool).expanduser()


def resource(service_name: str | None) -> Resource:
    """The application's resource when it runs an SDK provider (so decisions sit under its service in
    Jaeger), else one from ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES``; `service_name` wins."""
    app = trace.get_tracer_provider()
    base = app.resource if isinstance(app, TracerProvider) else Resource.create()
    return base.merge(Resource({SERVICE_NAME: service_name})) if service_name else base


def audit_provider(service_name: str | None, sinks: Sequence[Sink]) -> TracerProvider:
    """The dedicated audit tracer provider: always-on sampling, no truncation, our sinks only."""
    provider = TracerProvider(
        sampler=ALWAYS_ON,
        resource=resource(service_name),
        span_limits=UNLIMITED,
        shutdown_on_exit=False,  # the instrumentor shuts down after draining the audit worker
    )
    for sink in sinks:
        provider.add_span_processor(sink)
    return provider


def sinks(
    *,
    endpoint: str | None,
    protocol: str | None,
    headers: Mapping[str, str] | str | None,
    store: str | os.PathLike[str] | bool | None,
    own_provider: bool,
    spool: str | os.PathLike[str] | bool | None = None,
    max_backlog: int = DEFAULT_MAX_BACKLOG,
) -> list[Sink]:
    """The sinks of a session's audit provider.

    No OTLP endpoint: the local store (`otel_rai.store.location` says where). Both an endpoint and
    ``store=`` (or ``OTEL_RAI_STORE``): the store is the write-ahead log of the OTLP export. An endpoint
    alone: a spool (`spool_path`), written first and sent from, that forgets what was delivered; with
    ``spool=False``, spans wait in memory (at most `max_backlog`, then back-pressure). With an
    application's `tracer_provider` (not `own_provider`), that provider exports, and only a store asked
    for explicitly is added.
    """
    from otel_rai import store as local  # the store builds on this module

    factory = None
    if own_provider and otlp_configured(endpoint):
        factory = otlp_exporter_factory(endpoint, protocol, headers)
    path = local.location(store, default=own_provider and factory is None)
    if path is not None:
        return [local.StoreSink(path, factory)]
    if factory is None:
        return []
    spooled = spool_path(spool, endpoint, protocol)
    if spooled is not None:
        return [local.StoreSink(spooled, factory, keep=False)]
    return [ExportSink(factory, max_backlog=max_backlog)]


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


#: A span encoded for the export (`otlpproto.encode_span`), with its resource, scope and decisions.
Encoded = tuple[Resource, Optional[InstrumentationScope], bytes, int]


def encoded(span: ReadableSpan) -> Encoded:
    return span.resource, span.instrumentation_scope or None, otlpproto.encode_span(span), _rows(span)


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
        with self._cond:
            self._cond.wait_for(lambda: len(self._spans) < self._max_backlog or self.closed)
            self._spans.extend(spans)

    def take(self, max_spans: int, max_rows: int) -> Sequence[ReadableSpan]:
        with self._cond:
            batch = next(batches(self._spans, max_spans, max_rows, operator.itemgetter(3)), [])
            self._taken = len(batch)
        return otlpproto.EncodedSpans(otlpproto.grouped(entry[:3] for entry in batch)) if batch else []

    def done(self) -> None:
        with self._cond:
            for _ in range(self._taken):
                self._spans.popleft()
            self._taken = 0
            self._cond.notify_all()

    def pending(self) -> int:
        return len(self._spans)

    def close(self) -> None:
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
            self._sleep(backoff * random.uniform(0.5, 1.0))
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
        if self.queue.pending():
            self.wake()
        with self._delivered:
            while self.queue.pending():
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

    def __init__(self, exporter_factory: Callable[[], SpanExporter], *, max_backlog: int = DEFAULT_MAX_BACKLOG,
                 **exporter_options: Any) -> None:
        self._factory = exporter_factory
        self._max_backlog = max_backlog
        self._options = exporter_options
        self._reset()
        _fork.reset_in_child(self)

    def _reset(self) -> None:
        """Fresh state; in a forked child the parent exports what was queued before the fork."""
        self._received: list[ReadableSpan] = []
        self._queue = MemoryQueue(self._max_backlog)
        self._exporter = Exporter(self._factory, self._queue, **self._options)
        self._dropped = 0

    def on_end(self, span: ReadableSpan) -> None:
        self._received.append(span)

    def commit(self) -> None:
        if not self._received:
            return
        received, self._received = self._received, []
        self._queue.put([encoded(span) for span in received])
        self._exporter.wake()

    def pending(self) -> int:
        return len(self._received) + self._queue.pending()

    def exported(self) -> int:
        return self._exporter.exported

    def dropped(self) -> int:
        return self._dropped

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Wait until every committed span is exported (the audit worker commits; we only wait)."""
        return self._exporter.flush(timeout_millis / 1000)

    def close(self, timeout: float) -> None:
        if self._queue.closed:
            return
        deadline = time.monotonic() + timeout
        self._exporter.flush(timeout)
        self._queue.close()
        self._exporter.close(min(CLOSE_TIMEOUT, max(0.0, deadline - time.monotonic())))
        self._dropped = self.pending()  # held in memory only: they end with the process
        if self._dropped:
            _log.error("otel-rai: %d audit spans were not exported and are lost (spool=False keeps them in "
                       "memory only)", self._dropped)
