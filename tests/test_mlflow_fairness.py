"""Fairness before deployment: `otel_rai.mlflow.log_fairness` and ``otel-rai check`` against Fairlearn on
generated validation sets, logged to a real MLflow run (SQLite store) and read back with MLflow's client,
and offered to ``mlflow.models.evaluate``."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest import instrumented
from fairlearn import metrics as flm
from mlflow_servers import base_env
from sklearn.linear_model import LogisticRegression

import otel_rai.mlflow
from otel_rai import semconv
from otel_rai.mlflow import fairness
from otel_rai.settings import FairnessConfig

TOL = 1e-12


def validation_set(seed: int, n: int, groups: int, bias: float, labels=(0, 1)):
    """Features, a string group column that the model does not see, and labels that depend on the
    group by `bias` (so that a model fitted with the group's proxy is unfair)."""
    rng = np.random.default_rng(seed)
    group = rng.choice([f"g{i}" for i in range(groups)], n, p=np.full(groups, 1 / groups))
    proxy = (group == "g0").astype(float) + rng.normal(0, 0.1, n)
    X = pd.DataFrame({"x1": rng.normal(size=n), "x2": rng.normal(size=n), "proxy": proxy, "group": group})
    y = np.where(X.x1 + bias * X.proxy + rng.normal(0, 0.5, n) > bias / 2, labels[1], labels[0])
    return X, y


FEATURES = ["x1", "x2", "proxy"]


def fitted(X, y):
    return LogisticRegression().fit(X[FEATURES], y)


CASES = [(seed, groups, bias, labels) for seed, groups, bias, labels in [
    (0, 2, 0.0, (0, 1)), (1, 3, 1.0, (0, 1)), (2, 4, 2.0, (0, 1)), (3, 5, 0.5, ("deny", "approve")),
    (4, 2, 3.0, (False, True)), (5, 3, 1.5, (0, 1)), (6, 2, 0.2, ("deny", "approve")), (7, 4, 4.0, (0, 1)),
]]


@pytest.mark.parametrize("seed, groups, bias, labels", CASES)
def test_the_figures_equal_fairlearns(seed, groups, bias, labels):
    X, y = validation_set(seed, 800, groups, bias, labels)
    model = fitted(X, y)
    # Strings sort "approve" first: the monitor's rule (the second class) would take "deny"; say which.
    config = FairnessConfig(min_group_size=1, positive_label=labels[1]) if isinstance(labels[1], str) else None
    result = fairness.check(model, X, y, ["group"], config=config)
    (attribute,) = result.attributes
    s = attribute.summary
    predicted = model.predict(X[["x1", "x2", "proxy"]])
    pos = labels[1]
    assert result.positive_label == pos == model.classes_[1] if config is None else result.positive_label == pos
    y_true, y_pred = (y == pos).astype(int), (predicted == pos).astype(int)  # Fairlearn's positive label is 1
    kw = {"sensitive_features": X.group}
    frame = flm.MetricFrame(metrics={"sel": flm.selection_rate, "tpr": flm.true_positive_rate,
                                     "fpr": flm.false_positive_rate}, y_true=y_true, y_pred=y_pred,
                            sensitive_features=X.group)
    for group, row in frame.by_group.iterrows():
        assert abs(s.selection_rate[group] - row["sel"]) < TOL
        assert abs(s.true_positive_rate[group] - row["tpr"]) < TOL
        assert abs(s.false_positive_rate[group] - row["fpr"]) < TOL
    for ours, theirs in [
        (s.demographic_parity_difference, flm.demographic_parity_difference(y_true, y_pred, **kw)),
        (s.demographic_parity_ratio, flm.demographic_parity_ratio(y_true, y_pred, **kw)),
        (s.equalized_odds_difference, flm.equalized_odds_difference(y_true, y_pred, **kw)),
        (s.equalized_odds_ratio, flm.equalized_odds_ratio(y_true, y_pred, **kw)),
    ]:
        assert ours is not None and abs(ours - theirs) < TOL
    config = result.config
    expected = [f"group/{name}" for name, failed in [
        ("demographic_parity_ratio", s.demographic_parity_ratio < config.demographic_parity_ratio_min),
        ("equalized_odds_difference", s.equalized_odds_difference > config.equalized_odds_difference_max),
    ] if failed]
    assert list(result.violations) == expected and result.passed == (not expected)


def test_intersections_and_given_values_count_as_the_monitor_counts_them():
    X, y = validation_set(9, 600, 3, 1.0)
    X["region"] = np.random.default_rng(9).choice(["north", "south", None], len(X))
    model = fitted(X, y)
    result = fairness.check(model, X, y, [("group", "region")],
                            config=FairnessConfig(min_group_size=1, positive_label=1))
    (attribute,) = result.attributes
    assert attribute.attribute == "group&region"
    assert "g0&(missing)" in attribute.counts  # a missing value is the group (missing), as in the monitor
    joined = X.group + "&" + X.region.fillna("(missing)")
    predicted = model.predict(X[["x1", "x2", "proxy"]])
    assert abs(attribute.summary.demographic_parity_difference
               - flm.demographic_parity_difference(y, predicted, sensitive_features=joined)) < TOL
    given = fairness.check(model, X[["x1", "x2", "proxy"]], y, {"group": X.group.tolist()})
    assert given.attributes[0].summary == fairness.check(model, X, y, ["group"]).attributes[0].summary


def test_validation_is_not_audited_and_bad_arguments_are_named():
    audit = instrumented()
    X, y = validation_set(10, 300, 2, 1.0)
    fairness.check(fitted(X, y), X, y, ["group"])
    assert audit.decision_spans() == []  # checking a model on validation data decides nothing
    with pytest.raises(ValueError, match="'sex' is not a column"):
        fairness.check(fitted(X, y), X, y, ["sex"])
    with pytest.raises(ValueError, match="3 values of sensitive feature 'group' for 300 rows"):
        fairness.check(fitted(X, y), X, y, {"group": ["a", "b", "c"]})


@pytest.fixture
def tracking(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment("fairness", artifact_location=str(tmp_path / "artifacts"))
    yield {"uri": uri, "experiment": experiment, "root": tmp_path}
    mlflow.set_tracking_uri(previous)


def test_log_fairness_logs_the_figures_the_report_and_the_verdict_to_the_active_run(tracking):
    X, y = validation_set(11, 800, 3, 3.0)
    model = fitted(X, y)
    with mlflow.start_run(experiment_id=tracking["experiment"]) as run:
        result = otel_rai.mlflow.log_fairness(model, X, y, sensitive_features=["group"], model_name="credit",
                                              version="7", explain_rows=300, background=X[FEATURES].iloc[:100])
    assert not result.passed
    logged = mlflow.MlflowClient().get_run(run.info.run_id).data
    assert logged.metrics == pytest.approx(result.metrics(), abs=0)
    assert logged.metrics["fairness.group.demographic_parity_ratio"] == \
        result.attributes[0].summary.demographic_parity_ratio
    assert logged.tags[semconv.MLFLOW_FAIRNESS_TAG] == "fail"
    assert logged.tags[semconv.MLFLOW_FAIRNESS_VIOLATIONS_TAG] == ",".join(result.violations)
    page = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/{fairness.REPORT_ARTIFACT}")
    assert "Fairness audit: credit 7" in page and page == result.report
    # The report's most attributed features: the mean |attribution| of the first 300 rows' explanations.
    explained = otel_rai.explain(model, X[FEATURES].iloc[:300], background=X[FEATURES].iloc[:100])
    expected = dict(zip(explained.feature_names, np.abs(explained.values).mean(axis=0)))
    shown = {name: float(value) for name, value in re.findall(r'data-feature="([^"]+)" data-value="([^"]+)"', page)}
    assert shown.keys() == expected.keys()
    assert all(abs(shown[name] - expected[name]) < 1e-12 for name in expected)
    assert "with an explanation</th><td class=\"num\" id=\"explained\">300<" in page


def test_the_figures_reach_mlflow_evaluate_as_extra_metrics(tracking):
    X, y = validation_set(12, 600, 2, 2.0)
    model = fitted(X, y)
    data = X.assign(label=y)
    with mlflow.start_run(experiment_id=tracking["experiment"]):
        evaluated = mlflow.models.evaluate(
            lambda frame: model.predict(frame[["x1", "x2", "proxy"]]), data=data, targets="label",
            model_type="classifier", extra_metrics=otel_rai.mlflow.fairness_metrics(["group"]),
            evaluator_config={"log_model_explainability": False})
    summary = fairness.check(model, X, y, ["group"]).attributes[0].summary
    for figure in fairness.FIGURES:
        value = evaluated.metrics[fairness.metric_name("group", figure)]
        assert value == getattr(summary, figure) or (math.isnan(value) and getattr(summary, figure) is None)
    with pytest.raises(ValueError, match="'marital status' needs a name that is a Python identifier"):
        otel_rai.mlflow.fairness_metrics(["marital status"])


def _check(tracking, *argv):
    return subprocess.run([sys.executable, "-m", "otel_rai", "check", *argv], capture_output=True, text=True,
                          timeout=300, env=base_env({"MLFLOW_TRACKING_URI": tracking["uri"]}))


def test_otel_rai_check_passes_a_fair_model_and_blocks_an_unfair_one(tracking):
    fair_X, fair_y = validation_set(13, 1000, 2, 0.0)
    unfair_X, unfair_y = validation_set(14, 1000, 2, 3.0)
    with mlflow.start_run(experiment_id=tracking["experiment"]) as run:
        for X, y in ((fair_X, fair_y), (unfair_X, unfair_y)):
            mlflow.sklearn.log_model(fitted(X, y), name=f"m{len(y)}{y[0]}", registered_model_name="credit",
                                     pip_requirements=[])
    val_X, val_y = validation_set(17, 2000, 2, 0.0)  # outcomes that do not depend on the group
    data = tracking["root"] / "val.csv"
    pd.concat([val_X, pd.Series(val_y, name="y")], axis=1).to_csv(data, index=False)
    passed = _check(tracking, "--model", "models:/credit/1", "--data", str(data), "--target", "y",
                    "--sensitive", "group", "--format", "json")
    failed = _check(tracking, "--model", "models:/credit/2", "--data", str(data), "--target", "y",
                    "--sensitive", "group", "--run-id", run.info.run_id, "--out", str(tracking["root"] / "r.html"))
    assert passed.returncode == 0, passed.stderr
    verdict = json.loads(passed.stdout)
    assert verdict["passed"] and (verdict["model"], verdict["version"]) == ("credit", "1")
    assert failed.returncode == 3, failed.stderr
    assert failed.stdout.splitlines()[-1].startswith("FAIL: group/")
    assert mlflow.MlflowClient().get_run(run.info.run_id).data.tags[semconv.MLFLOW_FAIRNESS_TAG] == "fail"
    assert "Fairness audit: credit 2" in (tracking["root"] / "r.html").read_text()
    expected = fairness.check(fitted(unfair_X, unfair_y), val_X, val_y, ["group"])
    assert f"{expected.attributes[0].summary.demographic_parity_ratio:.4f}" in failed.stdout


@pytest.mark.parametrize("argv, status, message", [
    (["--target", "nope", "--sensitive", "group"], 2, "--target 'nope' is not a column"),
    (["--target", "y", "--sensitive", "sex"], 2, "--sensitive 'sex' is not a column"),
])
def test_otel_rai_check_usage_errors_are_one_line(tracking, argv, status, message):
    X, y = validation_set(15, 50, 2, 0.0)
    data = tracking["root"] / "small.csv"
    X.assign(y=y).to_csv(data, index=False)
    out = _check(tracking, "--model", "models:/credit/1", "--data", str(data), *argv)
    assert out.returncode == status and out.stderr.strip().count("\n") == 0, out.stderr
    assert message in out.stderr


def test_otel_rai_check_names_an_unreadable_file_and_an_unknown_model(tracking):
    missing = _check(tracking, "--model", "models:/credit/1", "--data", str(tracking["root"] / "none.csv"),
                     "--target", "y", "--sensitive", "g")
    assert missing.returncode == 1 and "cannot read" in missing.stderr and "none.csv" in missing.stderr
    X, y = validation_set(16, 50, 2, 0.0)
    X.assign(y=y).to_csv(tracking["root"] / "v.csv", index=False)
    unknown = _check(tracking, "--model", "models:/nothing/1", "--data", str(tracking["root"] / "v.csv"),
                     "--target", "y", "--sensitive", "group")
    assert unknown.returncode == 1 and "cannot load the MLflow model models:/nothing/1" in unknown.stderr
    assert unknown.stderr.strip().count("\n") == 0
