"""`otlpproto.encode_spans` writes the very bytes of the SDK's OTLP encoder (the oracle), faster."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
from conftest import KEY
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState
from sklearn.linear_model import LogisticRegression

import otel_rai
from otel_rai import semconv
from otel_rai.codec import otlpproto
from otel_rai.codec.sdk import ReadableSpans, from_readable

RESOURCE = Resource.create({"service.name": "svc", "deployment.environment": "test"})
OTHER_RESOURCE = Resource({"service.name": "other"}, schema_url="https://opentelemetry.io/schemas/1.21.0")
SCOPE = InstrumentationScope("otel-rai", "0.1.0", schema_url="https://example.test/schema",
                             attributes={"scope.attr": 1})


def context(span_id: int, *, remote: bool = False, state: TraceState | None = None) -> SpanContext:
    return SpanContext(0x0123456789ABCDEF0123456789ABCDEF, span_id, is_remote=remote,
                       trace_flags=TraceFlags(TraceFlags.SAMPLED), trace_state=state)


def span(span_id: int, attributes=None, **kwargs) -> ReadableSpan:
    return ReadableSpan(
        name=kwargs.pop("name", "predict_proba LogisticRegression"),
        context=kwargs.pop("context", context(span_id)),
        attributes=attributes,
        resource=kwargs.pop("resource", RESOURCE),
        instrumentation_scope=kwargs.pop("scope", SCOPE),
        start_time=kwargs.pop("start_time", 1_700_000_000_000_000_000 + span_id),
        end_time=kwargs.pop("end_time", 1_700_000_000_000_050_000 + span_id),
        **kwargs,
    )


EVERY_VALUE = {
    "s": "text", "empty": "", "unicode": "Zürich ✓", "t": True, "f": False, "zero": 0, "neg": -5,
    "big": 2**63 - 1, "small": -(2**63), "pi": 3.25, "nan": math.nan, "inf": -math.inf, "negzero": -0.0,
    "bytes": b"\x00\xff", "strs": ["a", "", "b"], "ints": (1, -2, 300), "floats": [0.5, -1e300],
    "bools": [True, False], "mixed": [1, "a", 2.5, None], "nested": [[1, 2], ["x"]], "none": None,
    "empty_list": [], "map": {"k": 1, "n": {"deep": [1, "z"]}}, "f32": np.float64(0.1), "long": "x" * 300,
}


CASES = {
    "every kind of value": [span(1, EVERY_VALUE)],
    "no attributes": [span(2, None, name="")],
    "every kind of span": [
        span(3, {"a": 1}, kind=SpanKind.SERVER, parent=context(9, remote=True),
             status=Status(StatusCode.ERROR, "ValueError: bad input"),
             events=[Event("exception", {"exception.type": "ValueError", "n": [1, 2]}, timestamp=17),
                     Event("", None, timestamp=0)],
             links=[Link(context(11, remote=True), {"link": "x"}), Link(context(12), None)],
             context=context(3, state=TraceState([("vendor", "a1"), ("other", "b2")]))),
        span(4, {"b": "2"}, kind=SpanKind.CLIENT, parent=context(3), status=Status(StatusCode.OK)),
        span(5, {"c": 3.0}, kind=SpanKind.CONSUMER, start_time=None, end_time=None),
    ],
    "resources and scopes, in order of first appearance": [
        span(6, {"a": 1}), span(7, {"a": 2}, resource=OTHER_RESOURCE), span(8, {"a": 3}, scope=None),
        span(9, {"a": 4}), span(10, {"a": 5}, resource=OTHER_RESOURCE, scope=InstrumentationScope("x")),
    ],
    "a large span (multi-byte lengths)": [span(11, {semconv.DECISION_IDS: [f"{i:032x}" for i in range(5000)],
                                                    semconv.OUTPUTS: list(range(5000))})],
}


@pytest.mark.parametrize("spans", CASES.values(), ids=CASES.keys())
def test_the_same_bytes_as_the_sdk_encoder(spans):
    assert otlpproto.encode_spans(spans) == sdk_encode_spans(spans).SerializeToString()
    # Twice: the second time, string attributes come from the cache.
    assert otlpproto.encode_spans(spans) == sdk_encode_spans(spans).SerializeToString()


@pytest.mark.parametrize("spans", CASES.values(), ids=CASES.keys())
def test_spans_encoded_one_by_one_make_the_same_request_and_decode_to_spans_that_encode_the_same(spans):
    """What the spool's outbox keeps: each span encoded when it was written, sent as it is over gRPC,
    and decoded again for an exporter that encodes on its own (the SDK's OTLP/HTTP exporter)."""
    encoded = otlpproto.EncodedSpans(otlpproto.grouped(
        (s.resource, s.instrumentation_scope or None, otlpproto.encode_span(s)) for s in spans))
    expected = sdk_encode_spans(spans).SerializeToString()
    assert len(encoded) == len(spans) and encoded.request() == expected
    decoded = list(encoded)
    assert [s.name for s in decoded] == [s.name for s in spans]
    assert sdk_encode_spans(decoded).SerializeToString() == expected


@pytest.mark.parametrize("spans", CASES.values(), ids=CASES.keys())
def test_a_record_encodes_as_its_span_does(spans):
    """The audit tracer's spans end as records (`encode_record`); the SDK path encodes spans."""
    remote_link, local_link = b"\x35\x00\x03\x00\x00", b"\x35\x00\x01\x00\x00"  # Link.flags
    for s in spans:
        expected = otlpproto.encode_span(s)
        if any(link.context.is_remote for link in s.links):  # a record does not keep that flag
            assert remote_link in expected
            expected = expected.replace(remote_link, local_link)
        assert otlpproto.encode_record(from_readable(s)) == expected


#: Resources and scopes the generated requests draw from: with and without schema URLs and attributes, and
#: no scope at all.
_RESOURCES = [RESOURCE, OTHER_RESOURCE, Resource({}), Resource({"k": "v" * 200}, schema_url="https://s/" + "x" * 130)]
_SCOPES = [SCOPE, None, InstrumentationScope("x"), InstrumentationScope("y", "1", schema_url="u" * 140)]


def test_generated_requests_of_many_resources_scopes_and_sizes_are_the_sdk_encoding():
    """Requests are written as pieces joined once, their lengths worked out ahead: every message size
    around the one-byte length limit (127 and 128 bytes), runs that come back to an earlier resource or
    scope, and empty and large spans, against the SDK's encoder."""
    rng = np.random.default_rng(11)
    for case in range(300):
        spans = []
        for i in range(int(rng.integers(1, 12))):
            size = int(rng.choice([0, 1, 60, 100, 120, 124, 125, 126, 127, 128, 129, 300, 20_000]))
            attributes = {"pad": "p" * size} if size else None
            spans.append(span(1000 * case + i, attributes, resource=_RESOURCES[int(rng.integers(len(_RESOURCES)))],
                              scope=_SCOPES[int(rng.integers(len(_SCOPES)))]))
        expected = sdk_encode_spans(spans).SerializeToString()
        assert otlpproto.encode_spans(spans) == expected, case
        encoded = otlpproto.EncodedSpans(otlpproto.grouped(
            (s.resource, s.instrumentation_scope or None, otlpproto.encode_span(s)) for s in spans))
        assert encoded.request() == expected, case
    for size in range(160):  # one small span, so that its ScopeSpans and ResourceSpans sweep past 127 bytes
        spans = [span(1, {"p": "p" * size} if size else None, name="", resource=Resource({}), scope=None)]
        assert otlpproto.encode_spans(spans) == sdk_encode_spans(spans).SerializeToString(), size


@pytest.mark.parametrize("bad", [np.int64(3), 2**63, -(2**63) - 1, "\ud800", object()],
                         ids=["numpy-int", "over-int64", "under-int64", "lone-surrogate", "object"])
def test_a_value_that_cannot_be_encoded_is_left_out_as_the_sdk_leaves_it_out(bad, caplog):
    spans = [span(20, {"before": 1, "bad": bad, "after": [bad] if isinstance(bad, str) else 2})]
    with caplog.at_level(logging.ERROR, logger="opentelemetry"):
        expected = sdk_encode_spans(spans).SerializeToString()
    with caplog.at_level(logging.WARNING, logger="otel_rai"):
        caplog.clear()
        assert otlpproto.encode_spans(spans) == expected
    assert "bad" in caplog.text
    assert repr(bad) not in caplog.text or isinstance(bad, int)  # the value itself is never logged


#: Values of the remembered model arrays that are equal as Python keys but not as bytes, and some that
#: cannot be keys at all.
_LOOKALIKES = [[0, 1], [False, True], [0.0, 1.0], [-0.0, 1.0], [0, 1.0], ["0", "1"], (0, 1), [], [[0], [1]],
               ["a", "é"], [2**63 - 1, -(2**63)], ["\ud800"], [np.int64(1)], [math.nan], [math.nan]]


def test_the_model_arrays_remembered_encode_as_the_sdk_encodes_each_lookalike(monkeypatch):
    monkeypatch.setattr(otlpproto.native, "module", None)  # the Python encoder's cache (the native one has none)
    rng = np.random.default_rng(3)
    for i in rng.integers(len(_LOOKALIKES), size=300):  # each lookalike after every other, many times
        values = _LOOKALIKES[i]
        spans = [span(300 + int(i), {semconv.OUTPUT_CLASSES: values, semconv.INPUT_FEATURES: values, "other": values})]
        assert otlpproto.encode_spans(spans) == sdk_encode_spans(spans).SerializeToString(), values
    features = [f"feature_{i}" for i in range(otlpproto._MAX_CACHED + 50)]  # ever new arrays: bounded
    spans = [span(400 + i, {semconv.INPUT_FEATURES: features[i : i + 3]}) for i in range(len(features) - 3)]
    assert otlpproto.encode_spans(spans) == sdk_encode_spans(spans).SerializeToString()
    assert 0 < len(otlpproto._ARRAY_ATTRIBUTES) <= otlpproto._MAX_CACHED


def test_the_cache_keeps_repeated_strings_stays_bounded_and_correct_with_ever_new_strings(monkeypatch):
    monkeypatch.setattr(otlpproto.native, "module", None)  # the Python encoder's cache (the native one has none)
    spans = [span(100 + i, {"hash": f"{i:064x}", "model": "credit"}) for i in range(otlpproto._MAX_CACHED + 50)]
    assert otlpproto.encode_spans(spans) == sdk_encode_spans(spans).SerializeToString()
    assert len(otlpproto._STRING_ATTRIBUTES) <= otlpproto._MAX_CACHED
    assert len(otlpproto._SEEN_ONCE) <= otlpproto._MAX_CACHED
    assert (0x4A, "model", "credit") in otlpproto._STRING_ATTRIBUTES  # seen again and again: kept
    assert not any(key == "hash" for _, key, _ in otlpproto._STRING_ATTRIBUTES)  # each seen once


@pytest.mark.parametrize("spool", [True, False], ids=["spool", "memory"])
def test_what_the_grpc_exporter_sends_of_real_audit_spans_is_the_sdk_encoding(receiver, monkeypatch, tmp_path,
                                                                              spool):
    """Through the whole path: audit spans of the audit tracer (decisions, an exception, a chunked
    call, checkpoints), encoded by the audit worker as it queues them, and sent by the exporter that
    `instrument(endpoint=...)` builds, in order."""
    ended, requests = [], []
    encode_record, request = otlpproto.encode_record, otlpproto.EncodedSpans.request
    as_sdk_span = ReadableSpans()

    def encoding(record):  # the audit tracer's spans end as records: the SDK encodes the spans they stand for
        ended.append(as_sdk_span(record))
        return encode_record(record)

    def sending(batch):
        requests.append((len(batch), request(batch)))
        return requests[-1][1]

    monkeypatch.setattr(otlpproto, "encode_record", encoding)
    monkeypatch.setattr(otlpproto.EncodedSpans, "request", sending)
    X = np.random.default_rng(0).normal(size=(300, 4))
    model = LogisticRegression().fit(X, X[:, 0] > 0)
    otel_rai.instrument(endpoint=receiver.endpoint, hash_key=KEY, spool=tmp_path / "spool.db" if spool else False,
                        max_rows_per_span=100, explain=False)
    try:
        model.predict_proba(X[:1])
        model.predict(X)  # three chunks under one parent
        with pytest.raises(ValueError):
            model.predict(X[:, :2])
        assert otel_rai.flush(30).complete
    finally:
        otel_rai.uninstrument()
    assert sum(semconv.DECISION_IDS in (s.attributes or {}) for s in ended) >= 4
    assert any(s.events for s in ended)
    sent = 0
    for n, encoded in requests:
        assert encoded == sdk_encode_spans(ended[sent:sent + n]).SerializeToString()
        sent += n
    assert sent == len(ended) == len(receiver.spans())
