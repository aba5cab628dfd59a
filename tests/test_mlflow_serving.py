"""Serving that answers with explanations and audits every request: a model logged with
`otel_rai.mlflow.log_model`, registered, served by a real ``mlflow models serve --env-manager local``
on a free port, asked with `requests` in all four of MLflow's JSON input formats; the answers are
checked against scikit-learn (bare predictions) and the audit store (ids, scores, reasons)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
from conftest import KEY, bare, instrumented
from mlflow_servers import ModelServer, base_env
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import otel_rai
import otel_rai.mlflow
from otel_rai import semconv
from otel_rai.codec import otlpjson
from otel_rai.codec.reasons import parse_top
from otel_rai.provenance import lookup
from otel_rai.query import Query, connect, find_decisions, find_spans
from otel_rai.query._decision import decisions_of

pytestmark = pytest.mark.stack

FEATURES = ["income", "debt_ratio", "age", "years_employed"]
CODES = {("income", "-"): "Income insufficient for amount of credit requested",
         ("debt_ratio", "+"): "Excessive obligations in relation to income",
         "years_employed": "Length of employment"}
#: How long the test waits for the server's audit worker to commit a decision to the store.
COMMIT_TIMEOUT_S = 30.0


def credit_data(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({
        "income": rng.normal(50, 15, n), "debt_ratio": rng.uniform(0, 1, n),
        "age": rng.uniform(20, 70, n), "years_employed": rng.uniform(0, 30, n),
    })
    y = ((X.income - 40 * X.debt_ratio + 0.3 * X.years_employed + rng.normal(0, 5, n)) > 35).astype(int).to_numpy()
    return X, y


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    X, y = credit_data(600, 0)
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    experiment = mlflow.create_experiment("serving", artifact_location=str(root / "artifacts"))
    with mlflow.start_run(experiment_id=experiment):
        otel_rai.mlflow.log_model(model, name="credit-model", background=X.iloc[:100], input_example=X.iloc[:3],
                                  reason_codes=CODES, max_reasons=2, registered_model_name="credit",
                                  pip_requirements=["scikit-learn"])
    mlflow.MlflowClient().set_registered_model_alias("credit", "champion", "1")
    store = root / "audit.db"
    server = ModelServer("models:/credit@champion", root, env={
        "MLFLOW_TRACKING_URI": uri, "OTEL_RAI_STORE": str(store), "OTEL_RAI_HASH_KEY": KEY,
        "OTEL_RAI_HOME": str(root / "home"), "OTEL_RAI_EXPLAIN_TOP_K": "3"}).start()
    yield {"server": server, "store": store, "model": model, "X": X, "uri": uri, "root": root}
    server.stop()
    mlflow.set_tracking_uri(previous)


def post(served, payload, content_type="application/json"):
    body = payload if isinstance(payload, (str, bytes)) else json.dumps(payload)
    return requests.post(served["server"].url + "/invocations", data=body, headers={"Content-Type": content_type},
                         timeout=60)


def bodies(rows: pd.DataFrame) -> dict[str, dict]:
    """The same rows in each of MLflow's JSON input formats."""
    records = rows.to_dict(orient="records")
    return {
        "dataframe_split": {"dataframe_split": rows.to_dict(orient="split", index=False)},
        "dataframe_records": {"dataframe_records": records},
        "instances": {"instances": records},
        "inputs": {"inputs": rows.to_dict(orient="list")},
    }


def stored_decisions(served, ids, timeout=COMMIT_TIMEOUT_S):
    """The decisions with `ids` in the server's audit store, once all are committed."""
    deadline = time.monotonic() + timeout
    while True:
        found = {d.decision_id: d for d in find_decisions(decision_id=ids, url=str(served["store"]))}
        if len(found) == len(ids) or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def error_spans(served):
    return [s for s in find_spans(Query(), connect("local", str(served["store"]))) if s.status_code == 2]


@pytest.mark.parametrize("fmt", ["dataframe_split", "dataframe_records", "instances", "inputs"])
def test_each_input_format_answers_with_the_audited_decision_and_its_reasons(served, fmt):
    rows = served["X"].sample(5, random_state=len(fmt)).reset_index(drop=True)
    response = post(served, bodies(rows)[fmt])
    assert response.status_code == 200, response.text
    answers = response.json()["predictions"]
    expected = bare(served["model"].predict_proba, rows)
    assert [a["prediction"] for a in answers] == served["model"].classes_[expected.argmax(1)].tolist()
    for answer, probabilities in zip(answers, expected):
        assert [answer["scores"][str(c)] for c in served["model"].classes_] == probabilities.tolist()  # bit for bit
    ids = [a["decision_id"] for a in answers]
    stored = stored_decisions(served, ids)
    assert set(stored) == set(ids)
    for answer in answers:
        d = stored[answer["decision_id"]]
        assert (d.model_name, d.model_version) == ("credit", "1")  # the registry's version, found by the server
        assert d.output == answer["prediction"] and d.scores == answer["scores"]
        top = d.values[semconv.EXPLANATION_TOP]
        assert [(r["feature"], r["attribution"]) for r in answer["reasons"]] == parse_top(top)
        assert len(answer["reasons"]) == 3  # OTEL_RAI_EXPLAIN_TOP_K of the server
        assert answer["explanation"]["method"] == d.attributes[semconv.EXPLANATION_METHOD]
        assert answer["explanation"]["base_value"] == d.values[semconv.EXPLANATION_BASE_VALUES]


def test_otel_rai_reproduce_makes_a_served_decision_again(served, tmp_path):
    """A decision the real server made, made again by ``otel-rai reproduce`` from the artifact the server
    saved beside its store; its record names the registry version; a changed input is refused (exit 4)."""
    rows = served["X"].sample(3, random_state=17).reset_index(drop=True)
    answers = post(served, bodies(rows)["dataframe_records"]).json()["predictions"]
    ids = [a["decision_id"] for a in answers]
    assert set(stored_decisions(served, ids)) == set(ids)
    deadline = time.monotonic() + COMMIT_TIMEOUT_S
    while not (records := list(lookup.records(connect("local", str(served["store"])),
                                               Query(model_name="credit", model_version="1")))):
        assert time.monotonic() < deadline, "the server wrote no model record"
        time.sleep(0.1)
    expected = mlflow.MlflowClient(served["uri"]).get_model_version("credit", "1")
    assert {(r.source_uri, r.source_run_id) for r in records} == {("models:/credit/1", expected.run_id)}
    env = base_env({"OTEL_RAI_HASH_KEY": KEY, "OTEL_RAI_HOME": str(served["root"] / "home")})
    for i, answer in enumerate(answers):
        row = tmp_path / f"row-{i}.json"
        row.write_text(json.dumps(rows.iloc[i].to_dict()))
        out = subprocess.run([sys.executable, "-m", "otel_rai", "reproduce", answer["decision_id"], "--input", str(row),
                              "--store", str(served["store"])], capture_output=True, text=True, env=env, timeout=120)
        assert out.returncode == 0 and "REPRODUCED" in out.stdout, out.stdout + out.stderr
    changed = rows.iloc[0].to_dict() | {"income": rows.iloc[0]["income"] + 1.0}
    (tmp_path / "changed.json").write_text(json.dumps(changed))
    out = subprocess.run([sys.executable, "-m", "otel_rai", "reproduce", answers[0]["decision_id"], "--input",
                          str(tmp_path / "changed.json"), "--store", str(served["store"])], capture_output=True,
                         text=True, env=env, timeout=120)
    assert out.returncode == 4, out.stdout + out.stderr


def test_reason_codes_are_the_principal_reasons_of_the_table(served):
    X = served["X"]
    answers = post(served, bodies(X.iloc[:40])["dataframe_split"]).json()["predictions"]
    table = otel_rai.mlflow.ReasonCodes(CODES, 2)
    seen = set()
    for answer in answers:
        codes = answer["reason_codes"]
        assert len(codes) <= 2 and len(set(codes)) == len(codes)
        expected = table.principal([(r["feature"], r["attribution"]) for r in answer["reasons"]])
        assert codes == expected
        seen.update(codes)
    assert seen  # the table named some reason of these applicants


def _bad_requests(seed: int, n: int) -> list[tuple[str, str | bytes, str]]:
    """(what, body, content type) of requests the server must refuse; each carries a sentinel that must not
    reach any span."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        secret = f"SENTINEL{seed}x{i}x{rng.randrange(10**9)}"
        row = {"income": 41.5, "debt_ratio": 0.2, "age": 33.0, "years_employed": 4.0}
        kind = i % 9
        if kind == 0:  # a value of the wrong type
            row[rng.choice(FEATURES)] = secret
            out.append(("type", json.dumps({"dataframe_records": [row]}), "application/json"))
        elif kind == 1:  # a missing column, an unknown one
            row.pop(rng.choice(FEATURES))
            row[secret] = 1.0
            out.append(("columns", json.dumps({"dataframe_records": [row]}), "application/json"))
        elif kind == 2:
            out.append(("empty", b"", "application/json"))
        elif kind == 3:
            out.append(("not json", "{" + secret, "application/json"))
        elif kind == 4:
            out.append(("list", json.dumps([secret]), "application/json"))
        elif kind == 5:
            out.append(("unknown format", json.dumps({"rows": [secret]}), "application/json"))
        elif kind == 6:
            out.append(("content type", secret, "text/plain"))
        elif kind == 7:
            out.append(("csv columns", f"income,{secret}\n1.0,2.0\n", "text/csv"))
        else:  # the right columns and no rows: the model itself refuses
            out.append(("no rows", json.dumps({"dataframe_split": {"columns": FEATURES, "data": []}}),
                        "application/json"))
    return out


def test_bad_requests_get_mlflows_error_and_an_error_span_without_raw_values(served):
    before = len(error_spans(served))
    requests_sent = _bad_requests(1, 27)
    for what, body, content_type in requests_sent:
        response = post(served, body, content_type)
        assert 400 <= response.status_code < 500, (what, response.status_code, response.text[:300])
        if response.status_code != 415:  # unsupported content types get MLflow's plain-text answer
            assert response.json()["error_code"] in ("BAD_REQUEST", "INVALID_PARAMETER_VALUE"), what
    deadline = time.monotonic() + COMMIT_TIMEOUT_S
    while len(error_spans(served)) < before + len(requests_sent) and time.monotonic() < deadline:
        time.sleep(0.1)
    spans = error_spans(served)[before:]
    assert len(spans) == len(requests_sent)  # each refused request is audited once
    for span in spans:
        assert span.attributes[semconv.MODEL_NAME] == "credit" and span.attributes[semconv.BATCH_SIZE] == 0
        assert not list(decisions_of(span))
    text = json.dumps(otlpjson.encode(spans))
    assert "SENTINEL" not in text
    assert requests.get(served["server"].url + "/ping", timeout=10).status_code == 200
    assert served["server"].alive()
    assert post(served, bodies(served["X"].iloc[:1])["inputs"]).status_code == 200


def test_in_process_the_pyfunc_computes_the_explanation_once_and_shares_it(served, monkeypatch):
    from otel_rai.explanations import record

    worker_explained = []
    original = record._explain_group
    monkeypatch.setattr(record, "_explain_group", lambda calls, *a: (worker_explained.extend(calls),
                                                                      original(calls, *a)))
    from otel_rai.session.instrumentor import RaiInstrumentor

    assert not RaiInstrumentor().is_instrumented_by_opentelemetry  # logging the model did not instrument us
    mlflow.set_tracking_uri(served["uri"])
    audit = instrumented(explain_top_k=4)
    pyfunc = mlflow.pyfunc.load_model("models:/credit@champion")
    rng = np.random.default_rng(3)
    for n in rng.integers(1, 30, size=12):
        rows = served["X"].sample(int(n), random_state=int(n)).reset_index(drop=True)
        answers = pyfunc.predict(rows)
        spans = audit.decision_spans()
        audit.clear()
        (span,) = spans
        assert list(span.attributes[semconv.DECISION_IDS]) == [a["decision_id"] for a in answers]
        assert [parse_top(t) for t in span.attributes[semconv.EXPLANATION_TOP]] == \
            [[(r["feature"], r["attribution"]) for r in a["reasons"]] for a in answers]
        assert (span.attributes[semconv.MODEL_VERSION], span.attributes[semconv.MODEL_ALIAS]) == ("1", "champion")
    assert worker_explained == []  # the audit worker explained none of them again


def test_logging_a_model_records_no_decision_and_the_model_without_registry_keeps_its_name(served, tmp_path,
                                                                                          monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    audit = instrumented()
    path = tmp_path / "saved"
    otel_rai.mlflow.save_model(served["model"], path, name="scorer", background=served["X"].iloc[:50],
                               pip_requirements=["scikit-learn"])  # MLflow predicts the input example here
    assert audit.decision_spans() == []
    answers = mlflow.pyfunc.load_model(str(path)).predict(served["X"].iloc[:2])
    (span,) = audit.decision_spans()
    assert span.attributes[semconv.MODEL_NAME] == "scorer"  # no tracking URI in this test: no registry lookup
    assert list(span.attributes[semconv.DECISION_IDS]) == [a["decision_id"] for a in answers]
