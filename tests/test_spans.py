"""The decision span: what it carries, one per outermost call, errors, ids, chunking, threads."""

from __future__ import annotations

import os
import threading

import numpy as np
import pandas as pd
import pytest
from conftest import KEY, bare, instrumented
from opentelemetry import trace
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.trace import StatusCode
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier, VotingClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.tree import DecisionTreeClassifier

import otel_rai
from otel_rai import semconv
from otel_rai.capture.fingerprint import fingerprint


@pytest.fixture(scope="module")
def data():
    X, y = make_classification(300, 6, random_state=0)
    return X, y


def test_span_carries_model_call_and_rows(audit, data):
    X, y = data
    model = otel_rai.register_model(LogisticRegression().fit(X, y), name="credit", version="1.4.2")
    proba = model.predict_proba(X[:5])
    (span,) = audit.spans()
    a = span.attributes
    assert span.name == "predict_proba credit"
    assert a[semconv.MODEL_NAME] == "credit"
    assert a[semconv.MODEL_VERSION] == "1.4.2"
    assert a[semconv.MODEL_CLASS] == "sklearn.linear_model._logistic.LogisticRegression"
    assert a[semconv.MODEL_FINGERPRINT] == fingerprint(model)
    assert a[semconv.OPERATION] == "predict_proba"
    assert a[semconv.BATCH_SIZE] == 5 and a[semconv.BATCH_OFFSET] == 0
    assert len(set(a[semconv.DECISION_IDS])) == 5
    assert list(a[semconv.INPUT_HASHES]) == [otel_rai.hash_input(row, KEY) for row in X[:5]]
    assert list(a[semconv.OUTPUTS]) == model.classes_[proba.argmax(1)].tolist()
    assert list(a[semconv.OUTPUT_CLASSES]) == [0, 1]
    for k, label in enumerate(model.classes_):
        assert list(a[f"{semconv.OUTPUT_SCORES_PREFIX}{label}"]) == proba[:, k].tolist()
    assert a[semconv.INPUT_HASH_KEY_ID] == otel_rai.HashKey.from_material(KEY).key_id
    assert span.status.status_code == StatusCode.UNSET
    assert semconv.INPUT_FEATURES not in a  # numpy input, fitted without names


def test_regressor_outputs_and_dataframe_feature_names(audit, data):
    X, y = data
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    model = Ridge().fit(frame, y)
    out = model.predict(frame.head(3))
    (span,) = audit.spans()
    assert list(span.attributes[semconv.OUTPUTS]) == out.tolist()
    assert list(span.attributes[semconv.INPUT_FEATURES]) == list(frame.columns)
    assert not any(k.startswith(semconv.OUTPUT_SCORES_PREFIX) for k in span.attributes)


def test_version_order_registration_then_attribute_then_default_then_fingerprint(data):
    X, y = data
    audit = instrumented(model_version="default-7")
    plain = LogisticRegression().fit(X, y)
    attributed = LogisticRegression().fit(X, y)
    attributed.model_version = "attr-3"
    registered = otel_rai.register_model(LogisticRegression().fit(X, y), version="reg-1")
    registered.model_version = "attr-ignored"
    for m in (plain, attributed, registered):
        m.predict(X[:1])
    assert [s.attributes[semconv.MODEL_VERSION] for s in audit.spans()] == ["default-7", "attr-3", "reg-1"]
    otel_rai.uninstrument()

    audit = instrumented()
    plain.predict(X[:1])
    (span,) = audit.spans()
    assert span.attributes[semconv.MODEL_VERSION] == fingerprint(plain) != ""


@pytest.mark.parametrize(
    "make_model",
    [
        lambda: make_pipeline(StandardScaler(), LogisticRegression()),
        lambda: VotingClassifier([("lr", LogisticRegression()), ("dt", DecisionTreeClassifier())], voting="soft"),
        lambda: CalibratedClassifierCV(LogisticRegression(), cv=3),
        lambda: RandomForestClassifier(n_estimators=20, n_jobs=2, random_state=0),
        lambda: LogisticRegression(),  # predict calls decision_function internally
    ],
    ids=["pipeline", "voting", "calibrated", "forest-threads", "lr-internal-call"],
)
@pytest.mark.parametrize("method", ["predict", "predict_proba"])
def test_exactly_one_span_per_outermost_call(audit, data, make_model, method):
    X, y = data
    model = make_model().fit(X, y)
    audit.clear()  # fitting records nothing, but start from zero anyway
    getattr(model, method)(X[:4])
    spans = audit.spans()
    assert len(spans) == 1
    assert spans[0].attributes[semconv.MODEL_CLASS].endswith(type(model).__name__)


def test_fit_and_score_record_no_decisions(audit, data):
    X, y = data
    model = CalibratedClassifierCV(LogisticRegression(), cv=3).fit(X, y)  # calls predict inside fit
    model.score(X, y)
    assert audit.spans() == []


def test_suppress_instrumentation_is_honoured(audit, data):
    X, y = data
    model = LogisticRegression().fit(X, y)
    with suppress_instrumentation():
        model.predict(X[:2])
    assert audit.spans() == []


def test_class_defined_after_instrument_is_audited(audit, data):
    X, y = data

    class Threshold(ClassifierMixin, BaseEstimator):
        def __init__(self, cut: float = 0.0):
            self.cut = cut

        def fit(self, X, y):
            self.classes_ = np.array([0, 1])
            return self

        def predict(self, X):
            return (np.asarray(X)[:, 0] > self.cut).astype(int)

    model = Threshold().fit(X, y)
    out = model.predict(X[:3])
    (span,) = audit.spans()
    assert list(span.attributes[semconv.OUTPUTS]) == out.tolist()
    assert span.attributes[semconv.MODEL_CLASS].endswith("Threshold")


def test_caller_ids_and_attributes(audit, data):
    X, y = data
    model = LogisticRegression().fit(X, y)
    with otel_rai.decisions(ids=["A-1093", "A-1094"], attributes={"app.channel": "web"}) as d:
        model.predict(X[:2])
        model.predict(X[:1])  # given ids name one call; this one gets generated ids
    first, second = audit.spans()
    assert list(first.attributes[semconv.DECISION_IDS]) == ["A-1093", "A-1094"]
    assert first.attributes["app.channel"] == second.attributes["app.channel"] == "web"
    assert d.ids == ["A-1093", "A-1094", *second.attributes[semconv.DECISION_IDS]]


def test_generated_ids_come_back(audit, data):
    X, y = data
    model = LogisticRegression().fit(X, y)
    with otel_rai.decisions() as d:
        model.predict(X[:3])
    (span,) = audit.spans()
    assert d.ids == list(span.attributes[semconv.DECISION_IDS])
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in d.ids)


def test_generated_ids_are_unique_across_threads_and_a_forked_child():
    """No thread, and no forked child, repeats another's ids (a child inherits its parent's state,
    so any buffering of randomness would have to be redrawn after fork)."""
    from otel_rai.capture.scope import new_ids

    ids = new_ids(3)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent
        os.write(write, " ".join(new_ids(50)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as pipe:
        child = pipe.read().split()
    threads = [[] for _ in range(4)]
    workers = [threading.Thread(target=lambda out=out: out.extend(new_ids(1)[0] for _ in range(500)))
               for out in threads]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    ids += new_ids(50) + child + [i for out in threads for i in out]
    assert len(child) == 50 and len(ids) == 3 + 50 + 50 + 2000
    assert len({i[12:] for i in ids}) == len(ids)  # the random parts, time stamps aside


def test_decisions_rejects_bad_arguments(audit, data):
    X, y = data
    model = LogisticRegression().fit(X, y)
    with pytest.raises(ValueError, match="2 ids given for a call with 3 rows"):
        with otel_rai.decisions(ids=["a", "b"]):
            model.predict(X[:3])
    with pytest.raises(ValueError, match="unique"):
        otel_rai.decisions(ids=["a", "a"]).__enter__()
    with pytest.raises(ValueError, match="reserved"):
        otel_rai.decisions(attributes={"ml.model.version": "x"}).__enter__()
    with pytest.raises(ValueError, match="must be a str"):
        otel_rai.decisions(attributes={"app.x": {"nested": 1}}).__enter__()


def test_exception_is_unchanged_and_span_is_error(audit, data):
    X, y = data
    model = LogisticRegression().fit(X, y)
    with pytest.raises(ValueError) as bare_error:
        bare(model.predict, X[:2, :3])
    with pytest.raises(ValueError) as instrumented_error:
        model.predict(X[:2, :3])
    assert str(instrumented_error.value) == str(bare_error.value)
    (span,) = audit.spans()
    assert span.status.status_code == StatusCode.ERROR
    (event,) = span.events
    assert event.name == "exception" and event.attributes["exception.type"] == "ValueError"
    assert semconv.OUTPUTS not in span.attributes


def test_large_call_is_chunked_with_every_row_once(data):
    X, y = data
    audit = instrumented(max_rows_per_span=1000)
    model = LogisticRegression().fit(X, y)
    big = np.tile(X, (9, 1))[:2500]
    out = model.predict(big)
    spans = audit.spans()
    parent = [s for s in spans if semconv.BATCH_CHUNKS in s.attributes]
    chunks = audit.decision_spans()
    assert len(parent) == 1 and parent[0].attributes[semconv.BATCH_CHUNKS] == 3
    assert parent[0].attributes[semconv.BATCH_SIZE] == 2500
    assert all(c.parent.span_id == parent[0].context.span_id for c in chunks)
    chunks.sort(key=lambda s: s.attributes[semconv.BATCH_OFFSET])
    assert [c.attributes[semconv.BATCH_OFFSET] for c in chunks] == [0, 1000, 2000]
    assert [c.attributes[semconv.BATCH_SIZE] for c in chunks] == [1000, 1000, 500]
    ids = [i for c in chunks for i in c.attributes[semconv.DECISION_IDS]]
    assert len(ids) == len(set(ids)) == 2500
    assert [o for c in chunks for o in c.attributes[semconv.OUTPUTS]] == out.tolist()
    assert all(c.attributes[semconv.MODEL_VERSION] == parent[0].attributes[semconv.MODEL_VERSION] for c in chunks)


def test_exactly_1000_rows_is_one_span(audit, data):
    X, y = data
    model = LogisticRegression().fit(X, y)
    model.predict(np.tile(X, (4, 1))[:1000])
    (span,) = audit.spans()
    assert span.attributes[semconv.BATCH_SIZE] == 1000 and semconv.BATCH_CHUNKS not in span.attributes


def test_span_joins_the_request_trace(audit, data):
    X, y = data
    model = LogisticRegression().fit(X, y)
    from opentelemetry.sdk.trace import TracerProvider

    app_tracer = TracerProvider().get_tracer("app")
    with app_tracer.start_as_current_span("POST /score") as request:
        model.predict(X[:1])
    (span,) = audit.spans()
    assert span.context.trace_id == request.get_span_context().trace_id
    assert span.parent.span_id == request.get_span_context().span_id


def test_eight_threads_each_get_their_own_correct_spans(audit, data):
    X, y = data
    model = LogisticRegression().fit(X, y)
    expected = bare(model.predict, X)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(t, len(X), 8):
                with otel_rai.decisions(ids=[f"t{t}-r{i}"]):
                    model.predict(X[i : i + 1])
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    spans = audit.spans()
    assert len(spans) == len(X)
    for span in spans:
        (decision_id,) = span.attributes[semconv.DECISION_IDS]
        i = int(decision_id.split("-r")[1])
        assert span.attributes[semconv.OUTPUTS] == (expected[i],)
        assert span.attributes[semconv.INPUT_HASHES] == (otel_rai.hash_input(X[i], KEY),)


def test_caller_mutating_input_or_output_after_the_call_does_not_change_the_record(audit, data):
    X, y = data
    model = LogisticRegression().fit(X, y)
    row = X[:1].copy()
    expected_hash = otel_rai.hash_input(row[0], KEY)
    out = model.predict_proba(row)
    first_score = out[0, 1]
    row[:] = 0.0
    out[:] = -1.0
    (span,) = audit.spans()
    assert span.attributes[semconv.INPUT_HASHES] == (expected_hash,)
    assert span.attributes[f"{semconv.OUTPUT_SCORES_PREFIX}1"] == (first_score,)


def test_failure_inside_the_audit_never_breaks_the_prediction(audit, data, monkeypatch):
    X, y = data
    model = LogisticRegression().fit(X, y)
    from otel_rai.audit import spans

    def broken(*_args, **_kwargs):
        raise RuntimeError("hash exploded")

    monkeypatch.setattr(spans, "hash_rows", broken)  # a fault that real input cannot provoke
    monkeypatch.setattr(spans, "hash_rows_many", broken)
    out = model.predict(X[:2])
    assert out.tolist() == bare(model.predict, X[:2]).tolist()
    (span,) = audit.spans()
    assert span.attributes[semconv.AUDIT_ERROR] == "hash: RuntimeError"
    assert semconv.INPUT_HASHES not in span.attributes
    assert otel_rai.flush().failures == {"hash": 1}


@pytest.mark.parametrize("stage", ["hash_inputs", "encode_outputs", "encode_explanations"])
def test_a_failed_cycle_wide_stage_costs_only_its_saving(audit, data, monkeypatch, stage):
    """The stages that do a cycle's shared work are savings: one that fails (a fault no input provokes)
    is counted, each span does that work itself, and the worker goes on, not dead with its queue."""
    X, y = data
    model = otel_rai.register_model(LogisticRegression().fit(X, y), name="credit", version="1", background=X)
    from otel_rai.audit import spans

    def broken(*_args, **_kwargs):
        raise RuntimeError("stage exploded")

    monkeypatch.setattr(spans, stage, broken)
    for row in X[:3]:
        model.predict_proba(row[None, :])
    result = otel_rai.flush(30)
    assert result.complete and result.failures.get("encode", 0) >= 1
    recorded = audit.spans()
    assert len(recorded) == 3
    for span, row in zip(recorded, X[:3]):
        a = span.attributes
        assert semconv.AUDIT_ERROR not in a
        assert list(a[semconv.INPUT_HASHES]) == [otel_rai.hash_input(row, KEY)]
        assert len(a[semconv.EXPLANATION_TOP]) == 1


class _ShortAnswer(ClassifierMixin, BaseEstimator):
    """Answers one row whatever it is asked: outputs that cannot be matched to the rows."""

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        return self

    def predict(self, X):
        return self.classes_[:1]


def test_an_array_of_the_wrong_length_is_dropped_and_named_not_misattributed(audit, data):
    X, y = data
    model = _ShortAnswer().fit(X, y)
    model.predict(X[:3])
    (span,) = audit.spans()
    a = span.attributes
    assert len(a[semconv.DECISION_IDS]) == len(a[semconv.INPUT_HASHES]) == 3
    assert semconv.OUTPUTS not in a
    assert a[semconv.AUDIT_ERROR] == f"{semconv.OUTPUTS}: 1 entries for 3 rows"


def test_uninstrument_restores_every_original(data):
    X, y = data
    from sklearn.base import BaseEstimator
    from sklearn.linear_model._base import LinearClassifierMixin
    from sklearn.pipeline import Pipeline

    before = {
        (cls, name): cls.__dict__[name]
        for cls in (LogisticRegression, LinearClassifierMixin, Pipeline, BaseEstimator)
        for name in ("predict", "predict_proba", "fit", "set_params")
        if name in cls.__dict__
    }
    audit = instrumented()
    assert any(cls.__dict__[name] is not original for (cls, name), original in before.items())
    otel_rai.uninstrument()
    assert all(cls.__dict__[name] is original for (cls, name), original in before.items())
    assert "__init_subclass__" not in BaseEstimator.__dict__
    LogisticRegression().fit(X, y).predict(X[:2])
    assert audit.exporter.get_finished_spans() == ()


def test_non_recording_provider_skips_the_work(data):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    otel_rai.instrument(tracer_provider=TracerProvider(sampler=ALWAYS_OFF), hash_key=KEY)
    X, y = data
    LogisticRegression().fit(X, y).predict(X[:2])
    result = otel_rai.flush()
    assert result.complete and result.spans == 1 and not result.failures


def test_column_transformer_pipeline_on_dataframe(audit):
    rng = np.random.RandomState(0)
    frame = pd.DataFrame({"income": rng.rand(80) * 1e5, "region": rng.choice(["n", "s", "e"], 80)})
    y = (frame.income > 5e4).astype(int)
    pipe = make_pipeline(
        ColumnTransformer([("num", StandardScaler(), ["income"]), ("cat", OneHotEncoder(), ["region"])]),
        LogisticRegression(),
    ).fit(frame, y)
    out = pipe.predict(frame.head(4))
    (span,) = audit.spans()
    assert list(span.attributes[semconv.INPUT_FEATURES]) == ["income", "region"]
    assert list(span.attributes[semconv.OUTPUTS]) == out.tolist()
    assert list(span.attributes[semconv.INPUT_HASHES]) == [
        otel_rai.hash_input(row, KEY) for _, row in frame.head(4).iterrows()
    ]


def test_no_tracer_provider_means_the_audit_provider_not_the_global_one(data):
    otel_rai.instrument(hash_key=KEY)
    from otel_rai.session import instrumentor

    assert instrumentor._session.provider is not trace.get_tracer_provider()
    assert instrumentor._session.provider.sampler.get_description() == "AlwaysOnSampler"
