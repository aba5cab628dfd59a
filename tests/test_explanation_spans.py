"""Explanations on decision spans: attributes, top-k, switches, failures, reasons for `otel-rai show`."""

from __future__ import annotations

import json
import threading

import numpy as np
import pandas as pd
import pytest
from conftest import bare, instrumented
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.compose import ColumnTransformer
from sklearn.datasets import make_classification
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import otel_rai
from otel_rai import semconv
from otel_rai.codec.reasons import encode_top
from otel_rai.explanations import format_reasons, parse_top
from otel_rai.explanations.explanation import Explanation

EXPLANATION_KEYS = {
    semconv.EXPLANATION_METHOD,
    semconv.EXPLANATION_OUTPUT,
    semconv.EXPLANATION_CLASS,
    semconv.EXPLANATION_TOP,
    semconv.EXPLANATION_BASE_VALUES,
    semconv.EXPLANATION_ERROR,
}


@pytest.fixture(scope="module")
def data():
    X, y = make_classification(400, 6, n_informative=4, random_state=0)
    return X, y


def explanation_of(span):
    return {k: v for k, v in span.attributes.items() if k in EXPLANATION_KEYS}


def expected_top(explanation, row, k):
    order = np.argsort(-np.abs(explanation.values[row]), kind="stable")[:k]
    return [(explanation.feature_names[j], explanation.values[row, j]) for j in order]


def test_span_carries_method_output_class_base_and_top_four(data):
    X, y = data
    audit = instrumented(explain_exact_values=True)  # values compared with SHAP's (default: a grid)
    model = otel_rai.register_model(LogisticRegression().fit(X, y), name="credit", background=X)
    proba = model.predict_proba(X[:3])
    (span,) = audit.spans()
    a = span.attributes
    assert a[semconv.EXPLANATION_METHOD] == "linear"
    assert a[semconv.EXPLANATION_OUTPUT] == "log-odds"
    assert a[semconv.EXPLANATION_CLASS] == "1"
    reference = otel_rai.explain(model, X[:3])
    assert list(a[semconv.EXPLANATION_BASE_VALUES]) == pytest.approx(reference.base_values.tolist(), abs=1e-12)
    assert len(a[semconv.EXPLANATION_TOP]) == 3
    for row, entry in enumerate(a[semconv.EXPLANATION_TOP]):
        pairs = parse_top(entry)
        assert [name for name, _ in pairs] == [name for name, _ in expected_top(reference, row, 4)]
        assert [v for _, v in pairs] == pytest.approx([v for _, v in expected_top(reference, row, 4)], rel=1e-5)
    np.testing.assert_array_equal(proba, bare(model.predict_proba, X[:3]))  # prediction untouched
    assert otel_rai.flush().failures == {}


def test_top_k_is_configurable(data):
    X, y = data
    audit = instrumented(explain_top_k=2)
    HistGradientBoostingClassifier(max_iter=10).fit(X, y).predict(X[:4])
    (span,) = audit.spans()
    assert span.attributes[semconv.EXPLANATION_METHOD] == "tree_path_dependent"
    assert all(len(parse_top(e)) == 2 for e in span.attributes[semconv.EXPLANATION_TOP])


def test_tree_span_needs_no_background_and_matches_explain(audit, data):
    X, y = data
    model = RandomForestClassifier(10, max_depth=5, random_state=0).fit(X, y)
    model.predict(X[:5])
    (span,) = audit.spans()
    reference = otel_rai.explain(model, X[:5])
    for row, entry in enumerate(span.attributes[semconv.EXPLANATION_TOP]):
        assert [n for n, _ in parse_top(entry)] == [n for n, _ in expected_top(reference, row, 4)]
    assert span.attributes[semconv.EXPLANATION_OUTPUT] == "probability"


def test_single_row_calls_batched_in_the_worker_keep_their_own_rows(data):
    X, y = data
    audit = instrumented(explain_exact_values=True)
    model = HistGradientBoostingClassifier(max_iter=15).fit(X, y)
    ids = [f"r{i}" for i in range(40)]
    for i in ids:
        with otel_rai.decisions(ids=[i]):
            model.predict_proba(X[int(i[1:]) : int(i[1:]) + 1])
    reference = otel_rai.explain(model, X[:40])
    spans = audit.spans()
    assert len(spans) == 40
    for span in spans:
        (decision,) = span.attributes[semconv.DECISION_IDS]
        row = int(decision[1:])
        (entry,) = span.attributes[semconv.EXPLANATION_TOP]
        assert [v for _, v in parse_top(entry)] == pytest.approx(
            [v for _, v in expected_top(reference, row, 4)], rel=1e-5)


def test_chunked_call_has_one_entry_per_row_in_every_chunk(data):
    X, y = data
    audit = instrumented(max_rows_per_span=100)
    model = LogisticRegression().fit(X, y)
    otel_rai.register_model(model, background=X)
    model.predict(X[:250])
    chunks = sorted(audit.decision_spans(), key=lambda s: s.attributes[semconv.BATCH_OFFSET])
    reference = otel_rai.explain(model, X[:250])
    assert [len(c.attributes[semconv.EXPLANATION_TOP]) for c in chunks] == [100, 100, 50]
    last = chunks[-1].attributes
    assert list(last[semconv.EXPLANATION_BASE_VALUES]) == pytest.approx(reference.base_values[200:].tolist())
    assert parse_top(last[semconv.EXPLANATION_TOP][-1])[0][0] == expected_top(reference, 249, 1)[0][0]


def test_multiclass_span_names_the_class_only_when_all_rows_share_it(audit):
    X, y = make_classification(300, 6, n_informative=4, n_classes=3, random_state=1)
    model = RandomForestClassifier(10, random_state=0).fit(X, y)
    predicted = bare(model.predict, X[:30])
    row = int(np.flatnonzero(predicted == 2)[0])
    model.predict(X[:30])
    model.predict(X[row : row + 1])
    mixed, single = audit.spans()
    assert semconv.EXPLANATION_CLASS not in mixed.attributes
    assert single.attributes[semconv.EXPLANATION_CLASS] == "2"


def test_pipeline_span_names_raw_columns(audit):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"income": rng.normal(50, 10, 200), "region": rng.choice(["n", "s", "e"], 200)})
    y = ((frame.income > 50) ^ (frame.region == "s")).astype(int)
    pipe = make_pipeline(
        ColumnTransformer([("num", StandardScaler(), ["income"]), ("cat", OneHotEncoder(), ["region"])]),
        LogisticRegression(),
    ).fit(frame, y)
    otel_rai.register_model(pipe, name="credit", background=frame)
    pipe.predict(frame.head(3))
    (span,) = audit.spans()
    names = {n for entry in span.attributes[semconv.EXPLANATION_TOP] for n, _ in parse_top(entry)}
    assert names == {"income", "region"}
    for entry in span.attributes[semconv.EXPLANATION_TOP]:  # no raw value (category or number) leaks
        assert not any(value in entry for value in ("=n", "=s", "=e", "region_"))


@pytest.mark.parametrize("switch", ["instrument", "register_model", "decisions"])
def test_explanations_can_be_switched_off(data, switch):
    X, y = data
    audit = instrumented(explain=switch != "instrument")
    model = HistGradientBoostingClassifier(max_iter=10).fit(X, y)
    if switch == "register_model":
        otel_rai.register_model(model, explain=False)
    if switch == "decisions":
        with otel_rai.decisions(explain=False):
            model.predict(X[:2])
        model.predict(X[:2])  # after the block: explained again
    else:
        model.predict(X[:2])
    spans = audit.spans()
    assert not explanation_of(spans[0])
    if switch == "decisions":
        assert spans[1].attributes[semconv.EXPLANATION_METHOD] == "tree_path_dependent"


def test_missing_background_is_recorded_not_raised(audit, data):
    X, y = data
    model = LogisticRegression().fit(X, y)
    out = model.predict_proba(X[:2])
    np.testing.assert_array_equal(out, bare(model.predict_proba, X[:2]))
    (span,) = audit.spans()
    assert explanation_of(span) == {semconv.EXPLANATION_ERROR: "MissingBackground"}
    assert otel_rai.flush().failures == {}  # a property of the model, not an audit failure


class Drifting(RegressorMixin, BaseEstimator):
    """Predicts fine on served rows; fails loudly on the reference rows the explainer mixes in."""

    def fit(self, X, y):
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X):
        X = np.asarray(X, dtype=float)
        if (np.abs(X) > 1e6).any():
            raise ValueError(f"value out of range: {X.max()}")  # a message that quotes raw values
        return X.sum(axis=1)


def test_failing_explanation_records_the_exception_type_only(audit):
    X = np.random.default_rng(0).normal(size=(50, 3))
    model = otel_rai.register_model(Drifting().fit(X, X[:, 0]), background=X * 1e7)
    out = model.predict(X[:4])
    np.testing.assert_array_equal(out, X[:4].sum(axis=1))
    (span,) = audit.spans()
    assert explanation_of(span) == {semconv.EXPLANATION_ERROR: "ValueError"}
    assert "out of range" not in str(dict(span.attributes))
    assert otel_rai.flush().failures == {"explain": 1}


def test_format_reasons_ranks_a_stored_decision(audit, data):
    X, y = data
    model = otel_rai.register_model(LogisticRegression().fit(X, y), background=X)
    model.predict(X[:2])
    (span,) = audit.spans()
    attributes = dict(span.attributes)
    lines = format_reasons(attributes, row=1)
    reference = expected_top(otel_rai.explain(model, X[1:2]), 0, 4)
    assert lines[0].startswith("Reasons (log-odds of class 1, linear, base value")
    assert len(lines) == 5
    for rank, (line, (name, value)) in enumerate(zip(lines[1:], reference), start=1):
        assert line.strip().startswith(f"{rank}. {name}")
        assert ("raises" if value > 0 else "lowers") in line
    one_row = {k: (v[1] if isinstance(v, tuple) and len(v) == 2 else v) for k, v in attributes.items()}
    assert format_reasons(one_row) == lines  # a store may keep each decision's own entries
    assert format_reasons({semconv.EXPLANATION_ERROR: "MissingBackground"}) == [
        "Explanation: not available (MissingBackground)"]
    assert format_reasons({}) == []


def test_top_encoding_round_trips_awkward_names():
    names = ["debt, ratio", "a=b", "100%", "tab\there", "naïve"]
    values = np.array([[0.5, -2.0, 1e-9, 0.0, -0.25]])
    explanation = Explanation(values, np.zeros(1), names, "raw", "linear", values.sum(1))
    (entry,) = encode_top(explanation.feature_names, explanation.values, 5)
    assert parse_top(entry) == [("a=b", -2.0), ("debt, ratio", 0.5), ("naïve", -0.25), ("100%", 1e-9)]


class ThreadRecorder(ClassifierMixin, BaseEstimator):
    """A classifier that remembers which thread asked it for each batch of scores."""

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        self.n_features_in_ = X.shape[1]
        self.threads_ = []
        return self

    def predict_proba(self, X):
        self.threads_.append((len(X), threading.current_thread().name))
        p = 1.0 / (1.0 + np.exp(-np.asarray(X, dtype=float).sum(axis=1)))
        return np.column_stack([1 - p, p])


def test_explanations_are_computed_on_the_audit_worker_not_the_caller(audit, data):
    X, y = data
    model = otel_rai.register_model(ThreadRecorder().fit(X, y), background=X[:50])
    model.predict_proba(X[:2])
    (span,) = audit.spans()
    assert span.attributes[semconv.EXPLANATION_METHOD] == "exact"  # 2^6 coalitions x 50 rows
    caller, *explainer = model.threads_
    assert caller == (2, threading.current_thread().name)
    assert explainer and {name for _, name in explainer} == {"otel-rai-audit"}
    assert len(audit.spans()) == 1  # the explainer's own model calls are not decisions


def test_a_model_refitted_before_its_explanation_is_not_explained_with_the_new_fit(audit, data):
    from opentelemetry import context

    from otel_rai.audit.hashing import HashKey
    from otel_rai.capture import models
    from otel_rai.capture.recorder import DecisionCall
    from otel_rai.explanations import record
    from otel_rai.settings import Settings

    X, y = data
    model = HistGradientBoostingClassifier(max_iter=5).fit(X, y)
    call = DecisionCall(model=model, info=models.model_info(model, None), operation="predict", X=X[:1], n_rows=1,
                        ids=["a"], attributes={}, parent=context.get_current(), start_ns=0)
    model.fit(X[::-1], 1 - y)  # instrumented fit: the cached metadata is invalidated
    record.attach([call], Settings(hash_key=HashKey.from_material("k" * 32)), lambda *_: None)
    assert type(call.explanation).__name__ == "ModelChanged"


def test_otel_rai_show_prints_the_ranked_reasons_from_the_store(tmp_path, data, capsys):
    from conftest import KEY

    from otel_rai import cli

    X, y = data
    path = tmp_path / "audit.db"
    otel_rai.instrument(store=path, hash_key=KEY)
    model = otel_rai.register_model(LogisticRegression().fit(X, y), name="credit", version="3", background=X)
    with otel_rai.decisions(ids=["A-1", "A-2", "A-3"]):
        model.predict(X[:3])
    assert otel_rai.flush(30).complete
    otel_rai.uninstrument()
    assert cli.main(["show", "A-2", "--store", str(path)]) == 0
    out = capsys.readouterr().out
    reasons = out[out.index("Reasons ("):].splitlines()
    reference = expected_top(otel_rai.explain(model, X[1:2]), 0, 4)
    assert reasons[0].startswith("Reasons (log-odds of class 1, linear, base value")
    assert [line.split()[1] for line in reasons[1:]] == [name for name, _ in reference]
    assert "ml.explanation.top: x" in out  # the row's own entry, not the span's three
    assert cli.main(["show", "A-2", "--store", str(path), "--format", "json"]) == 0
    (record,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert parse_top(record["values"][semconv.EXPLANATION_TOP])[0][0] == reference[0][0]


def test_frames_of_mixed_columns_and_dtypes_in_one_cycle_are_each_explained_as_alone():
    """The worker joins a cycle's calls whose inputs concatenate; frames whose dtypes differ (categoricals
    with other categories) or whose columns come in another order must not be joined, and each decision's
    reasons are those of its row explained alone, named after the right columns."""
    rng = np.random.default_rng(11)
    frame = pd.DataFrame({"income": rng.normal(50, 10, 300), "debt": rng.normal(10, 3, 300),
                          "region": rng.choice(["north", "south", "east"], 300)})
    y = (frame["income"] - 2 * frame["debt"] + (frame["region"] == "north") * 5 > 30).astype(int)
    model = make_pipeline(ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore"), ["region"])],
                                            remainder=StandardScaler()), LogisticRegression()).fit(frame, y)
    kinds = [lambda f: f, lambda f: f.astype({"region": pd.CategoricalDtype(["north", "south", "east"])}),
             lambda f: f.astype({"region": pd.CategoricalDtype(["east", "north", "south", "west"])}),
             lambda f: f[["region", "income", "debt"]]]
    audit = instrumented(explain_exact_values=True)
    otel_rai.register_model(model, background=frame.head(100))
    for i, kind in enumerate(rng.integers(len(kinds), size=60)):
        with otel_rai.decisions(ids=[f"m{i}"]):
            model.predict_proba(kinds[kind](frame.iloc[i : i + 1]))
    spans = audit.spans()
    assert len(spans) == 60
    for span in spans:
        (decision,) = span.attributes[semconv.DECISION_IDS]
        reference = otel_rai.explain(model, frame.iloc[int(decision[1:]) : int(decision[1:]) + 1],
                                     background=frame.head(100))
        (entry,) = span.attributes[semconv.EXPLANATION_TOP]
        expected = expected_top(reference, 0, 4)
        assert [n for n, _ in parse_top(entry)] == [n for n, _ in expected], decision
        assert [v for _, v in parse_top(entry)] == pytest.approx([v for _, v in expected], rel=1e-5), decision


def _explanation(rng: np.random.Generator, names: list[str], rows: int, resolution: float | None) -> Explanation:
    values = rng.normal(size=(rows, len(names))) * rng.choice([1e-3, 1.0, 1e3])
    values[rng.random(values.shape) < 0.2] = 0.0
    if rows and len(names) > 2:
        values[0, :2] = values[0, 2]  # ties, which keep the earlier feature first
    return Explanation(values=values.astype(rng.choice([np.float64, np.float32])), base_values=rng.normal(size=rows),
                       feature_names=names, output="log-odds", method="linear", output_values=rng.normal(size=rows),
                       classes=np.array(["yes"] * rows), resolution=resolution)


def _written(explanation: Explanation, settings, top: list[str] | None):
    """A span's explanation attributes, or the type of what writing them raised."""
    from otel_rai.audit import spans

    try:
        return spans.explanation_attributes(explanation, settings.explain_top_k, settings.explain_exact_values, top)
    except Exception as exc:  # a resolution no entry can be written at fails alike, encoded together or not
        return type(exc)


def test_a_cycle_s_explanations_encoded_together_are_each_call_s_own():
    """`encode_explanations` writes one `encode_top` for a cycle's calls that share feature names and
    resolution: each call's entries are those it gets alone, on generated cycles (one to five rows a call,
    features named by two lists, grid steps, sign-only and exact values, float32 and float64, ties,
    zeros, failed calls, calls explained with an exception, an explanation of a subclass)."""
    from otel_rai.audit import spans
    from otel_rai.capture.recorder import DecisionCall
    from otel_rai.settings import Settings

    class _Own(Explanation):
        pass

    rng = np.random.default_rng(8)
    joined = 0
    for cycle in range(60):
        settings = Settings(hash_key=otel_rai.HashKey.from_material("k" * 32), explain_top_k=int(rng.integers(1, 6)),
                            explain_exact_values=bool(rng.random() < 0.3))
        width = int(rng.integers(1, 25))  # two models' features, often as many
        names = [[f"{prefix}{i}" for i in range(width if rng.random() < 0.7 else int(rng.integers(1, 25)))]
                 for prefix in ("x", "z")]
        calls = []
        for _ in range(int(rng.integers(1, 40))):
            kind = rng.integers(10)
            rows = int(rng.integers(1, 6))
            if kind == 0:
                explanation = ValueError("no background")
            elif kind == 1:
                e = _explanation(rng, names[0], rows, 0.25)
                fields = {f: getattr(e, f) for f in e.__dataclass_fields__}
                explanation = rng.choice([  # left to `attributes`, which reads them as it can
                    _Own(**fields), Explanation(**{**fields, "values": e.values.tolist()}),
                    Explanation(**{**fields, "resolution": [0.25]})])
            else:
                explanation = _explanation(rng, names[int(rng.integers(2))], rows,
                                           [0.25, 0.01, None, None][int(rng.integers(4))])
            call = DecisionCall(model=None, info=None, operation="predict_proba", X=None, n_rows=rows,
                                ids=[str(i) for i in range(rows)], attributes={}, parent=None, start_ns=0,
                                explanation=explanation, error=RuntimeError("x") if kind == 9 else None)
            calls.append(call)
        spans.encode_explanations(calls, settings)
        for call in calls:
            e = call.explanation
            if call.error is not None or type(e) is not Explanation or type(e.values) is not np.ndarray:
                assert call.encoded_top is None
                continue
            joined += call.encoded_top is not None
            assert _written(e, settings, call.encoded_top) == _written(e, settings, None), cycle
    assert joined > 500, joined  # most were encoded together
