"""Quality and drift alerts: raised once per crossing, like the fairness alerts (`otel_rai.fairness.alerts`).

Defaults (`MonitoringConfig`): a feature's PSI above 0.2 (``ml.drift.alert``), and accuracy or ROC AUC
more than 0.05 below the baseline, overall or for one group of a sensitive attribute
(``ml.quality.alert``). Each crossing, either way, is reported once:

* a span (``ml.drift.alert`` or ``ml.quality.alert``) through the audit tracer, with an event of the
  same name. A group value is on it only when every part of its attribute is allowlisted with
  ``capture_features``, as for any raw value; the attribute's name always is;
* a log record on the ``otel_rai.alerts`` logger (WARNING firing, INFO resolved), naming no group value;
* one increment of the counter of the same name (firing only), whose attributes do name the group: a
  metric attribute, like the fairness metrics' groups;
* the user's ``on_alert`` callback, with the whole `MonitoringAlert`, on the audit worker thread.

An alert resolves once the value is back beyond its threshold by ``alert_hysteresis``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Collection

from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind

from otel_rai import semconv
from otel_rai.fairness.alerts import ALERT_LOGGER, Rule

_log = logging.getLogger(ALERT_LOGGER)


@dataclass(frozen=True)
class MonitoringAlert:
    """One crossing of a drift or quality threshold by one model version.

    kind: ``drift`` (`feature` names the feature) or ``quality`` (`attribute` and `group` name the group,
    both None for the whole population). `baseline`: the quality figure the threshold derives from.
    """

    kind: str
    model: str
    version: str
    metric: str
    value: float
    threshold: float
    firing: bool
    time_ns: int
    feature: str | None = None
    attribute: str | None = None
    group: str | None = None
    baseline: float | None = None

    def message(self, *, show_group: bool = False) -> str:
        """One line for the log; the group value only with `show_group` (it is a raw value)."""
        verb = "fired" if self.firing else "resolved"
        if self.kind == "drift":
            subject = f"feature {self.feature}"
        elif self.attribute is None:
            subject = "all decisions"
        else:
            subject = f"group {self.group} of {self.attribute}" if show_group else f"a group of {self.attribute}"
        state = "below" if self.value < self.threshold else "above"
        text = (f"{self.kind} alert {verb}: {self.metric} of model {self.model} {self.version} for {subject} is "
                f"{self.value:.4f}, {state} the threshold {self.threshold:.4f}")
        return text if self.baseline is None else f"{text} (baseline {self.baseline:.4f})"

    def span_attributes(self, show_group: bool) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            semconv.MODEL_NAME: self.model,
            semconv.MODEL_VERSION: self.version,
            semconv.MONITORING_METRIC: self.metric,
            semconv.MONITORING_VALUE: self.value,
            semconv.MONITORING_THRESHOLD: self.threshold,
            semconv.MONITORING_STATE: semconv.STATE_FIRING if self.firing else semconv.STATE_RESOLVED,
        }
        if self.feature is not None:
            attributes[semconv.DRIFT_FEATURE] = self.feature
        if self.attribute is not None:
            attributes[semconv.FAIRNESS_ATTRIBUTE] = self.attribute
            if show_group and self.group is not None:
                attributes[semconv.FAIRNESS_GROUP] = self.group
        if self.baseline is not None:
            attributes[semconv.MONITORING_BASELINE] = self.baseline
        return attributes

    def metric_attributes(self) -> dict[str, str]:
        attributes = {semconv.MODEL_NAME: self.model, semconv.MODEL_VERSION: self.version,
                      semconv.MONITORING_METRIC: self.metric}
        if self.feature is not None:
            attributes[semconv.DRIFT_FEATURE] = self.feature
        if self.attribute is not None:
            attributes[semconv.FAIRNESS_ATTRIBUTE] = self.attribute
            attributes[semconv.FAIRNESS_GROUP] = str(self.group)
        return attributes

    @classmethod
    def from_span(cls, name: str, attributes: dict[str, Any], time_ns: int) -> MonitoringAlert:
        """The alert an ``ml.drift.alert`` or ``ml.quality.alert`` span records."""
        baseline = attributes.get(semconv.MONITORING_BASELINE)
        return cls(
            kind="drift" if name == semconv.DRIFT_ALERT_SPAN else "quality",
            model=str(attributes[semconv.MODEL_NAME]),
            version=str(attributes[semconv.MODEL_VERSION]),
            metric=str(attributes[semconv.MONITORING_METRIC]),
            value=float(attributes[semconv.MONITORING_VALUE]),
            threshold=float(attributes[semconv.MONITORING_THRESHOLD]),
            firing=attributes[semconv.MONITORING_STATE] == semconv.STATE_FIRING,
            time_ns=time_ns,
            feature=attributes.get(semconv.DRIFT_FEATURE),
            attribute=attributes.get(semconv.FAIRNESS_ATTRIBUTE),
            group=attributes.get(semconv.FAIRNESS_GROUP),
            baseline=None if baseline is None else float(baseline),
        )


AlertCallback = Callable[[MonitoringAlert], None]


class Alerter:
    """The state of every (subject, metric) and the report of each crossing."""

    def __init__(
        self,
        tracer: trace.Tracer,
        counters: dict[str, metrics.Counter],
        callback: AlertCallback | None,
        on_failure: Callable[[str, BaseException], None],
        hysteresis: float,
        allowlist: Collection[str] = (),
    ) -> None:
        self._tracer = tracer
        self._counters = counters  # kind -> counter
        self._callback = callback
        self._on_failure = on_failure
        self._hysteresis = hysteresis
        self._allowlist = frozenset(allowlist)
        self._firing: set[tuple] = set()

    def check(self, subject: tuple, rule: Rule, value: float | None, **alert: Any) -> MonitoringAlert | None:
        """Compare `value` with `rule` for `subject` (a hashable identity); report a crossing."""
        if value is None:
            return None
        state = (subject, rule.metric)
        if state in self._firing:
            if not rule.recovered(value):
                return None
            self._firing.discard(state)
        elif rule.violated(value):
            self._firing.add(state)
        else:
            return None
        found = MonitoringAlert(metric=rule.metric, value=value, threshold=rule.threshold,
                                firing=state in self._firing, time_ns=time.time_ns(), **alert)
        self._report(found)
        return found

    def rule(self, metric: str, threshold: float, *, below: bool) -> Rule:
        return Rule(metric, threshold, below=below, hysteresis=self._hysteresis)

    def _report(self, alert: MonitoringAlert) -> None:
        show_group = alert.attribute is not None and set(alert.attribute.split(semconv.INTERSECTION)) <= self._allowlist
        attributes = alert.span_attributes(show_group)
        name = semconv.DRIFT_ALERT_SPAN if alert.kind == "drift" else semconv.QUALITY_ALERT_SPAN
        span = self._tracer.start_span(name, kind=SpanKind.INTERNAL, attributes=attributes, start_time=alert.time_ns)
        span.add_event(name, attributes, timestamp=alert.time_ns)
        span.end(end_time=alert.time_ns)
        level = logging.WARNING if alert.firing else logging.INFO
        _log.log(level, "otel-rai: %s", alert.message(show_group=show_group))
        if alert.firing:
            self._counters[alert.kind].add(1, alert.metric_attributes())
        if self._callback is not None:
            try:
                self._callback(alert)
            except Exception as exc:
                self._on_failure("alert callback", exc)
