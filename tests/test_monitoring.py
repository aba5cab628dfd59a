"""The live quality and drift monitor: gauges equal to sklearn and scipy on the window's decisions,
windows and late labels, references, planted drift and quality decay, alerts, privacy."""

from __future__ import annotations

import logging
import time
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from conftest import bare, instrumented
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2_contingency, wasserstein_distance
from sklearn import metrics as skm
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

import otel_rai
from otel_rai import semconv, store
from otel_rai.monitoring import profile, snapshot
from otel_rai.settings import MonitoringConfig

TOL = 1e-9
#: How long a test waits for the monitor to publish (it recomputes a model version at most once a second).
WAIT_S = 30.0


class Metrics:
    """What the SDK's metric pipeline collected (an in-memory reader on a real MeterProvider)."""

    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.provider = MeterProvider(metric_readers=[self.reader])

    def points(self, name: str) -> list[tuple[dict, object]]:
        data = self.reader.get_metrics_data()
        out = []
        for rm in data.resource_metrics if data else ():
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name == name:
                        out.extend((dict(p.attributes), p) for p in metric.data.data_points)
        return out

    def value(self, name: str, **where: str) -> float | None:
        """The value of the one point of gauge `name` whose attributes are exactly `where` plus the model's."""
        found = [p.value for a, p in self.points(name) if a == where]
        assert len(found) <= 1, found
        return found[0] if found else None

    def wait(self, name: str, expected, **where: str) -> None:
        """Poll until gauge `name` at `where` has `expected` (the monitor publishes within about a second)."""
        deadline = time.monotonic() + WAIT_S
        while True:
            assert otel_rai.flush(30).complete
            got = self.value(name, **where)
            if got == expected:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} {where}: {got}, expected {expected}")
            time.sleep(0.2)


def at(version: str = "1", window: str | None = semconv.WINDOW_CURRENT, **extra: str) -> dict[str, str]:
    """Gauge attributes of model credit `version` (short names for the group attributes)."""
    a = {semconv.MODEL_NAME: "credit", semconv.MODEL_VERSION: version}
    if window is not None:
        a[semconv.MONITORING_WINDOW] = window
    names = {"attribute": semconv.FAIRNESS_ATTRIBUTE, "group": semconv.FAIRNESS_GROUP,
             "average": semconv.QUALITY_AVERAGE, "feature": semconv.DRIFT_FEATURE,
             "labelled": semconv.QUALITY_LABELLED}
    a.update({names[k]: v for k, v in extra.items()})
    return a


def applicants(n: int, seed: int, shift: float = 0.0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({
        "income": rng.normal(shift, 1, n),
        "debt": rng.normal(0, 1, n),
        "age": rng.uniform(18, 80, n),
        "region": rng.choice(["north", "south", "east", "west"], n, p=[0.4, 0.3, 0.2, 0.1]),
        "sex": rng.choice(["f", "m"], n),
    })
    logit = 1.5 * X.income - X.debt + 0.5 * (X.region == "north")
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int).to_numpy()
    return X, y


def pipeline():
    prep = ColumnTransformer([("num", "passthrough", ["income", "debt", "age"]),
                              ("cat", OneHotEncoder(handle_unknown="ignore"), ["region"])])
    return make_pipeline(prep, LogisticRegression(max_iter=1000))


def stream(model, X: pd.DataFrame, seed: int, method: str = "predict_proba") -> tuple[list[str], np.ndarray]:
    """Decisions in calls of 1 to 60 rows; (ids, outputs)."""
    rng = np.random.default_rng(seed)
    ids, outputs, start = [], [], 0
    while start < len(X):
        stop = start + int(rng.choice([1, 1, 2, 7, 60]))
        with otel_rai.decisions() as d:
            outputs.append(getattr(model, method)(X.iloc[start:stop]))
        ids += d.ids
        start = stop
    return ids, np.concatenate(outputs)


@pytest.fixture
def meter() -> Metrics:
    return Metrics()


def session(meter: Metrics, **monitoring):
    """An instrumented session with the local store (drift snapshots go there), its spans in memory."""
    return instrumented(meter_provider=meter.provider, sensitive_features=["sex"], store=True,
                        monitoring=MonitoringConfig(**monitoring))


# --- quality -----------------------------------------------------------------------------------------


def test_quality_gauges_equal_sklearn_on_the_windows_labelled_decisions(meter):
    session(meter, window=10_000)
    X, y = applicants(3000, seed=1)
    model = otel_rai.register_model(pipeline().fit(X[:1500], y[:1500]), name="credit", version="1")
    live, y_live = X[1500:], y[1500:]
    ids, proba = stream(model, live, seed=2)
    labelled = np.random.default_rng(3).random(len(ids)) < 0.7  # some labels have not arrived
    for decision_id, truth, has in zip(ids, y_live, labelled):
        if has:
            otel_rai.record_outcome(decision_id, int(truth))
    meter.wait(semconv.METRIC_QUALITY_DECISIONS, int(labelled.sum()), **at(window=None, labelled="true"))
    assert meter.value(semconv.METRIC_QUALITY_DECISIONS, **at(window=None, labelled="false")) == (~labelled).sum()
    sex = live.sex.to_numpy()
    for group in (None, "f", "m"):
        rows = labelled & ((sex == group) if group else True)
        where = at(attribute="sex", group=group) if group else at()
        t, p = y_live[rows], proba[rows]
        pred = p.argmax(axis=1)
        expected = {
            semconv.METRIC_QUALITY_ACCURACY: skm.accuracy_score(t, pred),
            semconv.METRIC_QUALITY_LOG_LOSS: skm.log_loss(t, p, labels=[0, 1]),
            semconv.METRIC_QUALITY_BRIER: skm.brier_score_loss(t, p[:, 1]),
        }
        for name, value in expected.items():
            assert meter.value(name, **where) == pytest.approx(value, rel=TOL, abs=TOL), (name, group)
        for name, func in ((semconv.METRIC_QUALITY_PRECISION, skm.precision_score),
                           (semconv.METRIC_QUALITY_RECALL, skm.recall_score),
                           (semconv.METRIC_QUALITY_F1, skm.f1_score)):
            binary, macro = ({**where, semconv.QUALITY_AVERAGE: a} for a in ("binary", "macro"))
            assert meter.value(name, **binary) == pytest.approx(func(t, pred), abs=TOL)
            assert meter.value(name, **macro) == pytest.approx(func(t, pred, average="macro"), abs=TOL)
        auc = meter.value(semconv.METRIC_QUALITY_ROC_AUC, **where)
        assert auc == pytest.approx(skm.roc_auc_score(t, p[:, 1]), abs=1e-3)  # 1000-bin histogram (docs)


def test_the_label_book_is_never_tracked_by_the_garbage_collector(meter):
    """The label book's entries hold no references, so the collector never tracks the book. A book of
    tuples was untracked by each full collection and tracked again by the next decision, as a young
    object that every young collection then traversed whole. Labels still join their decisions."""
    import gc

    from otel_rai.session import instrumentor

    session(meter, window=10_000)
    X, y = applicants(900, seed=9)
    model = otel_rai.register_model(pipeline().fit(X[:300], y[:300]), name="credit", version="1")
    first, _ = stream(model, X[300:600], seed=10)
    assert otel_rai.flush(30).complete
    gc.collect()
    ids, proba = stream(model, X[600:], seed=11)
    assert otel_rai.flush(30).complete
    book = instrumentor._session.quality._book
    assert len(book) == len(first) + len(ids) == 600 and not gc.is_tracked(book)
    for decision_id, truth in zip(ids, y[600:]):
        otel_rai.record_outcome(decision_id, int(truth))
    meter.wait(semconv.METRIC_QUALITY_DECISIONS, 300, **at(window=None, labelled="true"))
    assert meter.value(semconv.METRIC_QUALITY_ACCURACY, **at()) == pytest.approx(
        skm.accuracy_score(y[600:], proba.argmax(axis=1)), abs=TOL)


def test_regression_gauges_equal_sklearn(meter):
    session(meter, window=10_000)
    X, y = applicants(1200, seed=4)
    target = 3 * X.income - X.debt + np.random.default_rng(5).normal(0, 0.5, len(X))
    prep = ColumnTransformer([("num", "passthrough", ["income", "debt"])])
    model = otel_rai.register_model(make_pipeline(prep, LinearRegression()).fit(X[:600], target[:600]),
                                    name="credit", version="r")
    ids, pred = stream(model, X[600:], seed=6, method="predict")
    truth = target[600:].to_numpy()
    for decision_id, value in zip(ids, truth):
        otel_rai.record_outcome(decision_id, float(value))
    meter.wait(semconv.METRIC_QUALITY_DECISIONS, 600, **at("r", window=None, labelled="true"))
    assert meter.value(semconv.METRIC_QUALITY_MAE, **at("r")) == pytest.approx(
        skm.mean_absolute_error(truth, pred), rel=TOL)
    assert meter.value(semconv.METRIC_QUALITY_RMSE, **at("r")) == pytest.approx(
        skm.root_mean_squared_error(truth, pred), rel=TOL)
    assert meter.value(semconv.METRIC_QUALITY_R2, **at("r")) == pytest.approx(skm.r2_score(truth, pred), rel=1e-7)
    assert meter.value(semconv.METRIC_QUALITY_ACCURACY, **at("r")) is None


def test_a_label_counts_in_the_window_of_its_decision(meter):
    """Window of 300 decisions: labels join their decision's row. A label whose decision has left the
    window changes neither the window nor the baseline (the first 300 decisions) unless its decision
    is one of those; it still counts in ml.quality.labels and the label delay histogram."""
    session(meter, window=300)
    X, y = applicants(1500, seed=7)
    model = otel_rai.register_model(pipeline().fit(X[:500], y[:500]), name="credit", version="1")
    ids, proba = stream(model, X[500:], seed=8)
    y_live, pred = y[500:], proba.argmax(axis=1)
    # Labels for the first 300 (the baseline) and the last 300 (the window), then late ones for the middle.
    for i in [*range(300), *range(700, 1000)]:
        otel_rai.record_outcome(ids[i], int(y_live[i]))
    meter.wait(semconv.METRIC_QUALITY_DECISIONS, 300, **at(window=None, labelled="true"))
    current = skm.accuracy_score(y_live[700:], pred[700:])
    baseline = skm.accuracy_score(y_live[:300], pred[:300])
    assert meter.value(semconv.METRIC_QUALITY_ACCURACY, **at()) == pytest.approx(current, abs=TOL)
    assert meter.value(semconv.METRIC_QUALITY_ACCURACY, **at(window="baseline")) == pytest.approx(baseline, abs=TOL)
    for i in range(300, 700):
        otel_rai.record_outcome(ids[i], 1 - int(y_live[i]))  # all wrong: would show if counted
    deadline = time.monotonic() + WAIT_S
    while sum(p.value for _, p in meter.points(semconv.METRIC_QUALITY_LABELS)) < 1000:
        assert time.monotonic() < deadline
        otel_rai.flush(30)
    time.sleep(1.5)  # past the next publication
    otel_rai.flush(30)
    assert meter.value(semconv.METRIC_QUALITY_ACCURACY, **at()) == pytest.approx(current, abs=TOL)
    assert meter.value(semconv.METRIC_QUALITY_ACCURACY, **at(window="baseline")) == pytest.approx(baseline, abs=TOL)
    correct = {a[semconv.QUALITY_CORRECT]: p.value for a, p in meter.points(semconv.METRIC_QUALITY_LABELS)}
    wrong = (pred[300:700] == y_live[300:700]).sum() + (pred[:300] != y_live[:300]).sum() + \
        (pred[700:] != y_live[700:]).sum()  # the late labels are the opposite of the truth
    assert correct["false"] == wrong and correct["true"] == 1000 - wrong
    ((_, delay),) = meter.points(semconv.METRIC_QUALITY_LABEL_DELAY)
    assert delay.count == 1000 and delay.explicit_bounds[0] == 60.0
    # A second label for a decision is ignored, as for fairness: the first one counts.
    otel_rai.record_outcome(ids[999], 1 - int(y_live[999]))
    time.sleep(1.5)
    otel_rai.flush(30)
    assert meter.value(semconv.METRIC_QUALITY_ACCURACY, **at()) == pytest.approx(current, abs=TOL)


def _quiet_cycle(worker) -> None:
    """A cycle of the audit worker that no flush asked for; returns once it has run."""
    worker.wake()
    deadline = time.monotonic() + WAIT_S
    while worker.pending():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_calls_wait_to_be_counted_until_enough_wait_a_label_or_a_flush_comes_or_time_passes(meter, monkeypatch):
    """A count has a fixed cost, so a cycle's few calls wait for a later one. Whatever triggers the count
    (enough calls, a label, a flush, the time), every call is counted once: the gauge of decisions in
    the window, and the quality of the labelled ones, equal what scikit-learn makes of all of them."""
    from otel_rai.monitoring import monitor as live
    from otel_rai.session import instrumentor

    monkeypatch.setattr(live, "COUNT_EVERY_S", 3600.0)
    monkeypatch.setattr(live, "COUNT_AT", 20)
    session(meter, window=10_000)
    X, y = applicants(400, seed=31)
    model = otel_rai.register_model(pipeline().fit(X[:200], y[:200]), name="credit", version="1")
    worker, quality = instrumentor._session.worker, instrumentor._session.quality
    ids, proba = [], []

    def decide(rows: range) -> None:
        for i in rows:
            with otel_rai.decisions() as d:
                proba.append(model.predict_proba(X.iloc[200 + i : 201 + i]))
            ids.extend(d.ids)

    decide(range(0, 3))
    assert otel_rai.flush(30).complete and not quality._calls  # a flush counts
    decide(range(3, 8))
    _quiet_cycle(worker)
    assert len(quality._calls) == 5  # too few, no label, no flush, too soon: they wait
    otel_rai.record_outcome(ids[0], int(y[200]))
    _quiet_cycle(worker)
    assert not quality._calls  # a label counts first the decisions it may belong to
    decide(range(8, 8 + 19))
    _quiet_cycle(worker)
    assert len(quality._calls) == 19
    decide(range(27, 28))
    _quiet_cycle(worker)
    assert not quality._calls  # the twentieth call
    decide(range(28, 30))
    monkeypatch.setattr(live, "COUNT_EVERY_S", 0.0)
    _quiet_cycle(worker)
    assert not quality._calls  # time enough since the last count
    for i in range(1, 30, 2):
        otel_rai.record_outcome(ids[i], int(y[200 + i]))
    labelled = [0, *range(1, 30, 2)]
    meter.wait(semconv.METRIC_QUALITY_DECISIONS, 30 - len(labelled), **at(window=None, labelled="false"))
    meter.wait(semconv.METRIC_QUALITY_DECISIONS, len(labelled), **at(window=None, labelled="true"))
    pred = np.concatenate(proba).argmax(axis=1)
    truth = y[200:230][labelled]
    assert meter.value(semconv.METRIC_QUALITY_ACCURACY, **at()) == pytest.approx(
        skm.accuracy_score(truth, pred[labelled]), abs=TOL)


def test_time_window_expires(meter):
    session(meter, window=timedelta(seconds=3))  # long enough for a loaded worker to publish once
    X, y = applicants(400, seed=9)
    model = otel_rai.register_model(pipeline().fit(X, y), name="credit", version="1")
    model.predict(X[:50])
    meter.wait(semconv.METRIC_QUALITY_DECISIONS, 50, **at(window=None, labelled="false"))
    meter.wait(semconv.METRIC_QUALITY_DECISIONS, 0, **at(window=None, labelled="false"))  # the idle cycle trims it


def test_reference_labels_are_the_baseline(meter):
    session(meter, window=500)
    X, y = applicants(3000, seed=10)
    model = pipeline().fit(X[:1000], y[:1000])
    otel_rai.register_model(model, name="credit", version="1", reference=X[1000:2000], reference_labels=y[1000:2000])
    ids, _ = stream(model, X[2000:2100], seed=11)
    otel_rai.record_outcome(ids[0], int(y[2000]))
    reference_accuracy = skm.accuracy_score(y[1000:2000], bare(model.predict, X[1000:2000]))
    meter.wait(semconv.METRIC_QUALITY_ACCURACY, pytest.approx(reference_accuracy, abs=TOL), **at(window="baseline"))
    f = X[1000:2000].sex == "f"
    expected = skm.accuracy_score(y[1000:2000][f], bare(model.predict, X[1000:2000][f]))
    assert meter.value(semconv.METRIC_QUALITY_ACCURACY, **at(window="baseline", attribute="sex", group="f")) == \
        pytest.approx(expected, abs=TOL)


# --- CBPE ------------------------------------------------------------------------------------------------


def test_estimated_accuracy_before_and_after_labels(meter):
    session(meter, window=2000)
    X, y = applicants(6000, seed=12)
    model = otel_rai.register_model(pipeline().fit(X[:4000], y[:4000]), name="credit", version="1")
    ids, proba = stream(model, X[4000:], seed=13)
    expected = proba.max(axis=1).mean()  # the window holds exactly these 2000 decisions
    meter.wait(semconv.METRIC_QUALITY_ESTIMATED_ACCURACY, pytest.approx(expected, rel=1e-12), **at(window=None))
    assert meter.value(semconv.METRIC_QUALITY_ACCURACY, **at()) is None  # no labels yet
    for decision_id, truth in zip(ids, y[4000:]):
        otel_rai.record_outcome(decision_id, int(truth))
    meter.wait(semconv.METRIC_QUALITY_DECISIONS, 2000, **at(window=None, labelled="true"))
    realised = meter.value(semconv.METRIC_QUALITY_ACCURACY, **at())
    assert abs(expected - realised) < 4 * np.sqrt(realised * (1 - realised) / 2000)  # a calibrated model
    auc = meter.value(semconv.METRIC_QUALITY_ESTIMATED_ROC_AUC, **at(window=None))
    assert abs(auc - meter.value(semconv.METRIC_QUALITY_ROC_AUC, **at())) < 0.03


# --- drift ---------------------------------------------------------------------------------------------


def test_drift_gauges_equal_scipy_on_the_windows_histograms(meter):
    session(meter, window=800)
    X, y = applicants(3000, seed=14)
    model = pipeline().fit(X[:1000], y[:1000])
    reference = X[1000:2000]
    otel_rai.register_model(model, name="credit", version="1", reference=reference)
    live = applicants(1000, seed=15, shift=0.5)[0]
    stream(model, live, seed=16)
    window = live[-800:]
    config = MonitoringConfig()
    f = profile.numeric("income", reference.income.to_numpy(), config.numeric_bins, config.edge_digits)
    ref = np.asarray(f.counts)
    cur = np.bincount(profile.bin_numeric(window.income.to_numpy(), np.asarray(f.edges)), minlength=f.bins)
    income = at(window=None, feature="income")
    meter.wait(semconv.METRIC_DRIFT_JS_DISTANCE, pytest.approx(jensenshannon(ref, cur, base=2), abs=1e-12), **income)
    positions = np.asarray(f.positions)
    assert meter.value(semconv.METRIC_DRIFT_WASSERSTEIN, **income) == pytest.approx(
        wasserstein_distance(positions, positions, ref[:-1], cur[:-1]), abs=1e-12)
    region = profile.categorical("region", reference.region, config.top_k)
    cur_region = [(window.region == c).sum() for c in region.categories] + [0, 0]
    used = (np.asarray(region.counts) + np.asarray(cur_region)) > 0
    table = np.vstack([np.asarray(region.counts)[used], np.asarray(cur_region)[used]])
    assert meter.value(semconv.METRIC_DRIFT_CHI2_PVALUE, **at(window=None, feature="region")) == pytest.approx(
        chi2_contingency(table, correction=False)[1], rel=1e-9)
    assert meter.value(semconv.METRIC_DRIFT_MISSING_RATE, **at(feature="income")) == 0.0
    # The model's output is profiled too: its predicted class and its score.
    for subject in (semconv.DRIFT_PREDICTION, semconv.DRIFT_SCORE):
        assert meter.value(semconv.METRIC_DRIFT_PSI, **at(window=None, feature=subject)) is not None


def drift_snapshots(version: str) -> list[dict]:
    """The drift snapshots the session wrote to its local store (the default one), oldest first."""
    return [histograms for _, _, histograms in store.Store(store.default_path()).drift_snapshots(version)]


def alert_spans(audit, name: str) -> list:
    return [s for s in audit.spans() if s.name == name]


def test_planted_drift_fires_one_psi_alert_for_that_feature_only(meter, caplog):
    """Income shifts by one standard deviation halfway through a stream of 4000 decisions."""
    caplog.set_level(logging.WARNING, "otel_rai.alerts")
    audit = session(meter, window=1000)
    X, y = applicants(5000, seed=17)
    model = otel_rai.register_model(pipeline().fit(X, y), name="credit", version="1")  # fit: the reference
    before, after = applicants(2000, seed=18)[0], applicants(2000, seed=19, shift=1.0)[0]
    stream(model, pd.concat([before, after], ignore_index=True), seed=20)
    deadline = time.monotonic() + WAIT_S
    while not alert_spans(audit, semconv.DRIFT_ALERT_SPAN):
        assert time.monotonic() < deadline, "no drift alert"
        time.sleep(0.2)
    time.sleep(1.5)  # a publication more: nothing else fires
    spans = alert_spans(audit, semconv.DRIFT_ALERT_SPAN)
    inputs = [s for s in spans if s.attributes[semconv.DRIFT_FEATURE] in X.columns]
    assert [(s.attributes[semconv.DRIFT_FEATURE], s.attributes[semconv.MONITORING_STATE]) for s in inputs] == [
        ("income", semconv.STATE_FIRING)]
    (span,) = inputs
    assert span.attributes[semconv.MONITORING_METRIC] == semconv.METRIC_DRIFT_PSI
    assert span.attributes[semconv.MONITORING_VALUE] > 0.2 and span.attributes[semconv.MONITORING_THRESHOLD] == 0.2
    counted = {(a[semconv.DRIFT_FEATURE], p.value) for a, p in meter.points(semconv.METRIC_DRIFT_ALERT)}
    assert ("income", 1) in counted and not {f for f, _ in counted} & (set(X.columns) - {"income"})
    assert any("feature income" in r.getMessage() for r in caplog.records)
    # The drift snapshots stay in the local store, and hold no category names; no span carries them.
    otel_rai.uninstrument()  # the last snapshot is written at close
    snaps = drift_snapshots("1")
    assert snaps and snaps[-1][semconv.DRIFT_REFERENCE_SOURCE] == "fit"
    text = repr(snaps)
    assert not [v for v in ("north", "south", "east", "west", "'f'", "'m'") if v in text]
    income = next(h for h in snapshot.read(snaps[-1]) if h.feature == "income")
    config = MonitoringConfig()
    reference = profile.numeric("income", X.income.to_numpy(), config.numeric_bins, config.edge_digits)
    window = np.bincount(profile.bin_numeric(after.income.to_numpy()[-1000:], np.asarray(reference.edges)),
                         minlength=reference.bins)
    assert income.reference == reference.counts and income.current == tuple(window)
    assert income.drift().psi > 0.2


def test_planted_quality_decay_fires_the_quality_alert_for_that_group(meter, caplog):
    """Labels flipped for 20% of group m in the second half of the stream."""
    caplog.set_level(logging.INFO, "otel_rai.alerts")
    alerts = []
    audit = session(meter, window=2000, on_alert=alerts.append)
    X, y = applicants(14_000, seed=21)
    model = otel_rai.register_model(pipeline().fit(X[:6000], y[:6000]), name="credit", version="1")
    live, truth = X[6000:].reset_index(drop=True), y[6000:].copy()
    ids, _ = stream(model, live, seed=22)
    rng = np.random.default_rng(23)
    flip = (np.arange(len(live)) >= 4000) & (live.sex.to_numpy() == "m") & (rng.random(len(live)) < 0.2)
    truth[flip] = 1 - truth[flip]
    for decision_id, t in zip(ids, truth):
        otel_rai.record_outcome(decision_id, int(t))
    deadline = time.monotonic() + WAIT_S
    while not any(a.group == "m" and a.metric == semconv.METRIC_QUALITY_ACCURACY for a in alerts):
        assert time.monotonic() < deadline, f"no quality alert for m: {alerts}"
        otel_rai.flush(30)
        time.sleep(0.2)
    time.sleep(1.5)
    otel_rai.flush(30)
    fired = [(a.attribute, a.group, a.metric) for a in alerts if a.firing and a.kind == "quality"]
    assert ("sex", "m", semconv.METRIC_QUALITY_ACCURACY) in fired
    assert not [f for f in fired if f[1] == "f"]  # the other group kept its quality
    (alert,) = [a for a in alerts if a.group == "m" and a.metric == semconv.METRIC_QUALITY_ACCURACY]
    assert alert.value < alert.baseline - 0.05 and alert.threshold == pytest.approx(alert.baseline - 0.05)
    # Privacy: the span names the attribute, not the group (sex is not allowlisted); the counter does.
    spans = alert_spans(audit, semconv.QUALITY_ALERT_SPAN)
    grouped = [s for s in spans if s.attributes.get(semconv.FAIRNESS_ATTRIBUTE) == "sex"]
    assert grouped and all(semconv.FAIRNESS_GROUP not in s.attributes for s in grouped)
    assert not [r for r in caplog.records if "group m " in r.getMessage()]
    counted = [a for a, _ in meter.points(semconv.METRIC_QUALITY_ALERT) if a.get(semconv.FAIRNESS_GROUP) == "m"]
    assert counted


def test_allowlisted_group_values_reach_the_alert_span(meter):
    audit = instrumented(meter_provider=meter.provider, sensitive_features=["sex"], capture_features=["sex"],
                         monitoring=MonitoringConfig(window=400, min_rows=50, accuracy_drop_max=0.0))
    X, y = applicants(3000, seed=24)
    model = otel_rai.register_model(pipeline().fit(X[:1000], y[:1000]), name="credit", version="1")
    ids, proba = stream(model, X[1000:2000], seed=25)
    truth = y[1000:2000].copy()
    truth[500:] = 1 - truth[500:]  # everything wrong after the baseline
    for decision_id, t in zip(ids, truth):
        otel_rai.record_outcome(decision_id, int(t))
    deadline = time.monotonic() + WAIT_S
    while not [s for s in alert_spans(audit, semconv.QUALITY_ALERT_SPAN) if semconv.FAIRNESS_GROUP in s.attributes]:
        assert time.monotonic() < deadline
        time.sleep(0.2)


# --- references ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["fit", "reference", "background"])
def test_where_the_reference_comes_from(meter, source):
    X, y = applicants(2000, seed=26)
    if source == "fit":
        session(meter, window=200)
        model = pipeline().fit(X[:1000], y[:1000])  # under instrument(): the fit data is the reference
    else:
        model = pipeline().fit(X[:1000], y[:1000])  # fitted before instrument(): no fit data
        session(meter, window=200)
    kwargs = {"reference": X[1000:1500]} if source == "reference" else {"background": X[1500:1600]}
    otel_rai.register_model(model, name="credit", version="1", **({} if source == "fit" else kwargs))
    model.predict(X[1600:1800])
    otel_rai.uninstrument()  # the last snapshot is written at close
    snaps = drift_snapshots("1")
    assert snaps and {s[semconv.DRIFT_REFERENCE_SOURCE] for s in snaps} == {source}
    histograms = snapshot.read(snaps[-1])
    rows = {"fit": 1000, "reference": 500, "background": 100}[source]
    income = next(h for h in histograms if h.feature == "income")
    assert sum(income.reference) == rows and sum(income.current) == 200


def test_no_reference_no_drift_and_monitoring_off(meter):
    X, y = applicants(600, seed=27)
    model = pipeline().fit(X, y)  # before instrument(): no reference
    session(meter)
    otel_rai.register_model(model, name="credit", version="1")
    ids, _ = stream(model, X[:100], seed=28)
    meter.wait(semconv.METRIC_QUALITY_DECISIONS, 100, **at(window=None, labelled="false"))
    assert not meter.points(semconv.METRIC_DRIFT_PSI)
    otel_rai.uninstrument()
    off = Metrics()
    instrumented(meter_provider=off.provider, monitoring=MonitoringConfig(enabled=False))
    model.predict(X[:50])
    assert otel_rai.flush(30).complete
    time.sleep(1.2)
    assert not off.points(semconv.METRIC_QUALITY_DECISIONS)


def test_monitoring_failures_never_reach_the_caller(meter):
    session(meter, window=100)
    X, y = applicants(600, seed=29)
    model = otel_rai.register_model(pipeline().fit(X, y), name="credit", version="1")
    odd = X[:20].copy()
    odd["income"] = ["n/a"] * 20  # not numeric: the model fails, the caller sees its own error
    with pytest.raises(ValueError):
        model.predict(odd)
    renamed = X[:20].rename(columns={"age": "years"})
    with pytest.raises(ValueError):
        model.predict(renamed)
    assert np.array_equal(model.predict(X[:30]), bare(model.predict, X[:30]))
    meter.wait(semconv.METRIC_QUALITY_DECISIONS, 30, **at(window=None, labelled="false"))


def test_multiclass_model_with_predict_and_predict_proba_calls(meter):
    """Calls of predict (labels only: no score figures) and predict_proba mixed in one window."""
    session(meter, window=10_000)
    rng = np.random.default_rng(30)
    X = pd.DataFrame({"a": rng.normal(size=3000), "b": rng.normal(size=3000)})
    y = np.digitize(X.a + 0.5 * X.b + rng.normal(0, 0.7, 3000), [-0.7, 0.7])  # three classes
    model = otel_rai.register_model(LogisticRegression().fit(X[:1500], y[:1500]), name="credit", version="m")
    live, truth = X[1500:], y[1500:]
    predicted, proba, ids = [], [], []
    for start in range(0, 1500, 50):
        chunk = live.iloc[start:start + 50]
        with otel_rai.decisions() as d:
            if start % 100:
                p = model.predict_proba(chunk)
                proba.append(p)
                predicted.append(p.argmax(axis=1))
            else:
                predicted.append(model.predict(chunk))
                proba.append(np.full((50, 3), np.nan))
        ids += d.ids
    predicted, proba = np.concatenate(predicted), np.concatenate(proba)
    for decision_id, t in zip(ids, truth):
        otel_rai.record_outcome(decision_id, int(t))
    meter.wait(semconv.METRIC_QUALITY_DECISIONS, 1500, **at("m", window=None, labelled="true"))
    assert meter.value(semconv.METRIC_QUALITY_ACCURACY, **at("m")) == pytest.approx(
        skm.accuracy_score(truth, predicted), abs=TOL)
    macro = {**at("m"), semconv.QUALITY_AVERAGE: "macro"}
    assert meter.value(semconv.METRIC_QUALITY_F1, **macro) == pytest.approx(
        skm.f1_score(truth, predicted, average="macro"), abs=TOL)
    binary = {**at("m"), semconv.QUALITY_AVERAGE: "binary"}
    assert meter.value(semconv.METRIC_QUALITY_F1, **binary) is None  # no positive class among three
    scored = ~np.isnan(proba[:, 0])
    assert meter.value(semconv.METRIC_QUALITY_LOG_LOSS, **at("m")) == pytest.approx(
        skm.log_loss(truth[scored], proba[scored], labels=[0, 1, 2]), rel=TOL)
    assert meter.value(semconv.METRIC_QUALITY_ROC_AUC, **at("m")) == pytest.approx(
        skm.roc_auc_score(truth[scored], proba[scored], multi_class="ovr"), abs=2e-3)


@pytest.mark.parametrize("options", [
    {"window": 0}, {"window": timedelta(0)}, {"window": True}, {"numeric_bins": 1}, {"top_k": 0},
    {"edge_digits": 0}, {"max_reference_rows": 0}, {"min_rows": 1.5}, {"psi_max": -0.1},
    {"accuracy_drop_max": float("nan")}, {"alert_hysteresis": -1}, {"snapshot_interval": 0}, {"max_remembered": 0},
])
def test_bad_settings_are_refused_with_the_value_named(options):
    with pytest.raises(ValueError, match="otel-rai: MonitoringConfig") as error:
        MonitoringConfig(**options)
    assert "\n" not in str(error.value)


def test_monitoring_must_be_a_monitoring_config():
    with pytest.raises(TypeError, match="monitoring must be a MonitoringConfig, not dict"):
        otel_rai.instrument(hash_key="k" * 32, store=False, monitoring={"window": 10})


def test_groups_given_per_call_win_over_the_input_column_for_single_rows(meter):
    """Single-row calls whose sensitive values come from the input, some with decisions(groups=...) given:
    each row counts in the group the fairness rules give it (the given value wins)."""
    session(meter, window=10_000)
    X, y = applicants(900, seed=31)
    model = otel_rai.register_model(pipeline().fit(X[:500], y[:500]), name="credit", version="1")
    live, truth = X[500:].reset_index(drop=True), y[500:]
    rng = np.random.default_rng(32)
    override = rng.random(len(live)) < 0.3
    predicted, ids = [], []
    for i in range(len(live)):
        with otel_rai.decisions(groups={"sex": "x"} if override[i] else None) as d:
            predicted.append(int(model.predict(live.iloc[[i]])[0]))
        ids += d.ids
    for decision_id, t in zip(ids, truth):
        otel_rai.record_outcome(decision_id, int(t))
    meter.wait(semconv.METRIC_QUALITY_DECISIONS, len(live), **at(window=None, labelled="true"))
    group = np.where(override, "x", live.sex.to_numpy())
    predicted = np.asarray(predicted)
    for g in ("f", "m", "x"):
        rows = group == g
        deadline = time.monotonic() + WAIT_S
        while meter.value(semconv.METRIC_QUALITY_ACCURACY, **at(attribute="sex", group=g)) is None:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert meter.value(semconv.METRIC_QUALITY_ACCURACY, **at(attribute="sex", group=g)) == pytest.approx(
            skm.accuracy_score(truth[rows], predicted[rows]), abs=TOL), g


@pytest.mark.parametrize("window", [3000, timedelta(hours=1)])
def test_windows_grow_their_storage_and_keep_exact_figures(meter, window):
    """A window larger than the storage it starts with (1,024 slots) grows as decisions come: the
    figures stay those of the window's decisions, and the baseline those of the first window."""
    config = {"window": window} if isinstance(window, int) else {"window": window, "max_window_rows": 3000}
    session(meter, **config)
    X, y = applicants(8000, seed=33)
    model = otel_rai.register_model(pipeline().fit(X[:1000], y[:1000]), name="credit", version="1")
    ids, proba = stream(model, X[1000:], seed=34)
    for decision_id, truth in zip(ids, y[1000:]):
        otel_rai.record_outcome(decision_id, int(truth))
    meter.wait(semconv.METRIC_QUALITY_DECISIONS, 3000, **at(window=None, labelled="true"))
    truth, pred = y[1000:], proba.argmax(axis=1)
    assert meter.value(semconv.METRIC_QUALITY_ACCURACY, **at()) == pytest.approx(
        skm.accuracy_score(truth[-3000:], pred[-3000:]), abs=TOL)
    assert meter.value(semconv.METRIC_QUALITY_LOG_LOSS, **at()) == pytest.approx(
        skm.log_loss(truth[-3000:], proba[-3000:]), rel=1e-9)
    # The baseline: the first 3,000 (a time window's first hour, capped at max_window_rows decisions).
    assert meter.value(semconv.METRIC_QUALITY_ACCURACY, **at(window="baseline")) == pytest.approx(
        skm.accuracy_score(truth[:3000], pred[:3000]), abs=TOL)
    assert meter.value(semconv.METRIC_QUALITY_ESTIMATED_ACCURACY, **at(window=None)) == pytest.approx(
        proba[-3000:].max(axis=1).mean(), rel=1e-9)
