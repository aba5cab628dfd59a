"""Instruments that outlive a session: one set per meter provider and kind, whose gauges read the session
attached to them now (the SDK would hand a second session the first one's gauges, callbacks and all)."""

from __future__ import annotations

import weakref
from typing import Any, Callable, Iterable, Mapping

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from otel_rai import semconv
from otel_rai.version import __version__

_made: weakref.WeakKeyDictionary[Any, dict[type, SessionInstruments]] = weakref.WeakKeyDictionary()


class SessionInstruments:
    """Observable gauges that read `source`, the attached session's observations of a gauge by name."""

    def __init__(self, meter: metrics.Meter, gauges: Mapping[str, str], units: Mapping[str, str]) -> None:
        self.source: Callable[[str], Iterable[Observation]] | None = None
        for name, description in gauges.items():
            meter.create_observable_gauge(name, callbacks=[self._callback(name)], unit=units.get(name, "1"),
                                          description=description)

    def _callback(self, name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            source = self.source
            return source(name) if source is not None else ()

        return observe

    @classmethod
    def of(cls, provider: metrics.MeterProvider) -> Any:
        """This kind's instruments of `provider`, made on first use."""
        made = _made.setdefault(provider, {})
        if cls not in made:
            made[cls] = cls(provider.get_meter(semconv.SCOPE, __version__))  # type: ignore[call-arg]
        return made[cls]
