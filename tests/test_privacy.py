"""No raw feature value leaves the process unless allowlisted, on the wire included."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import KEY, instrumented
from servers import attributes
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import otel_rai
from otel_rai import semconv

# Distinctive raw values: if any of these shows up anywhere in what we export, it leaked.
INCOMES = [123457.25, 98765.125, 55555.5]
PLANETS = ["Atlantis", "Lemuria", "Atlantis"]
SECRET = "ZEBRA-SECRET"


def _frame() -> pd.DataFrame:
    return pd.DataFrame({"income": INCOMES, "planet": PLANETS, "age": [41, 37, 29]})


def _model():
    return make_pipeline(
        ColumnTransformer(
            [("num", StandardScaler(), ["income", "age"]), ("cat", OneHotEncoder(handle_unknown="error"), ["planet"])]
        ),
        LogisticRegression(),
    ).fit(_frame(), [1, 0, 1])


def _run_decisions(model) -> None:
    model.predict_proba(_frame())
    bad = _frame()
    bad.loc[0, "planet"] = SECRET  # unknown category: sklearn quotes it in its error message
    with pytest.raises(ValueError, match=SECRET):
        model.predict(bad)
    bad = _frame().astype({"income": object})
    bad.loc[1, "income"] = SECRET  # a string where a number belongs
    with pytest.raises(ValueError):
        model.predict(bad)


def _leaks(text: str) -> list[str]:
    raw = [SECRET, *PLANETS, *(repr(v) for v in INCOMES), *(str(v) for v in INCOMES)]
    return [r for r in raw if r in text]


def _everything(span) -> str:
    parts = [span.name, repr(dict(span.attributes)), repr(dict(span.resource.attributes)),
             span.status.description or ""]
    for event in span.events:
        parts += [event.name, repr(dict(event.attributes))]
    return "\n".join(parts)


def test_no_raw_value_in_any_attribute_event_status_or_resource():
    audit = instrumented()
    _run_decisions(_model())
    spans = audit.spans()
    assert len(spans) == 3 and sum(bool(s.events) for s in spans) == 2
    for span in spans:
        assert _leaks(_everything(span)) == []
    # the masked message still says what went wrong
    assert any("Found unknown categories" in (s.status.description or "") for s in spans)


def test_allowlisted_features_and_only_those_are_captured():
    audit = instrumented(capture_features=["age", "planet"])
    model = _model()
    model.predict(_frame())
    (span,) = audit.spans()
    assert list(span.attributes[semconv.INPUT_VALUE_PREFIX + "age"]) == [41.0, 37.0, 29.0]
    assert list(span.attributes[semconv.INPUT_VALUE_PREFIX + "planet"]) == PLANETS
    assert semconv.INPUT_VALUE_PREFIX + "income" not in span.attributes
    assert not any(repr(v) in _everything(span) for v in INCOMES)


def test_nothing_raw_on_the_wire(receiver, rotel):
    otel_rai.instrument(endpoint=rotel.grpc_endpoint, hash_key=KEY)
    _run_decisions(_model())
    assert otel_rai.flush(30).complete
    # The three decisions and the model's record: rotel may forward them in two batches.
    received = receiver.wait_for_spans(4)
    for _resource, span in received:
        assert _leaks(span.SerializeToString().decode("latin-1")) == []
    assert KEY not in "".join(r.SerializeToString().decode("latin-1") for r in receiver.requests)
    decisions = [s for _, s in received if s.name != semconv.MODEL_RECORD_SPAN]
    assert len(decisions) == 3 and all(semconv.INPUT_HASHES in attributes(s) for s in decisions)
    assert [s.name for _, s in received].count(semconv.MODEL_RECORD_SPAN) == 1  # checked for leaks above
    otel_rai.uninstrument()  # while the backend is up, so that the closing checkpoint is delivered


def test_numpy_input_with_capture_allowlist_by_model_feature_names():
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [4.0, 5.0, 6.0]})
    model = LogisticRegression().fit(frame, [0, 1, 0])
    audit = instrumented(capture_features=["b"])
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy input to a model fitted with names
        model.predict(np.array([[7.5, 8.25]]))
    (span,) = audit.spans()
    assert span.attributes[semconv.INPUT_VALUE_PREFIX + "b"] == (8.25,)
    assert semconv.INPUT_VALUE_PREFIX + "a" not in span.attributes


def _bytes_of(directory) -> str:
    """Every file otel-rai wrote but the artifact store: that keeps the fitted model itself, whose learned
    state (the encoder's categories) holds training values by nature. It is owner-only and never
    exported (docs/model-records.md); test_model_records checks that its records carry no such value."""
    return "".join(p.read_bytes().decode("latin-1") for p in sorted(directory.rglob("*"))
                   if p.is_file() and "artifacts" not in p.relative_to(directory).parts)


def test_default_configurations_keep_raw_values_out_of_the_store_the_spool_and_the_wire(receiver, tmp_path,
                                                                                      monkeypatch):
    """instrument() as most will call it: no store option, the key from the environment; with and
    without an endpoint. Every span the audit tracer makes is included: decisions, failures, checkpoints."""
    monkeypatch.setenv("OTEL_RAI_HASH_KEY", KEY)
    monkeypatch.setenv("OTEL_RAI_CHECKPOINT_KEY", "checkpoint-" + KEY)
    home = tmp_path / "otel-rai-home"
    otel_rai.instrument()  # the local store in the data directory
    _run_decisions(_model())
    otel_rai.uninstrument()
    otel_rai.instrument(endpoint=receiver.endpoint)  # a spool in the data directory, then OTLP
    _run_decisions(_model())
    during = _bytes_of(home)
    otel_rai.uninstrument()
    files = sorted(p.name for p in home.iterdir())
    assert any(n.startswith("audit.db") for n in files) and any(n.startswith("spool-") for n in files), files
    received = receiver.spans()
    # three decisions, the model record and the closing checkpoint
    assert len(received) == 5 and {attributes(s).get(semconv.AUDIT_SEQ) for _, s in received} == {1, 2, 3, 4, 5}
    wire = "".join(r.SerializeToString().decode("latin-1") for r in receiver.requests)
    for where, text in (("files", during + _bytes_of(home)), ("wire", wire)):
        assert _leaks(text) == [], where
        assert KEY not in text, where


# --- the trace-UI view (input.value, output.value): generated shapes of input -----------------------------

UI_SECRETS = ("ZEBRA-SECRET", "Atlantis", "Lemuria", "Mu-Continent", "quetzal text")
UI_NUMBERS = (123457.25, 98765.125, 55555.5, 31.0625, 4242.875, 87.5, 6173.3125)


def _ui_cases():
    """(name, model, input, allowlist, error expected) for many shapes of input, sizes and models."""
    from scipy import sparse
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(11)

    def frame(n: int) -> pd.DataFrame:
        return pd.DataFrame({
            "income": [UI_NUMBERS[i % len(UI_NUMBERS)] for i in range(n)],
            "planet": [UI_SECRETS[1 + i % 3] for i in range(n)],
            "age": pd.array([41 + i % 5 if i % 4 else None for i in range(n)], dtype="Int64"),
        })

    train = frame(40)
    pipe = make_pipeline(ColumnTransformer([("n", "passthrough", ["income"]),
                                            ("a", make_pipeline(StandardScaler()), ["age"]),
                                            ("c", OneHotEncoder(handle_unknown="error"), ["planet"])]),
                         LogisticRegression()).fit(train.fillna({"age": 40}), np.arange(40) % 2)
    numeric = rng.choice(UI_NUMBERS, size=(40, 3))
    linear = LogisticRegression().fit(numeric, np.arange(40) % 2)
    ridge = Ridge().fit(numeric, numeric[:, 0] * 0.5)
    texts = [f"{UI_SECRETS[i % len(UI_SECRETS)]} {i}" for i in range(40)]
    text = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(texts, np.arange(40) % 2)
    cases = []
    for n in (1, 2, 7, 25):
        good = frame(n).fillna({"age": 43})
        cases.append((f"frame {n} rows", pipe, good, (), False))
        cases.append((f"frame {n} rows, planet allowlisted", pipe, good, ("planet",), False))
        cases.append((f"numpy {n} rows", linear, numeric[:n], (), False))
        cases.append((f"list of lists {n} rows", linear, numeric[:n].tolist(), (), False))
        cases.append((f"sparse {n} rows", linear, sparse.csr_matrix(numeric[:n]), (), False))
        cases.append((f"regressor {n} rows", ridge, numeric[:n], (), False))
        cases.append((f"texts {n} rows", text, texts[:n], (), False))
        bad = good.copy()
        bad.loc[0, "planet"] = UI_SECRETS[0]  # unknown category: sklearn's message quotes it
        cases.append((f"failing call {n} rows", pipe, bad, (), True))
    return cases


def _leaves(value, path=()):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(value, list):
        for v in value:
            yield from _leaves(v, path)
    else:
        yield path, value


@pytest.mark.parametrize("method", ["predict", "predict_proba"])
def test_the_trace_ui_view_never_holds_a_raw_value_unless_allowlisted(method):
    import json

    for name, model, X, allow, fails in _ui_cases():
        audit = instrumented(capture_features=list(allow), max_rows_per_span=3)
        call = getattr(model, method if hasattr(model, method) else "predict")
        if fails:
            with pytest.raises(ValueError):
                call(X)
        else:
            call(X)
        spans = audit.spans()
        otel_rai.uninstrument()
        views = [s for s in spans if semconv.UI_INPUT_VALUE in s.attributes]
        assert views and all(s.attributes[semconv.UI_SPAN_KIND] == semconv.UI_KIND_DECISION for s in views), name
        shown_allowlisted = set()
        for span in spans:
            a = span.attributes
            for key in (semconv.UI_INPUT_VALUE, semconv.UI_OUTPUT_VALUE):
                if key not in a:
                    continue
                for path, leaf in _leaves(json.loads(a[key])):
                    if semconv.UI_ALLOWLISTED_KEY in path:
                        assert path[-1] in allow, (name, path)
                        shown_allowlisted.add(leaf)
                        continue
                    if isinstance(leaf, str):
                        assert not any(secret in leaf for secret in UI_SECRETS), (name, key, path, leaf)
                    elif isinstance(leaf, float):
                        assert leaf not in UI_NUMBERS, (name, key, path, leaf)
            # and nowhere else on the span either (allowlisted values only under ml.input.value.*)
            rest = {k: v for k, v in a.items() if not k.startswith(semconv.INPUT_VALUE_PREFIX)
                    and k not in (semconv.UI_INPUT_VALUE,)}
            text = repr(rest) + (span.status.description or "") + repr([dict(e.attributes) for e in span.events])
            assert not any(secret in text for secret in UI_SECRETS), (name, span.name)
            if semconv.DECISION_IDS in a and semconv.UI_INPUT_VALUE in a:
                shown = json.loads(a[semconv.UI_INPUT_VALUE])
                rows = [shown] if "decision_id" in shown else shown["decisions"]
                assert [r["decision_id"] for r in rows] == list(a[semconv.DECISION_IDS])[: len(rows)], name
                if semconv.INPUT_HASHES in a:
                    assert [r["input_hash"] for r in rows] == list(a[semconv.INPUT_HASHES])[: len(rows)], name
        if allow and not fails:  # the positive control: allowlisted values are shown
            assert shown_allowlisted and shown_allowlisted <= set(UI_SECRETS), name
