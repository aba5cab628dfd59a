"""`ml.model.fingerprint`: stable across processes, changed by a refit, computed once per fitted model."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.datasets import make_classification
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from otel_rai import semconv
from otel_rai.capture import fingerprint as fingerprint_module
from otel_rai.capture.fingerprint import fingerprint

X, y = make_classification(200, 5, random_state=0)
X2, y2 = make_classification(200, 5, random_state=1)


def _models():
    yield "lr", lambda: LogisticRegression()
    yield "forest", lambda: RandomForestClassifier(n_estimators=5, random_state=0)
    yield "hgb", lambda: HistGradientBoostingClassifier(max_iter=10)
    yield "pipeline", lambda: make_pipeline(
        ColumnTransformer([("s", StandardScaler(), [0, 1]), ("o", OneHotEncoder(handle_unknown="ignore"), [4])],
                          remainder="passthrough"),
        LogisticRegression(),
    )
    xgboost = pytest.importorskip("xgboost")
    yield "xgboost", lambda: xgboost.XGBClassifier(n_estimators=5, n_jobs=1)
    lightgbm = pytest.importorskip("lightgbm")
    yield "lightgbm", lambda: lightgbm.LGBMClassifier(n_estimators=5, verbose=-1)


MODELS = dict(_models())


def _fingerprint_in_a_new_process(model) -> str:
    code = ("import pickle, sys; from otel_rai.capture.fingerprint import fingerprint; "
            "print(fingerprint(pickle.load(sys.stdin.buffer)))")
    result = subprocess.run([sys.executable, "-c", code], input=pickle.dumps(model), capture_output=True, check=True)
    return result.stdout.decode().strip()


@pytest.mark.parametrize("name", MODELS)
def test_same_fitted_model_same_fingerprint_in_another_process(name):
    model = MODELS[name]().fit(X, y)
    here = fingerprint(model)
    assert len(here) == 32
    model.predict(X)  # predicting must not change the learned state
    assert fingerprint(model) == here
    assert _fingerprint_in_a_new_process(model) == here


@pytest.mark.parametrize("name", MODELS)
def test_refit_on_other_data_changes_it(name):
    model = MODELS[name]()
    first = fingerprint(model.fit(X, y))
    assert fingerprint(model.fit(X2, y2)) != first
    assert fingerprint(MODELS[name]().fit(X, y)) == first  # refit on the same data: same model


def test_runtime_only_parameters_do_not_count():
    model = RandomForestClassifier(n_estimators=5, random_state=0, n_jobs=1).fit(X, y)
    before = fingerprint(model)
    model.set_params(n_jobs=2, verbose=0)
    assert fingerprint(model) == before
    model.set_params(max_depth=3)  # changes nothing learned, but is a different model spec
    assert fingerprint(model) != before
    assert "n_jobs" in fingerprint_module.IGNORED


def test_computed_once_per_fitted_model_and_refreshed_by_fit(audit, monkeypatch):
    from otel_rai.capture import models

    calls = []
    real = models.fingerprint
    monkeypatch.setattr(models, "fingerprint", lambda m: calls.append(1) or real(m))
    model = LogisticRegression().fit(X, y)
    for _ in range(5):
        model.predict(X[:1])
    assert len(calls) == 1
    model.fit(X2, y2)
    model.predict(X[:1])
    assert len(calls) == 2
    first, *_, last = audit.spans()
    assert first.attributes[semconv.MODEL_FINGERPRINT] != last.attributes[semconv.MODEL_FINGERPRINT]
    assert last.attributes[semconv.MODEL_FINGERPRINT] == fingerprint(model)


def test_reference_cycles_and_odd_state_do_not_break_it():
    model = LogisticRegression().fit(X, y)
    model.extra_ = {"self": model, "fn": np.mean, "rng": np.random.RandomState(0), "s": {3, 1, 2}}
    assert fingerprint(model) == fingerprint(model)


@pytest.mark.parametrize("seed", range(5))
def test_padding_bytes_of_record_arrays_do_not_count(seed):
    """A tree's node array has padding between its fields; its bytes are whatever the allocator left, and
    differ between a model and its unpickled copy. Fill them with noise: the fingerprint must not move."""
    dtype = np.dtype([("left", "<i8"), ("threshold", "<f8"), ("missing", "u1")], align=True)
    assert dtype.itemsize > 17  # padded
    rng = np.random.default_rng(seed)
    clean = np.zeros(50, dtype)
    clean["left"], clean["threshold"], clean["missing"] = rng.integers(0, 99, 50), rng.normal(size=50), 1
    noisy = np.frombuffer(rng.bytes(clean.nbytes), dtype).copy()
    for name in dtype.names:
        noisy[name] = clean[name]
    assert clean.tobytes() != noisy.tobytes()
    assert fingerprint(clean) == fingerprint(noisy)
    noisy["threshold"][7] += 1e-12
    assert fingerprint(clean) != fingerprint(noisy)


@pytest.mark.parametrize("kind", ["tree", "forest", "hgb"])
@pytest.mark.parametrize("how", ["pickle", "joblib"])
def test_an_unpickled_tree_model_keeps_its_fingerprint(kind, how):
    import io

    import joblib
    from sklearn.tree import DecisionTreeClassifier

    model = {"tree": DecisionTreeClassifier(random_state=0), "hgb": HistGradientBoostingClassifier(max_iter=20),
             "forest": RandomForestClassifier(n_estimators=30, random_state=0)}[kind].fit(X, y)
    if how == "pickle":
        copy = pickle.loads(pickle.dumps(model))
    else:
        buffer = io.BytesIO()
        joblib.dump(model, buffer)
        copy = joblib.load(io.BytesIO(buffer.getvalue()))
    assert fingerprint(copy) == fingerprint(model)
