"""The audit provider's tracer builds the same spans as the SDK's tracer, without its validation cost."""

from __future__ import annotations

import time

import numpy as np
from conftest import KEY
from opentelemetry import trace
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from sklearn.linear_model import LogisticRegression

from otel_rai import semconv
from otel_rai.audit import spans
from otel_rai.audit.hashing import resolve_key
from otel_rai.audit.tracer import AuditTracer
from otel_rai.capture import models
from otel_rai.capture import recorder as capture
from otel_rai.settings import Settings


class Keep(SpanProcessor):
    def __init__(self) -> None:
        self.ended = []

    def on_end(self, span) -> None:
        self.ended.append(span)


def _plain(mapping):
    return {k: list(v) if isinstance(v, (tuple, list)) else v for k, v in mapping.items()}


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
    theirs = [s for s in sdk_kept.ended if s.name != "POST /score"]
    assert len(theirs) == len(ours_kept.ended) == 1 + 1 + 4  # the chunked call: a parent and 3 chunks
    for a, b in zip(theirs, ours_kept.ended):
        assert (a.name, a.kind, a.start_time, a.end_time) == (b.name, b.kind, b.start_time, b.end_time)
        assert (a.status.status_code, a.status.description) == (b.status.status_code, b.status.description)
        assert _plain(a.attributes) == _plain(b.attributes)
        assert [(e.name, _plain(e.attributes), e.timestamp) for e in a.events] == \
            [(e.name, _plain(e.attributes), e.timestamp) for e in b.events]
        assert b.context.trace_id == request.get_span_context().trace_id
        assert b.context.trace_flags.sampled and b.resource is provider.resource
        assert (a.parent.span_id == request.get_span_context().span_id) == \
            (b.parent.span_id == request.get_span_context().span_id)
    assert ours_kept.ended[1].events[0].attributes["exception.type"] == "ValueError"
