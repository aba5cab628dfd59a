"""The version comes from the registry: models loaded from MLflow's model registry (a real SQLite store,
MLflow's own client) are audited as the registered version, never as the alias."""

from __future__ import annotations

import random
import string
import subprocess
import sys

import mlflow
import numpy as np
import pytest
from conftest import KEY, bare, instrumented
from mlflow.store.artifact.utils.models import _parse_model_uri  # the oracle of the URI grammar
from mlflow_servers import base_env
from servers import free_port
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier

import otel_rai
import otel_rai.mlflow
from otel_rai import semconv
from otel_rai.errors import InputError
from otel_rai.registry import hooks
from otel_rai.registry import mlflow as registry

X = np.random.default_rng(7).normal(size=(200, 4))
Y = (X[:, 0] + X[:, 1] > 0).astype(int)


@pytest.fixture(scope="module")
def registry_store(tmp_path_factory):
    """A SQLite tracking and registry store with ``credit`` versions 1 (LR), 2 (tree) and 3 (the LR
    again, from the same run as 2); the alias ``champion`` on 1."""
    root = tmp_path_factory.mktemp("mlflow-registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment("registry", artifact_location=str(root / "artifacts"))
    models = {1: LogisticRegression().fit(X, Y), 2: DecisionTreeClassifier(max_depth=3, random_state=0).fit(X, Y)}
    runs = {}
    with mlflow.start_run(experiment_id=experiment) as run:
        runs[1] = run.info.run_id
        info1 = mlflow.sklearn.log_model(models[1], name="model", registered_model_name="credit", pip_requirements=[])
    with mlflow.start_run(experiment_id=experiment) as run:
        runs[2] = run.info.run_id
        info2 = mlflow.sklearn.log_model(models[2], name="tree", registered_model_name="credit", pip_requirements=[],
                                         skops_trusted_types=["sklearn.tree._tree.Tree"])
        mlflow.sklearn.log_model(models[1], name="again", registered_model_name="credit", pip_requirements=[])
    client = mlflow.MlflowClient()
    client.set_registered_model_alias("credit", "champion", "1")
    yield {"uri": uri, "models": models, "runs": runs, "infos": {1: info1, 2: info2}, "client": client,
           "root": root}
    mlflow.set_tracking_uri(previous)


@pytest.fixture
def tracking(registry_store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry_store["uri"])
    mlflow.set_tracking_uri(registry_store["uri"])
    return registry_store


def _model_attributes(audit):
    (span,) = audit.decision_spans()
    audit.clear()
    return {k: span.attributes.get(k) for k in (semconv.MODEL_NAME, semconv.MODEL_VERSION, semconv.MODEL_ALIAS)}


# --- the URI grammar, against MLflow's own parser -------------------------------------------------------

def _random_uris(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    alphabet = string.ascii_letters + string.digits + "-_. @/"
    out = ["models:/credit/3", "models:/credit@champion", "models:/credit/latest", "models:/credit/LATEST",
           "models:/credit/Production", "models:/m-0123abcd", "models:/a.b.c/12", "models:/x@y@z", "models:/",
           "models:/credit/", "models:/credit/1/2", "models:/@alias", "models:/name@", "runs:/abc/model", "/a/b"]
    for _ in range(n):
        out.append("models:/" + "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))))
    return out


@pytest.mark.parametrize("uri", _random_uris(300))
def test_models_uris_parse_as_mlflow_parses_them(uri):
    try:
        expected = _parse_model_uri(uri)
    except Exception:
        expected = None
    if not uri.startswith("models:"):
        assert registry.parse(uri) is None
        return
    if expected is None:
        with pytest.raises(ValueError):
            registry.parse(uri)
        return
    got = registry.parse(uri)
    assert (got.model_id, got.name, got.version, got.alias) == (expected.model_id, expected.name, expected.version,
                                                                expected.alias)
    assert (got.stage or None) == expected.stage
    assert got.latest == (expected.name is not None and not any((expected.version, expected.stage, expected.alias)))


# --- loading through MLflow's loaders while instrumented ---------------------------------------------------

@pytest.mark.parametrize("loader", ["sklearn", "pyfunc"])
def test_a_model_loaded_by_alias_is_audited_as_the_version_with_the_alias_beside_it(tracking, loader):
    audit = instrumented()
    load = getattr(mlflow, loader).load_model
    client = tracking["client"]
    for version in ("1", "3", "1"):
        client.set_registered_model_alias("credit", "champion", version)
        model = load("models:/credit@champion")
        model.predict(X[:1])
        assert _model_attributes(audit) == {semconv.MODEL_NAME: "credit", semconv.MODEL_VERSION: version,
                                            semconv.MODEL_ALIAS: "champion"}
    client.set_registered_model_alias("credit", "champion", "1")


@pytest.mark.parametrize("uri, version, alias", [
    ("models:/credit/2", "2", None),
    ("models:/credit/latest", "3", "latest"),
])
def test_versions_and_latest_resolve_to_the_version_that_was_loaded(tracking, uri, version, alias):
    audit = instrumented()
    model = mlflow.sklearn.load_model(uri)
    model.predict(X[:1])
    assert _model_attributes(audit) == {semconv.MODEL_NAME: "credit", semconv.MODEL_VERSION: version,
                                        semconv.MODEL_ALIAS: alias}
    expected = tracking["models"][2 if version == "2" else 1]
    np.testing.assert_array_equal(bare(model.predict_proba, X), bare(expected.predict_proba, X))


def test_a_logged_model_id_a_run_uri_and_a_model_directory_find_their_registry_version(tracking):
    info = tracking["infos"][2]
    audit = instrumented()
    for uri in (info.model_uri, f"runs:/{tracking['runs'][2]}/tree",
                mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(tracking["root"] / "dl"))):
        mlflow.sklearn.load_model(uri).predict(X[:1])
        assert _model_attributes(audit) == {semconv.MODEL_NAME: "credit", semconv.MODEL_VERSION: "2",
                                            semconv.MODEL_ALIAS: None}, uri


def test_a_model_registered_as_several_versions_is_not_guessed(tracking, caplog):
    client = tracking["client"]
    source = client.get_model_version("credit", "2").source
    client.create_registered_model("credit-eu")
    client.create_model_version("credit-eu", source, run_id=tracking["runs"][2])
    try:
        assert registry.find(tracking["infos"][2].model_uri) is None
        assert "registered as several versions" in caplog.text
    finally:
        client.delete_registered_model("credit-eu")


def test_register_model_with_a_uri_names_a_model_loaded_another_way(tracking):
    import joblib

    path = tracking["root"] / "model.joblib"
    joblib.dump(tracking["models"][1], path)
    model = joblib.load(path)  # not through MLflow: nothing knows where it came from
    audit = instrumented()
    otel_rai.mlflow.register_model(model, "models:/credit@champion", background=X[:20])
    model.predict(X[:1])
    assert _model_attributes(audit) == {semconv.MODEL_NAME: "credit", semconv.MODEL_VERSION: "1",
                                        semconv.MODEL_ALIAS: "champion"}
    with pytest.raises(InputError, match="no single MLflow registry version"):
        otel_rai.mlflow.register_model(model, str(tracking["root"]))


def _loaded_elsewhere(tracking, version: int):
    import joblib

    path = tracking["root"] / f"model-{version}.joblib"
    joblib.dump(tracking["models"][version], path)
    return joblib.load(path)  # not through MLflow: nothing knows where it came from


_WAYS = {
    "mlflow loader": lambda tracking, uri: mlflow.sklearn.load_model(uri),
    "otel_rai.mlflow.register_model": lambda tracking, uri: otel_rai.mlflow.register_model(
        _loaded_elsewhere(tracking, 2), uri),
    "otel_rai.register_model(source_uri=)": lambda tracking, uri: otel_rai.register_model(
        _loaded_elsewhere(tracking, 2), source_uri=uri),
}


@pytest.mark.parametrize("way", sorted(_WAYS))
@pytest.mark.parametrize("asked", ["models:/credit/2", "models:/credit@champion", "runs:/{run}/tree"])
def test_the_model_record_carries_the_version_uri_run_id_and_mlflow_model_id(tracking, way, asked):
    client = tracking["client"]
    client.set_registered_model_alias("credit", "champion", "2")
    try:
        audit = instrumented()
        model = _WAYS[way](tracking, asked.format(run=tracking["runs"][2]))
        model.predict(X[:1])
        otel_rai.flush(30)
        (record,) = audit.records()
    finally:
        client.set_registered_model_alias("credit", "champion", "1")
    expected = client.get_model_version("credit", "2")  # MLflow's own client is the oracle
    a = record.attributes
    assert (a[semconv.MODEL_NAME], a[semconv.MODEL_VERSION]) == ("credit", "2")
    assert a[semconv.MODEL_SOURCE_URI] == "models:/credit/2"  # the version, never the alias
    assert a[semconv.MODEL_SOURCE_RUN_ID] == expected.run_id == tracking["runs"][2]
    # MLflow 3 registers a logged model by its URI: the version's source is models:/<model id>.
    assert a[semconv.MODEL_SOURCE_MODEL_ID] == tracking["infos"][2].model_id == \
        _parse_model_uri(expected.source).model_id
    assert a[semconv.MODEL_SOURCE_MODEL_ID].startswith("m-")


def test_a_source_uri_that_names_no_registry_version_is_kept_as_given(tracking, caplog, tmp_path):
    audit = instrumented()
    given = {"models:/credit/99": "cannot resolve", "models:/nobody@champion": "cannot resolve",
             str(tmp_path / "model.joblib"): None, "https://example.org/m.onnx": None}
    for n, (uri, warning) in enumerate(given.items()):  # a version each: one record per model and version
        caplog.clear()
        model = otel_rai.register_model(_loaded_elsewhere(tracking, 1), "mine", f"7.{n}", source_uri=uri)
        model.predict(X[:1])
        otel_rai.flush(30)
        (record,) = audit.records()
        audit.exporter.clear()
        a = record.attributes
        assert (a[semconv.MODEL_NAME], a[semconv.MODEL_VERSION], a[semconv.MODEL_SOURCE_URI]) == ("mine", f"7.{n}", uri)
        assert semconv.MODEL_SOURCE_RUN_ID not in a and semconv.MODEL_SOURCE_MODEL_ID not in a
        assert (warning in caplog.text) if warning else "MLflow registry" not in caplog.text
    # Given a name and version that differ from the registry's: they are kept, the ids recorded, a warning.
    caplog.clear()
    model = otel_rai.register_model(_loaded_elsewhere(tracking, 1), "mine", "8", source_uri="models:/credit/1")
    model.predict(X[:1])
    otel_rai.flush(30)
    (record,) = audit.records()
    assert (record.attributes[semconv.MODEL_NAME], record.attributes[semconv.MODEL_VERSION]) == ("mine", "8")
    assert record.attributes[semconv.MODEL_SOURCE_RUN_ID] == tracking["runs"][1]
    assert "is version 1 of credit" in caplog.text


def test_without_instrument_a_source_uri_is_recorded_as_given_and_mlflow_not_asked(tracking):
    from otel_rai.capture import models

    model = otel_rai.register_model(_loaded_elsewhere(tracking, 1), source_uri="models:/credit@champion")
    registration = models.registration_of(model)
    assert (registration.name, registration.version, registration.source_uri) == (
        None, None, "models:/credit@champion")


def test_the_loaders_are_put_back_exactly_and_wrapped_again(tracking):
    import mlflow.pyfunc
    import mlflow.sklearn

    originals = mlflow.sklearn.load_model, mlflow.pyfunc.load_model
    for _ in range(3):
        instrumented()
        assert mlflow.sklearn.load_model is not originals[0] and mlflow.pyfunc.load_model is not originals[1]
        otel_rai.uninstrument()
        assert (mlflow.sklearn.load_model, mlflow.pyfunc.load_model) == originals


def test_a_registry_lookup_that_fails_leaves_the_load_alone(tracking, caplog, monkeypatch):
    audit = instrumented()
    with pytest.raises(mlflow.exceptions.MlflowException):  # MLflow's own error for a missing version
        mlflow.sklearn.load_model("models:/credit/999")
    assert "cannot resolve models:/credit/999" in caplog.text
    directory = mlflow.artifacts.download_artifacts(tracking["infos"][1].model_uri,
                                                    dst_path=str(tracking["root"] / "offline"))
    closed = f"http://127.0.0.1:{free_port()}"  # a registry that does not answer
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    mlflow.set_tracking_uri(closed)
    model = mlflow.sklearn.load_model(directory)
    mlflow.set_tracking_uri(tracking["uri"])
    model.predict(X[:1])
    attributes = _model_attributes(audit)
    assert attributes[semconv.MODEL_NAME] == "LogisticRegression" and attributes[semconv.MODEL_ALIAS] is None
    assert f"cannot find {directory} in the MLflow registry" in caplog.text


_IMPORTED_LATER = """
import sys
import otel_rai
otel_rai.instrument(store=sys.argv[1], hash_key=sys.argv[2])
assert "mlflow.sklearn" not in sys.modules, "instrument() must not import mlflow"
import mlflow.sklearn
from otel_rai.registry import hooks
print(mlflow.sklearn.load_model is hooks._wrapped[("mlflow.sklearn", "load_model")][1])
otel_rai.uninstrument()
print(mlflow.sklearn.load_model is hooks._wrapped.get(("mlflow.sklearn", "load_model"), (None, None))[1])
"""


def test_mlflow_imported_after_instrument_is_wrapped_on_import(tmp_path):
    out = subprocess.run([sys.executable, "-c", _IMPORTED_LATER, str(tmp_path / "a.db"), KEY], env=base_env(),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["True", "False"]
    assert hooks.LOADERS  # the loaders the docs promise
