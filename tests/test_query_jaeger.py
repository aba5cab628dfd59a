"""The Jaeger backend: Jaeger's own fixtures, and our spans served as api_v3 and legacy JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fake_backends import FakeJaeger, FakeServer, otlp_to_legacy
from recorded import record
from servers import free_port

from otel_rai.codec import otlpjson
from otel_rai.query import BackendError, Query, find_decisions, jaeger

FIXTURES = Path("/work/shared/fixtures/jaeger")


def fixture(name: str):
    return json.loads((FIXTURES / name).read_text())


# --- Jaeger's own responses ----------------------------------------------------------------------


def test_the_fake_renders_legacy_json_exactly_as_jaeger_does():
    expected = fixture("legacy_api/otlp2jaeger-out.json")["data"]
    assert otlp_to_legacy(fixture("legacy_api/otlp2jaeger-in.json")) == expected


def test_legacy_json_reads_back_into_the_otlp_it_came_from():
    (trace,) = fixture("legacy_api/otlp2jaeger-out.json")["data"]
    got = list(jaeger.legacy_records(trace))
    want = list(otlpjson.decode(fixture("legacy_api/otlp2jaeger-in.json")))
    fields = ("trace_id", "span_id", "parent_span_id", "name", "kind", "start_ns", "end_ns", "attributes",
              "status_code", "scope_name", "service")
    assert [[getattr(s, f) for f in fields] for s in got] == [[getattr(s, f) for f in fields] for s in want]


def test_api_v3_fixture_responses():
    def route(path, query):
        name = {"/api/v3/services": "GetServices.json", "/api/v3/traces": "FindTraces.json"}.get(path)
        return (200, fixture(f"api_v3/{name}")) if name else (404, "404 page not found\n")

    server = FakeServer(route)
    try:
        (span,) = jaeger.connect(server.url).spans(Query(start_ns=0, end_ns=2_000_000_000_000))
        assert (span.trace_id, span.span_id, span.name, span.kind, span.status_code) == (
            "00000000000000000000000000000001", "0000000000000002", "foobar", 2, 2)
        assert [p for p, _ in server.requests] == ["/api/v3/services", "/api/v3/services", "/api/v3/traces"]
        assert server.requests[-1][1]["query.service_name"] == ["foo"]  # every service Jaeger lists
    finally:
        server.stop()


# --- our decisions in Jaeger ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    # A 500-row batch (one span), a small second version, and 30 single-decision traces.
    versions = {"1.4.1": 500, "1.4.2": 7, **{f"v{i:02}": 1 for i in range(30)}}
    return record(tmp_path_factory.mktemp("jaeger") / "audit.db", versions)


MODES = {
    "v3": {},
    "v3 before 2.19 (attribute filter ignored)": {"ignores_attributes": True},
    "v3 on a storage that stringifies arrays": {"stringified_arrays": True},
    "legacy api": {"legacy_only": True},
}


@pytest.mark.parametrize("mode", MODES)
def test_one_version_yields_exactly_its_decisions_like_the_local_store(recorded, mode):
    server = FakeJaeger(recorded.spans(), **MODES[mode])
    try:
        for version in ("1.4.1", "1.4.2"):
            local = [d.to_dict(full=True) for d in find_decisions(model_version=version, url=str(recorded.path))]
            remote = [d.to_dict(full=True) for d in find_decisions(
                model_version=version, backend="jaeger", url=server.url, **recorded.window())]
            legacy_us = mode == "legacy api"  # the legacy API keeps microseconds
            for d in local if legacy_us else ():
                d["timestamp"] = d["timestamp"][:-4] + "000Z"
            assert remote == local and len(remote) == {"1.4.1": 500, "1.4.2": 7}[version]
    finally:
        server.stop()


@pytest.mark.parametrize("mode", ["v3", "legacy api"])
def test_more_traces_than_the_search_depth_are_all_found_by_splitting_the_window(recorded, mode):
    server = FakeJaeger(recorded.spans(), **MODES[mode])
    try:
        backend = jaeger.Jaeger(server.url, search_depth=4)
        found = list(find_decisions(backend=backend, service="credit-scoring", **recorded.window()))
        assert [d.decision_id for d in found] == [d.decision_id for d in find_decisions(url=str(recorded.path))]
        assert len(found) == 537 and len(server.requests) > 3
    finally:
        server.stop()


def test_decision_id_and_input_hash_are_matched_client_side(recorded):
    server = FakeJaeger(recorded.spans())
    try:
        wanted = recorded.ids["1.4.1"][123]
        (d,) = find_decisions(decision_id=wanted, backend="jaeger", url=server.url, **recorded.window())
        assert d.row == 123 and d.output == recorded.outputs[wanted]
        same_input = list(find_decisions(input_hash=d.input_hash, backend="jaeger", url=server.url,
                                         **recorded.window()))
        assert wanted in [x.decision_id for x in same_input]
        assert all(x.input_hash == d.input_hash for x in same_input)
    finally:
        server.stop()


# --- failures ------------------------------------------------------------------------------------


def test_unreachable_jaeger_is_one_clear_error():
    port = free_port()
    with pytest.raises(BackendError, match=f"cannot reach jaeger at http://127.0.0.1:{port}: .*[Rr]efused"):
        list(find_decisions(model_version="1", backend="jaeger", url=f"http://127.0.0.1:{port}"))


@pytest.mark.parametrize("url", ["localhost:16686", "ftp://x", "http://", "http://host:99999"])
def test_a_bad_url_is_a_usage_error(url):
    with pytest.raises(ValueError, match="jaeger"):
        find_decisions(backend="jaeger", url=url)


@pytest.mark.parametrize("answer, message", [
    ((500, "internal error"), "answered HTTP 500 to /api/v3/services: internal error"),
    ((200, "<html>not json</html>"), "not JSON"),
    ((200, {"services": ["s"], "result": {"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": 7}]}]}]}}),
     "unexpected response from jaeger|an id must be a string"),
])
def test_a_broken_answer_is_one_clear_error(answer, message):
    server = FakeServer(lambda path, query: answer)
    try:
        with pytest.raises((BackendError, otlpjson.OtlpJsonError), match=message):
            list(find_decisions(backend="jaeger", url=server.url, start=0, end=10**18))
    finally:
        server.stop()


def test_basic_auth_from_the_url_is_sent_and_never_shown():
    server = FakeServer(lambda path, query: (401, "unauthorized"))
    try:
        url = server.url.replace("http://", "http://auditor:s3cret@")
        with pytest.raises(BackendError) as err:
            list(find_decisions(backend="jaeger", url=url, start=0, end=10**18))
        assert "s3cret" not in str(err.value) and "HTTP 401" in str(err.value)
    finally:
        server.stop()
