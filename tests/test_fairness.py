"""Fairness metrics: equal to Fairlearn on the same data, streaming windows, outcomes, alerts, privacy."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from conftest import bare, instrumented
from fairlearn import metrics as flm
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import otel_rai
from otel_rai import semconv
from otel_rai.fairness import metrics as fairness
from otel_rai.fairness.alerts import Alerter, Rule
from otel_rai.fairness.outcomes import KnownDecision
from otel_rai.session import instrumentor

TOL = 1e-9


# --- helpers ---------------------------------------------------------------------------------------


class Metrics:
    """Reads what the SDK's metric pipeline collected (an in-memory reader: a real MeterProvider)."""

    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.provider = MeterProvider(metric_readers=[self.reader])

    def points(self, name: str) -> list[tuple[dict, float]]:
        assert otel_rai.flush(30).complete
        data = self.reader.get_metrics_data()
        out = []
        for rm in data.resource_metrics if data else ():
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name == name:
                        out.extend((dict(p.attributes), p.value) for p in metric.data.data_points)
        return out

    def by(self, name: str, key: str = semconv.FAIRNESS_GROUP, **where: str) -> dict:
        """{attribute `key`: value} of the points of `name` whose attributes match `where`."""
        where = {_attr(k): v for k, v in where.items()}
        return {a.get(key): v for a, v in self.points(name) if all(a.get(k) == v for k, v in where.items())}

    def one(self, name: str, **where: str) -> float | None:
        values = list(self.by(name, key=semconv.FAIRNESS_ATTRIBUTE, **where).values())
        assert len(values) <= 1
        return values[0] if values else None


def _attr(short: str) -> str:
    return {"attribute": semconv.FAIRNESS_ATTRIBUTE, "group": semconv.FAIRNESS_GROUP,
            "version": semconv.MODEL_VERSION, "model": semconv.MODEL_NAME, "outcome": semconv.OUTCOME,
            "true_outcome": semconv.TRUE_OUTCOME}[short]


def applicants(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({
        "income": rng.normal(0, 1, n),
        "debt": rng.normal(0, 1, n),
        "sex": rng.choice(["f", "m", "x"], n, p=[0.45, 0.45, 0.1]),
        "race": rng.choice(["a", "b"], n),
    })
    # Historical labels favour m: a model trained on them (without seeing sex) inherits some of it.
    y = (X.income - X.debt + 0.8 * (X.sex == "m") + rng.normal(0, 0.7, n) > 0.3).astype(int).to_numpy()
    return X, y


def blind_model(X: pd.DataFrame, y: np.ndarray):
    """Drops sex and race in its ColumnTransformer: the sensitive columns only exist in the input."""
    prep = ColumnTransformer([("num", StandardScaler(), ["income", "debt"])])
    return otel_rai.register_model(make_pipeline(prep, LogisticRegression()).fit(X, y), name="credit", version="2.0")


def fairlearn_figures(y_true, y_pred, sensitive) -> dict[str, float]:
    kw = {"sensitive_features": sensitive}
    return {
        semconv.METRIC_DEMOGRAPHIC_PARITY_DIFFERENCE: flm.demographic_parity_difference(y_true, y_pred, **kw),
        semconv.METRIC_DEMOGRAPHIC_PARITY_RATIO: flm.demographic_parity_ratio(y_true, y_pred, **kw),
        semconv.METRIC_EQUALIZED_ODDS_DIFFERENCE: flm.equalized_odds_difference(y_true, y_pred, **kw),
        semconv.METRIC_EQUALIZED_ODDS_RATIO: flm.equalized_odds_ratio(y_true, y_pred, **kw),
    }


def by_group(metric, y_true, y_pred, sensitive) -> dict[str, float]:
    frame = flm.MetricFrame(metrics=metric, y_true=y_true, y_pred=y_pred, sensitive_features=sensitive)
    series = frame.by_group
    if isinstance(series.index, pd.MultiIndex):
        return {semconv.INTERSECTION.join(k): v for k, v in series.items()}
    return dict(series.items())


def assert_close(got: dict, expected: dict) -> None:
    assert set(got) == set(expected)
    for key in expected:
        assert got[key] == pytest.approx(expected[key], abs=TOL), key


@pytest.fixture
def meter() -> Metrics:
    return Metrics()


# --- the definitions against Fairlearn ---------------------------------------------------------------


@pytest.mark.parametrize("seed", range(8))
def test_definitions_equal_fairlearn_on_counts(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(60, 400))
    groups = rng.choice(["g0", "g1", "g2", "g3"][: int(rng.integers(2, 5))], n)
    y_true = rng.integers(0, 2, n)
    y_pred = (rng.random(n) < np.where(groups == "g0", 0.3, 0.6)).astype(int)
    counts = {}
    for g in np.unique(groups):
        c = counts[g] = fairness.GroupCounts()
        for t, p in zip(y_true[groups == g], y_pred[groups == g]):
            c.decisions += 1
            c.selected += int(p)
            c.add_outcome(bool(p), bool(t))
    summary = fairness.summarize(counts)
    got = {
        semconv.METRIC_DEMOGRAPHIC_PARITY_DIFFERENCE: summary.demographic_parity_difference,
        semconv.METRIC_DEMOGRAPHIC_PARITY_RATIO: summary.demographic_parity_ratio,
        semconv.METRIC_EQUALIZED_ODDS_DIFFERENCE: summary.equalized_odds_difference,
        semconv.METRIC_EQUALIZED_ODDS_RATIO: summary.equalized_odds_ratio,
    }
    assert_close(got, fairlearn_figures(y_true, y_pred, groups))
    assert_close(summary.selection_rate, by_group(flm.selection_rate, y_true, y_pred, groups))
    assert_close(summary.true_positive_rate, by_group(flm.true_positive_rate, y_true, y_pred, groups))
    assert_close(summary.false_positive_rate, by_group(flm.false_positive_rate, y_true, y_pred, groups))


def test_undefined_values_are_absent_where_fairlearn_reports_0_or_nan():
    y_true = np.array([0, 0, 0, 1, 1, 0])
    y_pred = np.array([0, 0, 0, 0, 0, 0])
    sex = np.array(["f", "f", "f", "m", "m", "m"])
    # f has no actual positives: Fairlearn says its TPR is 0; for us it has none.
    assert by_group(flm.true_positive_rate, y_true, y_pred, sex)["f"] == 0
    counts = {"f": fairness.GroupCounts(3, 0, tn=3), "m": fairness.GroupCounts(3, 0, fn=2, tn=1)}
    summary = fairness.summarize(counts)
    assert "f" not in summary.true_positive_rate and summary.true_positive_rate["m"] == 0
    # Nobody selected: ratio 0/0 is NaN in Fairlearn, no value here; the difference is a true 0.
    assert np.isnan(flm.demographic_parity_ratio(y_true, y_pred, sensitive_features=sex))
    assert summary.demographic_parity_ratio is None and summary.demographic_parity_difference == 0
    assert summary.equalized_odds_difference is None  # the TPR term needs two groups with positives
    # One group only: Fairlearn reports 0 and 1; there is nothing to compare.
    assert fairness.summarize({"f": counts["f"]}).demographic_parity_difference is None


def test_min_group_size_keeps_small_groups_out_of_ratios():
    counts = {"f": fairness.GroupCounts(100, 50), "m": fairness.GroupCounts(100, 60), "x": fairness.GroupCounts(3, 0)}
    summary = fairness.summarize(counts, min_group_size=30)
    assert summary.selection_rate["x"] == 0  # still reported
    assert summary.demographic_parity_ratio == pytest.approx(50 / 60)
    assert fairness.summarize(counts, min_group_size=1).demographic_parity_ratio == 0


# --- the live metrics against Fairlearn --------------------------------------------------------------


def test_streamed_metrics_equal_fairlearn(meter):
    X, y = applicants(900, seed=1)
    audit = instrumented(sensitive_features=["sex", ("sex", "race")], meter_provider=meter.provider,
                         fairness=otel_rai.FairnessConfig(window=10_000, min_group_size=1))
    model = blind_model(X, y)
    rng = np.random.default_rng(2)
    y_pred, ids, start = [], [], 0
    while start < len(X):  # a stream of calls of 1 to 40 rows
        stop = start + int(rng.integers(1, 41))
        with otel_rai.decisions() as d:
            y_pred.extend(model.predict(X.iloc[start:stop]))
        ids.extend(d.ids)
        start = stop
    for decision_id, truth in zip(ids, y):
        otel_rai.record_outcome(decision_id, truth)
    y_pred = np.asarray(y_pred)
    assert np.array_equal(y_pred, bare(model.predict, X))

    for name, sensitive in (("sex", X.sex), ("sex&race", X[["sex", "race"]])):
        expected = fairlearn_figures(y, y_pred, sensitive)
        got = {metric: meter.one(metric, attribute=name, version="2.0") for metric in expected}
        assert_close(got, expected)
        assert_close(meter.by(semconv.METRIC_SELECTION_RATE, attribute=name),
                     by_group(flm.selection_rate, y, y_pred, sensitive))
        assert_close(meter.by(semconv.METRIC_TRUE_POSITIVE_RATE, attribute=name),
                     by_group(flm.true_positive_rate, y, y_pred, sensitive))
        assert_close(meter.by(semconv.METRIC_FALSE_POSITIVE_RATE, attribute=name),
                     by_group(flm.false_positive_rate, y, y_pred, sensitive))

    # The counters hold the raw counts: decisions per group and outcome, confusion cells per group.
    decisions = {(a[semconv.FAIRNESS_GROUP], a[semconv.OUTCOME]): v
                 for a, v in meter.points(semconv.METRIC_DECISIONS) if a[semconv.FAIRNESS_ATTRIBUTE] == "sex"}
    for group in ("f", "m", "x"):
        selected = int(y_pred[X.sex == group].sum())
        assert decisions[(group, "positive")] == selected
        assert decisions[(group, "negative")] == int((X.sex == group).sum()) - selected
    outcomes = {(a[semconv.FAIRNESS_GROUP], a[semconv.OUTCOME], a[semconv.TRUE_OUTCOME]): v
                for a, v in meter.points(semconv.METRIC_OUTCOMES) if a[semconv.FAIRNESS_ATTRIBUTE] == "sex"}
    f = (X.sex == "f").to_numpy()
    assert outcomes[("f", "positive", "negative")] == int(((y_pred == 1) & (y == 0) & f).sum())
    assert outcomes[("f", "negative", "positive")] == int(((y_pred == 0) & (y == 1) & f).sum())
    assert sum(outcomes.values()) == len(X)
    # Group values never reach the spans (sex and race are not allowlisted).
    for span in audit.decision_spans():
        assert set(span.attributes) <= set(semconv.SPAN_ATTRIBUTES)
        values = [v for value in span.attributes.values() for v in (value if isinstance(value, tuple) else [value])]
        assert not {"f", "m", "x", "a", "b"} & set(values) - {"sex", "race"}


def test_score_threshold_on_predict_proba(meter):
    X, y = applicants(600, seed=3)
    instrumented(sensitive_features=["sex"], meter_provider=meter.provider,
                 fairness=otel_rai.FairnessConfig(score_threshold=0.3, min_group_size=1))
    model = blind_model(X, y)
    proba = model.predict_proba(X)
    y_pred = (proba[:, 1] >= 0.3).astype(int)
    got = meter.one(semconv.METRIC_DEMOGRAPHIC_PARITY_RATIO, attribute="sex")
    assert got == pytest.approx(flm.demographic_parity_ratio(y, y_pred, sensitive_features=X.sex), abs=TOL)
    assert_close(meter.by(semconv.METRIC_SELECTION_RATE), by_group(flm.selection_rate, y, y_pred, X.sex))


def test_count_window_covers_the_newest_decisions(meter):
    X, y = applicants(600, seed=4)
    instrumented(sensitive_features=["sex"], meter_provider=meter.provider,
                 fairness=otel_rai.FairnessConfig(window=150, min_group_size=1))
    model = blind_model(X, y)
    y_pred = np.concatenate([model.predict(X.iloc[i : i + 50]) for i in range(0, 600, 50)])
    newest = slice(450, 600)
    expected = by_group(flm.selection_rate, y[newest], y_pred[newest], X.sex.iloc[newest])
    assert_close(meter.by(semconv.METRIC_SELECTION_RATE), expected)
    # The counters are not windowed: they count everything.
    assert sum(v for _, v in meter.points(semconv.METRIC_DECISIONS)) == 600


@pytest.mark.parametrize("seed", range(4))
def test_a_window_shared_by_interleaved_models_keeps_the_newest_decisions_in_call_order(meter, monkeypatch, seed):
    """Two model objects of one name and version (two runs of one worker cycle, one window), called in a
    random interleaving within one cycle: the window keeps the newest decisions in the order they were made."""
    monkeypatch.setattr("otel_rai.audit.worker._INTERVAL", 60.0)  # the calls below make one cycle, at the flush
    rng = np.random.default_rng(seed)
    X, y = applicants(400, seed=30 + seed)
    instrumented(sensitive_features=["sex"], meter_provider=meter.provider,
                 fairness=otel_rai.FairnessConfig(window=int(rng.integers(20, 120)), min_group_size=1))
    first = blind_model(X.iloc[:200], y[:200])
    second = blind_model(X.iloc[200:], 1 - y[200:])  # a different model: its decisions differ
    size = instrumentor._session.monitor.config.window
    made = []
    rows = rng.permutation(400)[:200]
    for i in rows:
        model = first if rng.random() < 0.5 else second
        made.append(model.predict(X.iloc[i : i + 1])[0])
    newest = slice(len(rows) - size, len(rows))
    expected = by_group(flm.selection_rate, y[rows][newest], np.array(made)[newest], X.sex.iloc[rows].iloc[newest])
    assert_close(meter.by(semconv.METRIC_SELECTION_RATE), expected)


def test_time_window_expires(meter):
    X, y = applicants(400, seed=5)
    instrumented(sensitive_features=["sex"], meter_provider=meter.provider,
                 fairness=otel_rai.FairnessConfig(window=timedelta(seconds=1), min_group_size=1))
    model = blind_model(X, y)
    model.predict(X.iloc[:200])
    otel_rai.flush()
    time.sleep(1.2)
    y_pred = model.predict(X.iloc[200:])
    expected = by_group(flm.selection_rate, y[200:], y_pred, X.sex.iloc[200:])
    assert_close(meter.by(semconv.METRIC_SELECTION_RATE), expected)
    time.sleep(1.2)  # no decision since: the whole window has expired, so nothing is reported
    assert meter.by(semconv.METRIC_SELECTION_RATE) == {}


# --- groups given per call -------------------------------------------------------------------------


def test_groups_given_per_call_and_allowlisting(meter):
    X, y = applicants(300, seed=6)
    audit = instrumented(meter_provider=meter.provider, capture_features=["race"],
                         fairness=otel_rai.FairnessConfig(min_group_size=1))
    model = blind_model(X, y)
    with otel_rai.decisions(groups={"sex": X.sex, "race": list(X.race)}):
        y_pred = model.predict(X)  # no sensitive_features: the groups come from the scope
    with otel_rai.decisions(groups={"sex": "f"}):
        last = model.predict(X.iloc[:5])  # a scalar applies to every row
    got = meter.by(semconv.METRIC_DECISIONS, attribute="sex", outcome="positive")
    assert got["f"] == int(y_pred[X.sex == "f"].sum()) + int(last.sum())
    assert got["m"] == int(y_pred[X.sex == "m"].sum())
    spans = audit.decision_spans()
    assert list(spans[0].attributes[semconv.INPUT_VALUE_PREFIX + "race"]) == list(X.race)
    assert semconv.INPUT_VALUE_PREFIX + "sex" not in spans[0].attributes  # not allowlisted
    with pytest.raises(ValueError, match="3 values of group 'sex'"):
        with otel_rai.decisions(groups={"sex": ["f", "m", "f"]}):
            model.predict(X.iloc[:2])
    with pytest.raises(ValueError, match="one value or a sequence"):
        otel_rai.decisions(groups={"sex": {"f"}}).__enter__()


def test_intersection_from_env_and_missing_and_capped_groups(meter, monkeypatch, caplog):
    monkeypatch.setenv("OTEL_RAI_SENSITIVE_FEATURES", "sex, sex&race, religion")
    X, y = applicants(200, seed=7)
    X.loc[:9, "sex"] = None
    instrumented(meter_provider=meter.provider, fairness=otel_rai.FairnessConfig(max_groups=3, min_group_size=1))
    model = blind_model(X, y)
    with caplog.at_level(logging.WARNING, logger="otel_rai"):
        model.predict(X)
        otel_rai.flush()
    sex = meter.by(semconv.METRIC_SELECTION_RATE, attribute="sex")  # (missing), then two of f, m, x
    assert len(sex) == 4 and {semconv.MISSING_GROUP, semconv.OTHER_GROUP} < set(sex)
    assert len(meter.by(semconv.METRIC_SELECTION_RATE, attribute="sex&race")) == 4  # 3 + (other)
    assert "no column 'religion'" in caplog.text
    assert "more than 3 groups" in caplog.text


# --- outcomes --------------------------------------------------------------------------------------


def test_record_outcome_paths(meter):
    X, y = applicants(100, seed=8)
    instrumented(sensitive_features=["sex"], meter_provider=meter.provider,
                 fairness=otel_rai.FairnessConfig(max_remembered=50, min_group_size=1))
    model = blind_model(X, y)
    with otel_rai.decisions(ids=[f"D{i}" for i in range(100)]):
        y_pred = model.predict(X)
    otel_rai.record_outcome("D99", int(y[99]))                      # remembered
    otel_rai.record_outcome("D0", 1)                                 # forgotten (only 50 kept): unknown
    otel_rai.record_outcome("elsewhere-1", 0, group={"sex": "m"}, prediction=1, model="credit", version="2.0")
    otel_rai.record_outcome("D98", 1, group={"sex": "x"})           # explicit group overrides
    otel_rai.record_outcome("D99", 1)                                # the first outcome counted; now unknown
    result = otel_rai.flush()
    assert result.failures.get("outcome") == 2
    outcomes = {(a[semconv.FAIRNESS_GROUP], a[semconv.OUTCOME], a[semconv.TRUE_OUTCOME]): v
                for a, v in meter.points(semconv.METRIC_OUTCOMES)}
    truth = lambda v: "positive" if v else "negative"  # noqa: E731
    expected = collections_counter([
        (X.sex[99], truth(y_pred[99]), truth(y[99])),
        ("m", "positive", "negative"),
        ("x", truth(y_pred[98]), "positive"),
    ])
    assert outcomes == expected
    with pytest.raises(ValueError, match="one value"):
        otel_rai.record_outcome("D1", [1, 0])


@pytest.mark.parametrize("seed", range(4))
def test_outcomes_interleaved_with_their_decisions_in_one_cycle(meter, seed):
    """The audit worker builds a cycle's spans stage by stage over runs of calls; a task (an outcome) still
    runs after every call queued before it. Outcomes recorded right after their decisions, in random runs
    within one worker cycle, are all counted against the remembered decisions (none looked up, none lost)."""
    X, y = applicants(300, seed=seed)
    instrumented(sensitive_features=["sex"], meter_provider=meter.provider,
                 fairness=otel_rai.FairnessConfig(min_group_size=1, window=10_000))
    model = blind_model(X, y)
    rng = np.random.default_rng(seed)
    y_pred, start = [], 0
    while start < len(X):
        stop = min(len(X), start + int(rng.integers(1, 6)))
        ids = []
        for i in range(start, stop):  # a run of single-row calls, then their outcomes
            with otel_rai.decisions() as d:
                y_pred.extend(model.predict(X.iloc[i : i + 1]))
            ids.extend(d.ids)
        for decision_id, truth in zip(ids, y[start:stop]):
            otel_rai.record_outcome(decision_id, truth)
        start = stop
    result = otel_rai.flush()
    assert result.complete and "outcome" not in result.failures, result
    y_pred = np.asarray(y_pred)
    outcomes = {(a[semconv.FAIRNESS_GROUP], a[semconv.OUTCOME], a[semconv.TRUE_OUTCOME]): v
                for a, v in meter.points(semconv.METRIC_OUTCOMES)}
    truth = lambda v: "positive" if v else "negative"  # noqa: E731
    assert outcomes == collections_counter(zip(X.sex, map(truth, y_pred), map(truth, y)))
    assert_close({m: meter.one(m, attribute="sex", version="2.0") for m in fairlearn_figures(y, y_pred, X.sex)},
                 fairlearn_figures(y, y_pred, X.sex))


def collections_counter(items):
    out: dict = {}
    for item in items:
        out[item] = out.get(item, 0) + 1
    return out


def test_outcome_lookup_hook_is_the_fallback(meter):
    instrumented(sensitive_features=["sex"], meter_provider=meter.provider)
    asked = []

    def lookup(decision_id: str) -> KnownDecision | None:
        asked.append(decision_id)
        if decision_id == "stored-1":
            return KnownDecision("credit", "1.0", prediction="approve", classes=["approve", "decline"][::-1],
                                 groups={"sex": "f"})
        return None

    instrumentor._session.monitor.lookup = lookup
    otel_rai.record_outcome("stored-1", "approve")
    otel_rai.record_outcome("stored-2", "approve")
    assert otel_rai.flush().failures.get("outcome") == 1
    assert asked == ["stored-1", "stored-2"]
    (attrs, value), = meter.points(semconv.METRIC_OUTCOMES)
    assert value == 1 and attrs[semconv.OUTCOME] == "positive" and attrs[semconv.TRUE_OUTCOME] == "positive"
    assert attrs[semconv.MODEL_VERSION] == "1.0" and attrs[semconv.FAIRNESS_GROUP] == "f"


def test_record_outcome_when_not_instrumented(caplog):
    assert otel_rai.record_outcome("x", 1) is False
    assert "not instrumented" in caplog.text


# --- alerts ----------------------------------------------------------------------------------------


class GroupRule(ClassifierMixin, BaseEstimator):
    """Approves applicants whose score u is below the approval rate of their group."""

    def __init__(self, rates=None):
        self.rates = rates

    def fit(self, X, y):
        self.classes_ = np.array([0, 1])
        return self

    def predict(self, X):
        return (X["u"].to_numpy() < X["sex"].map(self.rates).to_numpy()).astype(int)


def stream(model, n_calls: int, seed: int, rows: int = 20) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(n_calls):
        model.predict(pd.DataFrame({"u": rng.random(rows), "sex": rng.choice(["f", "m"], rows)}))
        otel_rai.flush()  # one worker cycle per call: the alert is checked after each


def test_alert_fires_once_per_crossing_and_resolves(meter, caplog):
    alerts, threads = [], []

    def on_alert(alert):
        alerts.append(alert)
        threads.append(threading.current_thread().name)

    audit = instrumented(sensitive_features=["sex"], meter_provider=meter.provider,
                         fairness=otel_rai.FairnessConfig(window=400, on_alert=on_alert))
    biased = otel_rai.register_model(GroupRule({"f": 0.3, "m": 0.6}).fit(None, None), name="credit", version="bad")
    with caplog.at_level(logging.INFO, logger="otel_rai"):
        stream(biased, 30, seed=1)
        biased.set_params(rates={"f": 0.6, "m": 0.6})  # the fix, same version: the window recovers
        otel_rai.register_model(biased, name="credit", version="bad")
        stream(biased, 40, seed=2)
    assert [(a.metric, a.firing) for a in alerts] == [
        (semconv.METRIC_DEMOGRAPHIC_PARITY_RATIO, True),
        (semconv.METRIC_DEMOGRAPHIC_PARITY_RATIO, False),
    ]
    assert alerts[0].value < 0.8 <= alerts[1].value
    assert set(threads) == {"otel-rai-audit"}  # never on the caller's thread
    assert meter.by(semconv.METRIC_ALERT, key=semconv.FAIRNESS_METRIC) == {semconv.METRIC_DEMOGRAPHIC_PARITY_RATIO: 1}
    spans = [s for s in audit.spans() if s.name == semconv.ALERT_SPAN]
    assert [s.attributes[semconv.FAIRNESS_STATE] for s in spans] == ["firing", "resolved"]
    assert spans[0].attributes[semconv.FAIRNESS_ATTRIBUTE] == "sex"
    ui = {semconv.UI_SPAN_KIND, semconv.UI_INPUT_VALUE, semconv.UI_INPUT_MIME_TYPE, semconv.UI_OUTPUT_VALUE,
          semconv.UI_OUTPUT_MIME_TYPE}
    assert set(spans[0].attributes) == {*semconv.ALERT_SPAN_ATTRIBUTES, *semconv.CHAIN_ATTRIBUTES, *ui}
    assert spans[0].attributes[semconv.UI_SPAN_KIND] == semconv.UI_KIND_EVALUATOR
    assert json.loads(spans[0].attributes[semconv.UI_OUTPUT_VALUE])["state"] == "firing"
    assert spans[0].events[0].name == semconv.ALERT_SPAN
    assert caplog.text.count("fairness alert fired") == 1 and caplog.text.count("fairness alert resolved") == 1


def test_alert_hysteresis_and_undefined_values(meter):
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    counter = meter.provider.get_meter("test").create_counter("alerts")
    rule = Rule(semconv.METRIC_DEMOGRAPHIC_PARITY_RATIO, 0.8, below=True, hysteresis=0.02)
    alerter = Alerter((rule,), tracer_provider.get_tracer("test"), counter, None, pytest.fail)
    key = ("credit", "1", "sex")
    states = []
    for value in (0.9, 0.79, None, 0.81, 0.79, 0.83, 0.85, 0.7):
        states += [(a.value, a.firing) for a in alerter.update(key, {rule.metric: value})]
    assert states == [(0.79, True), (0.83, False), (0.7, True)]  # 0.81 is inside the hysteresis band
    assert [s.attributes[semconv.FAIRNESS_STATE] for s in exporter.get_finished_spans()] == [
        "firing", "resolved", "firing"]


def test_small_groups_raise_no_alert(meter):
    alerts = []
    instrumented(sensitive_features=["sex"], meter_provider=meter.provider,
                 fairness=otel_rai.FairnessConfig(on_alert=alerts.append))  # min_group_size 30
    model = otel_rai.register_model(GroupRule({"f": 0.0, "m": 1.0}).fit(None, None), name="credit", version="1")
    model.predict(pd.DataFrame({"u": [0.5] * 20, "sex": ["f", "m"] * 10}))
    assert meter.one(semconv.METRIC_DEMOGRAPHIC_PARITY_RATIO) is None
    assert meter.by(semconv.METRIC_SELECTION_RATE) == {"f": 0.0, "m": 1.0}
    assert alerts == []


# --- what counts as positive ---------------------------------------------------------------------


def test_positive_label_rules(meter, caplog):
    X, y = applicants(200, seed=9)
    instrumented(sensitive_features=["sex"], meter_provider=meter.provider,
                 fairness=otel_rai.FairnessConfig(min_group_size=1))
    labels = np.where(y == 1, "approve", "decline")
    three = np.where(X.income > 1, "review", labels)
    named = otel_rai.register_model(blind_model(X, labels), name="named", version="1")
    multi = otel_rai.register_model(blind_model(X, three), name="multi", version="1")
    regressor = otel_rai.register_model(
        make_pipeline(ColumnTransformer([("n", "passthrough", ["income"])]), LinearRegression()).fit(X, y),
        name="reg", version="1")
    with caplog.at_level(logging.WARNING, logger="otel_rai"):
        predicted = named.predict(X)
        multi.predict(X)
        regressor.predict(X)
        otel_rai.flush()
    # classes_ = [approve, decline]: the second class is scikit-learn's positive one
    got = meter.by(semconv.METRIC_DECISIONS, key=semconv.OUTCOME, model="named", attribute="sex", group="f")
    assert got.get("positive", 0) == int((predicted[X.sex == "f"] == "decline").sum())
    assert {a[semconv.MODEL_NAME] for a, _ in meter.points(semconv.METRIC_DECISIONS)} == {"named"}
    assert "model multi (predict)" in caplog.text and "model reg (predict)" in caplog.text


def test_predictions_unchanged_with_fairness(meter):
    X, y = applicants(300, seed=10)
    instrumented(sensitive_features=["sex", ("sex", "race")], meter_provider=meter.provider)
    model = blind_model(X, y)
    assert np.array_equal(model.predict_proba(X), bare(model.predict_proba, X))
    assert np.array_equal(model.predict(X), bare(model.predict, X))


@pytest.mark.parametrize("operation", ["predict_proba", "predict_log_proba", "decision_function"])
def test_scored_operations_count_like_predict(meter, operation):
    X, y = applicants(300, seed=11)
    instrumented(sensitive_features=["sex"], meter_provider=meter.provider)
    model = blind_model(X, y)
    getattr(model, operation)(X)
    selected = bare(model.predict, X)
    got = meter.by(semconv.METRIC_DECISIONS, outcome="positive")
    assert got == {g: int(selected[(X.sex == g).to_numpy()].sum()) for g in ("f", "m", "x")}


def test_outcome_of_a_decision_another_process_made_is_found_in_the_shared_store(meter, tmp_path):
    """Labels arrive hours later in another process: the local store is the fallback lookup."""
    script = """
import json, sys
import numpy as np, pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
import otel_rai
otel_rai.instrument(sensitive_features=["sex"], hash_key="fairness-subprocess-key-0123456789")
rng = np.random.default_rng(0)
X = pd.DataFrame({"income": rng.normal(0, 1, 200), "sex": rng.choice(["f", "m"], 200)})
y = (X.income > 0).astype(int)
prep = ColumnTransformer([("n", "passthrough", ["income"])])
model = otel_rai.register_model(make_pipeline(prep, LogisticRegression()).fit(X, y), name="credit", version="9")
with otel_rai.decisions() as d:
    pred = model.predict(X)
json.dump({"ids": d.ids, "pred": pred.tolist(), "sex": X.sex.tolist(), "y": y.tolist()}, sys.stdout)
"""
    made = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    decided = json.loads(made.stdout)
    instrumented(sensitive_features=["sex"], meter_provider=meter.provider,
                 fairness=otel_rai.FairnessConfig(min_group_size=1), store=True)
    for decision_id, truth in zip(decided["ids"], decided["y"]):
        otel_rai.record_outcome(decision_id, truth)  # by id alone: group and prediction come from the store
    assert otel_rai.flush().failures == {}
    y, y_pred, sex = np.array(decided["y"]), np.array(decided["pred"]), np.array(decided["sex"])
    got = meter.one(semconv.METRIC_EQUALIZED_ODDS_DIFFERENCE, attribute="sex", version="9")
    assert got == pytest.approx(flm.equalized_odds_difference(y, y_pred, sensitive_features=sex), abs=TOL)
