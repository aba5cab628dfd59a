"""The report's quality and drift sections and `otel-rai monitor`: figures against sklearn and scipy, from
records and from a real session's store."""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest
from conftest import KEY
from scipy.spatial.distance import jensenshannon
from sklearn import metrics as skm
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

import otel_rai
from otel_rai import cli, semconv
from otel_rai.monitoring import drift, profile, snapshot
from otel_rai.monitoring.alerts import MonitoringAlert
from otel_rai.report import html as report
from otel_rai.report import monitoring as figures
from otel_rai.report.figures import DecisionRecord

SVG = "{http://www.w3.org/2000/svg}"
TOL = 1e-9


def records(n: int = 600, seed: int = 0) -> tuple[list[DecisionRecord], dict]:
    rng = np.random.default_rng(seed)
    p = rng.beta(2, 2, n)
    y_true = (rng.random(n) < p).astype(int)
    y_pred = (p >= 0.5).astype(int)
    sex = rng.choice(["f", "m"], n)
    labelled = rng.random(n) < 0.8
    out = [DecisionRecord(decision_id=f"D{i}", model="credit", version="2", timestamp=1.7e9 + i,
                          output=int(y_pred[i]), groups={"sex": str(sex[i])},
                          outcome=int(y_true[i]) if labelled[i] else None, classes=[0, 1],
                          proba=[1 - float(p[i]), float(p[i])]) for i in range(n)]
    return out, {"p": p, "y_true": y_true, "y_pred": y_pred, "sex": sex, "labelled": labelled}


def parse(page: str) -> ET.Element:
    return ET.fromstring(page.removeprefix("<!DOCTYPE html>"))


def quality_cell(root: ET.Element, name: str, metric: str) -> float | None:
    (row,) = [r for r in root.iter("tr") if r.get("data-slice") == name]
    (td,) = [td for td in row.iter("td") if td.get("data-metric") == metric]
    text = "".join(td.itertext())
    return None if text == "–" else float(text)


def test_quality_section_equals_sklearn_overall_per_group_and_over_time():
    recs, t = records()
    f = figures.figures(recs, positive_label=1)
    lab = t["labelled"]
    slices = (("all decisions", lab), ("sex = f", lab & (t["sex"] == "f")), ("sex = m", lab & (t["sex"] == "m")))
    for name, rows in slices:
        (s,) = [s for s in f.slices if s.name == name]
        proba = np.column_stack([1 - t["p"][rows], t["p"][rows]])
        assert s.quality.labelled == rows.sum()
        assert s.quality.accuracy == pytest.approx(skm.accuracy_score(t["y_true"][rows], t["y_pred"][rows]), abs=TOL)
        assert s.quality.log_loss == pytest.approx(skm.log_loss(t["y_true"][rows], proba), rel=TOL)
        assert s.quality.f1 == pytest.approx(skm.f1_score(t["y_true"][rows], t["y_pred"][rows]), abs=TOL)
        assert abs(s.quality.roc_auc - skm.roc_auc_score(t["y_true"][rows], t["p"][rows])) <= s.quality.roc_auc_bound
        everyone = (t["sex"] == name[-1]) if name != "all decisions" else np.ones(len(recs), bool)
        assert s.estimated_accuracy == pytest.approx(np.maximum(t["p"], 1 - t["p"])[everyone].mean(), rel=1e-12)
    # Over time: 10 slices of 60 decisions; a late label counts in its decision's slice (by decision time).
    assert len(f.periods) == figures.PERIODS
    for i, period in enumerate(f.periods):
        rows = np.zeros(len(recs), bool)
        rows[i * 60:(i + 1) * 60] = True
        rows &= lab
        assert period.slices[0].quality.accuracy == pytest.approx(
            skm.accuracy_score(t["y_true"][rows], t["y_pred"][rows]), abs=TOL)
    root = parse(report.render(recs, monitoring=f))
    assert quality_cell(root, "sex = m", "accuracy") == pytest.approx(
        f.slices[2].quality.accuracy, abs=5e-5)
    charts = [svg for svg in root.iter(SVG + "svg") if svg.findtext(SVG + "title") == "accuracy over time"]
    (chart,) = charts
    series = {p.get("data-series") for p in chart.iter(SVG + "polyline")}
    assert series == {"all decisions", "sex = f", "sex = m", "estimated (all decisions)"}


def test_regression_records():
    rng = np.random.default_rng(1)
    y = rng.normal(0, 3, 200)
    pred = y + rng.normal(0, 1, 200)
    recs = [DecisionRecord(f"R{i}", "price", "1", 1.7e9 + i, float(pred[i]), outcome=float(y[i])) for i in range(200)]
    f = figures.figures(recs)
    assert f.kind == "regression"
    assert f.slices[0].quality.r2 == pytest.approx(skm.r2_score(y, pred), rel=1e-9)
    root = parse(report.render(recs, monitoring=f))
    assert quality_cell(root, "all decisions", "rmse") == pytest.approx(skm.root_mean_squared_error(y, pred), abs=5e-5)


def test_drift_section_from_a_snapshot():
    rng = np.random.default_rng(2)
    subjects = [profile.numeric("income", rng.normal(size=2000), 10, 3),
                profile.numeric("age", rng.normal(size=2000), 10, 3),
                profile.categorical("region", rng.choice(list("abc"), 2000), 5)]
    current = [np.bincount(profile.bin_numeric(rng.normal(1, 1, 500), np.asarray(subjects[0].edges)),
                           minlength=subjects[0].bins),
               np.bincount(profile.bin_numeric(rng.normal(0, 1, 500), np.asarray(subjects[1].edges)),
                           minlength=subjects[1].bins),
               np.array([200, 150, 150, 0, 0])]
    record = snapshot.record("credit", "2", "fit", subjects, current)
    alert = MonitoringAlert("drift", "credit", "2", semconv.METRIC_DRIFT_PSI, 0.9, 0.2, True, 1_700_000_000 * 10**9,
                            feature="income")
    recs, _ = records(50)
    f = figures.figures(recs, [(1_700_000_000 * 10**9, record)], [alert])
    root = parse(report.render(recs, monitoring=f))
    rows = {r.get("data-feature"): r for r in root.iter("tr") if r.get("data-feature")}
    assert list(rows)[0] == "income"  # ranked by PSI, the worst first
    for s, c in zip(subjects, current):
        (td,) = [td for td in rows[s.name].iter("td") if td.get("data-metric") == "psi"]
        assert float(td.text) == pytest.approx(drift.psi(s.counts, c), abs=5e-5)
    (d,) = [d for d in f.drift if d.feature == "age"]
    assert d.js_distance == pytest.approx(jensenshannon(subjects[1].counts, current[1], base=2), abs=1e-12)
    bars = [b for svg in root.iter(SVG + "svg") for b in svg.iter(SVG + "rect") if b.get("data-psi")]
    assert bars[0].get("data-feature") == "income" and float(bars[0].get("data-psi")) > 0.2
    assert any("income" in "".join(r.itertext()) for r in root.iter("tr") if r.get("class") == "monitoring-alert")


# --- from a real session's store -------------------------------------------------------------------------


@pytest.fixture
def stored(tmp_path):
    """A session's store: decisions, late labels for most, groups, a drift snapshot."""
    path = tmp_path / "audit.db"
    rng = np.random.default_rng(3)
    n = 1200
    X = pd.DataFrame({"income": rng.normal(0, 1, n), "region": rng.choice(["n", "s"], n),
                      "sex": rng.choice(["f", "m"], n)})
    y = (X.income + rng.normal(0, 1, n) > 0).astype(int).to_numpy()
    otel_rai.instrument(hash_key=KEY, store=path, sensitive_features=["sex"],
                        monitoring=otel_rai.MonitoringConfig(window=400))
    prep = ColumnTransformer([("n", "passthrough", ["income"]), ("c", OneHotEncoder(), ["region"])])
    model = otel_rai.register_model(make_pipeline(prep, LogisticRegression()).fit(X[:600], y[:600]),
                                    name="credit", version="5", explain=False)
    ids, proba = [], []
    for start in range(600, n, 40):
        with otel_rai.decisions() as d:
            proba.append(model.predict_proba(X[start:start + 40]))
        ids += d.ids
    labelled = rng.random(600) < 0.9
    for decision_id, truth, has in zip(ids, y[600:], labelled):
        if has:
            otel_rai.record_outcome(decision_id, int(truth))
    otel_rai.uninstrument()
    return path, {"proba": np.concatenate(proba), "y": y[600:], "labelled": labelled, "X": X,
                  "sex": X.sex[600:].to_numpy()}


def run(args: list[str], capsys) -> tuple[int, str, str]:
    code = cli.main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_monitor_command_from_the_store(stored, capsys):
    path, t = stored
    code, out, err = run(["monitor", "--model-version", "5", "--store", str(path), "--format", "json"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    got = {(f["section"], f["subject"], f["metric"]): f["value"] for f in doc["figures"]}
    lab, pred = t["labelled"], t["proba"].argmax(axis=1)
    assert got[("quality", "all decisions", "labelled")] == lab.sum()
    assert got[("quality", "all decisions", "accuracy")] == pytest.approx(
        skm.accuracy_score(t["y"][lab], pred[lab]), abs=TOL)
    m = lab & (t["sex"] == "m")
    assert got[("quality", "sex = m", "log_loss")] == pytest.approx(skm.log_loss(t["y"][m], t["proba"][m]), rel=TOL)
    # drift: the last snapshot, written when the session closed: the window of 400 against the fit data
    ref = profile.numeric("income", t["X"].income[:600].to_numpy(), 10, 3)
    window = np.bincount(profile.bin_numeric(t["X"].income[-400:].to_numpy(), np.asarray(ref.edges)),
                         minlength=ref.bins)
    assert got[("drift", "income", "psi")] == pytest.approx(drift.psi(ref.counts, window), rel=1e-12)
    assert got[("drift", "income", "rows")] == 400
    code, out, _ = run(["monitor", "--model-version", "5", "--store", str(path), "--format", "csv",
                        "--window", "100"], capsys)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and {r["metric"] for r in rows} >= {"accuracy", "psi", "estimated_accuracy"}
    decisions = [r for r in rows if r["subject"] == "all decisions" and r["metric"] == "decisions"]
    assert decisions[0]["value"] == "100"
    code, out, _ = run(["monitor", "--model-version", "5", "--store", str(path)], capsys)
    assert code == 0 and out.startswith("QUALITY") and "\nDRIFT" in out and "sex = f" in out


def test_monitor_command_errors(stored, capsys):
    path, _ = stored
    assert run(["monitor", "--store", str(path)], capsys)[0] == 2
    code, _, err = run(["monitor", "--model-version", "nope", "--store", str(path)], capsys)
    assert code == 1 and "no decisions of model version 'nope'" in err and "Traceback" not in err
    code, _, err = run(["monitor", "--model-version", "5", "--store", str(path.with_name("missing.db"))], capsys)
    assert code == 1 and "Traceback" not in err


def test_report_command_has_the_quality_and_drift_sections(stored, tmp_path, capsys):
    path, t = stored
    page = tmp_path / "report.html"
    code, _, err = run(["report", "--model-version", "5", "--store", str(path), "--out", str(page)], capsys)
    assert code == 0, err
    root = parse(page.read_text())
    headings = ["".join(h.itertext()) for h in root.iter("h2")]
    assert "Model quality" in headings and "Input and prediction drift" in headings
    lab, pred = t["labelled"], t["proba"].argmax(axis=1)
    assert quality_cell(root, "all decisions", "accuracy") == pytest.approx(
        skm.accuracy_score(t["y"][lab], pred[lab]), abs=5e-5)
    assert root.find(".//table[@id='drift']") is not None


def test_monitor_command_from_a_remote_backend_gives_the_estimates_only(stored, capsys):
    """Jaeger's API (a local server speaking it) holds the decisions but neither outcomes nor snapshots."""
    from fake_backends import FakeJaeger

    from otel_rai import store

    path, t = stored
    server = FakeJaeger(list(store.Store(path).spans()))
    try:
        code, out, err = run(["monitor", "--model-version", "5", "--backend", "jaeger", "--url", server.url,
                              "--format", "json"], capsys)
    finally:
        server.stop()
    assert code == 0, err
    assert "holds no outcomes and no drift snapshots" in err
    got = {(f["section"], f["subject"], f["metric"]): f["value"] for f in json.loads(out)["figures"]}
    assert got[("quality", "all decisions", "decisions")] == 600
    assert got[("quality", "all decisions", "labelled")] == 0
    assert got[("quality", "all decisions", "estimated_accuracy")] == pytest.approx(t["proba"].max(axis=1).mean(),
                                                                                    rel=1e-12)
    assert not [k for k in got if k[0] == "drift"]
