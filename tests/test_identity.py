"""Instrumented outputs are bit-identical to bare ones, across every scikit-learn estimator we can fit,
third-party sklearn-API models, and meta-estimators; pickling, clone, get_params and check_estimator
behave as without instrumentation."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
from conftest import bare
from sklearn.base import RegressorMixin, clone
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import BaggingClassifier, StackingClassifier, VotingRegressor
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.multioutput import MultiOutputClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor
from sklearn.utils import all_estimators
from sklearn.utils.estimator_checks import check_estimator

import otel_rai
from otel_rai import semconv
from otel_rai.capture.patching import DECISION_METHODS

Xc, yc = make_classification(120, 5, n_informative=3, random_state=0)
Xc = np.abs(Xc)  # some estimators (e.g. naive Bayes variants) need non-negative input
Xr, yr = make_regression(120, 5, random_state=0)
# Meta-estimators need an inner estimator; everything else is built with its defaults.
_INNER = {"classifier": LogisticRegression(), "regressor": LinearRegression()}


def _build(name, cls, kind):
    try:
        return cls()
    except TypeError:
        pass
    for arg in ("estimator", "base_estimator"):
        try:
            return cls(**{arg: _INNER.get(kind, LogisticRegression())})
        except TypeError:
            continue
    try:
        final = DecisionTreeClassifier() if kind == "classifier" else LinearRegression()
        return cls([("a", _INNER.get(kind, LogisticRegression())), ("b", final)])
    except Exception:
        return None


def _fitted_estimators():
    out = []
    for name, cls in all_estimators():
        kind = "regressor" if issubclass(cls, RegressorMixin) else "classifier"
        model = _build(name, cls, kind)
        if model is None:
            continue
        X, y = (Xr, yr) if kind == "regressor" else (Xc, yc)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.fit(X, y)
        except Exception:
            continue  # needs special data (multi-output, text, positive targets, ...)
        if any(hasattr(model, m) for m in DECISION_METHODS):
            out.append(pytest.param(model, X, id=name))
    return out


_MODELS = _fitted_estimators()


def _same(a, b) -> bool:
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")


def _outcome(method, X):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return "ok", method(X)
        except Exception as exc:
            return "raised", (type(exc), str(exc))


def test_a_broad_set_of_estimators_is_covered():
    assert len(_MODELS) >= 100


@pytest.mark.parametrize("model,X", _MODELS)
def test_outputs_are_bit_identical(audit, model, X):
    methods = [m for m in DECISION_METHODS if hasattr(model, m)]
    expected = {m: _outcome(lambda X, m=m: bare(getattr(model, m), X), X[:17]) for m in methods}
    # BernoulliRBM.score_samples draws random numbers: only a bare call that repeats itself is an oracle
    again = {m: _outcome(lambda X, m=m: bare(getattr(model, m), X), X[:17]) for m in methods}
    deterministic = {m for m in methods if expected[m][0] == "raised" or _same(expected[m][1], again[m][1])}
    assert len(deterministic) >= len(methods) - 1
    audit.clear()
    for m in methods:
        assert hasattr(model, m), m  # duck typing (available_if) unchanged
        got = _outcome(getattr(model, m), X[:17])
        assert got[0] == expected[m][0], m
        if got[0] == "raised":
            assert got[1] == expected[m][1], m
        elif m in deterministic:
            assert _same(got[1], expected[m][1]), m
    spans = audit.spans()
    assert len(spans) == len(methods)  # one span per outermost call, errors included
    assert sorted(s.attributes[semconv.OPERATION] for s in spans) == sorted(methods)
    assert all(s.attributes[semconv.BATCH_SIZE] == 17 for s in spans)


@pytest.mark.parametrize(
    "model",
    [
        make_pipeline(StandardScaler(), LogisticRegression()),
        StackingClassifier([("lr", LogisticRegression()), ("dt", DecisionTreeClassifier(random_state=0))]),
        BaggingClassifier(DecisionTreeClassifier(), n_estimators=5, n_jobs=2, random_state=0),
    ],
    ids=["pipeline", "stacking", "bagging-threads"],
)
def test_meta_estimators(audit, model):
    model.fit(Xc, yc)
    expected = bare(model.predict_proba, Xc)
    audit.clear()
    assert _same(model.predict_proba(Xc), expected)
    assert len(audit.spans()) == 1


def test_multioutput_and_voting_regressor(audit):
    Y = np.stack([yc, 1 - yc], axis=1)
    multi = MultiOutputClassifier(LogisticRegression()).fit(Xc, Y)
    voting = VotingRegressor([("a", LinearRegression()), ("b", DecisionTreeRegressor(random_state=0))]).fit(Xr, yr)
    expected = [bare(multi.predict, Xc), bare(multi.predict_proba, Xc), bare(voting.predict, Xr)]
    audit.clear()
    got = [multi.predict(Xc), multi.predict_proba(Xc), voting.predict(Xr)]
    assert all(_same(a, b) for a, b in zip(got, expected))
    spans = audit.spans()
    assert len(spans) == 3
    assert all(len(s.attributes[semconv.OUTPUTS]) == len(Xc) for s in spans)


@pytest.mark.parametrize("make", ["xgboost", "lightgbm"])
def test_third_party_sklearn_api_models(audit, make):
    lib = pytest.importorskip(make)
    cls = lib.XGBClassifier if make == "xgboost" else lib.LGBMClassifier
    kwargs = {"n_estimators": 20, "n_jobs": 1}
    if make == "lightgbm":
        kwargs["verbose"] = -1
    model = otel_rai.register_model(cls(**kwargs).fit(Xc, yc), name=make, version="3")
    expected = bare(model.predict_proba, Xc), bare(model.predict, Xc)
    audit.clear()
    assert _same(model.predict_proba(Xc), expected[0]) and _same(model.predict(Xc), expected[1])
    spans = audit.spans()
    assert len(spans) == 2  # predict calls predict_proba inside: still one span each
    assert {s.attributes[semconv.MODEL_NAME] for s in spans} == {make}
    assert spans[0].attributes[semconv.MODEL_CLASS].startswith(make)


def test_pickle_clone_and_get_params_are_unchanged(audit):
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.5)).fit(Xc, yc)
    otel_rai.register_model(model, name="credit", version="9")
    params = model.get_params()
    restored = pickle.loads(pickle.dumps(model))
    assert _same(restored.predict(Xc), model.predict(Xc))
    assert pickle.loads(pickle.dumps(model.predict)).__self__ is not None  # bound methods pickle too
    assert pickle.loads(pickle.dumps(model.predict_proba))(Xc[:2]).shape == (2, 2)  # available_if method
    twin = clone(model)
    assert twin.get_params(deep=False).keys() == model.get_params(deep=False).keys()
    assert twin.get_params()["logisticregression__C"] == 0.5
    assert model.get_params().keys() == params.keys()
    assert not any(k.startswith("_otel") or k.startswith("__otel") for k in vars(model))
    # the registration belongs to the object: a copy is an unregistered model
    audit.clear()
    restored.predict(Xc[:1])
    (span,) = audit.spans()
    assert span.attributes[semconv.MODEL_NAME] == "Pipeline"


def test_pickle_bytes_are_identical_with_and_without_instrumentation():
    model = LogisticRegression().fit(Xc, yc)
    before = pickle.dumps(model)
    otel_rai.instrument(hash_key="identity-key-0123456789abcdef")
    model.predict(Xc[:3])
    assert pickle.dumps(model) == before


@pytest.mark.parametrize("estimator", [LogisticRegression(), DecisionTreeClassifier(), LinearRegression()],
                         ids=lambda e: type(e).__name__)
def test_check_estimator_passes_when_instrumented(audit, estimator):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_estimator(estimator)
