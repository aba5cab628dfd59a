"""OTLP JSON: what we write is what protobuf's JSON mapping (the Collector's reader) parses into the SDK's
own OTLP encoding of the spans (OTLP JSON differs from that mapping only in its hex ids), and we read
Jaeger's OTLP JSON fixtures and Tempo's variants."""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path

import numpy as np
import pytest
from fake_backends import base64_ids
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from recorded import record

from otel_rai.codec import otlpjson
from otel_rai.codec.records import SpanRecord
from otel_rai.codec.sdk import ReadableSpans, from_readable

FIXTURES = Path("/work/shared/fixtures/jaeger")


def test_encoding_parses_into_the_sdks_own_otlp_of_the_spans(tmp_path):
    rec = record(tmp_path / "audit.db", {"1.4.1": 3, "1.4.2": 1500}, max_rows_per_span=1000)
    spans = rec.spans()
    written = json.dumps(otlpjson.encode(spans))  # a line of an otlp-json file
    parsed = json_format.Parse(json.dumps(base64_ids(json.loads(written))), ExportTraceServiceRequest())
    assert parsed == encode_spans([ReadableSpans()(s) for s in spans])


def test_decode_reverses_encode_including_non_finite_numbers():
    span = SpanRecord(
        trace_id="0af7651916cd43dd8448eb211c80319c", span_id="b7ad6b7169203331", name="predict m",
        start_ns=1_700_000_000_123_456_789, end_ns=1_700_000_000_223_456_789,
        attributes={"s": "x", "i": 7, "f": 0.5, "b": True, "nan": [math.inf, -math.inf, 1.0], "ids": ["a", "b"]},
        parent_span_id="00f067aa0ba902b7", parent_is_remote=True, kind=2, status_code=2, status_message="boom",
        trace_state="k=v", events=[{"name": "exception", "time_ns": 5, "attributes": {"exception.type": "E"}}],
        links=[{"trace_id": "1" * 32, "span_id": "2" * 16, "trace_state": "", "attributes": {"n": 1}}],
        resource={"service.name": "svc"}, resource_schema_url="https://opentelemetry.io/schemas/1.21.0",
        scope_name="otel_rai", scope_version="0.1.0",
    )
    text = json.dumps(otlpjson.encode([span]), allow_nan=False)
    (back,) = otlpjson.decode(json.loads(text))
    assert back == span
    (nan,) = otlpjson.decode(json.loads(text.replace('"Infinity"', '"NaN"', 1)))
    assert math.isnan(nan.attributes["nan"][0])


@pytest.mark.parametrize("path", sorted((FIXTURES / "otlp_traces").glob("*_trace.json")), ids=lambda p: p.stem)
def test_jaegers_otlp_fixtures_decode(path):
    data = json.loads(path.read_text())
    spans = list(otlpjson.decode(data))
    expected = [s for rs in data["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]
    assert [s.span_id for s in spans] == [s["spanId"] for s in expected]
    assert all(len(s.trace_id) == 32 and s.start_ns > 1_400_000_000 * 10**9 for s in spans)


def test_typed_attributes_of_the_span_tags_fixture():
    (span,) = otlpjson.decode(json.loads((FIXTURES / "otlp_traces/span_tags_trace.json").read_text()))
    assert span.attributes == {"sameplacetag1": "sameplacevalue", "sameplacetag2": 123, "sameplacetag4": True,
                               "sameplacetag3": 72.5, "blob": "AAAwOQ=="}
    assert span.service == "query01-service"


def test_tempo_variants_base64_ids_batches_and_instrumentation_library():
    tempo = {"batches": [{"resource": {"attributes": []}, "instrumentationLibrarySpans": [{
        "instrumentationLibrary": {"name": "lib"},
        "spans": [{"traceId": base64.b64encode(bytes.fromhex("0af7651916cd43dd8448eb211c80319c")).decode(),
                   "spanId": base64.b64encode(bytes.fromhex("b7ad6b7169203331")).decode(),
                   "kind": "SPAN_KIND_SERVER", "startTimeUnixNano": 1, "endTimeUnixNano": "2",
                   "status": {"code": "STATUS_CODE_ERROR"}}]}]}]}
    (span,) = otlpjson.decode(tempo)
    assert (span.trace_id, span.span_id, span.kind, span.status_code, span.scope_name) == (
        "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", 2, 2, "lib")


@pytest.mark.parametrize("bad", [[], {"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]},
                                 {"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": [1]}]}]}]}])
def test_malformed_input_is_a_clear_error(bad):
    with pytest.raises(otlpjson.OtlpJsonError):
        list(otlpjson.decode(bad))


def _random_record(rng: np.random.Generator, i: int) -> SpanRecord:
    """A record with every field set at random, including the rarely used ones (events, links, state)."""
    def hex_id(digits: int) -> str:
        return "".join(rng.choice(list("0123456789abcdef"), digits)).replace("0" * digits, "1" * digits)

    def attributes() -> dict:
        kinds = [f"s{i}", i, i + 0.5, bool(i % 2), [f"a{i}", "b"], [1.5, 2.5]]
        return {f"k{j}": kinds[rng.integers(len(kinds))] for j in range(rng.integers(0, 4))}

    parent = hex_id(16) if rng.random() < 0.5 else None
    status = int(rng.integers(0, 3))
    return SpanRecord(
        trace_id=hex_id(32), span_id=hex_id(16), name=f"span {i}", start_ns=int(rng.integers(1, 2**62)),
        end_ns=int(rng.integers(1, 2**62)), attributes=attributes(), parent_span_id=parent,
        parent_is_remote=parent is not None and bool(rng.random() < 0.5), kind=int(rng.integers(1, 6)),
        status_code=status, status_message=f"why {i}" if status == 2 else "",
        trace_state=f"k{i}=v{i}" if rng.random() < 0.3 else "",
        # No events or links: the empty tuple, as every reader writes it (`SpanRecord`).
        events=[{"name": f"e{j}", "time_ns": j + 1, "attributes": attributes()}
                for j in range(rng.integers(0, 3))] or (),
        links=[{"trace_id": hex_id(32), "span_id": hex_id(16), "trace_state": "" if j else "a=b",
                "attributes": attributes()} for j in range(rng.integers(0, 3))] or (),
        resource={"service.name": f"svc{i % 3}"}, resource_schema_url="https://example.test" if i % 2 else "",
        scope_name="otel_rai", scope_version="0.1.0" if i % 4 else "",
    )


def test_records_and_sdk_spans_convert_into_each_other_field_by_field():
    """`from_readable` writes its record positionally: a slip between two fields of one type shows here."""
    rng = np.random.default_rng(7)
    to_span = ReadableSpans()
    for i in range(500):
        record = _random_record(rng, i)
        assert from_readable(to_span(record)) == record
