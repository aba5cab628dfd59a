"""Which sinks a session gets, and the dedicated audit tracer provider that feeds them.

`choose` picks: the local store when no OTLP endpoint is configured; the store as the write-ahead log of
the OTLP export when both are asked for; for OTLP alone a spool file (a store that forgets what was
exported) or, with ``spool=False``, `otlp.ExportSink` in memory.

Sampling: the audit provider samples with ``ALWAYS_ON`` and is separate from the application's
provider, so an application's ratio sampler never drops a decision. The decision span still joins the
request's trace (same trace id, the request span as parent), whether or not that request was sampled.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_ON

from otel_rai import semconv, settings, store
from otel_rai.codec.text import safe
from otel_rai.sinks import destination
from otel_rai.sinks.base import Sink
from otel_rai.sinks.local import StoreSink
from otel_rai.sinks.otlp import ExportSink, otlp_exporter_factory

#: Audit spans must never be truncated: a cut hash or id array would misattribute decisions.
UNLIMITED = SpanLimits(
    max_attributes=SpanLimits.UNSET,
    max_span_attributes=SpanLimits.UNSET,
    max_attribute_length=SpanLimits.UNSET,
    max_span_attribute_length=SpanLimits.UNSET,
)


def spool_path(spool: str | os.PathLike[str] | bool | None, endpoint: str | None,
               protocol: str | None) -> Path | None:
    """Where the spool of an OTLP-only session lives, or None for none (spans wait in memory).

    `spool` is a path, False (no spool), or None/True: ``spool-<destination digest>.db`` in the otel-rai
    data directory. Processes that export to one destination share its spool, however they spell the
    endpoint (`destination.identity`); each spool has one destination.
    """
    if spool is False:
        return None
    if spool is None or spool is True:
        return settings.data_dir() / destination.spool_name(destination.identity(_endpoint(endpoint), protocol))
    return Path(spool).expanduser()


def _endpoint(endpoint: str | None) -> str:
    """The endpoint as given, else as the standard variables set it."""
    return (endpoint or settings.env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            or settings.env("OTEL_EXPORTER_OTLP_ENDPOINT") or "")


def resource(service_name: str | None) -> Resource:
    """The application's resource when it runs an SDK provider (so decisions sit under its service in
    Jaeger), else one from ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES``; `service_name` wins.
    The service is also the Phoenix project (``openinference.project.name``), unless one is set. Its text
    is made `safe` (an environment variable may hold bytes that are not UTF-8)."""
    app = trace.get_tracer_provider()
    base = app.resource if isinstance(app, TracerProvider) else Resource.create()
    merged = base.merge(Resource({SERVICE_NAME: service_name})) if service_name else base
    if semconv.UI_PROJECT_NAME not in merged.attributes and SERVICE_NAME in merged.attributes:
        merged = merged.merge(Resource({semconv.UI_PROJECT_NAME: merged.attributes[SERVICE_NAME]}))
    attributes = {safe(k): _safe_value(v) for k, v in merged.attributes.items()}
    return merged if attributes == dict(merged.attributes) else Resource(attributes, merged.schema_url)


def _safe_value(value: Any) -> Any:
    if isinstance(value, str):
        return safe(value)
    if isinstance(value, (list, tuple)):
        return tuple(safe(v) if isinstance(v, str) else v for v in value)
    return value


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


def choose(config: settings.Settings, *, own_provider: bool) -> list[Sink]:
    """The sinks of a session's audit provider.

    No OTLP endpoint: the local store (`otel_rai.store.location` says where). Both an endpoint and
    ``store=`` (or ``OTEL_RAI_STORE``): the store is the write-ahead log of the OTLP export. An endpoint
    alone: a spool (`spool_path`), written first and sent from, that forgets what was delivered; with
    ``spool=False``, spans wait in memory (at most ``max_export_backlog``, then back-pressure). With an
    application's `tracer_provider` (not `own_provider`), that provider exports, and only a store asked
    for explicitly is added.
    """
    factory = None
    if own_provider and settings.otlp_endpoint_configured(config.endpoint):
        factory = otlp_exporter_factory(config.endpoint, config.protocol, config.headers)
    path = store.location(config.store, default=own_provider and factory is None)
    if path is not None:
        return [StoreSink(path, factory)]
    if factory is None:
        return []
    spooled = spool_path(config.spool, config.endpoint, config.protocol)
    if spooled is not None:
        sink = StoreSink(spooled, factory, keep=False)
        # `otel-rai spool status` shows where a spool's spans go, and `spool export` sends them there.
        endpoint = _endpoint(config.endpoint)
        sink.store.set_meta({destination.META_DESTINATION: destination.identity(endpoint, config.protocol),
                             destination.META_ENDPOINT: endpoint})
        return [sink]
    return [ExportSink(factory, max_backlog=config.max_export_backlog)]
