"""Strings otel-rai did not produce are untrusted: column names, category values, caller attributes,
decision ids, model names and versions, class labels, group values, outcomes. A generator crosses
every entry point with every kind of bad text (invalid UTF-16, NUL, control characters, very long
text, objects whose ``__str__`` raises) against a real store, a real OTLP receiver and fail-closed mode:
every decision is recorded, the chain verifies in the store and at the receiver, and one bad record
never blocks another.
"""

from __future__ import annotations

import functools
import sqlite3
import warnings
from typing import Any, Callable

import numpy as np
import pandas as pd
import pytest
from conftest import KEY, bare
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import otel_rai
from otel_rai import semconv
from otel_rai.capture.scope import GROUP_LABEL_CHARS
from otel_rai.chain import canonical
from otel_rai.chain.verify import check
from otel_rai.codec.text import MAX_CHARS, column_names, safe, text_of
from otel_rai.query import find_decisions, local, trail


class RaisingStr:
    """A value whose ``__str__`` and ``__repr__`` raise (hashable and orderable, as a category must be)."""

    def __str__(self) -> str:
        raise RuntimeError("no text")

    __repr__ = __str__

    def __lt__(self, other: Any) -> bool:
        return False


BAD_TEXT = ["\ud800", "a\udfffb", "\ud83d\ude00", "\x00", "nul\x00inside", "x" * 100_000, "\x1b[2J\x1b[31mred",
            "'\"", "\u202eevil", "%,=;", "日本語", "", " ", "\n", "é" * (MAX_CHARS + 1), "\udcff" * 3]
BAD_VALUES: list[Any] = [*BAD_TEXT, RaisingStr(), b"\xff\xfe", 2**70]

rng = np.random.RandomState(0)
FRAME = pd.DataFrame({"n": rng.randn(60), "c": pd.array(rng.choice(["a", "b"], 60), dtype=object)},
                     columns=pd.Index(["n", "c"], dtype=object))
y = (FRAME.n > 0).astype(int).to_numpy()
PIPE = make_pipeline(ColumnTransformer([("s", StandardScaler(), ["n"]), ("oh", OneHotEncoder(handle_unknown="ignore"),
                                                                         ["c"])]), LogisticRegression()).fit(FRAME, y)
X = rng.randn(60, 3)
LR = LogisticRegression().fit(X, y)


def _two_rows() -> pd.DataFrame:
    return FRAME.head(2).copy()


def column_name(bad: Any) -> Any:
    frame = _two_rows()
    frame[bad] = [1.0, 2.0]  # the pipeline ignores the extra column
    return PIPE.predict(frame)


def category_value(bad: Any) -> Any:
    frame = _two_rows()
    frame["c"] = pd.array([bad, "a"], dtype=object)
    return PIPE.predict_proba(frame)


def caller_attribute(bad: Any) -> Any:
    value = bad if isinstance(bad, str) else "fine"
    with otel_rai.decisions(attributes={"request.note": value, "request.tags": [value, "ok"]}):
        return LR.predict(X[:2])


def caller_attribute_name(bad: Any) -> Any:
    name = bad if isinstance(bad, str) and bad and not bad.startswith("ml.") else "plain"
    with otel_rai.decisions(attributes={name: 1}):
        return LR.predict(X[:1])


def model_name(bad: Any) -> Any:
    model = otel_rai.register_model(LogisticRegression().fit(X, y), name=bad)
    return model.predict(X[:2])


def model_version(bad: Any) -> Any:
    if text_of(bad) == "":  # register_model refuses an empty version
        bad = "v"
    model = otel_rai.register_model(LogisticRegression().fit(X, y), version=bad)
    return model.predict(X[:2])


def group_value(bad: Any) -> Any:
    with otel_rai.decisions(groups={"region": [bad, "north"]}):
        return LR.predict(X[:2])


def decision_id(bad: Any) -> Any:
    with otel_rai.decisions(ids=[bad]):
        out = LR.predict(X[:1])
    otel_rai.record_outcome(bad, 1, group={"region": "north"}, prediction=int(out[0]), model="m", version="1")
    return out


def class_label(bad: Any) -> Any:
    labels = np.array([bad if v else "ok" for v in y], dtype=object)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model = LogisticRegression().fit(X, labels)
        except Exception:  # labels sklearn cannot fit: this entry point does not apply
            return None
    return model.predict_proba(X[:2]), model.predict(X[:2])


def outcome_value(bad: Any) -> Any:
    with otel_rai.decisions() as d:
        out = LR.predict(X[:1])
    decision = d.ids[0] if d.ids else "bare"  # a bare call records no decision
    otel_rai.record_outcome(decision, bad, group={"region": "north"}, prediction=int(out[0]), model="m", version="1")
    return out


ENTRY_POINTS: list[Callable[[Any], Any]] = [
    column_name, category_value, caller_attribute, caller_attribute_name, model_name, model_version, group_value,
    decision_id, class_label, outcome_value,
]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, tuple):
        return isinstance(b, tuple) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    return a == b


def _outcome(call: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return "ok", call()
    except Exception as exc:
        return "raised", type(exc)


def _crafted_requests() -> int:
    """Every entry point with every bad value, each between two good calls. Returns how many calls."""
    calls = 0
    for entry in ENTRY_POINTS:
        for bad in BAD_VALUES:
            LR.predict(X[:1])
            expected = _outcome(functools.partial(bare, entry, bad))
            got = _outcome(functools.partial(entry, bad))
            assert got[0] == expected[0] and _same(got[1], expected[1]), (entry.__name__, safe(repr(bad)[:40]))
            LR.predict(X[:1])
            calls += 3
    return calls


def test_text_is_made_safe_by_one_documented_rule():
    assert safe("\ud800") == "\\ud800" and safe("a\udfffb") == "a\\udfffb"
    assert safe("nul\x00kept") == "nul\x00kept" and safe("日本") == "日本"
    long = safe("x" * 5000)
    assert len(long) == MAX_CHARS and long.startswith("x" * (MAX_CHARS - 18) + "…#")
    assert safe("x" * 5000) != safe("x" * 4999 + "y")  # the digest keeps long texts apart
    assert text_of(RaisingStr()) == "<unprintable RaisingStr>"
    for bad in BAD_VALUES:
        text = text_of(bad)
        text.encode("utf-8")  # always valid
        assert len(text) <= MAX_CHARS and safe(text) == text  # and stable


def test_column_names_are_the_safe_text_of_each_label_however_often_and_in_whatever_order():
    """`column_names` remembers label sets: each answer is still `text_of` of each label, for lookalike
    sets (equal as Python keys, different as text) met again and again, bad labels and unhashable ones."""
    lookalikes = [[0, 1], [False, True], [0.0, 1.0], [-0.0, 1.0], [0, 1.0], ["0", "1"], [np.int64(0), 1],
                  [np.str_("a"), "b"], [*BAD_VALUES[:6], "ok"], [RaisingStr(), "x"], [("a", 1), ("a", 2)],
                  [["unhashable"], "y"], [float("nan"), 2], [f"feature_{i}" for i in range(100)]]
    rng = np.random.default_rng(5)
    for i in rng.integers(len(lookalikes), size=400):
        labels = lookalikes[i]
        expected = [text_of(v) for v in labels]
        assert column_names(labels) == expected, labels
        if not any(isinstance(v, list) for v in labels):  # a pandas index of them, as a frame has
            assert column_names(pd.Index(labels, dtype=object)) == expected, labels
    many = [[f"c{i}", f"c{i + 1}"] for i in range(300)]  # more sets than are remembered: still right
    assert [column_names(labels) for labels in many] == [[text_of(v) for v in labels] for labels in many]


def _records_ok(records: list[Any]) -> None:
    report = check((None, r) for r in records)
    assert report.ok, report.counts()
    assert all(canonical.matches(r) for r in records)


def test_every_bad_string_at_every_entry_point_is_recorded_in_the_store_and_at_the_receiver(receiver, tmp_path):
    path = tmp_path / "audit.db"
    otel_rai.instrument(store=path, endpoint=receiver.endpoint, hash_key=KEY, sensitive_features=["c"],
                        capture_features=["c"])
    calls = _crafted_requests()
    result = otel_rai.flush(120)
    otel_rai.uninstrument()
    assert result.complete, result
    assert not {"commit", "span", "record", "capture", "submit"} & set(result.failures), result.failures
    assert result.dropped == 0 and result.spans >= calls
    report = trail.verify(local.connect(str(path)))
    assert report.ok, report.counts()
    with sqlite3.connect(path) as conn:
        (spans,) = conn.execute("SELECT count(*) FROM spans").fetchone()
        ids = {r[0] for r in conn.execute("SELECT decision_id FROM decisions")}
        names = {r[0] for r in conn.execute("SELECT model_name FROM spans WHERE model_name IS NOT NULL")}
        groups = {r[0] for r in conn.execute("SELECT grp FROM decision_groups")}
        (outcomes,) = conn.execute("SELECT count(*) FROM outcomes").fetchone()
    assert {text_of(b) for b in BAD_VALUES} <= ids | {""}
    assert {text_of(b) for b in BAD_VALUES} - {""} <= names
    assert {text_of(b, GROUP_LABEL_CHARS) for b in BAD_VALUES if not isinstance(b, bytes)} - {""} <= groups | {""}
    assert outcomes >= 2 * len(BAD_VALUES) - 1
    records = receiver.records()
    assert len(records) == spans
    _records_ok(records)
    stored = {d.decision_id for d in find_decisions(url=str(path), limit=None)}
    assert stored == ids


def test_fail_closed_refuses_none_of_them(tmp_path):
    path = tmp_path / "audit.db"
    otel_rai.instrument(store=path, hash_key=KEY, on_audit_failure="raise", sensitive_features=["c"])
    calls = _crafted_requests()
    result = otel_rai.flush(60)
    otel_rai.uninstrument()
    assert result.complete and result.dropped == 0, result
    assert trail.verify(local.connect(str(path))).ok
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM spans WHERE name != ?", (semconv.CHECKPOINT_SPAN,)).fetchone()[0] \
            >= calls


@pytest.mark.parametrize("bad", ["\ud800", "x" * 100_000, "\x00"])
def test_the_audit_goes_on_after_a_crafted_request(tmp_path, bad):
    """The issue's own case: after one crafted column name, every later decision is still written."""
    path = tmp_path / "audit.db"
    otel_rai.instrument(store=path, hash_key=KEY)
    column_name(bad)
    for _ in range(200):
        PIPE.predict(_two_rows())
    assert otel_rai.flush(30).complete
    otel_rai.uninstrument()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM decisions").fetchone()[0] == 2 + 200 * 2


def _span(i: int, name: str) -> Any:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import SpanContext, TraceFlags

    context = SpanContext(i + 1, i + 1, is_remote=False, trace_flags=TraceFlags(1))
    return ReadableSpan(name=name, context=context, resource=Resource({}), start_time=1, end_time=2,
                        attributes={semconv.DECISION_IDS: [f"d{i}"]},
                        instrumentation_scope=InstrumentationScope(semconv.SCOPE))


@pytest.mark.parametrize("keep", [True, False])
def test_a_span_the_store_cannot_hold_is_set_aside_and_the_others_written(tmp_path, receiver, keep):
    """Below the rule (a span built by hand): the sink isolates what it cannot write."""
    from otel_rai.sinks.local import StoreSink
    from otel_rai.sinks.otlp import otlp_exporter_factory

    factory = None if keep else otlp_exporter_factory(receiver.endpoint, "grpc", None)
    sink = StoreSink(tmp_path / "audit.db", factory, keep=keep)
    for i, name in enumerate(["good", "bad \ud800", "good"]):
        sink.on_end(_span(i, name))
    assert sink.commit() == {"d1"}
    assert sink.dropped() == 1 and sink.force_flush(30_000)
    sink.close(5)
    if keep:
        with sqlite3.connect(tmp_path / "audit.db") as conn:
            assert [r[0] for r in conn.execute("SELECT decision_id FROM decisions ORDER BY span")] == ["d0", "d2"]
    else:
        assert [s.name for _, s in receiver.spans()] == ["good", "good"]
