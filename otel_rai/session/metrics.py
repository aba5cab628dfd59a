"""The delivery metrics of an instrumented process: ``ml.audit.pending`` (gauge), ``ml.audit.exported``
and ``ml.audit.dropped`` (counters), in audit records (spans, and calls not yet turned into spans).
``dropped`` counts records that will never be delivered; it stays 0 unless a record could not be built
or a store write was given up."""

from __future__ import annotations

import weakref
from typing import Any, Callable, Iterable

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from otel_rai import semconv
from otel_rai.version import __version__


class _Instruments:
    """The ``ml.audit.*`` instruments of one meter provider; the current session is their `source`."""

    def __init__(self, meter: metrics.Meter) -> None:
        self.source: Callable[[], tuple[int, int, int]] | None = None
        meter.create_observable_gauge(
            semconv.METRIC_AUDIT_PENDING, callbacks=[self._observe(0)], unit="{record}",
            description="Audit records of this process not yet delivered (queued calls, unexported spans)")
        meter.create_observable_counter(
            semconv.METRIC_AUDIT_EXPORTED, callbacks=[self._observe(1)], unit="{span}",
            description="Audit spans this process delivered to the OTLP backend")
        meter.create_observable_counter(
            semconv.METRIC_AUDIT_DROPPED, callbacks=[self._observe(2)], unit="{record}",
            description="Audit records that will never be delivered")

    def _observe(self, index: int) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            source = self.source
            return [Observation(source()[index])] if source is not None else []

        return observe


_instruments: weakref.WeakKeyDictionary[Any, _Instruments] = weakref.WeakKeyDictionary()


def instrumentation_failed(provider: metrics.MeterProvider, error_type: str) -> None:
    """Count one failure to instrument (``ml.audit.instrumentation_failures``)."""
    counter = provider.get_meter(semconv.SCOPE, __version__).create_counter(
        semconv.METRIC_AUDIT_INSTRUMENTATION_FAILURES, unit="{failure}",
        description="Failures to instrument: decisions of this process are not audited (or, fail-closed, refused)")
    counter.add(1, {semconv.ERROR_TYPE: error_type})


def publish(provider: metrics.MeterProvider, source: Callable[[], tuple[int, int, int]]) -> Callable[[], None]:
    """Publish (pending, exported, dropped) from `source` as the ``ml.audit.*`` metrics of `provider`.
    Returns the function that stops publishing."""
    instruments = _instruments.get(provider)
    if instruments is None:
        instruments = _instruments[provider] = _Instruments(provider.get_meter(semconv.SCOPE, __version__))
    instruments.source = source

    def stop() -> None:
        if instruments.source is source:
            instruments.source = None

    return stop
