"""Export over OTLP to a real receiver: rotel (the Rust collector) forwarding to an in-test OTLP server."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import KEY
from servers import attributes, decision_spans
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

import otel_rai
from otel_rai import semconv

X, y = make_classification(400, 6, random_state=0)


def _model():
    return otel_rai.register_model(LogisticRegression().fit(X, y), name="credit", version="2.0")


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_decisions_reach_a_real_collector(receiver, rotel, protocol):
    endpoint = rotel.grpc_endpoint if protocol == "grpc" else rotel.http_endpoint
    otel_rai.instrument(endpoint=endpoint, protocol=protocol, hash_key=KEY, service_name="credit-scoring")
    model = _model()
    with otel_rai.decisions(ids=["A-1", "A-2", "A-3"]):
        out = model.predict(X[:3])
    assert otel_rai.flush(30).complete
    received = receiver.wait_for_spans(2)  # the decision span and the model's record
    assert sorted(span.name for _, span in received) == [semconv.MODEL_RECORD_SPAN, "predict credit"]
    resource, span = next((r, s) for r, s in received if s.name == "predict credit")
    a = attributes(span)
    assert resource["service.name"] == "credit-scoring"
    assert span.name == "predict credit"
    assert a[semconv.MODEL_VERSION] == "2.0"
    assert a[semconv.DECISION_IDS] == ("A-1", "A-2", "A-3")
    assert list(a[semconv.OUTPUTS]) == out.tolist()
    assert list(a[semconv.INPUT_HASHES]) == [otel_rai.hash_input(r, KEY) for r in X[:3]]
    otel_rai.uninstrument()  # while the backend is up, so that the closing checkpoint is delivered


def test_standard_environment_variables(receiver, monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=bank-7,authorization=Bearer%20t0k")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod,team=risk")
    otel_rai.instrument(hash_key=KEY)
    _model().predict(X[:2])
    assert otel_rai.flush(30).complete
    received = receiver.wait_for_spans(2)  # the decision span and the model's record
    (resource,) = {tuple(sorted(r.items())) for r, _ in received}
    resource = dict(resource)
    assert resource["service.name"] == "from-env"
    assert resource["deployment.environment"] == "prod" and resource["team"] == "risk"
    assert receiver.metadata[0]["x-tenant"] == "bank-7"
    assert receiver.metadata[0]["authorization"] == "Bearer t0k"
    otel_rai.uninstrument()  # while the backend is up, so that the closing checkpoint is delivered


def test_large_batch_arrives_whole_in_chunks(receiver, rotel):
    otel_rai.instrument(endpoint=rotel.grpc_endpoint, hash_key=KEY)
    big = np.tile(X, (50, 1))  # 20,000 rows: 20 chunk spans and their parent
    out = _model().predict(big)
    assert otel_rai.flush(60).complete
    received = receiver.wait_for_spans(22)  # the chunks, their parent and the model's record
    chunks = sorted((attributes(s) for _, s in received if semconv.DECISION_IDS in attributes(s)),
                    key=lambda a: a[semconv.BATCH_OFFSET])
    assert len(chunks) == 20
    assert [o for c in chunks for o in c[semconv.OUTPUTS]] == out.tolist()
    assert len({i for c in chunks for i in c[semconv.DECISION_IDS]}) == len(big)
    otel_rai.uninstrument()  # while the backend is up, so that the closing checkpoint is delivered


def test_flush_returns_once_the_export_has_caught_up_not_at_the_next_poll(receiver, rotel, monkeypatch):
    """A flush waits for the delivered spans to leave the outbox. The export deletes them when it finds
    nothing more to send, and says so: with the flush's re-read of the queue pushed past its timeout, every
    flush of a run of calls returns long before it (it once waited a 50 ms poll per flush)."""
    from otel_rai.sinks import otlp

    monkeypatch.setattr(otlp, "_FLUSH_POLL", 60.0)
    otel_rai.instrument(endpoint=rotel.grpc_endpoint, hash_key=KEY)
    model = _model()
    started = time.monotonic()
    for i in range(5):
        model.predict(X[i : i + 10])
        assert otel_rai.flush(30).complete
    # Not a performance bound: a flush that waits for the poll takes 60 s, or its whole timeout.
    assert time.monotonic() - started < 30, "the flushes waited for the poll"
    assert len(receiver.wait_for_spans(6)) >= 6  # five decision spans and the model's record
    otel_rai.uninstrument()


def test_bad_export_configuration_is_a_clear_error():
    with pytest.raises(ValueError, match="protocol 'http/json' is not supported"):
        otel_rai.instrument(endpoint="http://127.0.0.1:4318", protocol="http/json", hash_key=KEY)
    with pytest.raises(ValueError, match="needs a scheme"):
        otel_rai.instrument(endpoint="127.0.0.1:4317", hash_key=KEY)
    with pytest.raises(ValueError, match="headers must look like"):
        otel_rai.instrument(endpoint="http://127.0.0.1:4317", headers="novalue", hash_key=KEY)


SAMPLED_APP = """
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
import otel_rai

# The application samples nothing (ratio 0): audit spans must be kept all the same.
trace.set_tracer_provider(TracerProvider(sampler=TraceIdRatioBased(0.0),
                                         resource=Resource.create({"service.name": "loan-api"})))
otel_rai.instrument(endpoint="{endpoint}")
X, y = make_classification(50, 4, random_state=0)
model = LogisticRegression().fit(X, y)
with trace.get_tracer("app").start_as_current_span("POST /score") as request:
    assert not request.get_span_context().trace_flags.sampled
    model.predict(X[:2])
    print(format(request.get_span_context().trace_id, "032x"), format(request.get_span_context().span_id, "016x"))
"""


def test_a_ratio_sampler_in_the_app_does_not_drop_decisions(receiver, rotel, tmp_path):
    script = SAMPLED_APP.replace("{endpoint}", rotel.grpc_endpoint)
    result = subprocess.run([sys.executable, "-c", script], env={**os.environ, "OTEL_RAI_HASH_KEY": KEY},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    trace_id, span_id = result.stdout.split()
    ((resource, span),) = decision_spans(receiver.wait_for_spans(2))  # and the closing checkpoint
    assert span.trace_id.hex() == trace_id  # the decision joins the (unsampled) request trace
    assert span.parent_span_id.hex() == span_id
    assert resource["service.name"] == "loan-api"  # under the application's service
    assert attributes(span)[semconv.BATCH_SIZE] == 2


AUTO_APP = """
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
X, y = make_classification(50, 4, random_state=0)
LogisticRegression().fit(X, y).predict(X[:4])
"""


def test_opentelemetry_instrument_picks_it_up_without_code_changes(receiver, rotel, tmp_path):
    app = tmp_path / "app.py"
    app.write_text(AUTO_APP)
    env = {
        **os.environ,
        "OTEL_RAI_HASH_KEY": KEY,
        "OTEL_SERVICE_NAME": "auto-svc",
        "OTEL_EXPORTER_OTLP_ENDPOINT": rotel.grpc_endpoint,
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_RAI_MODEL_VERSION": "auto-1",
    }
    instrument = os.path.join(os.path.dirname(sys.executable), "opentelemetry-instrument")
    result = subprocess.run([instrument, sys.executable, str(app)], env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    ((resource, span),) = decision_spans(receiver.wait_for_spans(2))
    assert resource["service.name"] == "auto-svc"
    assert attributes(span)[semconv.MODEL_VERSION] == "auto-1"
    assert attributes(span)[semconv.BATCH_SIZE] == 4
