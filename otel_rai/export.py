"""Where decision spans go: the dedicated audit tracer provider and its sinks.

The seam is `Sink`: a span processor fed by the audit worker's thread, committed once per worker cycle.
`ExportSink` sends spans over OTLP from a thread of its own, retrying until the backend takes them.

Sampling: the audit provider samples with ``ALWAYS_ON`` and is separate from the application's
provider, so an application's ratio sampler never drops a decision. The decision span still joins the
request's trace (same trace id, the request span as parent), whether or not that request was sampled.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from typing import Any, Callable, Mapping, Sequence
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_ON

from otel_rai import _fork, semconv

_log = logging.getLogger(__name__)

PROTOCOLS = ("grpc", "http/protobuf")

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
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc

        return lambda: Grpc(endpoint=endpoint, headers=parsed_headers)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http

    if endpoint is not None and urlsplit(endpoint).path in ("", "/"):
        endpoint = endpoint.rstrip("/") + "/v1/traces"
    return lambda: Http(endpoint=endpoint, headers=parsed_headers)


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


def _rows(span: ReadableSpan) -> int:
    return len((span.attributes or {}).get(semconv.DECISION_IDS) or ())


class ExportSink(Sink):
    """Exports audit spans from a thread of its own and never drops them.

    A failed export is retried (exponential backoff up to `max_backoff` seconds) until it succeeds.
    Batches hold at most `max_batch_spans` spans and about `max_batch_rows` decisions, which keeps a
    request well under the 4 MiB message limit that OTLP receivers apply by default. When more than
    `max_backlog` spans wait, `commit` blocks the audit worker, and through it new predictions.
    """

    def __init__(
        self,
        exporter_factory: Callable[[], SpanExporter],
        *,
        max_batch_spans: int = 512,
        max_batch_rows: int = 4096,
        max_backlog: int = 100_000,
        max_backoff: float = 30.0,
    ) -> None:
        self._factory = exporter_factory
        self._max_batch_spans = max_batch_spans
        self._max_batch_rows = max_batch_rows
        self._max_backlog = max_backlog
        self._max_backoff = max_backoff
        self._exporter: SpanExporter | None = None
        self._reset()
        _fork.reset_in_child(self)

    def _reset(self) -> None:
        self._received: list[ReadableSpan] = []
        self._backlog: collections.deque[ReadableSpan] = collections.deque()
        self._cond = threading.Condition()
        self._exporting = 0
        self._closed = False
        self._thread: threading.Thread | None = None
        self._exporter = None  # a forked child must not share the parent's connection

    def on_end(self, span: ReadableSpan) -> None:
        self._received.append(span)

    def commit(self) -> None:
        received, self._received = self._received, []
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="otel-rai-export", daemon=True)
                self._thread.start()
            self._cond.wait_for(lambda: len(self._backlog) < self._max_backlog or self._closed)
            self._backlog.extend(received)
            self._cond.notify_all()

    def pending(self) -> int:
        return len(self._received) + len(self._backlog) + self._exporting

    def _next_batch(self) -> list[ReadableSpan]:
        batch, rows = [], 0
        for span in self._backlog:
            rows += _rows(span)
            if batch and (len(batch) >= self._max_batch_spans or rows > self._max_batch_rows):
                break
            batch.append(span)
        return batch

    def _run(self) -> None:
        backoff = 0.5
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._backlog or self._closed)
                if not self._backlog:
                    return
                batch = self._next_batch()
                self._exporting = len(batch)
            if self._export(batch):
                backoff = 0.5
                with self._cond:
                    for _ in batch:
                        self._backlog.popleft()
                    self._exporting = 0
                    self._cond.notify_all()
                continue
            with self._cond:
                self._exporting = 0
                if self._closed:  # shutdown gave up waiting: the spans stay unexported, and say so
                    _log.error("otel-rai: %d audit spans were not exported before shutdown", len(self._backlog))
                    return
                self._cond.wait(backoff)
            backoff = min(backoff * 2, self._max_backoff)

    def _export(self, batch: list[ReadableSpan]) -> bool:
        try:
            if self._exporter is None:
                self._exporter = self._factory()
            return self._exporter.export(batch) == SpanExportResult.SUCCESS
        except Exception:
            _log.warning("otel-rai: OTLP export failed; retrying", exc_info=True)
            return False

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Wait until every committed span is exported (the audit worker commits; we only wait)."""
        deadline = time.monotonic() + timeout_millis / 1000
        with self._cond:
            return self._cond.wait_for(
                lambda: not self._backlog and not self._exporting, max(0.0, deadline - time.monotonic())
            )

    def shutdown(self) -> None:
        self.force_flush()
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._exporter is not None:
            self._exporter.shutdown()
