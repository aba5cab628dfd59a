"""Decisions in the MLflow UI and queryable from it: a real ``mlflow server`` (SQLite backend store) on a
free port takes the decision spans over OTLP/HTTP; MLflow's own client (``search_traces``) is the oracle
that they arrived intact, and ``otel-rai query --backend mlflow`` reads them back."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import mlflow
import numpy as np
import pytest
from conftest import KEY, need
from mlflow_servers import ROOT, TrackingServer, base_env
from sklearn.linear_model import LogisticRegression

import otel_rai
from otel_rai import semconv, settings
from otel_rai.codec.reasons import parse_top
from otel_rai.query import Query, connect, find_decisions, find_spans
from otel_rai.query import mlflow as mlflow_backend
from otel_rai.query.trail import verify
from otel_rai.sinks import mlflow as destination

pytestmark = pytest.mark.stack

#: How long the test waits for the export thread and MLflow's ingestion.
ARRIVAL_TIMEOUT_S = 60.0
X = np.random.default_rng(11).normal(size=(300, 4))
Y = (X[:, 0] - X[:, 2] > 0).astype(int)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tracking = TrackingServer(tmp_path_factory.mktemp("mlflow-server")).start()
    yield tracking
    tracking.stop()


@pytest.fixture
def to_mlflow(server, monkeypatch, tmp_path):
    """Instruments with decisions going to `server`'s experiment ``decisions`` (and the local store, the
    export's write-ahead log, to compare with)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "credit-scoring")
    store = tmp_path / "audit.db"

    def start(experiment="decisions", **options):
        otel_rai.instrument(mlflow_experiment=experiment, store=store, hash_key=KEY, **options)
        return store

    return start


def _ids(spans):
    return {i for s in spans for i in (s.attributes.get(semconv.DECISION_IDS) or ())}


def traces_with(server, experiment_id, ids, timeout=ARRIVAL_TIMEOUT_S):
    """MLflow's own search (``mlflow.search_traces``) for the spans holding decision ids `ids`, once all
    have arrived (`experiment_spans`)."""
    spans = experiment_spans(server, experiment_id, lambda spans: set(ids) <= _ids(spans), timeout)
    return [s for _, s in spans if _ids([s]) & set(ids)]


def _same(a, b):
    return json.loads(json.dumps(a)) == json.loads(json.dumps(b))


def experiment_spans(server, experiment_id, done, timeout=ARRIVAL_TIMEOUT_S):
    """Every span of the experiment's traces, as MLflow's own client reads them, once `done(spans)` holds
    (or the deadline passed)."""
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(server.url)
    try:
        deadline = time.monotonic() + timeout
        while True:
            traces = mlflow.search_traces(locations=[experiment_id], max_results=500, return_type="list")
            spans = [(t.info.trace_id, s) for t in traces for s in t.data.spans]
            if done([s for _, s in spans]) or time.monotonic() > deadline:
                return spans
            time.sleep(0.25)
    finally:
        mlflow.set_tracking_uri(previous)


def test_decisions_reach_the_experiment_with_every_attribute_intact(server, to_mlflow):
    store = to_mlflow()
    model = otel_rai.register_model(LogisticRegression().fit(X, Y), "credit", "3", background=X[:50])
    with otel_rai.decisions(ids=["A-1", "A-2", "A-3"]):
        model.predict_proba(X[:3])
    model.predict(X[3:4])
    assert otel_rai.flush(60).complete
    experiment = mlflow.MlflowClient(server.url).get_experiment_by_name("decisions")
    assert experiment is not None  # created by name, as mlflow.set_experiment would
    written = list(find_spans(Query(model_version="3"), connect("local", str(store))))
    local = [s for s in written if semconv.DECISION_IDS in s.attributes]
    (record,) = [s for s in written if s.name == semconv.MODEL_RECORD_SPAN]
    ids = [i for s in local for i in s.attributes[semconv.DECISION_IDS]]
    arrived = traces_with(server, experiment.experiment_id, ids)
    assert len(arrived) == len(local) == 2
    for span in local:
        (theirs,) = [s for s in arrived if s.span_id == span.span_id]
        assert theirs.name == span.name and theirs.trace_id == "tr-" + span.trace_id
        ours = {k: v for k, v in theirs.attributes.items() if k.startswith("ml.")}
        assert _same(ours, {k: v for k, v in span.attributes.items() if k.startswith("ml.")})
        assert (theirs.start_time_ns, theirs.end_time_ns) == (span.start_ns, span.end_ns)
    otel_rai.uninstrument()
    # The model record and the chain's checkpoints are not filtered out: each arrives as a trace of its own
    # (one root span, no decision in it), which is what lets the chain and `otel-rai model` read them back.
    everything = experiment_spans(server, experiment.experiment_id, lambda spans: any(
        s.span_id == record.span_id for s in spans) and any(s.name == semconv.CHECKPOINT_SPAN for s in spans))
    by_trace: dict[str, list] = {}
    for trace_id, span in everything:
        by_trace.setdefault(trace_id, []).append(span)
    (theirs,) = [s for _, s in everything if s.span_id == record.span_id]
    assert by_trace[theirs.trace_id] == [theirs] and theirs.parent_id is None
    a = {k: v for k, v in theirs.attributes.items() if k.startswith("ml.")}
    # A string attribute holding a JSON object (parameters, libraries, schema) comes back from MLflow's
    # client as the object: MLflow keeps OTLP strings as they are and decodes every value as JSON.
    b = {k: json.loads(v) if isinstance(a.get(k), dict) and isinstance(v, str) else v
         for k, v in record.attributes.items() if k.startswith("ml.")}
    assert _same(a, b), {k: (a.get(k), b.get(k)) for k in set(a) | set(b) if not _same(a.get(k), b.get(k))}
    checkpoints = [s for _, s in everything if s.name == semconv.CHECKPOINT_SPAN]
    assert checkpoints and all(by_trace[s.trace_id] == [s] for s in checkpoints)
    assert not any(semconv.DECISION_IDS in s.attributes for s in checkpoints + [theirs])
    # The same spans through otel-rai's backend, and their chain verifies as read back from MLflow.
    backend = connect("mlflow", server.url)
    read = [s for s in find_spans(Query(model_version="3"), backend) if semconv.DECISION_IDS in s.attributes]
    assert sorted(s.span_id for s in read) == sorted(s.span_id for s in local)
    report = verify(backend, Query())
    assert report.ok, report.to_dict()
    shown = subprocess.run([sys.executable, "-m", "otel_rai", "model", "show", "credit", "3", "--backend", "mlflow",
                            "--url", server.url, "--format", "json"], capture_output=True, text=True,
                           env=base_env({"OTEL_RAI_MLFLOW_EXPERIMENT": "decisions"}), timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["fingerprint"] == record.attributes[semconv.MODEL_FINGERPRINT]


def test_a_failed_decision_arrives_as_an_error_span(server, to_mlflow):
    to_mlflow()
    model = otel_rai.register_model(LogisticRegression().fit(X, Y), "credit", "err")
    with pytest.raises(ValueError):
        model.predict(X[:2, :3])  # one column short
    assert otel_rai.flush(60).complete
    otel_rai.uninstrument()
    deadline = time.monotonic() + ARRIVAL_TIMEOUT_S
    while True:
        spans = [s for s in find_spans(Query(model_version="err"), connect("mlflow", server.url))
                 if s.name != semconv.MODEL_RECORD_SPAN]
        if spans or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    (span,) = spans
    assert span.status_code == 2 and span.status_message.startswith("ValueError")


def test_query_by_version_id_time_and_service_filters_exactly_what_mlflow_over_matches(server, to_mlflow):
    start = time.time_ns()
    to_mlflow(experiment="query")
    models = {v: otel_rai.register_model(LogisticRegression().fit(X, Y), "scorer", v) for v in ("7", "17", "7.1")}
    made = {}
    for version, model in models.items():
        with otel_rai.decisions() as scope:
            model.predict(X[:2])
        made[version] = scope.ids
    assert otel_rai.flush(60).complete
    otel_rai.uninstrument()
    backend = mlflow_backend.Mlflow(settings.env("MLFLOW_TRACKING_URI"), "query")
    everything = [i for ids in made.values() for i in ids]
    deadline = time.monotonic() + ARRIVAL_TIMEOUT_S
    while len(list(find_decisions(backend=backend, decision_id=everything))) < 6 and time.monotonic() < deadline:
        time.sleep(0.25)
    # LIKE '%7%' also matches 17 and 7.1 in MLflow; the answer must not.
    assert mlflow_backend.filters(Query(model_version="7"))[0].count("LIKE '%7%'") == 1
    assert [d.decision_id for d in find_decisions(backend=backend, model_version="7")] == made["7"]
    assert [d.decision_id for d in find_decisions(backend=backend, decision_id=made["17"][1])] == made["17"][1:]
    assert {d.decision_id for d in find_decisions(backend=backend, decision_id=made["7.1"] + made["7"])} == \
        set(made["7.1"] + made["7"])
    assert len(list(find_decisions(backend=backend, start=start, service="credit-scoring"))) == 6
    assert list(find_decisions(backend=backend, service="another")) == []
    assert list(find_decisions(backend=backend, end=start)) == []
    out = subprocess.run([sys.executable, "-m", "otel_rai", "query", "--backend", "mlflow", "--url", server.url,
                          "--model-version", "17", "--format", "json"], capture_output=True, text=True,
                         env=base_env({"OTEL_RAI_MLFLOW_EXPERIMENT": "query"}), timeout=120)
    assert out.returncode == 0, out.stderr
    assert [json.loads(line)["decision_id"] for line in out.stdout.splitlines()] == made["17"]


def test_an_unreachable_mlflow_is_a_one_line_error(tmp_path):
    from servers import free_port

    out = subprocess.run([sys.executable, "-m", "otel_rai", "query", "--backend", "mlflow", "--url",
                          f"http://127.0.0.1:{free_port()}", "--since", "1h"], capture_output=True, text=True,
                         timeout=120,
                         env=base_env({"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}))
    assert out.returncode == 1 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert out.stderr.startswith("otel-rai: cannot reach mlflow at http://127.0.0.1:")


@pytest.mark.parametrize("url", ["localhost:5000", "ftp://example.org", "http://", "http://127.0.0.1:99999",
                                 "mlruns", "sqlite:///no/such/mlflow.db", "sqlite://"])
def test_a_url_that_is_no_tracking_store_is_refused_before_mlflow_creates_anything(url, capsys, tmp_path,
                                                                                monkeypatch):
    from otel_rai import cli
    from otel_rai.errors import PREFIX

    monkeypatch.chdir(tmp_path)
    assert cli.main(["query", "--backend", "mlflow", "--url", url, "--since", "1h"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(PREFIX) and err.count("\n") == 1 and url in err
    assert list(tmp_path.iterdir()) == []  # no local store was created by the client


# --- the destination, spelled out (no server needed) ----------------------------------------------------

@pytest.mark.parametrize("env, options, expected", [
    ({"MLFLOW_TRACKING_URI": "http://mlflow:5000"}, {},
     ("http://mlflow:5000/v1/traces", "http/protobuf", {"x-mlflow-experiment-id": "12"})),
    ({"MLFLOW_TRACKING_URI": "https://mlflow/", "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "tenant=a%20b"}, {},
     ("https://mlflow/v1/traces", "http/protobuf", {"tenant": "a b", "x-mlflow-experiment-id": "12"})),
    ({"MLFLOW_TRACKING_URI": "http://mlflow:5000", "MLFLOW_TRACKING_TOKEN": "t0ken"}, {"headers": "a=1"},
     ("http://mlflow:5000/v1/traces", "http/protobuf",
      {"Authorization": "Bearer t0ken", "a": "1", "x-mlflow-experiment-id": "12"})),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, {"protocol": "grpc"},
     (None, "grpc", {"x-mlflow-experiment-id": "12"})),  # through a collector: its endpoint and protocol
    ({"MLFLOW_TRACKING_URI": "http://mlflow:5000"}, {"endpoint": "http://collector:4318", "headers": {"k": "v"}},
     ("http://collector:4318", None, {"k": "v", "x-mlflow-experiment-id": "12"})),
])
def test_the_setting_becomes_an_otlp_endpoint_protocol_and_headers(monkeypatch, env, options, expected):
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME",
                 "OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config = destination.routed(settings.Settings.resolve(mlflow_experiment="12", **options))
    assert (config.endpoint, config.protocol, config.headers) == expected


def test_the_experiment_is_part_of_the_spool_destination_as_any_spelling_gives_it(monkeypatch, tmp_path):
    """One rule for every default spool: the destination identity names it, and MLflow's experiment header
    is part of that identity (however it is given), no other header is."""
    from otel_rai.sinks import destination as identity_of
    from otel_rai.sinks import provider

    def spool(**options):
        config = destination.routed(settings.Settings.resolve(**options))
        return provider.spool_path(config.spool, config.endpoint, config.protocol, config.headers)

    for name in ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://localhost:5000")
    one, two, one_again = (spool(mlflow_experiment=e) for e in ("1", "2", "1"))
    assert one == one_again != two and one.parent == settings.data_dir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000/")  # another spelling, the same server
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "rotated")  # credentials move no span
    assert spool(mlflow_experiment="1") == one
    # The header given as plain OTLP configuration is the same destination as the setting.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "X-MLflow-Experiment-Id=1,tenant=a")
    assert spool(endpoint="http://localhost:5000/v1/traces", protocol="http/protobuf") == one
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS")
    plain = spool(endpoint="http://localhost:5000/v1/traces", protocol="http/protobuf")
    assert plain not in (one, two)
    assert plain == spool(endpoint="http://localhost:5000/v1/traces", protocol="http/protobuf", headers="tenant=b")
    assert identity_of.identity("http://localhost:5000", "http/protobuf", {"x-mlflow-experiment-id": "1"}) == \
        "http/protobuf http://loopback:5000/v1/traces x-mlflow-experiment-id=1"
    given = tmp_path / "mine.db"  # a spool given is kept, and False is none
    assert spool(mlflow_experiment="1", spool=given) == given and spool(mlflow_experiment="1", spool=False) is None


_SPOOLED_WHILE_DOWN = """
import sys
import numpy as np
from sklearn.linear_model import LogisticRegression
import otel_rai
otel_rai.instrument(mlflow_experiment=sys.argv[1], hash_key=sys.argv[2])
X = np.arange(12.0).reshape(6, 2)
model = otel_rai.register_model(LogisticRegression().fit(X, [0, 1] * 3), name="m", version="spooled")
with otel_rai.decisions(ids=[f"S-{i}" for i in range(6)]):
    model.predict(X)
print(otel_rai.flush(0.5).complete)
"""


def test_a_spool_left_while_mlflow_was_down_is_exported_into_its_own_experiment(server, tmp_path):
    from servers import free_port

    client = mlflow.MlflowClient(server.url)
    ours, other = (client.create_experiment(f"spooled-{n}") for n in ("ours", "other"))
    env = base_env({"OTEL_RAI_HOME": str(tmp_path), "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}",
                    "OTEL_EXPORTER_OTLP_TIMEOUT": "1"})
    env.pop("OTEL_RAI_MLFLOW_EXPERIMENT", None)
    done = subprocess.run([sys.executable, "-c", _SPOOLED_WHILE_DOWN, ours, KEY], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr  # MLflow was down
    status = subprocess.run([sys.executable, "-m", "otel_rai", "spool", "status", "--format", "json"], env=env,
                            capture_output=True, text=True, timeout=120)
    (row,) = [json.loads(line) for line in status.stdout.splitlines()]
    assert row["routing"] == {"x-mlflow-experiment-id": ours} and row["decisions"] == 6, status.stderr
    # Sent by a process that knows nothing of the experiment: the spool remembers it.
    env.pop("OTEL_EXPORTER_OTLP_TIMEOUT")  # MLflow up now, on a busy machine
    sent = subprocess.run([sys.executable, "-m", "otel_rai", "spool", "export", "--endpoint",
                           server.url + "/v1/traces"], env=env, capture_output=True, text=True, timeout=120)
    assert sent.returncode == 0, sent.stderr
    ids = [f"S-{i}" for i in range(6)]
    arrived = traces_with(server, ours, ids)
    assert {i for s in arrived for i in s.attributes[semconv.DECISION_IDS]} == set(ids)
    assert traces_with(server, other, ids, timeout=0) == []


@pytest.mark.parametrize("env, options, message", [
    ({}, {}, "needs MLFLOW_TRACKING_URI"),
    ({"MLFLOW_TRACKING_URI": "sqlite:///mlflow.db"}, {}, "needs MLFLOW_TRACKING_URI"),
    ({"MLFLOW_TRACKING_URI": "http://mlflow:5000"}, {"protocol": "grpc"}, "http/protobuf only"),
])
def test_a_destination_that_cannot_work_is_refused_at_instrument(monkeypatch, env, options, message):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(destination.MlflowDestinationError, match=message):
        otel_rai.instrument(mlflow_experiment="12", **options)


def test_an_experiment_name_is_looked_up_and_an_unreachable_server_named(monkeypatch, server):
    from servers import free_port

    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    first = destination.routed(settings.Settings.resolve(mlflow_experiment="by-name"))
    again = destination.routed(settings.Settings.resolve(mlflow_experiment="by-name"))
    experiment = mlflow.MlflowClient(server.url).get_experiment_by_name("by-name")
    assert first.headers["x-mlflow-experiment-id"] == again.headers["x-mlflow-experiment-id"] == \
        experiment.experiment_id
    closed = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", closed)
    with pytest.raises(destination.MlflowDestinationError, match=f"at the MLflow tracking server at {closed}"):
        destination.routed(settings.Settings.resolve(mlflow_experiment="by-name"))


# --- the Traces tab ---------------------------------------------------------------------------------------

def test_the_traces_tab_renders_the_decision_inputs_outputs_and_attributes(server, to_mlflow, tmp_path):
    """MLflow's own UI, in headless Chromium: the decision's Inputs (id and keyed input hash, never a feature
    value) and Outputs (label, score, reasons) in the span's Inputs / Outputs tab, and the decision record
    in its Attributes tab."""
    import shutil

    sys.path.insert(0, str(ROOT / "scripts"))
    from mlflow_ui import CHROMEDRIVER, CHROMIUM, open_trace

    need("chromium and chromedriver (Debian's chromium-driver)", all(map(shutil.which, (CHROMIUM, CHROMEDRIVER))))

    to_mlflow(experiment="ui")
    model = otel_rai.register_model(LogisticRegression().fit(X, Y), "credit", "ui-1", background=X[:50])
    with otel_rai.decisions(ids=["UI-1093"]):
        proba = model.predict_proba(X[:1])
    assert otel_rai.flush(60).complete
    otel_rai.uninstrument()
    experiment = mlflow.MlflowClient(server.url).get_experiment_by_name("ui").experiment_id
    (span,) = traces_with(server, experiment, ["UI-1093"])
    input_hash = otel_rai.hash_input(X[0], KEY)
    label = str(int(model.classes_[proba[0].argmax()]))
    reasons = [name for name, _ in parse_top(span.attributes[semconv.EXPLANATION_TOP][0])]
    shown = ["Inputs", "UI-1093", input_hash, "Outputs", label, repr(float(proba[0].max())), *reasons]
    texts = open_trace(server.url, experiment, span.trace_id, tmp_path / "trace.png",
                       expected={"Inputs / Outputs": shown, "Attributes": ["ml.model.version", "ui-1"]})
    inputs_outputs = texts["Inputs / Outputs"]
    for text in shown:
        assert text in inputs_outputs, (text, inputs_outputs)
    # MLflow's span inputs and outputs, as its client reads them: what the tab shows, from OpenInference's view.
    assert span.inputs == {"decision_id": "UI-1093", "input_hash": input_hash}
    assert span.outputs["label"] == int(label) and span.outputs["score"] == proba[0].max()
    assert list(span.outputs["reasons"]) == reasons
    for value in X[0]:  # no raw feature value on the page
        assert repr(float(value)) not in texts[""] and f"{value:.4f}" not in texts[""]
    assert "predict_proba credit" in texts[""]
    assert "UI-1093" in texts["Attributes"] and "ml.model.version" in texts["Attributes"]
    assert (tmp_path / "trace.png").stat().st_size > 10_000
