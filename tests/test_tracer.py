"""The audit provider's tracer builds the same spans as the SDK's tracer, without its validation cost."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest
from conftest import KEY
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from sklearn.linear_model import LogisticRegression

from otel_rai import semconv
from otel_rai.audit import spans
from otel_rai.audit.hashing import resolve_key
from otel_rai.audit.tracer import AuditTracer
from otel_rai.capture import models
from otel_rai.capture import recorder as capture
from otel_rai.chain.seal import Chain, ChainedTracer
from otel_rai.codec.sdk import from_readable
from otel_rai.settings import Settings


class Keep(SpanProcessor):
    def __init__(self) -> None:
        self.ended = []
        self.records = []

    def on_end(self, span) -> None:
        self.ended.append(span)

    def on_record(self, record, resource, scope) -> None:
        self.records.append((record, resource, scope))


def _calls(parent):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 3))
    model = LogisticRegression().fit(X, (X[:, 0] > 0).astype(int))
    info = models.model_info(model, "7")
    now = time.time_ns()
    ok = capture.DecisionCall(model=model, info=info, operation="predict_proba", X=X[:5], n_rows=5,
                              ids=[f"d{i}" for i in range(5)], attributes={"app.channel": "web"}, parent=parent,
                              start_ns=now, end_ns=now + 1000, output=model.predict_proba(X[:5]))
    try:
        model.predict(X[:2, :2])
    except ValueError as exc:
        error = exc
    failed = capture.DecisionCall(model=model, info=info, operation="predict", X=X[:2, :2], n_rows=2,
                                  ids=["e0", "e1"], attributes={}, parent=parent, start_ns=now, end_ns=now + 5,
                                  error=error)
    big = capture.DecisionCall(model=model, info=info, operation="predict", X=np.tile(X, (3, 1)), n_rows=90,
                               ids=[f"b{i}" for i in range(90)], attributes={}, parent=parent, start_ns=now,
                               end_ns=now + 9, output=model.predict(np.tile(X, (3, 1))))
    return [ok, failed, big]


def test_same_spans_as_the_sdk_tracer():
    provider = TracerProvider(sampler=ALWAYS_ON)
    sdk_kept, ours_kept = Keep(), Keep()
    provider.add_span_processor(sdk_kept)
    ours = AuditTracer(provider, [ours_kept], InstrumentationScope(semconv.SCOPE, "1"))
    settings = Settings(hash_key=resolve_key(KEY), explain=False, max_rows_per_span=40)
    request = provider.get_tracer("app").start_span("POST /score")
    parent = trace.set_span_in_context(request)
    for call in _calls(parent):
        assert spans.emit(call, provider.get_tracer(semconv.SCOPE, "1"), settings, print) == \
            spans.emit(call, ours, settings, print)
    theirs = [from_readable(s) for s in sdk_kept.ended if s.name != "POST /score"]
    assert len(theirs) == len(ours_kept.records) == 1 + 1 + 4  # the chunked call: a parent and 3 chunks
    request_id = f"{request.get_span_context().span_id:016x}"
    for a, (b, resource, scope) in zip(theirs, ours_kept.records):
        assert resource is provider.resource and (scope.name, scope.version) == (semconv.SCOPE, "1")
        assert b.trace_id == f"{request.get_span_context().trace_id:032x}"
        assert (a.parent_span_id == request_id) == (b.parent_span_id == request_id)
        # Everything else the same record, as the store would keep the SDK's span: only the new ids differ.
        assert replace(a, span_id="", parent_span_id="") == replace(b, span_id="", parent_span_id="")
    assert ours_kept.records[1][0].events[0]["attributes"]["exception.type"] == "ValueError"
    assert ours_kept.records[0][0].status_code == 0 and ours_kept.records[1][0].status_code == 2


class _Counting(IdGenerator):
    """Ids 1, 2, 3...: two runs of the same calls get the same ids."""

    def __init__(self) -> None:
        self.n = 0

    def generate_span_id(self) -> int:
        self.n += 1
        return self.n

    def generate_trace_id(self) -> int:
        self.n += 1
        return self.n


@pytest.mark.parametrize("trace_ui", [False, True])
def test_a_span_ended_at_once_is_the_span_started_and_ended(trace_ui):
    """`end_span` (no span object) and `start_span` then `end` make the same records, chain links included."""
    settings = Settings(hash_key=resolve_key(KEY), explain=False, max_rows_per_span=40, trace_ui=trace_ui)
    request = TracerProvider(id_generator=_Counting()).get_tracer("app").start_span("POST /score")
    calls = [call for parent in (None, trace.set_span_in_context(request)) for call in _calls(parent)[:2]]
    kept = {}
    for at_once in (True, False):
        provider = TracerProvider(sampler=ALWAYS_ON, id_generator=_Counting(), resource=Resource({"service.name": "t"}))
        kept[at_once] = Keep()
        tracer = ChainedTracer(AuditTracer(provider, [kept[at_once]], InstrumentationScope(semconv.SCOPE, "1")),
                               Chain())
        tracer.chain.stream = "s"
        if not at_once:
            tracer.end_span = None
        for call in calls + calls[:1]:
            spans.emit(call, tracer, settings, print)
    records = [[r for r, _, _ in kept[at_once].records] for at_once in (True, False)]
    assert len(records[0]) == 5 and records[0] == records[1]
    assert all(semconv.AUDIT_RECORD_HASH in r.attributes for r in records[0])
