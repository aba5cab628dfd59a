"""The HTML audit report: parsed back, its figures checked against Fairlearn; the `report` command."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest
from conftest import KEY
from fairlearn import metrics as flm
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

import otel_rai
from otel_rai import cli, semconv, store
from otel_rai.fairness.alerts import FairnessAlert
from otel_rai.report import charts as report_charts
from otel_rai.report import figures as report_figures
from otel_rai.report import html as report
from otel_rai.report import load as report_load
from otel_rai.settings import FairnessConfig

SVG = "{http://www.w3.org/2000/svg}"


def make_records(n: int = 400, seed: int = 0,
                 explained: bool = True) -> tuple[list[report_figures.DecisionRecord], dict]:
    rng = np.random.default_rng(seed)
    sex = rng.choice(["f", "m", "<x&y>"], n, p=[0.45, 0.45, 0.1])
    y_pred = (rng.random(n) < np.where(sex == "f", 0.35, 0.6)).astype(int)
    y_true = rng.integers(0, 2, n)
    records = [
        report_figures.DecisionRecord(
            decision_id=f"D{i}", model="credit", version="1.4.2", timestamp=1.7e9 + i, output=int(y_pred[i]),
            groups={"sex": str(sex[i])}, outcome=int(y_true[i]) if i % 2 == 0 else None,
            attributions={"income": float(rng.normal(0, 2)), "debt": float(rng.normal(0, 1))} if explained else {},
        )
        for i in range(n)
    ]
    labelled = np.arange(n) % 2 == 0
    return records, {"sex": sex, "y_pred": y_pred, "y_true": y_true, "labelled": labelled}


def parse(page: str) -> ET.Element:
    assert page.startswith("<!DOCTYPE html>")
    return ET.fromstring(page.removeprefix("<!DOCTYPE html>"))  # the page is well-formed markup


def cell(root: ET.Element, metric: str) -> str:
    (td,) = [td for td in root.iter("td") if td.get("data-metric") == metric]
    return "".join(td.itertext())


def test_report_figures_equal_fairlearn():
    records, truth = make_records()
    alert = FairnessAlert("credit", "1.4.2", "sex", semconv.METRIC_DEMOGRAPHIC_PARITY_RATIO, 0.61, 0.8, True,
                          1_700_000_100 * 10**9)
    root = parse(report.render(records, alerts=[alert], config=FairnessConfig(min_group_size=1)))
    sex, y_pred, y_true = truth["sex"], truth["y_pred"], truth["y_true"]

    assert root.find(".//td[@id='decisions']").text == "400"
    assert root.find(".//td[@id='selected']").text == str(y_pred.sum())
    assert root.find(".//td[@id='labelled']").text == "200"
    assert root.find(".//td[@id='explained']").text == "400"

    svgs = {svg.get("class").split()[1]: svg for svg in root.iter(SVG + "svg")}
    chart, attributions = svgs["selection-rate"], svgs["attributions"]
    assert {"decisions-over-time", "selection-rate-over-time"} <= svgs.keys()
    bars = {b.get("data-group"): float(b.get("data-rate")) for b in chart.iter(SVG + "rect") if b.get("class") == "bar"}
    frame = flm.MetricFrame(metrics=flm.selection_rate, y_true=y_true, y_pred=y_pred, sensitive_features=sex)
    assert bars == pytest.approx(dict(frame.by_group.items()), abs=1e-12)
    assert "<x&y>" in bars  # escaped in the markup, intact once parsed
    (band,) = [r for r in chart.iter(SVG + "rect") if r.get("class") == "band"]
    plot = report_charts.WIDTH - 150 - 70  # the drawing less its left and right margins
    x = lambda v: 150 + plot * v  # noqa: E731
    assert float(band.get("x")) == pytest.approx(x(0.8 * max(bars.values())), abs=0.01)
    assert float(band.get("x")) + float(band.get("width")) == pytest.approx(x(max(bars.values())), abs=0.02)

    assert float(cell(root, "demographic parity ratio")) == pytest.approx(
        flm.demographic_parity_ratio(y_true, y_pred, sensitive_features=sex), abs=5e-5)
    lab = truth["labelled"]
    assert float(cell(root, "equalized odds difference")) == pytest.approx(
        flm.equalized_odds_difference(y_true[lab], y_pred[lab], sensitive_features=sex[lab]), abs=5e-5)
    text = "".join(root.itertext())
    assert "min_a P[h(X)=1 | A=a] / max_a P[h(X)=1 | A=a]" in text  # the definition, from the function

    features = [r.get("data-feature") for r in attributions.iter(SVG + "rect")]
    assert features == ["income", "debt"]  # income's attributions are twice as large
    (row,) = [tr for tr in root.iter("tr") if tr.get("class") == "alert"]
    assert [td.text for td in row][1:] == ["sex", semconv.METRIC_DEMOGRAPHIC_PARITY_RATIO, "0.6100", "0.8", "firing"]


def test_report_without_explanations_alerts_or_outcomes():
    records, _ = make_records(60, explained=False)
    records = [report_figures.DecisionRecord(r.decision_id, r.model, r.version, r.timestamp, r.output, r.groups)
               for r in records]
    root = parse(report.render(records, config=FairnessConfig(min_group_size=30)))  # only f and m qualify
    text = "".join(root.itertext())
    assert "No explanations were recorded" in text and "No alert was raised" in text
    assert [svg.get("class") for svg in root.iter(SVG + "svg")] == [
        "chart selection-rate", "chart decisions-over-time", "chart selection-rate-over-time"]
    assert "no value" in cell(root, "equalized odds difference")  # no outcomes: no TPR/FPR


def run_cli(tmp_path, *argv) -> int:
    return cli.main(["report", *argv])


def test_report_command(tmp_path, capsys):
    records, _ = make_records(100)
    path = tmp_path / "decisions.jsonl"
    lines = [json.dumps({**r.__dict__, "groups": dict(r.groups), "attributions": dict(r.attributions)})
             for r in records]
    lines[0] = json.dumps({**json.loads(lines[0]), "timestamp": "2023-11-14T22:13:20+00:00"})
    path.write_text("\n".join(lines))
    out = tmp_path / "report.html"
    assert run_cli(tmp_path, "--model-version", "1.4.2", "--records", str(path), "--out", str(out)) == 0
    assert parse(out.read_text()).find(".//td[@id='decisions']").text == "100"

    assert run_cli(tmp_path, "--model-version", "9.9", "--records", str(path), "--out", str(out)) == 1
    assert capsys.readouterr().err == "otel-rai: no decisions of model version '9.9'; versions there: credit 1.4.2\n"
    bad_out = tmp_path / "missing-dir" / "report.html"
    assert run_cli(tmp_path, "--model-version", "1.4.2", "--records", str(path), "--out", str(bad_out)) == 1
    assert "cannot write" in capsys.readouterr().err
    path.write_text("{not json\n")
    assert run_cli(tmp_path, "--model-version", "1.4.2", "--records", str(path), "--out", str(out)) == 1
    assert "decisions.jsonl:1: not JSON" in capsys.readouterr().err
    assert run_cli(tmp_path, "--records", str(path), "--out", str(out)) == 2
    assert "--model-version" in capsys.readouterr().err
    assert run_cli(tmp_path, "--model-version", "1", "--store", str(tmp_path / "none.db"), "--out", str(out)) == 1
    assert "no audit store at" in capsys.readouterr().err


@pytest.mark.parametrize("page", [7, 4096])
def test_report_from_the_local_store_with_groups_and_outcomes(tmp_path, capsys, monkeypatch, page):
    """The default path: the local store keeps groups and outcomes (never on spans), the report reads them,
    a page of decisions at a time (many pages, or one)."""
    monkeypatch.setattr(report_load, "_PAGE", page)
    rng = np.random.default_rng(5)
    X = pd.DataFrame({"income": rng.normal(0, 1, 900), "sex": rng.choice(["f", "m"], 900)})
    y = (X.income + (X.sex == "m") > 0.5).astype(int).to_numpy()
    otel_rai.instrument(hash_key=KEY, sensitive_features=["sex"], fairness=otel_rai.FairnessConfig(window=5000))
    prep = ColumnTransformer([("n", "passthrough", ["income"]), ("s", OneHotEncoder(), ["sex"])])
    model = otel_rai.register_model(make_pipeline(prep, LogisticRegression()).fit(X, y), name="credit", version="7")
    y_pred = []
    for start in range(0, 900, 300):
        with otel_rai.decisions() as d:
            y_pred.append(model.predict(X.iloc[start : start + 300]))
        for decision_id, truth in zip(d.ids, y[start : start + 300]):
            otel_rai.record_outcome(decision_id, truth)
    y_pred = np.concatenate(y_pred)
    assert otel_rai.flush().complete
    otel_rai.uninstrument()
    out = tmp_path / "report.html"
    assert run_cli(tmp_path, "--model-version", "7", "--out", str(out)) == 0
    root = parse(out.read_text())
    assert root.find(".//td[@id='decisions']").text == "900"
    sex = X.sex.to_numpy()
    assert float(cell(root, "demographic parity ratio")) == pytest.approx(
        flm.demographic_parity_ratio(y, y_pred, sensitive_features=sex), abs=5e-5)
    assert float(cell(root, "equalized odds difference")) == pytest.approx(
        flm.equalized_odds_difference(y, y_pred, sensitive_features=sex), abs=5e-5)
    assert len([tr for tr in root.iter("tr") if tr.get("class") == "alert"]) == 1  # the live alert, read back
    # the groups stayed local: no span in the store carries a group value
    for span in store.Store(store.default_path()).spans():
        for value in span.attributes.values():
            assert not {"f", "m"} & set(value if isinstance(value, list) else [value])


def test_report_from_allowlisted_groups_on_spans(tmp_path):
    """A backend without the local groups table (Jaeger, Tempo, Phoenix): groups come from allowlisted
    values of the --sensitive-feature columns on the spans."""
    rng = np.random.default_rng(3)
    X = pd.DataFrame({"income": rng.normal(0, 1, 1200), "sex": rng.choice(["f", "m"], 1200)})
    y = (X.income + (X.sex == "m") > 0.5).astype(int).to_numpy()
    otel_rai.instrument(hash_key=KEY, capture_features=["sex"])  # no sensitive_features: no local groups
    prep = ColumnTransformer([("n", "passthrough", ["income"]), ("s", OneHotEncoder(), ["sex"])])
    model = make_pipeline(prep, LogisticRegression()).fit(X, y)  # learns the bias in y
    otel_rai.register_model(model, name="credit", version="5")
    y_pred = np.concatenate([model.predict(X.iloc[i : i + 300]) for i in range(0, 1200, 300)])
    otel_rai.uninstrument()
    out = tmp_path / "report.html"
    assert run_cli(tmp_path, "--model-version", "5", "--sensitive-feature", "sex", "--out", str(out)) == 0
    root = parse(out.read_text())
    assert root.find(".//td[@id='decisions']").text == "1200"
    assert float(cell(root, "demographic parity ratio")) == pytest.approx(
        flm.demographic_parity_ratio(y, y_pred, sensitive_features=X.sex), abs=5e-5)
