"""The fairness monitor: counters, sliding-window gauges and alerts, all on the audit worker thread.

The worker calls `observe` for every decision call, which queues it; `count` counts the queued calls
together, before each outcome task that `record_outcome` queues (the tasks run in order with the calls, so
an outcome recorded right after its decision finds it) and at the end of each cycle (`end_cycle`): only
then are the windows of the attributes that changed summarised, the alerts evaluated and the gauge values
published. The gauges are observable: a metric reader's collection
reads the last published values and computes nothing.
"""

from __future__ import annotations

import collections
import logging
import time
from datetime import timedelta
from itertools import repeat
from typing import Any, Callable, Mapping, Sequence

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.metrics import Observation
from opentelemetry.trace import SpanKind

from otel_rai import _fork, semconv
from otel_rai.audit.local_rows import outcome_digest, outcome_value
from otel_rai.capture.recorder import DecisionCall
from otel_rai.codec.text import printable, text_of
from otel_rai.errors import UnknownDecision
from otel_rai.fairness import metrics as fairness
from otel_rai.fairness.alerts import Alerter, Rule
from otel_rai.fairness.groups import GroupResolver, SensitiveAttribute
from otel_rai.fairness.instruments import SessionInstruments
from otel_rai.fairness.outcomes import DecisionBook, DecisionJournal, OutcomeLookup, OutcomeRule, Remembered
from otel_rai.fairness.window import Window
from otel_rai.settings import FairnessConfig

_log = logging.getLogger(__name__)

FailureHook = Callable[[str, BaseException], None]
Key = tuple[str, str, str]  # model name, model version, sensitive attribute



def rules(config: FairnessConfig) -> tuple[Rule, ...]:
    """The alert rules of `config`'s thresholds."""
    rules = []
    if config.demographic_parity_ratio_min is not None:
        rules.append(Rule(semconv.METRIC_DEMOGRAPHIC_PARITY_RATIO, config.demographic_parity_ratio_min,
                          below=True, hysteresis=config.alert_hysteresis))
    if config.equalized_odds_difference_max is not None:
        rules.append(Rule(semconv.METRIC_EQUALIZED_ODDS_DIFFERENCE, config.equalized_odds_difference_max,
                          below=False, hysteresis=config.alert_hysteresis))
    return tuple(rules)


def new_window(config: FairnessConfig, kinds: int) -> Window:
    """An empty window of `config`'s size (decisions) or duration."""
    if isinstance(config.window, timedelta):
        return Window(kinds, seconds=config.window.total_seconds())
    return Window(kinds, size=config.window)


# --- instruments ---------------------------------------------------------------------------------

_GAUGES = {
    semconv.METRIC_SELECTION_RATE: "Share of positive decisions of a group, over the window",
    semconv.METRIC_TRUE_POSITIVE_RATE: "P[positive decision | actual positive] of a group, over the window",
    semconv.METRIC_FALSE_POSITIVE_RATE: "P[positive decision | actual negative] of a group, over the window",
    semconv.METRIC_DEMOGRAPHIC_PARITY_DIFFERENCE: "Largest minus smallest group selection rate",
    semconv.METRIC_DEMOGRAPHIC_PARITY_RATIO: "Smallest over largest group selection rate",
    semconv.METRIC_EQUALIZED_ODDS_DIFFERENCE: "Larger of the TPR and FPR differences between groups",
    semconv.METRIC_EQUALIZED_ODDS_RATIO: "Smaller of the TPR and FPR ratios between groups",
}
_PER_GROUP = (semconv.METRIC_SELECTION_RATE, semconv.METRIC_TRUE_POSITIVE_RATE, semconv.METRIC_FALSE_POSITIVE_RATE)

Published = Mapping[Key, tuple[int, Mapping[str, list[Observation]]]]


class _Instruments(SessionInstruments):
    """The fairness instruments of one meter provider; each session attaches itself as `source`."""

    def __init__(self, meter: metrics.Meter) -> None:
        self.decisions = meter.create_counter(
            semconv.METRIC_DECISIONS, unit="{decision}",
            description="Decisions per model version, sensitive attribute, group and outcome")
        self.outcomes = meter.create_counter(
            semconv.METRIC_OUTCOMES, unit="{outcome}",
            description="Decisions with a recorded ground truth, per group, predicted and true outcome")
        self.alerts = meter.create_counter(
            semconv.METRIC_ALERT, unit="{alert}", description="Fairness threshold crossings into violation")
        super().__init__(meter, _GAUGES, {})


# --- the monitor ---------------------------------------------------------------------------------


class _Track:
    """The windows of one model version and sensitive attribute."""

    def __init__(self, config: FairnessConfig) -> None:
        self.decisions = new_window(config, 2)
        self.outcomes = new_window(config, 4)

    def counts(self) -> dict[str, fairness.GroupCounts]:
        groups: dict[str, fairness.GroupCounts] = collections.defaultdict(fairness.GroupCounts)
        for group, (negative, positive) in self.decisions.counts.items():
            groups[group].decisions = negative + positive
            groups[group].selected = positive
        for group, cells in self.outcomes.counts.items():
            c = groups[group]
            c.tn, c.fn, c.fp, c.tp = cells  # kind = 2 * predicted + actual
        return groups


class _Run:
    """The decisions of one model version's calls in one `FairnessMonitor.count`, grouped by the same
    attributes: what their book entries and counters are written from, together."""

    __slots__ = ("model", "version", "truth", "ids", "predicted", "labels", "times", "at")

    def __init__(self, model: str, version: str, truth: Any, groups: Mapping[str, list[str]]) -> None:
        self.model, self.version, self.truth = model, version, truth
        self.ids: list[str] = []
        self.predicted: list[bool] = []
        self.labels: dict[str, list[str]] = {attribute: [] for attribute in groups}
        self.times: list[int] = []  # each decision's time
        self.at: list[int] = []  # each decision's place among the decisions counted together

    def add(self, call: DecisionCall, predicted: list[bool], groups: Mapping[str, list[str]], at: int) -> None:
        """The call's decisions, the `at`-th counted onwards."""
        n = len(predicted)
        self.ids += call.ids
        self.predicted += predicted
        self.times += repeat(call.end_ns, n)
        self.at += range(at, at + n)
        for attribute, labels in groups.items():
            self.labels[attribute] += labels


#: A call whose flags `OutcomeRule.predicted_many` could not read (they are read again alone).
_UNREAD: Any = object()


def _entries(runs: list[_Run], attribute: str) -> tuple[Sequence[str], Sequence[bool], Sequence[int]]:
    """A window's new entries (groups, flags, times) from the runs that share it, in the order of their
    calls: a window by size keeps the newest, and one by time expires from the oldest."""
    if len(runs) == 1:
        run = runs[0]
        return run.labels[attribute], run.predicted, run.times
    merged = sorted(entry for run in runs for entry in zip(run.at, run.labels[attribute], run.predicted, run.times))
    _, groups, flags, times = zip(*merged)
    return groups, flags, times


def _outcome(flag: bool) -> str:
    return semconv.OUTCOME_POSITIVE if flag else semconv.OUTCOME_NEGATIVE


class FairnessMonitor:
    """Turns decisions and their outcomes into fairness metrics and alerts (audit worker thread only)."""

    def __init__(
        self,
        config: FairnessConfig,
        attributes: Sequence[SensitiveAttribute],
        meter_provider: metrics.MeterProvider,
        tracer: trace.Tracer,
        on_failure: FailureHook,
        lookup: OutcomeLookup | None = None,
        journal: DecisionJournal | None = None,
        outcome_key: bytes | None = None,
    ) -> None:
        self.config = config
        self._outcome_key = outcome_key  # keys the digest of each outcome span (audit.local_rows)
        self.rule = OutcomeRule(config.positive_label, config.score_threshold)
        self.lookup = lookup
        self.journal = journal
        self._groups = GroupResolver(attributes, config.max_groups)
        self._on_failure = on_failure
        self._tracer = tracer
        self._instruments = _Instruments.of(meter_provider)
        self._attrs: dict[tuple, dict[str, str]] = {}
        self._warned: set[tuple[str, str]] = set()
        window = config.window
        self._horizon_ns = int(window.total_seconds() * 1e9) if isinstance(window, timedelta) else None
        self._reset()
        _fork.reset_in_child(self)
        self._instruments.source = self._observations

    def _reset(self) -> None:
        """Empty windows, counts and memory; also in a forked child, a replica of its own."""
        config = self.config
        self._alerter = Alerter(rules(config), self._tracer, self._instruments.alerts, config.on_alert,
                                self._on_failure)
        self._book = DecisionBook(config.max_remembered)
        self._observed: list[DecisionCall] = []  # calls to `count`
        self._tracks: dict[Key, _Track] = {}
        self._dirty: set[Key] = set()
        self._decision_counts: collections.Counter[tuple] = collections.Counter()
        self._outcome_counts: collections.Counter[tuple] = collections.Counter()
        self._published: Published = {}

    # --- worker thread ---------------------------------------------------------------------------

    def _groupable(self, call: DecisionCall) -> bool:
        """Whether the call's decisions can have groups: it succeeded, and attributes are configured or given."""
        return call.error is None and bool(self._groups.active or call.groups)

    def prepare(self, calls: Sequence[DecisionCall]) -> None:
        """Before the calls' spans are built: resolve their groups (``call.group_labels``), so that each
        span can carry their digest. `observe` counts them afterwards."""
        for call in calls:
            if self._groupable(call):
                try:
                    call.group_labels = self._groups.resolve(call)
                except Exception as exc:
                    self._on_failure("fairness", exc)

    def observe(self, calls: Sequence[DecisionCall]) -> None:
        """Queue the calls' decisions for counting (`count`), for every sensitive attribute they can be
        grouped by: the worker's calls are counted together, at the next outcome or the cycle's end."""
        self._observed += filter(self._groupable, calls)

    def count(self) -> None:
        """Count the queued calls' decisions: windows, counters and the decision book, with the shared
        work (the book, the counters) done once per model version for all of them."""
        if not self._observed:  # each outcome task counts first: most find nothing queued
            return
        calls, self._observed = self._observed, []
        runs: dict[tuple, _Run] = {}
        try:
            flags = self.rule.predicted_many(calls)
        except Exception:  # each call is then read alone, and fails (and is counted) alone
            flags = [_UNREAD] * len(calls)
        # The report keeps the groups of every call that has them, counted or not: its span carries their
        # digest, which `verify-chain` checks the store's rows against. The counted ones are noted by run.
        uncounted: list[tuple[list[str], dict[str, list[str]]]] = []
        at = 0
        for call, predicted in zip(calls, flags):
            groups = None
            try:
                groups = call.group_labels if call.group_labels is not None else self._groups.resolve(call)
                if not groups:
                    continue
                if predicted is _UNREAD:
                    predicted = self.rule.predicted(call)
                if predicted is None or len(predicted) != len(call.ids):
                    uncounted.append((call.ids, groups))
                    self._warn_once(call.info.name, call.operation)
                    continue
                info = call.info
                run_key = (info.name, info.version, tuple(groups), id(info))
                run = runs.get(run_key)
                if run is None:
                    run = runs[run_key] = _Run(info.name, info.version, self.rule.truth_for(call), groups)
                run.add(call, predicted, groups, at)
                at += len(predicted)
            except Exception as exc:
                if groups:
                    uncounted.append((call.ids, groups))
                self._on_failure("fairness", exc)
        if self.journal is not None:
            for ids, groups in uncounted:
                try:
                    self.journal.note_groups(ids, groups)
                except Exception as exc:
                    self._on_failure("fairness", exc)
        windows: dict[Key, list[_Run]] = {}
        counts = self._decision_counts
        for run in runs.values():
            try:
                if self.journal is not None:
                    self.journal.note_groups(run.ids, run.labels)
                for attribute, labels in run.labels.items():
                    key = (run.model, run.version, attribute)
                    windows.setdefault(key, []).append(run)
                    counts.update(zip(repeat(key), labels, run.predicted))  # counted in C
                    self._dirty.add(key)
                self._book.remember(run.ids, run.model, run.version, run.labels, run.predicted, run.truth)
            except Exception as exc:
                self._on_failure("fairness", exc)
        for key, shared in windows.items():
            try:
                self._track(key).decisions.add_many(*_entries(shared, key[2]))
            except Exception as exc:
                self._on_failure("fairness", exc)

    def apply_outcome(self, decision_id: str, y_true: Any, given: Mapping[str, Any], time_ns: int) -> None:
        """Count the ground truth of one decision (an outcome task: see `outcome_task`)."""
        self.count()  # the decisions queued before it, which it may be the outcome of
        try:
            if self.journal is not None:
                self.journal.note_outcome(decision_id, y_true, time_ns)
            self._seal_outcome(decision_id, y_true, time_ns)
            decision = self._book.pop(decision_id) or self._looked_up(decision_id, given)
            decision = self._with_given(decision, given)
            actual = decision.truth(y_true)
            for attribute, group in decision.groups.items():
                key = (decision.model, decision.version, attribute)
                self._outcome_counts[(key, group, decision.predicted, actual)] += 1
                self._track(key).outcomes.add(group, 2 * decision.predicted + actual, time_ns)
                self._dirty.add(key)
        except Exception as exc:
            self._on_failure("outcome", exc)

    def end_cycle(self) -> None:
        """Add the cycle's counts to the counters; summarise the windows that changed, raise alerts on
        crossings, publish the gauge values."""
        self.count()
        try:
            self._add_counts()
            if self._horizon_ns is not None:
                now = time.time_ns()
                for key, track in self._tracks.items():
                    if track.decisions.expire(now) | track.outcomes.expire(now):
                        self._dirty.add(key)
            if not self._dirty:
                return
            published = dict(self._published)
            for key in self._dirty:
                published[key] = self._summarise(key)
            self._dirty.clear()
            self._published = published
        except Exception as exc:
            self._on_failure("fairness", exc)

    def _seal_outcome(self, decision_id: str, y_true: Any, time_ns: int) -> None:
        """An outcome span in the chain: the decision id and a keyed digest of the ground truth as the
        store keeps it, so that an edited or deleted outcome shows (docs/audit-trail.md)."""
        attributes: dict[str, Any] = {semconv.OUTCOME_DECISION_ID: decision_id}
        if self._outcome_key is not None:
            attributes[semconv.OUTCOME_DIGEST] = outcome_digest(self._outcome_key, decision_id, outcome_value(y_true))
        span = self._tracer.start_span(semconv.OUTCOME_SPAN, context=otel_context.Context(), kind=SpanKind.INTERNAL,
                                       attributes=attributes, start_time=time_ns)
        span.end(end_time=time_ns)

    def _add_counts(self) -> None:
        """One counter add per series and cycle rather than per decision: adds cost ~3 µs each."""
        for (key, group, flag), n in self._decision_counts.items():
            self._instruments.decisions.add(n, self._attributes(key, group, flag))
        for (key, group, flag, actual), n in self._outcome_counts.items():
            self._instruments.outcomes.add(n, self._attributes(key, group, flag, actual))
        self._decision_counts.clear()
        self._outcome_counts.clear()

    def _summarise(self, key: Key) -> tuple[int, dict[str, list[Observation]]]:
        track = self._tracks[key]
        summary = fairness.summarize(track.counts(), self.config.min_group_size)
        base = dict(zip((semconv.MODEL_NAME, semconv.MODEL_VERSION, semconv.FAIRNESS_ATTRIBUTE), key))
        observations: dict[str, list[Observation]] = {}
        # Summary's fields are named after the last segment of the metric names.
        for metric in _PER_GROUP:
            rates = getattr(summary, metric.rsplit(".", 1)[1])
            observations[metric] = [Observation(r, {**base, semconv.FAIRNESS_GROUP: g}) for g, r in rates.items()]
        values = {metric: getattr(summary, metric.rsplit(".", 1)[1]) for metric in _GAUGES if metric not in _PER_GROUP}
        for metric, value in values.items():
            observations[metric] = [] if value is None else [Observation(value, base)]
        self._alerter.update(key, values)
        newest = max(track.decisions.newest_ns, track.outcomes.newest_ns)
        return newest, observations

    def _track(self, key: Key) -> _Track:
        track = self._tracks.get(key)
        if track is None:
            track = self._tracks[key] = _Track(self.config)
        return track

    def _attributes(self, key: Key, group: str, predicted: bool, actual: bool | None = None) -> dict[str, str]:
        """The (cached) attributes of one counter series."""
        cache_key = (key, group, predicted, actual)
        attributes = self._attrs.get(cache_key)
        if attributes is None:
            attributes = {
                semconv.MODEL_NAME: key[0],
                semconv.MODEL_VERSION: key[1],
                semconv.FAIRNESS_ATTRIBUTE: key[2],
                semconv.FAIRNESS_GROUP: group,
                semconv.OUTCOME: _outcome(predicted),
            }
            if actual is not None:
                attributes[semconv.TRUE_OUTCOME] = _outcome(actual)
            self._attrs[cache_key] = attributes
        return attributes

    def _looked_up(self, decision_id: str, given: Mapping[str, Any]) -> Remembered:
        """A decision the book does not hold: from the lookup hook, else from the caller's arguments."""
        known = self.lookup(decision_id) if self.lookup is not None else None
        if known is not None:
            predicted = self.rule.predicted_from_value(known.prediction, known.classes)
            if predicted is None:
                raise UnknownDecision("the positive label of the looked-up decision is unknown")
            groups = self._groups.from_mapping(known.groups)
            return Remembered(known.model, known.version, groups, predicted, self.rule.default_truth(known.classes))
        missing = [k for k in ("model", "version", "prediction", "group") if given.get(k) is None]
        if missing:
            raise UnknownDecision(f"decision not remembered; pass {', '.join(missing)} to record_outcome")
        predicted = self.rule.predicted_from_value(given["prediction"])
        if predicted is None:
            raise UnknownDecision("no positive label: set FairnessConfig(positive_label=...)")
        return Remembered(given["model"], given["version"], {}, predicted, self.rule.default_truth())

    def _with_given(self, decision: Remembered, given: Mapping[str, Any]) -> Remembered:
        """`decision` with what the caller passed explicitly taking precedence."""
        groups = self._groups.from_mapping(given["group"]) if given.get("group") is not None else decision.groups
        predicted = decision.predicted
        if given.get("prediction") is not None:
            flag = self.rule.predicted_from_value(given["prediction"])
            predicted = predicted if flag is None else flag
        if not groups:
            raise UnknownDecision("no group known for the decision; pass group= to record_outcome")
        return Remembered(given.get("model") or decision.model, given.get("version") or decision.version,
                          groups, predicted, decision.truth)

    def _warn_once(self, model: str, operation: str) -> None:
        if (model, operation) not in self._warned:
            self._warned.add((model, operation))
            _log.warning(
                "otel-rai: cannot tell positive from negative decisions of model %s (%s); set "
                "FairnessConfig(positive_label=...) or score_threshold. Its decisions are not counted "
                "for fairness", printable(model), operation,
            )

    # --- a metric reader's thread ----------------------------------------------------------------

    def _observations(self, metric: str) -> list[Observation]:
        published = self._published
        horizon = None if self._horizon_ns is None else time.time_ns() - self._horizon_ns
        out: list[Observation] = []
        for newest, observations in published.values():
            if horizon is None or newest >= horizon:  # a window that has wholly expired shows nothing
                out.extend(observations.get(metric, ()))
        return out

    # --- any thread --------------------------------------------------------------------------------

    def outcome_task(self, decision_id: Any, y_true: Any, given: Mapping[str, Any]) -> Callable[[], None]:
        """Check `record_outcome`'s arguments (`given`: its keywords) on the caller's thread; the task
        runs on the worker."""
        group = given.get("group")
        if group is not None and (
            not isinstance(group, Mapping) or not all(isinstance(k, str) for k in group)
        ):
            raise ValueError("otel-rai: record_outcome(): group must map attribute names to values")
        if isinstance(y_true, (list, tuple, dict, set)) or getattr(y_true, "ndim", 0):
            raise ValueError(f"otel-rai: record_outcome(): y_true must be one value, not a {type(y_true).__name__}")
        version = given.get("version")
        given = {**given, "group": None if group is None else dict(group),
                 "version": None if version is None else str(version)}
        decision_id, now = text_of(decision_id), time.time_ns()
        return lambda: self.apply_outcome(decision_id, y_true, given, now)

    def close(self) -> None:
        """Stop publishing this monitor's gauges (unless another session has taken them over)."""
        if self._instruments.source == self._observations:
            self._instruments.source = None
