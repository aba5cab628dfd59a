"""Seams for callers that answer with the decision: an explanation handed to the audit with
``decisions(explanation=...)`` is the one the span records (and is not computed again), and a call refused
before it reached the model is audited as an ERROR span without rows."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import instrumented
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression

import otel_rai
from otel_rai import semconv
from otel_rai.codec.reasons import encode_top
from otel_rai.errors import RequestRejected
from otel_rai.explanations import MissingBackground, record
from otel_rai.session.instrumentor import record_rejected

X = np.random.default_rng(5).normal(size=(300, 5))
Y = (X[:, 0] - X[:, 3] > 0).astype(int)


@pytest.fixture
def counted(monkeypatch):
    """Calls the audit worker explained itself."""
    explained = []
    original = record._explain_group
    monkeypatch.setattr(record, "_explain_group", lambda calls, *a: (explained.extend(calls), original(calls, *a)))
    return explained


@pytest.mark.parametrize("model", [LogisticRegression().fit(X, Y),
                                   HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(X, Y)])
def test_a_given_explanation_is_recorded_and_not_computed_again(model, counted):
    audit = instrumented()
    otel_rai.register_model(model, "m", "1", background=X[:50])
    rng = np.random.default_rng(0)
    for i, n in enumerate(rng.integers(1, 40, size=10)):
        rows = X[rng.integers(0, len(X), size=int(n))]
        # Published: on the model's grid, as the worker would round it; else no grid is known: signs only.
        given = otel_rai.explain(model, rows, published=bool(i % 2))
        assert (given.resolution is not None) == bool(i % 2)
        with otel_rai.decisions(explanation=given):
            model.predict_proba(rows)
        (span,) = audit.decision_spans()
        audit.clear()
        assert list(span.attributes[semconv.EXPLANATION_TOP]) == \
            encode_top(given.feature_names, given.values, 4, given.resolution)
        assert span.attributes.get(semconv.EXPLANATION_RESOLUTION) == given.resolution
        assert list(span.attributes[semconv.EXPLANATION_BASE_VALUES]) == given.base_values.tolist()
        assert span.attributes[semconv.EXPLANATION_METHOD] == given.method
    assert counted == []
    model.predict_proba(X[:3])  # without one, the worker explains as before
    assert audit.decision_spans()[0].attributes[semconv.EXPLANATION_TOP] and len(counted) == 1


def test_a_given_explanation_applies_to_the_next_call_only_and_must_fit_it():
    audit = instrumented()
    model = otel_rai.register_model(LogisticRegression().fit(X, Y), "m", "1", background=X[:50])
    given = otel_rai.explain(model, X[:2])
    with pytest.raises(ValueError, match="an explanation of 2 rows given for a call with 3 rows"):
        with otel_rai.decisions(explanation=given):
            model.predict(X[:3])
    with otel_rai.decisions(explanation=MissingBackground("none given")):
        model.predict(X[:1])
        model.predict(X[:1])
    first, second = audit.decision_spans()
    assert first.attributes[semconv.EXPLANATION_ERROR] == "MissingBackground"
    assert semconv.EXPLANATION_TOP in second.attributes  # explained by the worker


def test_a_failed_call_records_no_given_explanation():
    audit = instrumented()
    model = otel_rai.register_model(LogisticRegression().fit(X, Y), "m", "1", background=X[:50])
    given = otel_rai.explain(model, X[:2])
    with pytest.raises(ValueError):
        with otel_rai.decisions(explanation=given):
            model.predict(X[:2, :4])
    (span,) = audit.spans()
    assert not any(k.startswith("ml.explanation.") for k in span.attributes)


def test_a_refused_call_is_an_error_span_without_rows():
    assert record_rejected(object(), "predict", RequestRejected("x")) is False  # not instrumented: nothing
    audit = instrumented()
    model = otel_rai.register_model(LogisticRegression().fit(X, Y), "credit", "4")
    assert record_rejected(model, "predict_proba", RequestRejected("the request was refused: HTTP 415"), 123)
    (span,) = audit.spans()
    assert span.name == "predict_proba credit" and span.start_time == 123
    # The type, and the message as a template (every literal replaced), as for any failed call.
    assert "RequestRejected" in span.status.description and "415" not in span.status.description
    assert span.attributes[semconv.MODEL_VERSION] == "4" and list(span.attributes[semconv.DECISION_IDS]) == []
    assert semconv.INPUT_HASHES not in span.attributes and semconv.AUDIT_ERROR not in span.attributes
