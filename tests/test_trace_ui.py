"""The trace-UI view of decision spans (OpenInference-style kind, input and output): what it holds, where it
is emitted, that replay adds it to a local store's spans, and that the chain neither covers nor minds it."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import KEY, instrumented
from servers import attributes
from sklearn.datasets import make_classification
from sklearn.linear_model import LinearRegression, LogisticRegression

import otel_rai
from otel_rai import cli, semconv, store
from otel_rai.audit import ui
from otel_rai.codec.reasons import parse_top

UI = set(semconv.UI_SPAN_ATTRIBUTES)


def _model():
    X, y = make_classification(200, 5, random_state=3)
    return X, LogisticRegression().fit(X, y)


def test_a_single_decision_shows_its_hash_label_score_and_reasons():
    X, model = _model()
    audit = instrumented(service_name="credit-scoring")
    otel_rai.register_model(model, name="credit", version="1.4.2", background=X)
    with otel_rai.decisions(ids=["A-1093"]):
        proba = model.predict_proba(X[:1])
    (span,) = audit.spans()
    a = span.attributes
    assert a[semconv.UI_SPAN_KIND] == semconv.UI_KIND_DECISION
    assert a[semconv.UI_DECISION_SYSTEM] == semconv.UI_DECISION_SYSTEM_SKLEARN
    assert a[semconv.UI_DECISION_MODEL_NAME] == "credit 1.4.2"
    assert a[semconv.UI_INPUT_MIME_TYPE] == a[semconv.UI_OUTPUT_MIME_TYPE] == "application/json"
    shown_in = json.loads(a[semconv.UI_INPUT_VALUE])
    assert shown_in == {"decision_id": "A-1093", "input_hash": otel_rai.hash_input(X[0], KEY)}
    out = json.loads(a[semconv.UI_OUTPUT_VALUE])
    label = int(model.classes_[proba[0].argmax()])
    assert out["label"] == label == a[semconv.OUTPUTS][0]
    assert out["score"] == proba[0].max()  # the label's own probability, bit for bit
    assert list(out["reasons"].items()) == parse_top(a[semconv.EXPLANATION_TOP][0])  # in rank order


def test_batches_chunks_decision_functions_regressors_and_failures():
    X, model = _model()
    audit = instrumented(max_rows_per_span=4, explain=False)
    with otel_rai.decisions(ids=[f"B-{i}" for i in range(ui.MAX_ROWS + 5)]):
        model.predict(np.tile(X[:1], (ui.MAX_ROWS + 5, 1)))
    spans = audit.spans()
    parent = next(s for s in spans if semconv.BATCH_CHUNKS in s.attributes)
    assert json.loads(parent.attributes[semconv.UI_INPUT_VALUE]) == {"rows": ui.MAX_ROWS + 5, "chunks": 4}
    chunks = [s for s in spans if semconv.DECISION_IDS in s.attributes]
    for chunk in chunks:
        shown = json.loads(chunk.attributes[semconv.UI_OUTPUT_VALUE])
        assert shown.get("rows", 1) == len(chunk.attributes[semconv.DECISION_IDS])
    assert sum(len(c.attributes[semconv.DECISION_IDS]) for c in chunks) == ui.MAX_ROWS + 5
    otel_rai.uninstrument()

    wide = instrumented(explain=False)
    with otel_rai.decisions(ids=[f"C-{i}" for i in range(ui.MAX_ROWS + 2)]):
        values = model.decision_function(X[: ui.MAX_ROWS + 2])
    (span,) = wide.spans()
    shown = json.loads(span.attributes[semconv.UI_OUTPUT_VALUE])
    assert shown["rows"] == ui.MAX_ROWS + 2 and shown["shown"] == ui.MAX_ROWS
    assert [d["decision_id"] for d in shown["decisions"]] == [f"C-{i}" for i in range(ui.MAX_ROWS)]
    assert [d["score"] for d in shown["decisions"]] == list(values[: ui.MAX_ROWS])  # whatever the label
    otel_rai.uninstrument()

    regression = instrumented(explain=False)
    reg = LinearRegression().fit(X, X[:, 0])
    reg.predict(X[:1])
    (span,) = regression.spans()
    assert json.loads(span.attributes[semconv.UI_OUTPUT_VALUE]) == {"value": reg.predict(X[:1])[0]}
    with pytest.raises(ValueError):
        reg.predict(X[:1, :2])
    failed = next(s for s in regression.spans() if s.status.status_code.name == "ERROR")
    assert json.loads(failed.attributes[semconv.UI_OUTPUT_VALUE]) == {"error": "ValueError"}


def test_non_finite_numbers_stay_valid_json():
    common = {semconv.MODEL_NAME: "m", semconv.MODEL_VERSION: "1", semconv.OUTPUT_CLASSES: [0, 1],
              semconv.OPERATION: "predict_proba"}
    for n in (1, 3):
        rows = {semconv.DECISION_IDS: [f"d{i}" for i in range(n)], semconv.OUTPUTS: [1] * n,
                semconv.OUTPUT_SCORES_PREFIX + "1": [math.nan] * n,
                semconv.INPUT_VALUE_PREFIX + "x": [math.inf] * n,
                semconv.EXPLANATION_TOP: ["a=+inf,b=-nan,c%2Cd=+0.5"] * n}
        view = ui.decision_view(common, rows)
        out, shown = json.loads(view[semconv.UI_OUTPUT_VALUE]), json.loads(view[semconv.UI_INPUT_VALUE])
        row = out if n == 1 else out["decisions"][0]
        assert row["score"] == "NaN" and row["reasons"] == {"a": "inf", "b": "-nan", "c,d": 0.5}
        assert (shown if n == 1 else shown["decisions"][0])[semconv.UI_ALLOWLISTED_KEY] == {"x": "Infinity"}


def test_the_view_goes_where_spans_leave_the_process(tmp_path, monkeypatch, receiver):
    X, model = _model()
    otel_rai.instrument(store=tmp_path / "local.db", hash_key=KEY)  # the local store alone: no UI reads it
    model.predict(X[:2])
    otel_rai.uninstrument()
    assert not any(UI & set(s.attributes) for s in store.Store(tmp_path / "local.db").spans())
    monkeypatch.setenv("OTEL_RAI_TRACE_UI", "true")  # asked for
    otel_rai.instrument(store=tmp_path / "asked.db", hash_key=KEY)
    model.predict(X[:2])
    otel_rai.uninstrument()
    assert any(UI <= set(s.attributes) for s in store.Store(tmp_path / "asked.db").spans())
    monkeypatch.delenv("OTEL_RAI_TRACE_UI")
    otel_rai.instrument(endpoint=receiver.endpoint, hash_key=KEY, service_name="svc")  # exported: on
    model.predict(X[:2])
    otel_rai.uninstrument()
    received = receiver.wait_for_spans(2)
    decision = next(attributes(s) for _, s in received if semconv.DECISION_IDS in attributes(s))
    checkpoint = next(attributes(s) for _, s in received if s.name == semconv.CHECKPOINT_SPAN)
    assert decision[semconv.UI_SPAN_KIND] == semconv.UI_KIND_DECISION
    assert semconv.UI_SPAN_KIND not in checkpoint  # a kind filter (DECISION) leaves checkpoints out
    assert {r[semconv.UI_PROJECT_NAME] for r, _ in received} == {"svc"}
    receiver.requests.clear()
    otel_rai.instrument(endpoint=receiver.endpoint, hash_key=KEY, trace_ui=False)  # declined
    model.predict(X[:2])
    otel_rai.uninstrument()
    assert not any(UI & set(attributes(s)) for _, s in receiver.wait_for_spans(2))


def test_replay_adds_the_view_to_a_local_stores_spans_and_the_chain_still_verifies(tmp_path, receiver, capsys):
    X, model = _model()
    path = tmp_path / "audit.db"
    otel_rai.instrument(store=path, hash_key=KEY, service_name="credit-scoring")
    otel_rai.register_model(model, name="credit", version="7", background=X)
    with otel_rai.decisions(ids=["R-1", "R-2"]):
        model.predict_proba(X[:2])
    otel_rai.uninstrument()
    assert cli.main(["replay", str(path), "--endpoint", receiver.endpoint]) == 0
    received = receiver.spans()
    decision = next(attributes(s) for _, s in received if semconv.DECISION_IDS in attributes(s))
    assert decision[semconv.UI_SPAN_KIND] == semconv.UI_KIND_DECISION
    assert [d["decision_id"] for d in json.loads(decision[semconv.UI_INPUT_VALUE])["decisions"]] == ["R-1", "R-2"]
    assert {r[semconv.UI_PROJECT_NAME] for r, _ in received} == {"credit-scoring"}
    # What was replayed (the ml.* record plus the view) still verifies: the view is not in the hash.
    from otel_rai.chain import verify as chaincheck

    report = chaincheck.check([(None, r) for r in receiver.records()])
    assert report.ok, report.ordered_problems()[:3]
    capsys.readouterr()


def test_stored_trails_with_the_view_verify_and_the_view_is_not_covered(tmp_path, capsys):
    X, model = _model()
    path = tmp_path / "audit.db"
    otel_rai.instrument(store=path, hash_key=KEY, trace_ui=True)
    for i in range(3):
        model.predict_proba(X[i : i + 2])
    otel_rai.uninstrument()
    stored = list(store.Store(path).spans())
    assert sum(semconv.UI_OUTPUT_VALUE in s.attributes for s in stored) == 3
    assert cli.main(["verify-chain", "--store", str(path)]) == 0
    from otel_rai.chain import verify as chaincheck

    records = [(None, s) for s in stored]
    target = next(r for _, r in records if semconv.UI_OUTPUT_VALUE in r.attributes)
    target.attributes[semconv.UI_OUTPUT_VALUE] = '{"label": "edited"}'
    assert chaincheck.check(records).ok  # the view is a view: editing it is not tampering with the record
    target.attributes[semconv.OUTPUTS] = [9, 9]
    assert chaincheck.check(records).counts() == {"edited": 1}
    capsys.readouterr()


def test_reasons_are_the_explanation_entry_as_json_for_any_name_and_number():
    """Generated names (every printable character, others, percent signs, quotes) and numbers (zeros, tiny,
    huge, infinite, NaN): the view's reasons are the entry's pairs (`parse_top`, the reader's oracle), in
    order, as valid JSON, whether written fast (most entries) or carefully."""
    import random
    import string

    from otel_rai.codec.reasons import encode_top

    rng = random.Random(5)
    alphabet = string.printable + "éß漢\x00\x7f\u2028%"
    numbers = [0.0, 1e-9, -3.5, 2.0**70, -1e-300, math.inf, -math.inf, math.nan]
    paths = {"fast": 0, "careful": 0}
    for _ in range(3000):
        names = list(dict.fromkeys("".join(rng.choice(alphabet if rng.random() < 0.5 else string.ascii_lowercase)
                                           for _ in range(rng.randint(1, 8))) for _ in range(rng.randint(1, 6))))
        values = np.array([[rng.choice(numbers + [rng.uniform(-5, 5)] * 4) for _ in names]])
        (entry,) = encode_top(names, values, 4)
        paths["careful" if ui._SLOW.search(entry) else "fast"] += 1
        got = json.loads(ui._reasons(entry))
        want = parse_top(entry)
        assert list(got) == [name for name, _ in want], entry
        for name, value in want:
            if math.isfinite(value):
                assert got[name] == value, entry
            else:
                assert got[name].lstrip("+-") in ("inf", "nan"), entry
    assert min(paths.values()) > 300, paths  # both ways were tried
