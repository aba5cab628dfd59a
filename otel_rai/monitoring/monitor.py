"""The quality and drift monitor: windows, gauges and alerts, on the audit worker thread.

The worker calls `observe` for every decision call and runs the label tasks that `record_outcome`
queues (`label_task`); both only queue. `end_cycle`, once per worker cycle, does the work for the
whole cycle at once, per model version: reads and bins the inputs of all its calls in one pass, writes
the rows into the window, then counts the cycle's labels. Gauges are observable: a metric reader reads
the values last published, which are recomputed at most once a second per model version.

The window of a model version holds its newest N decisions (or those of the last T seconds, at most
``max_window_rows``), each as a few numbers: its bins, predicted class, probabilities, groups and, once
it arrives, its label. Histograms and quality counts over the window are kept running: a decision adds
to them as it enters, and is subtracted as it leaves.

**A label counts in the window of its decision.** A label joins the row of its decision: if the decision
is still in the window, the window's quality counts gain it; if it has left, the current window is not
changed (its decisions are not that one), and the label counts in the cumulative ``ml.quality.labels``
counter and the label delay histogram only. The windows that ``otel-rai monitor`` and the report compute
from the store group decisions by decision time, so there a late label lands in its decision's window.

**The baseline** of the quality alerts is the quality of the reference data when it came with labels
(`register_model(..., reference_labels=y)`), else the quality of the model version's first window of
decisions (its first N, or those of its first T seconds), whose labels keep counting as they arrive.

**Drift snapshots** (the reference and window histograms) go to the session's local store through a
`SnapshotJournal`, every ``snapshot_interval`` seconds in which the window changed and at close.
"""

from __future__ import annotations

import collections
import itertools
import logging
import math
import struct
import time
from dataclasses import dataclass
from datetime import timedelta
from itertools import repeat
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence

import numpy as np
from opentelemetry import metrics, trace
from opentelemetry.metrics import Observation
from sklearn.base import is_regressor

from otel_rai import _fork, semconv
from otel_rai.capture import models
from otel_rai.capture.recorder import DecisionCall
from otel_rai.fairness.groups import GroupResolver, SensitiveAttribute
from otel_rai.fairness.instruments import SessionInstruments
from otel_rai.fairness.outcomes import OutcomeRule
from otel_rai.monitoring import estimate, quality, snapshot
from otel_rai.monitoring import profile as profiles
from otel_rai.monitoring import reference as references
from otel_rai.monitoring.alerts import Alerter
from otel_rai.monitoring.drift import figures as drift_figures
from otel_rai.monitoring.profile import Binner, Profile
from otel_rai.monitoring.quality import Classes, ClassificationCounts, RegressionCounts
from otel_rai.monitoring.reference import FitSamples, Layout, Outputs
from otel_rai.settings import FairnessConfig, MonitoringConfig

_log = logging.getLogger(__name__)

FailureHook = Callable[[str, BaseException], None]
Key = tuple[str, str]  # model name, model version
#: A quality slice: None for every decision, else (sensitive attribute, group index).
Slice = tuple[str, int] | None
Counts = ClassificationCounts | RegressionCounts

#: A model version's gauges are recomputed at most this often (they are read every 15 s or so).
PUBLISH_EVERY_S = 1.0
#: Queued calls are counted at a cycle's end once this long has passed since the last count (the gauges
#: change no more often), once `COUNT_AT` of them wait (the worker's own wake-up size), or when a label or
#: a flush waits; until then they wait. A count has a fixed cost of about a millisecond, several while the
#: application's threads run beside it (bench/RESULTS.md).
COUNT_EVERY_S = PUBLISH_EVERY_S
COUNT_AT = 256
#: Model versions monitored at once; the least recently active one is forgotten beyond this.
MAX_TRACKS = 64
#: Buckets of the label delay histogram, in seconds: a minute to a quarter.
LABEL_DELAY_BUCKETS = (60.0, 600.0, 3600.0, 6 * 3600.0, 86400.0, 7 * 86400.0, 30 * 86400.0, 90 * 86400.0)
_NOT_BINNED = np.iinfo(np.uint16).max
#: Slots a window and a baseline start with; they double as decisions come, up to the window's limit.
_FIRST_ROWS = 1024
#: Column index objects remembered per model version (a service reuses a few; the cache starts over beyond).
_MAX_INDEXES = 64


class SnapshotJournal(Protocol):
    """Keeps drift snapshots for ``otel-rai monitor`` and the report (the local audit store's sink)."""

    def note_snapshot(self, model: str, version: str, time_ns: int, histograms: Mapping[str, Any]) -> None: ...


# --- instruments -------------------------------------------------------------------------------------

#: Quality gauges: metric -> (field of `quality.Quality`, ``ml.quality.average`` or None).
_QUALITY = {
    semconv.METRIC_QUALITY_ACCURACY: (("accuracy", None),),
    semconv.METRIC_QUALITY_PRECISION: (("precision", semconv.AVERAGE_BINARY),
                                       ("precision_macro", semconv.AVERAGE_MACRO)),
    semconv.METRIC_QUALITY_RECALL: (("recall", semconv.AVERAGE_BINARY), ("recall_macro", semconv.AVERAGE_MACRO)),
    semconv.METRIC_QUALITY_F1: (("f1", semconv.AVERAGE_BINARY), ("f1_macro", semconv.AVERAGE_MACRO)),
    semconv.METRIC_QUALITY_ROC_AUC: (("roc_auc", None),),
    semconv.METRIC_QUALITY_LOG_LOSS: (("log_loss", None),),
    semconv.METRIC_QUALITY_BRIER: (("brier_score", None),),
    semconv.METRIC_QUALITY_ECE: (("calibration_error", None),),
    semconv.METRIC_QUALITY_MAE: (("mae", None),),
    semconv.METRIC_QUALITY_RMSE: (("rmse", None),),
    semconv.METRIC_QUALITY_R2: (("r2", None),),
}
_DRIFT = {
    semconv.METRIC_DRIFT_PSI: "psi",
    semconv.METRIC_DRIFT_JS_DISTANCE: "js_distance",
    semconv.METRIC_DRIFT_WASSERSTEIN: "wasserstein",
    semconv.METRIC_DRIFT_CHI2_PVALUE: "chi2_pvalue",
}
_GAUGES = {
    **{m: "Over the window of labelled decisions (docs/monitoring.md)" for m in _QUALITY},
    semconv.METRIC_QUALITY_DECISIONS: "Decisions in the window, labelled or not",
    semconv.METRIC_QUALITY_ESTIMATED_ACCURACY: "Accuracy estimated from the probabilities (CBPE)",
    semconv.METRIC_QUALITY_ESTIMATED_ROC_AUC: "ROC AUC estimated from the probabilities (CBPE)",
    **{m: "The window against the reference profile (docs/monitoring.md)" for m in _DRIFT},
    semconv.METRIC_DRIFT_MISSING_RATE: "Share of missing values",
}
_UNITS = {semconv.METRIC_QUALITY_DECISIONS: "{decision}"}


class _Instruments(SessionInstruments):
    """The quality and drift instruments of one meter provider; each session attaches itself as `source`."""

    def __init__(self, meter: metrics.Meter) -> None:
        self.labels = meter.create_counter(semconv.METRIC_QUALITY_LABELS, unit="{label}",
                                           description="Ground truths recorded, by arrival")
        self.delay = meter.create_histogram(semconv.METRIC_QUALITY_LABEL_DELAY, unit="s",
                                            description="From a decision to the arrival of its ground truth",
                                            explicit_bucket_boundaries_advisory=list(LABEL_DELAY_BUCKETS))
        self.alerts = {
            "quality": meter.create_counter(semconv.METRIC_QUALITY_ALERT, unit="{alert}",
                                            description="Quality drops below the baseline minus the margin"),
            "drift": meter.create_counter(semconv.METRIC_DRIFT_ALERT, unit="{alert}",
                                          description="Feature PSI crossings above the threshold"),
        }
        super().__init__(meter, _GAUGES, _UNITS)


# --- rows ---------------------------------------------------------------------------------------------


class _Rows:
    """Decisions as numbers, one slot each: slot = seq % capacity (the window), or seq (the baseline)."""

    def __init__(self, capacity: int, classes: int, regressor: bool, subjects: int) -> None:
        self.capacity = capacity
        self._shape = (classes, regressor, subjects)
        self.seq = np.full(capacity, -1, np.int64)
        self.time = np.zeros(capacity, np.int64)
        self.predicted = np.full(capacity, -1, np.int64)
        self.values = np.zeros(capacity) if regressor else None
        self.proba = np.zeros((capacity, classes)) if classes else None
        self.scored = np.zeros(capacity, bool)
        self.truth = np.zeros(capacity) if regressor else np.full(capacity, -1, np.int64)
        self.labelled = np.zeros(capacity, bool)
        self.bins = np.zeros((capacity, subjects), np.uint16) if subjects else None
        self.binned = np.zeros(capacity, bool)
        self.groups: dict[str, np.ndarray] = {}

    def group_column(self, attribute: str) -> np.ndarray:
        column = self.groups.get(attribute)
        if column is None:
            column = self.groups[attribute] = np.full(self.capacity, -1, np.int32)
        return column

    def clear(self, slots: np.ndarray) -> None:
        self.seq[slots] = -1
        self.labelled[slots] = False
        self.scored[slots] = False
        self.binned[slots] = False
        for column in self.groups.values():
            column[slots] = -1

    def resized(self, capacity: int, seqs: np.ndarray) -> _Rows:
        """The same rows in `capacity` slots: those holding `seqs` move from seq % the old capacity to
        seq % the new one (for the baseline's identity slots, seq stays seq)."""
        grown = _Rows(capacity, *self._shape)
        old, new = seqs % self.capacity, seqs % capacity
        for name in ("seq", "time", "predicted", "values", "proba", "scored", "truth", "labelled", "bins", "binned"):
            source = getattr(self, name)
            if source is not None:
                getattr(grown, name)[new] = source[old]
        for attribute, column in self.groups.items():
            grown.group_column(attribute)[new] = column[old]
        return grown

    def nbytes(self) -> int:
        arrays = [self.seq, self.time, self.predicted, self.values, self.proba, self.scored, self.truth,
                  self.labelled, self.bins, self.binned, *self.groups.values()]
        return sum(a.nbytes for a in arrays if a is not None)


@dataclass
class _Batch:
    """The rows of one cycle's calls of one model version, concatenated."""

    time: np.ndarray
    predicted: np.ndarray | None
    values: np.ndarray | None
    proba: np.ndarray | None  # rows × classes, NaN rows where the call had no probabilities
    scored: np.ndarray
    bins: np.ndarray | None  # rows × subjects, local bin indices; _NOT_BINNED where not read
    groups: dict[str, np.ndarray]  # attribute -> group index per row (-1: none)
    ids: list[str]

    def __len__(self) -> int:
        return len(self.time)


class _Track:
    """Everything monitored about one model version."""

    def __init__(self, key: Key, info: models.ModelInfo, model: Any, window: int | timedelta,
                 config: MonitoringConfig, positive_label: Any) -> None:
        self.key = key
        self.serial = -1  # the monitor's number for it (its label book's entries name it so)
        self.classes = Classes(info.classes) if info.classes is not None else None
        self.regressor = self.classes is None and _is_regressor(model)
        self.positive: int | None = None
        if self.classes is not None and len(self.classes) == 2:
            label = OutcomeRule(positive_label).label_for(info.classes)
            found = self.classes.index(label)
            self.positive = found if found >= 0 else 1
        k = len(self.classes) if self.classes is not None else 0
        self.seconds = window.total_seconds() if isinstance(window, timedelta) else None
        #: The most decisions the window (and the baseline's first window) holds; storage grows up to it.
        self.limit = config.max_window_rows if self.seconds is not None else int(window)
        capacity = min(self.limit, _FIRST_ROWS)
        self.profile: Profile | None = None
        self.binner: Binner | None = None
        self.layouts: dict[tuple, Layout | None] = {}
        self.indexes: dict[int, tuple[Any, Layout | None]] = {}  # id(column index) -> (index, layout)
        self.sensitive_columns: dict[str, int] | None = None  # see QualityDriftMonitor._sensitive_read
        self.arrow_names: tuple[Any, Layout | None] | None = None  # the last Arrow column names, their layout
        self.subjects = 0
        self.offsets = np.zeros(0, np.int64)
        self.drift = np.zeros(0, np.int64)
        self.window = _Rows(capacity, k, self.regressor, 0)
        self.base: _Rows | None = _Rows(capacity, k, self.regressor, 0)
        self.base_end: int | None = self.limit if self.seconds is None else None
        self.lo = self.hi = 0
        self.current: dict[Slice, Counts] = {}
        self.baseline: dict[Slice, Counts] = {}
        self.estimate = estimate.EstimateCounts(k) if k else None
        self.group_index: dict[str, dict[str, int]] = {}
        self.group_label: dict[str, list[str]] = {}
        self.dirty = True
        self.snapshot_due = True
        self.published_at = 0.0
        self.snapshot_at = 0.0
        self.active_at = time.monotonic()
        self.observations: dict[str, list[Observation]] = {}

    def counts(self) -> Counts:
        return RegressionCounts() if self.regressor else ClassificationCounts(len(self.classes))

    @property
    def measurable(self) -> bool:
        """Whether its outputs can be counted for quality (a classifier or regressor)."""
        return self.classes is not None or self.regressor

    def use_profile(self, profile: Profile) -> None:
        self.profile = profile
        subjects = profile.subjects()
        self.binner = Binner(profile.features)
        self.subjects = len(subjects)
        sizes = np.array([s.bins for s in subjects], np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.drift = np.zeros(int(sizes.sum()), np.int64)
        k = len(self.classes) if self.classes is not None else 0
        self.window = _Rows(self.window.capacity, k, self.regressor, self.subjects)

    def group_of(self, attribute: str, labels: Sequence[str]) -> np.ndarray:
        """The index of each group label (new labels get the next index)."""
        index = self.group_index.setdefault(attribute, {})
        names = self.group_label.setdefault(attribute, [])
        for value in set(labels) - index.keys():
            index[value] = len(names)
            names.append(value)
        return np.fromiter(map(index.__getitem__, labels), np.int32, len(labels))

    def nbytes(self) -> int:
        counts = [*self.current.values(), *self.baseline.values()]
        held = sum(_counts_nbytes(c) for c in counts) + self.window.nbytes() + self.drift.nbytes
        if self.base is not None:
            held += self.base.nbytes()
        if self.estimate is not None:
            held += self.estimate.histogram.nbytes + self.estimate.probability.nbytes
        return held + (self.profile.nbytes() if self.profile is not None else 0)


def _counts_nbytes(c: Counts) -> int:
    if isinstance(c, RegressionCounts):
        return 48
    return c.confusion.nbytes + c.auc.nbytes + c.ece_count.nbytes * 3


def _is_regressor(model: Any) -> bool:
    try:
        return bool(is_regressor(model))
    except Exception:  # an estimator-like object without scikit-learn tags
        return False


# --- the monitor --------------------------------------------------------------------------------------


class QualityDriftMonitor:
    """Turns decisions and their labels into quality and drift metrics and alerts (worker thread)."""

    def __init__(
        self,
        config: MonitoringConfig,
        fairness: FairnessConfig,
        attributes: Sequence[SensitiveAttribute],
        meter_provider: metrics.MeterProvider,
        tracer: trace.Tracer,
        on_failure: FailureHook,
        allowlist: Iterable[str] = (),
        journal: SnapshotJournal | None = None,
    ) -> None:
        self.config = config
        self._journal = journal
        self._window = config.window if config.window is not None else fairness.window
        self._positive_label = fairness.positive_label
        self._attributes = tuple(attributes)
        self._max_groups = fairness.max_groups
        self._tracer = tracer
        self._on_failure = on_failure
        self._allowlist = frozenset(allowlist)
        self._instruments = _Instruments.of(meter_provider)
        self.fit_samples = FitSamples(config)
        self._warned: set[tuple[str, ...]] = set()
        self._reset()
        _fork.reset_in_child(self)
        if config.enabled:
            self._instruments.source = self._observations

    def _reset(self) -> None:
        """Empty windows and memory; also in a forked child, a replica of its own."""
        self._alerter = Alerter(self._tracer, self._instruments.alerts, self.config.on_alert, self._on_failure,
                                self.config.alert_hysteresis, self._allowlist)
        # The fairness monitor resolves the same calls with the same cap, and says what it drops.
        self._groups = GroupResolver(self._attributes, self._max_groups, warn=False)
        self._tracks: dict[Key, _Track] = {}
        # The label book names a track by a number, not the object: its entries then pack into bytes
        # (`_ENTRY`), which the garbage collector never tracks (100k tracked entries made every full
        # collection of the process about 60 ms longer).
        self._serials = itertools.count()
        self._by_serial: dict[int, _Track] = {}
        self._calls: list[DecisionCall] = []
        self._labels: list[tuple[str, Any, int]] = []
        self._counted_at = -math.inf  # monotonic time of the last count: the first cycle counts
        self._book: dict[str, bytes] = {}  # id -> `_ENTRY`: (track serial, seq, time, predicted)
        self._book_order: collections.deque[list[str]] = collections.deque()
        self._book_size = 0
        self._published: dict[Key, dict[str, list[Observation]]] = {}

    # --- worker thread: queueing ------------------------------------------------------------------

    def observe(self, calls: Sequence[DecisionCall]) -> None:
        """Queue decision calls for this cycle (a call hook of the audit worker)."""
        if self.config.enabled:
            self._calls += [c for c in calls if c.error is None and c.output is not None and c.ids]

    def label_task(self, decision_id: Any, y_true: Any, time_ns: int) -> Callable[[], None]:
        """The worker task of one `record_outcome`: queue the label for this cycle."""
        decision_id = str(decision_id)

        def task() -> None:
            if self.config.enabled:
                self._labels.append((decision_id, y_true, time_ns))

        return task

    def fit_observer(self, estimator: Any, method: str, args: tuple, kwargs: dict, elapsed_ns: int) -> None:
        """A fit observer: keep a sample of the training data as the estimator's reference."""
        if self.config.enabled:
            self.fit_samples.observe(estimator, method, args, kwargs, elapsed_ns)

    # --- worker thread: the cycle -----------------------------------------------------------------

    def end_cycle(self, *, force: bool = False, flushing: bool = False) -> None:
        """Count the queued calls and labels when due (`COUNT_EVERY_S`; `flushing`: a flush waits); publish
        and alert where due; emit due snapshots."""
        clock = time.monotonic()
        if not (force or flushing or self._labels or len(self._calls) >= COUNT_AT
                or clock - self._counted_at >= COUNT_EVERY_S):
            return
        self._counted_at = clock
        calls, self._calls = self._calls, []
        labels, self._labels = self._labels, []
        try:
            by_track: dict[Key, list[DecisionCall]] = {}
            for call in calls:
                by_track.setdefault((call.info.name, call.info.version), []).append(call)
            for key, group in by_track.items():
                self._add_rows(self._track(key, group[0]), group)
            if labels:
                self._add_labels(labels)
            now = time.time_ns()
            for track in self._tracks.values():
                if track.seconds is not None:
                    self._expire(track, now)
                if track.dirty and (force or clock - track.published_at >= PUBLISH_EVERY_S):
                    self._publish(track)
                    track.published_at = clock
                if track.profile is not None and track.snapshot_due and (
                        force or clock - track.snapshot_at >= self.config.snapshot_interval):
                    self._snapshot(track)
                    track.snapshot_at = clock
        except Exception as exc:
            self._on_failure("monitoring", exc)

    def _track(self, key: Key, call: DecisionCall) -> _Track:
        track = self._tracks.get(key)
        if track is None:
            if len(self._tracks) >= MAX_TRACKS:
                oldest = min(self._tracks.values(), key=lambda t: t.active_at)
                del self._tracks[oldest.key]
                self._by_serial.pop(oldest.serial, None)
                self._published = {k: v for k, v in self._published.items() if k != oldest.key}
            track = _Track(key, call.info, call.model, self._window, self.config, self._positive_label)
            track.serial = next(self._serials)
            self._tracks[key] = track
            self._by_serial[track.serial] = track
            self._attach_reference(track, call)
        track.active_at = time.monotonic()
        return track

    def _attach_reference(self, track: _Track, call: DecisionCall) -> None:
        registration = call.info.registration
        reference, labels = registration.reference, registration.reference_labels
        source = "reference"
        if reference is None:
            reference, labels, source = self.fit_samples.take(call.model), None, "fit"
            if isinstance(reference, Profile):  # built for another version of the same fit
                track.use_profile(reference)
                return
        if reference is None:
            reference, labels, source = registration.background, None, "background"
        if reference is None:
            return
        try:
            profile, outputs = references.build(call.model, call.info, reference, source, self.config,
                                                track.classes, track.regressor, track.positive)
        except Exception as exc:
            self._on_failure("reference", exc)
            return
        track.use_profile(profile)
        if source == "fit":
            self.fit_samples.built(call.model, reference, profile)
        if labels is not None and outputs is not None and track.measurable:
            self._reference_baseline(track, call, reference, labels, outputs)

    def _reference_baseline(self, track: _Track, call: DecisionCall, X: Any, y: Any, outputs: Outputs) -> None:
        """The baseline from labelled reference rows: their quality, overall and per group."""
        # The same seeded sample of rows as the profile's (it depends on the number of rows only).
        X = references.sample(X, self.config.max_reference_rows)
        y = references.sample(np.asarray(y).reshape(-1, 1), self.config.max_reference_rows).ravel()
        n = len(y)
        rows = _Rows(n, len(track.classes) if track.classes is not None else 0, track.regressor, 0)
        rows.seq[:] = np.arange(n)
        if track.regressor:
            rows.values[:] = outputs.values
            rows.truth[:] = y.astype(np.float64)
            valid = np.ones(n, bool)
        else:
            rows.predicted[:] = outputs.predicted
            if outputs.proba is not None:
                rows.proba[:] = outputs.proba
                rows.scored[:] = True
            rows.truth[:] = [track.classes.index(v) for v in y.tolist()]
            valid = (rows.truth >= 0) & (rows.predicted >= 0)
        rows.labelled[:] = valid
        pseudo = DecisionCall(model=call.model, info=call.info, operation="predict", X=X, n_rows=n,
                              ids=[""] * n, attributes={}, parent=call.parent, start_ns=0)
        for attribute, labels in self._groups.resolve(pseudo).items():
            rows.group_column(attribute)[:] = track.group_of(attribute, labels)
        self._add_quality(track, track.baseline, rows, np.flatnonzero(valid), 1)
        track.base, track.base_end = None, 0

    # --- rows -------------------------------------------------------------------------------------

    def _add_rows(self, track: _Track, calls: list[DecisionCall]) -> None:
        batch = self._batch(track, calls)
        if batch is None:
            return
        n, start = len(batch), track.hi
        seqs = np.arange(start, start + n)
        self._remember(track, batch, start)
        if track.base is not None:
            self._fill_baseline(track, batch, seqs)
        window = track.window
        new_lo = max(track.lo, start + n - track.limit)
        if new_lo > track.lo:
            self._evict(track, min(new_lo, start))
        if start + n - new_lo > window.capacity:  # more decisions than slots: grow, up to the limit
            capacity = min(track.limit, max(start + n - new_lo, 2 * window.capacity))
            track.window = window = window.resized(capacity, np.arange(track.lo, start))
        keep = seqs >= new_lo
        slots = seqs[keep] % window.capacity
        self._write(window, slots, seqs[keep], batch, keep)
        if track.binner is not None and batch.bins is not None:
            binned = batch.bins[keep]
            window.bins[slots] = binned
            window.binned[slots] = (binned != _NOT_BINNED).any(axis=1)
            self._count_bins(track, binned, 1)
        if track.estimate is not None and batch.proba is not None:
            scored = keep & batch.scored
            track.estimate.add(batch.predicted[scored], batch.proba[scored], 1)
        track.lo, track.hi = new_lo, start + n
        track.dirty = track.snapshot_due = True

    def _write(self, rows: _Rows, slots: np.ndarray, seqs: np.ndarray, batch: _Batch, keep: np.ndarray) -> None:
        rows.seq[slots] = seqs
        rows.time[slots] = batch.time[keep]
        rows.labelled[slots] = False
        if batch.predicted is not None:
            rows.predicted[slots] = batch.predicted[keep]
        if batch.values is not None:
            rows.values[slots] = batch.values[keep]
        if batch.proba is not None and rows.proba is not None:
            rows.proba[slots] = batch.proba[keep]
        rows.scored[slots] = batch.scored[keep]
        for attribute, groups in batch.groups.items():
            rows.group_column(attribute)[slots] = groups[keep]
        for attribute, column in rows.groups.items():
            if attribute not in batch.groups:
                column[slots] = -1

    def _fill_baseline(self, track: _Track, batch: _Batch, seqs: np.ndarray) -> None:
        base = track.base
        if track.base_end is None:  # a time window: the baseline is the first T seconds
            first = base.time[0] if track.hi else batch.time[0]
            later = np.flatnonzero(batch.time > first + int(track.seconds * 1e9))
            if len(later):
                track.base_end = int(seqs[later[0]])
        end = min(track.limit, track.base_end if track.base_end is not None else track.limit)
        keep = seqs < end
        if keep.any():
            needed = int(seqs[keep][-1]) + 1
            if needed > base.capacity:
                capacity = min(track.limit, max(needed, 2 * base.capacity))
                track.base = base = base.resized(capacity, np.arange(min(track.hi, base.capacity)))
            self._write(base, seqs[keep], seqs[keep], batch, keep)
        if track.base_end is None and track.hi + len(seqs) >= track.limit:
            track.base_end = track.limit

    def _evict(self, track: _Track, upto: int) -> None:
        """Take the decisions with seq in [lo, upto) out of the window."""
        if upto <= track.lo:
            return
        window = track.window
        slots = np.arange(track.lo, upto) % window.capacity
        slots = slots[window.seq[slots] >= 0]
        if track.binner is not None:
            self._count_bins(track, window.bins[slots[window.binned[slots]]], -1)
        if track.estimate is not None:
            scored = slots[window.scored[slots]]
            track.estimate.add(window.predicted[scored], window.proba[scored], -1)
        labelled = slots[window.labelled[slots]]
        if len(labelled):
            self._add_quality(track, track.current, window, labelled, -1)
        window.clear(slots)
        track.lo = upto
        track.dirty = track.snapshot_due = True

    def _expire(self, track: _Track, now_ns: int) -> None:
        if track.hi <= track.lo:
            return
        window = track.window
        slots = np.arange(track.lo, track.hi) % window.capacity
        fresh = window.time[slots] >= now_ns - int(track.seconds * 1e9)
        first = int(np.argmax(fresh)) if fresh.any() else len(slots)
        if first:
            self._evict(track, track.lo + first)

    def _count_bins(self, track: _Track, bins: np.ndarray, sign: int) -> None:
        if not len(bins):
            return
        flat = bins.astype(np.int64) + track.offsets
        counted = flat[bins != _NOT_BINNED]
        track.drift += sign * np.bincount(counted, minlength=len(track.drift))

    def _remember(self, track: _Track, batch: _Batch, start: int) -> None:
        """Decision id -> (track serial, seq, decision time, predicted class) for its label, packed."""
        n = len(batch.ids)
        entries = np.empty((n, 4), "<i8")
        entries[:, 0] = track.serial
        entries[:, 1] = np.arange(start, start + n)
        entries[:, 2] = batch.time
        entries[:, 3] = batch.predicted if batch.predicted is not None else -1
        blob, size = entries.tobytes(), _ENTRY.size
        self._book.update(zip(batch.ids, [blob[at : at + size] for at in range(0, n * size, size)]))
        self._book_order.append(batch.ids)
        self._book_size += len(batch.ids)
        while self._book_size > self.config.max_remembered and self._book_order:
            oldest = self._book_order.popleft()
            self._book_size -= len(oldest)
            collections.deque(map(self._book.pop, oldest, repeat(None)), maxlen=0)  # forgotten, in C

    # --- reading calls --------------------------------------------------------------------------------

    def _batch(self, track: _Track, calls: list[DecisionCall]) -> _Batch | None:
        """The rows of `calls` (one model version's, this cycle), read in one pass: outputs of one kind
        decoded together, inputs of one column layout binned together."""
        accepted: list[DecisionCall] = []
        layouts: list[Layout | None] = []  # of each accepted call
        by_kind: dict[str, list[int]] = {}  # output kind -> its accepted calls
        by_layout: dict[int, tuple[Layout, list[int]]] = {}  # id of a cached layout -> it, its accepted calls
        binning = track.binner is not None
        # (kind, layout) of array calls by what decides them: an array's layout is its width's, and an
        # output's kind follows from its shape and dtype. A cycle's single-row calls share one entry.
        shapes: dict[tuple, tuple[str | None, Layout | None]] = {}
        for call in calls:  # one pass: a cycle is mostly single-row calls, each pays for every step here
            X, output = call.X, call.output
            if type(X) is np.ndarray and type(output) is np.ndarray:
                shape = (call.operation, X.shape[1:], output.shape, output.dtype, len(call.ids))
                found = shapes.get(shape)
                if found is None:
                    found = shapes[shape] = self._kind_and_layout(track, call, binning)
                kind, layout = found
            else:
                kind, layout = self._kind_and_layout(track, call, binning)
            if kind is None and layout is None:  # nothing to count for this call
                continue
            i = len(accepted)
            accepted.append(call)
            layouts.append(layout)
            if kind is not None:
                members = by_kind.get(kind)
                if members is None:
                    members = by_kind[kind] = []
                members.append(i)
            if layout is not None:
                same = by_layout.get(id(layout))
                if same is None:
                    same = by_layout[id(layout)] = (layout, [])
                same[1].append(i)
        if not accepted:
            return None
        sizes = np.fromiter(map(len, (c.ids for c in accepted)), np.int64, len(accepted))
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        m = int(sizes.sum())
        k = len(track.classes) if track.classes is not None else 0
        ids = [i for c in accepted for i in c.ids]
        times = np.repeat(np.fromiter((c.end_ns for c in accepted), np.int64, len(accepted)), sizes)
        predicted = np.full(m, -1, np.int64) if k else None
        proba = np.full((m, k), np.nan) if k else None
        values = np.full(m, np.nan) if track.regressor else None
        scored = np.zeros(m, bool)
        for kind, members in by_kind.items():
            output = np.concatenate([np.asarray(accepted[i].output) for i in members])
            outputs = references.decode(kind, output, track.classes, track.regressor)
            rows = _rows(offsets, sizes, members)
            if outputs.predicted is not None:
                predicted[rows] = outputs.predicted
            if outputs.values is not None:
                values[rows] = outputs.values
            if outputs.proba is not None:
                proba[rows] = outputs.proba
                scored[rows] = True
        bins = raw = None
        if track.binner is not None:
            bins = self._output_bins(track, predicted, values, proba, scored, m)
            raw = np.empty((m, len(track.binner.categorical)), object) if self._sensitive_read(track) else None
            for layout, members in by_layout.values():
                self._input_bins(track, layout, [accepted[i] for i in members], _rows(offsets, sizes, members),
                                 bins, raw)
        columns: dict[str, np.ndarray] = {}
        if self._groups.active or any(c.groups for c in accepted):
            found: dict[str, tuple[list[int], list[str]]] = {}  # attribute -> (calls' offsets, labels)
            resolved: dict[tuple, dict[str, list[str]]] = {}  # single rows: groups by (values read, given)
            for call, layout, offset in zip(accepted, layouts, offsets.tolist()):
                key = None
                if call.group_labels is not None:  # resolved once for the call, by the fairness monitor
                    groups = call.group_labels
                elif raw is not None and layout is not None and bins[offset, 0] != _NOT_BINNED:
                    n = len(call.ids)
                    if n == 1:
                        key = _single_row_key(raw[offset], call.groups)
                    groups = resolved.get(key) if key is not None else None
                    if groups is None:
                        groups = self._groups.resolve(self._with_read_groups(track, call, raw[offset : offset + n]))
                        if key is not None:
                            resolved[key] = groups
                else:
                    groups = self._groups.resolve(call)
                for attribute, labels in groups.items():
                    starts, names = found.setdefault(attribute, ([], []))
                    starts.append(offset)
                    names.extend(labels)
            for attribute, (starts, names) in found.items():
                index = track.group_of(attribute, names)
                if len(index) == m:
                    columns[attribute] = index
                else:  # some calls could not be grouped by this attribute: their rows have no group
                    column = columns[attribute] = np.full(m, -1, np.int32)
                    at = 0
                    for offset in starts:
                        n = int(sizes[np.searchsorted(offsets, offset)])
                        column[offset : offset + n] = index[at : at + n]
                        at += n
        return _Batch(time=times, predicted=predicted, values=values, proba=proba, scored=scored, bins=bins,
                      groups=columns, ids=ids)

    def _kind_and_layout(self, track: _Track, call: DecisionCall, binning: bool) -> tuple[str | None, Layout | None]:
        """The output kind the monitor decodes (`references.output_kind`) and the input's layout, if binned."""
        kind = references.output_kind(call.operation, call.output, track.classes, track.regressor, len(call.ids))
        return kind, self._layout(track, call) if binning else None

    def _layout(self, track: _Track, call: DecisionCall) -> Layout | None:
        """Where the profiled features are in this call's input (cached per column layout)."""
        X = call.X
        columns = getattr(X, "columns", None)
        arrow = None
        if columns is not None:
            # Calls on slices of one frame share its column index: known by identity, it costs no
            # walk over the column names (the index object is held, so its id is not reused).
            seen = track.indexes.get(id(columns))
            if seen is not None and seen[0] is columns:
                return seen[1]
            # Frames built per request have an index each; Arrow-backed names (pandas 3) compare with
            # the last ones seen in C, at a third of the cost of reading them.
            values = getattr(columns, "array", None)
            if hasattr(values, "__arrow_array__"):
                arrow = values.__arrow_array__()
                last = track.arrow_names
                if last is not None and last[0].equals(arrow):
                    return last[1]
            key: tuple = ("frame", tuple(_names(columns)))
        else:
            key = ("array", getattr(X, "shape", (0, 0))[1:])
        if key not in track.layouts:
            found = references.layout(track.profile, profiles.feature_names(X, call.info.feature_names))
            if found is None:
                self._warn_once(("layout", *track.key), "otel-rai: the input of model %s %s lacks features of its "
                                "reference profile; its calls are not counted for input drift", *track.key)
            track.layouts[key] = found
        if columns is not None:
            if len(track.indexes) >= _MAX_INDEXES:
                track.indexes.clear()
            track.indexes[id(columns)] = (columns, track.layouts[key])
        if arrow is not None:
            track.arrow_names = (arrow, track.layouts[key])
        return track.layouts[key]

    def _output_bins(self, track: _Track, predicted: np.ndarray | None, values: np.ndarray | None,
                     proba: np.ndarray | None, scored: np.ndarray, m: int) -> np.ndarray:
        """Rows × subjects local bins, with the prediction and score bins filled in (inputs: later)."""
        out = np.full((m, track.subjects), _NOT_BINNED, np.uint16)
        profile = track.profile
        column = len(profile.features)
        if profile.prediction is not None:
            if predicted is not None:
                known = predicted >= 0
                out[known, column] = predicted[known]
            elif values is not None:
                known = ~np.isnan(values)
                out[known, column] = _numeric_bins(values[known], profile.prediction.edges)
            column += 1
        if profile.score is not None and proba is not None and scored.any():
            out[scored, column] = _numeric_bins(references.score_of(proba[scored], track.positive), profile.score.edges)
        return out

    def _sensitive_read(self, track: _Track) -> dict[str, int] | None:
        """{sensitive column: its column among the categorical features read}, when every configured
        sensitive column is a categorical feature of the profile; else None."""
        if track.sensitive_columns is None:
            features = track.profile.features
            at = {features[i].name: k for k, i in enumerate(track.binner.categorical)}
            parts = {p for a in self._attributes for p in a.parts}
            track.sensitive_columns = {p: at[p] for p in parts} if parts and parts <= at.keys() else {}
        return track.sensitive_columns or None

    def _with_read_groups(self, track: _Track, call: DecisionCall, raw: np.ndarray) -> DecisionCall:
        """The call, its sensitive columns given as the values the drift pass read, so that the group
        resolver applies its rules without reading the input again (about 5 µs a column for a small
        DataFrame). Values given with ``decisions(groups=...)`` still win."""
        given = call.groups or {}
        read = {name: tuple(raw[:, k]) for name, k in track.sensitive_columns.items() if name not in given}
        if not read:
            return call
        proxy = object.__new__(DecisionCall)
        proxy.__dict__.update(call.__dict__)
        proxy.groups = {**read, **given}
        return proxy

    def _input_bins(self, track: _Track, layout: Layout, calls: list[DecisionCall], rows: np.ndarray,
                    bins: np.ndarray, raw: np.ndarray | None) -> None:
        """Bin the inputs of `calls` (one column layout) in one pass into `bins`' feature columns at `rows`;
        keep the categorical values read in `raw` (for the groups)."""
        arrays = [call.X for call in calls]
        joined = None
        if len(arrays) > 1:  # inputs of one layout read together: per-call overheads paid once
            try:
                if all(type(a) is np.ndarray and a.ndim == 2 and a.dtype.kind in "iuf" for a in arrays):
                    joined = profiles.matrices(np.concatenate(arrays), layout.numeric_at, layout.categorical_at)
                elif all(hasattr(a, "iloc") and hasattr(a, "columns") for a in arrays):
                    joined = profiles.read_frames(arrays, layout.numeric_at, layout.categorical_at)
            except (TypeError, ValueError):
                joined = None  # one bad input: read them one by one, to count only that one's failure
        if joined is not None:
            bins[rows, : len(track.profile.features)] = track.binner.local(*joined)
            if raw is not None:
                raw[rows] = joined[1]
            return
        numeric, categorical, read = [], [], []
        at = 0
        for call in calls:
            n = len(call.ids)
            try:
                num, cat = profiles.matrices(call.X, layout.numeric_at, layout.categorical_at)
            except (TypeError, ValueError) as exc:
                self._on_failure("drift", exc)
            else:
                numeric.append(num)
                categorical.append(cat)
                read.append(rows[at : at + n])
            at += n
        if not read:
            return
        cat = np.concatenate(categorical)
        local = track.binner.local(np.concatenate(numeric), cat)
        bins[np.concatenate(read), : len(track.profile.features)] = local
        if raw is not None:
            raw[np.concatenate(read)] = cat

    # --- labels -------------------------------------------------------------------------------------

    def _add_labels(self, labels: list[tuple[str, Any, int]]) -> None:
        by_track: dict[int, tuple[_Track, list]] = {}
        for decision_id, y_true, time_ns in labels:
            entry = self._book.pop(decision_id, None)
            if entry is None:
                continue  # not decided here, or forgotten: the store-based views still count it
            serial, seq, decided_ns, predicted = _ENTRY.unpack(entry)
            track = self._by_serial.get(serial)
            if track is None or self._tracks.get(track.key) is not track or not track.measurable:
                continue
            by_track.setdefault(id(track), (track, []))[1].append((seq, y_true, time_ns, decided_ns, predicted))
        for track, entries in by_track.values():
            self._label_track(track, entries)

    def _label_track(self, track: _Track, entries: list) -> None:
        seqs, truths, correct = [], [], collections.Counter()
        base = {semconv.MODEL_NAME: track.key[0], semconv.MODEL_VERSION: track.key[1]}
        for seq, y_true, time_ns, decided_ns, predicted in entries:
            if track.regressor:
                try:
                    truth = float(y_true)
                except (TypeError, ValueError):
                    self._warn_once(("label", *track.key), "otel-rai: a ground truth of regressor %s %s is not a "
                                    "number; it is not counted for quality", *track.key)
                    continue
            else:
                truth = track.classes.index(y_true)
                if truth < 0:
                    self._warn_once(("label", *track.key), "otel-rai: a ground truth of model %s %s is none of its "
                                    "classes; it is not counted for quality", *track.key)
                    continue
                correct[truth == predicted] += 1
            seqs.append(seq)
            truths.append(truth)
            self._instruments.delay.record(max(0, time_ns - decided_ns) / 1e9, base)
        if track.regressor:
            if seqs:
                self._instruments.labels.add(len(seqs), base)
        else:
            for flag, n in correct.items():
                self._instruments.labels.add(n, {**base, semconv.QUALITY_CORRECT: "true" if flag else "false"})
        if not seqs:
            return
        seq = np.asarray(seqs, np.int64)
        truth = np.asarray(truths, np.float64 if track.regressor else np.int64)
        window = track.window
        slots = seq % window.capacity
        held = (seq >= track.lo) & (window.seq[slots] == seq) & ~window.labelled[slots]
        self._label_rows(track, track.current, window, slots[held], truth[held])
        if track.base is not None:
            base_rows = track.base
            end = base_rows.capacity if track.base_end is None else min(track.base_end, base_rows.capacity)
            inside = seq < end
            slots = seq[inside]
            held = (base_rows.seq[slots] == slots) & ~base_rows.labelled[slots]
            self._label_rows(track, track.baseline, base_rows, slots[held], truth[inside][held])
        track.dirty = True

    def _label_rows(self, track: _Track, slices: dict, rows: _Rows, slots: np.ndarray, truth: np.ndarray) -> None:
        if not len(slots):
            return
        rows.truth[slots] = truth
        measured = slots[rows.predicted[slots] >= 0] if rows.values is None else slots[~np.isnan(rows.values[slots])]
        rows.labelled[measured] = True
        self._add_quality(track, slices, rows, measured, 1)

    def _add_quality(self, track: _Track, slices: dict, rows: _Rows, slots: np.ndarray, sign: int) -> None:
        """Add (or with sign -1 take out) labelled rows to the counts of every slice they belong to."""
        if not len(slots):
            return
        self._count(slices, None, track, rows, slots, sign)
        for attribute, column in rows.groups.items():
            index = column[slots]
            for group in np.unique(index[index >= 0]).tolist():
                self._count(slices, (attribute, group), track, rows, slots[index == group], sign)

    @staticmethod
    def _count(slices: dict, key: Slice, track: _Track, rows: _Rows, slots: np.ndarray, sign: int) -> None:
        counts = slices.get(key)
        if counts is None:
            counts = slices[key] = track.counts()
        if isinstance(counts, RegressionCounts):
            counts.add(rows.truth[slots], rows.values[slots], sign)
            return
        scored = rows.scored[slots]
        if scored.any():
            s = slots[scored]
            counts.add(rows.truth[s], rows.predicted[s], rows.proba[s], sign)
        if not scored.all():
            u = slots[~scored]
            counts.add(rows.truth[u], rows.predicted[u], None, sign)

    # --- publishing ---------------------------------------------------------------------------------

    def _publish(self, track: _Track) -> None:
        """Recompute the gauges of `track`; raise alerts on crossings."""
        track.dirty = False
        name, version = track.key
        base = {semconv.MODEL_NAME: name, semconv.MODEL_VERSION: version}
        out: dict[str, list[Observation]] = collections.defaultdict(list)
        figures: dict[str, dict[Slice, quality.Quality]] = {}
        for window, slices in ((semconv.WINDOW_CURRENT, track.current), (semconv.WINDOW_BASELINE, track.baseline)):
            figures[window] = {}
            for key, counts in slices.items():
                if not counts.labelled:
                    continue
                q = figures[window][key] = quality.figures(counts, track.positive)
                attributes = {**base, semconv.MONITORING_WINDOW: window, **self._slice_attributes(track, key)}
                for metric, spec in _QUALITY.items():
                    for field, average in spec:
                        value = getattr(q, field)
                        if value is not None:
                            extra = {semconv.QUALITY_AVERAGE: average} if average else {}
                            out[metric].append(Observation(value, {**attributes, **extra}))
        rows = track.hi - track.lo
        labelled = int(track.window.labelled.sum())
        for flag, n in (("true", labelled), ("false", rows - labelled)):
            out[semconv.METRIC_QUALITY_DECISIONS].append(Observation(n, {**base, semconv.QUALITY_LABELLED: flag}))
        if track.estimate is not None:
            for metric, value in ((semconv.METRIC_QUALITY_ESTIMATED_ACCURACY, estimate.accuracy(track.estimate)),
                                  (semconv.METRIC_QUALITY_ESTIMATED_ROC_AUC,
                                   estimate.roc_auc(track.estimate, track.positive))):
                if value is not None:
                    out[metric].append(Observation(value, base))
        drift = self._drift(track, base, out)
        # A new dict, never one changed in place: a metric reader's thread may be reading the old one.
        self._published = {**self._published, track.key: dict(out)}
        self._alert(track, figures, drift)

    def _drift(self, track: _Track, base: dict, out: dict) -> dict[str, Any]:
        if track.profile is None:
            return {}
        found = {}
        counts = np.split(track.drift, track.offsets[1:])
        for subject, current in zip(track.profile.subjects(), counts):
            d = found[subject.name] = drift_figures(subject.name, subject.kind, subject.counts, current,
                                                    subject.positions)
            attributes = {**base, semconv.DRIFT_FEATURE: subject.name}
            for metric, field in _DRIFT.items():
                value = getattr(d, field)
                if value is not None:
                    out[metric].append(Observation(value, attributes))
            for window, rate in ((semconv.WINDOW_CURRENT, d.missing_rate_current),
                                 (semconv.WINDOW_BASELINE, d.missing_rate_reference)):
                if rate is not None:
                    out[semconv.METRIC_DRIFT_MISSING_RATE].append(
                        Observation(rate, {**attributes, semconv.MONITORING_WINDOW: window}))
        return found

    def _alert(self, track: _Track, figures: dict, drift: dict) -> None:
        """Compare the figures just published with the alert rules."""
        config = self.config
        name, version = track.key
        if config.psi_max is not None:
            rule = self._alerter.rule(semconv.METRIC_DRIFT_PSI, config.psi_max, below=False)
            for feature, d in drift.items():
                if d.rows >= config.min_rows:
                    self._alerter.check(("drift", *track.key, feature), rule, d.psi, kind="drift", model=name,
                                        version=version, feature=feature)
        current, baseline = figures[semconv.WINDOW_CURRENT], figures[semconv.WINDOW_BASELINE]
        for key, q in current.items():
            b = baseline.get(key)
            if b is None or q.labelled < config.min_rows or b.labelled < config.min_rows:
                continue
            attribute, group = self._slice_names(track, key)
            for metric, field, margin in ((semconv.METRIC_QUALITY_ACCURACY, "accuracy", config.accuracy_drop_max),
                                          (semconv.METRIC_QUALITY_ROC_AUC, "roc_auc", config.roc_auc_drop_max)):
                reference = getattr(b, field)
                if margin is None or reference is None:
                    continue
                rule = self._alerter.rule(metric, reference - margin, below=True)
                self._alerter.check(("quality", *track.key, key), rule, getattr(q, field), kind="quality",
                                    model=name, version=version, attribute=attribute, group=group,
                                    baseline=reference)

    def _slice_names(self, track: _Track, key: Slice) -> tuple[str | None, str | None]:
        if key is None:
            return None, None
        attribute, group = key
        return attribute, track.group_label[attribute][group]

    def _slice_attributes(self, track: _Track, key: Slice) -> dict[str, str]:
        attribute, group = self._slice_names(track, key)
        if attribute is None:
            return {}
        return {semconv.FAIRNESS_ATTRIBUTE: attribute, semconv.FAIRNESS_GROUP: group}

    def _snapshot(self, track: _Track) -> None:
        """A drift snapshot of the track's reference and window histograms, to the local store."""
        track.snapshot_due = False
        if self._journal is None:
            return
        current = np.split(track.drift, track.offsets[1:])
        record = snapshot.record(*track.key, track.profile.source, track.profile.subjects(), current)
        self._journal.note_snapshot(*track.key, time.time_ns(), record)

    # --- a metric reader's thread -------------------------------------------------------------------

    def _observations(self, metric: str) -> list[Observation]:
        out: list[Observation] = []
        for observations in self._published.values():
            out.extend(observations.get(metric, ()))
        return out

    # --- any thread ---------------------------------------------------------------------------------

    def final(self) -> None:
        """Publish everything and emit the last snapshots (a task queued when the session closes)."""
        self.end_cycle(force=True)

    def nbytes(self) -> int:
        """Approximate memory of the windows, counts, profiles and the label book."""
        book = self._book_size * _BOOK_ENTRY_BYTES
        return sum(t.nbytes() for t in list(self._tracks.values())) + book + self.fit_samples.nbytes()

    def close(self) -> None:
        if self._instruments.source == self._observations:
            self._instruments.source = None

    def _warn_once(self, key: tuple, message: str, *args: Any) -> None:
        if key not in self._warned:
            self._warned.add(key)
            _log.warning(message, *args)


#: A label book entry: (track serial, seq, decision time, predicted class or -1) as bytes. Bytes hold no
#: references, so a dict of them is never tracked by the garbage collector. A dict of tuples is: each full
#: collection untracks it (its tuples hold atomic values only), and the next insertion tracks it again as
#: a young object, which every young collection then traverses, 100k entries and all, until it ages out.
_ENTRY = struct.Struct("<qqqq")

#: Memory of one remembered decision (its packed entry and dict slot; the id is the span's), as measured
#: by bench/monitoring_overhead.py.
_BOOK_ENTRY_BYTES = 103


def _single_row_key(values: np.ndarray, given: Mapping[str, Any] | None) -> tuple | None:
    """What decides the groups of a single-row call whose sensitive values were read: those values and the
    groups given with ``decisions(groups=...)``. Within a cycle, calls with the same key get the same
    groups, so the resolver runs once per key. None when a value cannot be a key (unhashable)."""
    key = (tuple(values.tolist()), tuple(sorted(given.items())) if given else ())
    try:
        hash(key)
    except TypeError:
        return None
    return key


def _names(columns: Any) -> list[Any]:
    """A DataFrame's column names as a list: from Arrow-backed names (pandas 3) through the Arrow
    protocol, a quarter of what iterating the index costs."""
    values = getattr(columns, "array", None)
    if hasattr(values, "__arrow_array__"):
        return values.__arrow_array__().to_pylist()
    return columns.tolist() if hasattr(columns, "tolist") else list(columns)


def _rows(offsets: np.ndarray, sizes: np.ndarray, members: list[int]) -> np.ndarray:
    """The batch rows of the calls at indices `members` (each call's rows are contiguous)."""
    index = np.asarray(members)
    counts = sizes[index]
    starts = np.repeat(offsets[index] - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
    return starts + np.arange(int(counts.sum()))


def _numeric_bins(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    return profiles.bin_numeric(np.asarray(values, np.float64), np.asarray(edges, np.float64))
