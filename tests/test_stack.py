"""`otel-rai stack`: the local audit store without Docker.

The end-to-end test (marker `stack`, run by CI; skip locally with -m "not stack") starts rotel, Phoenix and
Prometheus on free ports, sends decisions of two model versions through the real SDK, reads them back from
Phoenix's REST API by model version, checks one real Prometheus scrape, and stops everything.
The other tests exercise the parts that need no server: messages, ports, and the pid checks of `down`.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

import otel_rai
from otel_rai import cli, semconv
from otel_rai.stack import Ports, Process, Stack, StackError
from otel_rai.stack import processes as stack

sys.path.insert(0, str(Path(__file__).parent))
from conftest import KEY  # noqa: E402


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(["stack", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


# --- without servers -----------------------------------------------------------------------------------


def test_status_of_a_directory_without_a_stack_says_not_running(tmp_path, capsys):
    code, out, _ = run_cli(capsys, "status", "--dir", str(tmp_path))
    assert code == 3
    assert out.strip() == f"otel-rai stack in {tmp_path.resolve()}: not running"


def test_down_without_a_stack_stops_nothing(tmp_path, capsys):
    code, out, _ = run_cli(capsys, "down", "--dir", str(tmp_path))
    assert code == 0 and out.startswith("nothing to stop")


def test_each_missing_component_gets_one_message_with_its_install_command(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(stack, "_rotel_binary", lambda: None)
    monkeypatch.setattr(stack, "_prometheus_binary", lambda: None)
    monkeypatch.setattr(stack, "phoenix_command", lambda: None)
    code, out, err = run_cli(capsys, "up", "--dir", str(tmp_path))
    assert code == 1 and out == ""
    line, = err.splitlines()
    assert line.startswith("otel-rai: cannot start the stack: ")
    parts = line.removeprefix("otel-rai: cannot start the stack: ").split("; ")
    assert [part.split(":")[0] for part in parts] == [
        "rotel is not installed", "phoenix is not installed", "prometheus is not installed"]
    assert "pip install rotel" in parts[0] and "install arize-phoenix" in parts[1]
    assert "apt-get install prometheus" in parts[2]
    assert "Traceback" not in err and not (tmp_path / stack.STATE_FILE).exists()


def test_a_taken_port_is_refused_naming_the_option_that_moves_it():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(StackError, match=f"port {port} on 127.0.0.1 is in use; choose another with --phoenix-port"):
            stack.resolve_ports("127.0.0.1", Ports(0, 0, port, 0, 0))


def test_zero_ports_become_distinct_free_ports():
    ports = stack.resolve_ports("127.0.0.1", Ports(0, 0, 0, 0, 0))
    values = list(vars(ports).values())
    assert 0 not in values and len(set(values)) == len(values)


def test_a_malformed_scrape_target_is_an_error():
    with pytest.raises(StackError, match="must look like HOST:PORT"):
        stack._scrape_target("localhost")


def _recorded(directory: Path, process: subprocess.Popen, started: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    record = Process("rotel", process.pid, started, ["sleep", "30"], str(directory / "rotel.log"))
    Stack(directory, "127.0.0.1", Ports(), [], {"rotel": record}).save()


def test_down_stops_the_process_it_recorded(tmp_path):
    sleeper = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        _recorded(tmp_path, sleeper, stack._start_time(sleeper.pid))
        assert stack.status(tmp_path).states == {"rotel": "running"}
        assert stack.down(tmp_path, timeout=5) == [f"stopped rotel (pid {sleeper.pid})"]
        assert sleeper.wait(5) is not None
        assert stack.status(tmp_path).stack is None
    finally:
        sleeper.kill()


def test_down_leaves_alone_a_process_that_reused_the_recorded_pid(tmp_path):
    """A pid whose start time differs from the recorded one belongs to someone else now."""
    sleeper = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        _recorded(tmp_path, sleeper, "1")  # same pid, another start time
        assert stack.status(tmp_path).states == {"rotel": "replaced"}
        assert stack.down(tmp_path, timeout=5) == [f"pid {sleeper.pid} is no longer the rotel we started: left alone"]
        time.sleep(0.2)
        assert sleeper.poll() is None  # still running
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_state_file_that_is_not_ours_is_a_clear_error(tmp_path, capsys):
    (tmp_path / stack.STATE_FILE).write_text("{}")
    code, _, err = run_cli(capsys, "status", "--dir", str(tmp_path))
    assert code == 1 and "is not a stack state file" in err and "Traceback" not in err


# --- end to end ----------------------------------------------------------------------------------------


def phoenix_spans(base_url: str, version: str, project: str = "stack-e2e") -> list[dict]:
    """Every span of `project` (the service: otel-rai makes it the Phoenix project) in Phoenix whose
    ml.model.version is `version`, through its REST API (all pages)."""
    spans, cursor = [], None
    while True:
        query = {"attribute": f"{semconv.MODEL_VERSION}:{json.dumps(version)}", "limit": "100"}
        if cursor:
            query["cursor"] = cursor
        url = f"{base_url}/v1/projects/{project}/spans?{urllib.parse.urlencode(query)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                page = json.load(response)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:  # the project is made with its first span: not there yet
                return spans
            raise
        spans.extend(page["data"])
        cursor = page.get("next_cursor")
        if not cursor:
            return spans


def wait_for(fetch, ready, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if ready(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.5)


def prometheus_query(base_url: str, promql: str) -> list[dict]:
    url = f"{base_url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return body["data"]["result"]


@pytest.mark.stack
def test_decisions_reach_phoenix_through_rotel_and_prometheus_scrapes_the_app(tmp_path):
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider
    from prometheus_client import start_http_server

    directory = tmp_path / "stack"
    # The application's metrics, the way docs/deploy.md tells users to expose them; bound before the stack
    # starts, so that no server of the stack can take its port.
    metrics_server, _ = start_http_server(0, addr="127.0.0.1")
    metrics_port = metrics_server.server_port
    try:
        running = stack.up(directory, ports=Ports(0, 0, 0, 0, 0), scrape=[f"127.0.0.1:{metrics_port}"],
                           scrape_interval="1s", timeout=300)
    except BaseException:
        metrics_server.shutdown()
        raise
    try:
        assert stack.status(directory).running
        meter = MeterProvider(metric_readers=[PrometheusMetricReader()]).get_meter("stack-e2e")
        predictions = meter.create_counter("stack_e2e_predictions", description="rows predicted in this test")

        rng = np.random.default_rng(7)
        X = rng.normal(size=(200, 5))
        y = (X[:, 0] + X[:, 1] > 0).astype(int)
        models = {
            "3.0.0": otel_rai.register_model(LogisticRegression().fit(X, y), name="credit", version="3.0.0"),
            "3.1.0": otel_rai.register_model(LogisticRegression(C=0.1).fit(X, y), name="credit", version="3.1.0"),
        }
        otel_rai.instrument(endpoint=running.otlp_grpc_endpoint, hash_key=KEY, service_name="stack-e2e")
        expected_ids: dict[str, set[str]] = {}
        for version, model in models.items():
            expected_ids[version] = set()
            for call in range(3):
                ids = [f"{version}/{call}/{row}" for row in range(4)]
                with otel_rai.decisions(ids=ids):
                    model.predict(X[call * 4:(call + 1) * 4])
                expected_ids[version].update(ids)
                predictions.add(4, {semconv.MODEL_VERSION: version})
        assert otel_rai.flush(60).complete

        for version, ids in expected_ids.items():
            # three decision spans and the model's record
            spans = wait_for(lambda v=version: phoenix_spans(running.phoenix_url, v), lambda s: len(s) >= 4)
            assert sorted(s["name"] for s in spans) == [semconv.MODEL_RECORD_SPAN] + ["predict credit"] * 3
            got_ids = set()
            for span in (s for s in spans if s["name"] != semconv.MODEL_RECORD_SPAN):
                attributes = span["attributes"]
                assert span["name"] == "predict credit" and span["span_kind"] == "DECISION"
                assert attributes[semconv.MODEL_VERSION] == version
                decision_ids = attributes[semconv.DECISION_IDS]
                hashes = attributes[semconv.INPUT_HASHES]
                assert isinstance(decision_ids, list) and all(isinstance(i, str) for i in decision_ids)
                assert len(hashes) == len(decision_ids) == attributes[semconv.BATCH_SIZE] == 4
                assert all(len(h) == 32 and int(h, 16) >= 0 for h in hashes)
                got_ids.update(decision_ids)
            assert got_ids == ids  # exactly this version's decisions, none of the other's
        # The user's path: the otel-rai command line against the stack's Phoenix.
        for version, ids in expected_ids.items():
            listed = subprocess.run(
                [sys.executable, "-m", "otel_rai", "query", "--backend", "phoenix", "--url", running.phoenix_url,
                 "--model-version", version, "--since", "1h", "--format", "json"],
                capture_output=True, text=True, timeout=120,
            )
            assert listed.returncode == 0, listed.stderr
            rows = [json.loads(line) for line in listed.stdout.splitlines()]
            assert {r["decision_id"] for r in rows} == ids and len(rows) == len(ids)
            assert {r["model_version"] for r in rows} == {version}

        series = wait_for(lambda: prometheus_query(running.prometheus_url, "stack_e2e_predictions_total"),
                          lambda result: len(result) == 2, timeout=60)
        scraped = {s["metric"]["ml_model_version"]: float(s["value"][1]) for s in series}
        assert scraped == {"3.0.0": 12.0, "3.1.0": 12.0}
        assert all(s["metric"]["instance"] == f"127.0.0.1:{metrics_port}" for s in series)
    finally:
        otel_rai.uninstrument()
        metrics_server.shutdown()
        outcomes = stack.down(directory)
    assert sorted(o.split(" (")[0] for o in outcomes) == ["stopped phoenix", "stopped prometheus", "stopped rotel"]
    after = stack.status(directory)
    assert not after.running and after.stack is None
    for process in running.processes.values():
        assert stack.state_of(process) == "exited"
    assert (directory / "phoenix" / "phoenix.db").exists()  # the data stays for the next `up`
