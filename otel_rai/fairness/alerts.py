"""Fairness alerts: a threshold rule per metric, raised once per crossing rather than once per decision.

Defaults: the four-fifths rule (``ml.fairness.demographic_parity_ratio`` below 0.8) and an equalized-odds
difference above 0.1. Each crossing, in either direction, is reported once:

* a span ``ml.fairness.alert`` through the audit tracer (so it reaches the same backends and the local
  store as the decisions), with an event of the same name;
* a log record (WARNING when firing, INFO when resolved) on the ``otel_rai.alerts`` logger;
* one increment of the ``ml.fairness.alert`` counter (firing crossings only);
* the user's ``on_alert`` callback, if any, on the audit worker thread.

An alert resolves only once the value is back beyond the threshold by ``alert_hysteresis`` (default
0.02), so a value hovering at the threshold does not flap. A value that becomes undefined (too few
decisions) leaves the state as it was.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind

from otel_rai import semconv

#: Alerts are log records on this documented logger (docs/fairness.md), whatever module raises them.
ALERT_LOGGER = "otel_rai.alerts"
_log = logging.getLogger(ALERT_LOGGER)


@dataclass(frozen=True)
class FairnessAlert:
    """One crossing of a threshold by one fairness metric of one model version and attribute."""

    model: str
    version: str
    attribute: str
    metric: str
    value: float
    threshold: float
    firing: bool
    time_ns: int

    def message(self) -> str:
        """The alert as one line for a log or a reader."""
        state = "below" if (self.value < self.threshold) else "above"
        verb = "fired" if self.firing else "resolved"
        return (f"fairness alert {verb}: {self.metric} of model {self.model} {self.version} for "
                f"{self.attribute} is {self.value:.4f}, {state} the threshold {self.threshold}")

    @classmethod
    def from_span(cls, attributes: Mapping[str, Any], time_ns: int) -> FairnessAlert:
        """The alert an ``ml.fairness.alert`` span (its attributes and start time) records."""
        return cls(
            model=str(attributes[semconv.MODEL_NAME]),
            version=str(attributes[semconv.MODEL_VERSION]),
            attribute=str(attributes[semconv.FAIRNESS_ATTRIBUTE]),
            metric=str(attributes[semconv.FAIRNESS_METRIC]),
            value=float(attributes[semconv.FAIRNESS_VALUE]),
            threshold=float(attributes[semconv.FAIRNESS_THRESHOLD]),
            firing=attributes[semconv.FAIRNESS_STATE] == semconv.STATE_FIRING,
            time_ns=time_ns,
        )

    def attributes(self) -> dict[str, Any]:
        """The attributes of the alert's ``ml.fairness.alert`` span."""
        return {
            semconv.MODEL_NAME: self.model,
            semconv.MODEL_VERSION: self.version,
            semconv.FAIRNESS_ATTRIBUTE: self.attribute,
            semconv.FAIRNESS_METRIC: self.metric,
            semconv.FAIRNESS_VALUE: self.value,
            semconv.FAIRNESS_THRESHOLD: self.threshold,
            semconv.FAIRNESS_STATE: semconv.STATE_FIRING if self.firing else semconv.STATE_RESOLVED,
        }


def ui_view(alert: FairnessAlert) -> dict[str, str]:
    """The trace-UI attributes of an alert span: an evaluation of a model version's decisions, its input
    what was judged and its output the verdict (docs/semantic-conventions.md, "In trace UIs")."""
    judged = {"model": alert.model, "version": alert.version, "attribute": alert.attribute, "metric": alert.metric}
    verdict = {"state": semconv.STATE_FIRING if alert.firing else semconv.STATE_RESOLVED, "value": alert.value,
               "threshold": alert.threshold}
    return {
        semconv.UI_SPAN_KIND: semconv.UI_KIND_EVALUATOR,
        semconv.UI_INPUT_VALUE: json.dumps(judged, ensure_ascii=False),
        semconv.UI_INPUT_MIME_TYPE: semconv.UI_MIME_JSON,
        semconv.UI_OUTPUT_VALUE: json.dumps(verdict, ensure_ascii=False),
        semconv.UI_OUTPUT_MIME_TYPE: semconv.UI_MIME_JSON,
    }


@dataclass(frozen=True)
class Rule:
    """Alert when `metric` falls below `threshold` (`below`), or rises above it; resolve only once it
    is back by `hysteresis` beyond the threshold, so that noise around the threshold does not flap."""

    metric: str
    threshold: float
    below: bool
    hysteresis: float = 0.0

    def violated(self, value: float) -> bool:
        """Whether `value` is on the wrong side of the threshold."""
        return value < self.threshold if self.below else value > self.threshold

    def recovered(self, value: float) -> bool:
        """Whether `value` is back by at least `hysteresis` beyond the threshold."""
        if self.below:
            return value >= self.threshold + self.hysteresis
        return value <= self.threshold - self.hysteresis


AlertCallback = Callable[[FairnessAlert], None]
Key = tuple[str, str, str]  # model, version, attribute


class Alerter:
    """Tracks the state of every rule per (model, version, attribute) and reports the crossings."""

    def __init__(
        self,
        rules: tuple[Rule, ...],
        tracer: trace.Tracer,
        counter: metrics.Counter,
        callback: AlertCallback | None,
        on_failure: Callable[[str, BaseException], None],
    ) -> None:
        self._rules = rules
        self._tracer = tracer
        self._counter = counter
        self._callback = callback
        self._on_failure = on_failure
        self._firing: set[tuple[Key, str]] = set()

    def update(self, key: Key, values: Mapping[str, float | None]) -> list[FairnessAlert]:
        """Compare the current values of `key` with the rules; report and return the crossings."""
        alerts = []
        for rule in self._rules:
            value = values.get(rule.metric)
            if value is None:
                continue
            state = (key, rule.metric)
            if state in self._firing:
                if not rule.recovered(value):
                    continue
                self._firing.discard(state)
            elif rule.violated(value):
                self._firing.add(state)
            else:
                continue
            firing = state in self._firing
            alerts.append(FairnessAlert(*key, rule.metric, value, rule.threshold, firing, time.time_ns()))
        for alert in alerts:
            self._report(alert)
        return alerts

    def _report(self, alert: FairnessAlert) -> None:
        attributes = alert.attributes()
        span = self._tracer.start_span(semconv.ALERT_SPAN, kind=SpanKind.INTERNAL,
                                       attributes={**attributes, **ui_view(alert)}, start_time=alert.time_ns)
        span.add_event(semconv.ALERT_SPAN, attributes, timestamp=alert.time_ns)
        span.end(end_time=alert.time_ns)
        _log.log(logging.WARNING if alert.firing else logging.INFO, "otel-rai: %s", alert.message())
        if alert.firing:
            self._counter.add(1, {k: attributes[k] for k in semconv.ALERT_METRIC_ATTRIBUTES})
        if self._callback is not None:
            try:
                self._callback(alert)
            except Exception as exc:
                self._on_failure("alert callback", exc)
