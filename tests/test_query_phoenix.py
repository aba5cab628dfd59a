"""End to end with a real Phoenix: export decisions of two model versions over OTLP, query one with the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import need
from recorded import record
from servers import free_ports, wait_for_port

from otel_rai import semconv
from otel_rai._time import parse_time
from otel_rai.chain import keys as chain_keys
from otel_rai.chain import verify as chaincheck
from otel_rai.query import Query, connect, find_decisions, trail
from otel_rai.stack.processes import phoenix_command

pytestmark = pytest.mark.stack
HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory):
    command = phoenix_command()
    need("Phoenix", command is not None)
    workdir = tmp_path_factory.mktemp("phoenix")
    http_port, grpc_port = free_ports(2)
    env = {**os.environ, "PHOENIX_PORT": str(http_port), "PHOENIX_GRPC_PORT": str(grpc_port),
           "PHOENIX_HOST": "127.0.0.1", "PHOENIX_WORKING_DIR": str(workdir), "PHOENIX_TELEMETRY_ENABLED": "false"}
    log = open(workdir / "phoenix.log", "wb")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{http_port}"
    try:
        wait_for_port(http_port, timeout=180, process=process)
        deadline = time.monotonic() + 120
        while True:
            try:
                if urllib.request.urlopen(url + "/healthz", timeout=2).status == 200:
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        yield url, f"http://127.0.0.1:{grpc_port}"
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "otel_rai", *args], env=env, capture_output=True, text=True,
                          timeout=120)


def test_the_cli_finds_exactly_one_versions_decisions_in_phoenix(phoenix, tmp_path):
    url, grpc = phoenix
    # The store is the write-ahead log of the OTLP export to Phoenix.
    rec = record(tmp_path / "audit.db", {"1.4.1": 40, "1.4.2": 1200}, endpoint=grpc)
    deadline = time.monotonic() + 60
    while len(list(find_decisions(model_version="1.4.2", backend="phoenix", url=url, since="1h"))) < 1200:
        assert time.monotonic() < deadline, "Phoenix did not store the spans within 60 s"
        time.sleep(0.5)

    result = cli("query", "--backend", "phoenix", "--url", url, "--model-version", "1.4.1", "--since", "1h",
                 "--format", "json")
    assert result.returncode == 0, result.stderr
    found = [json.loads(line) for line in result.stdout.splitlines()]
    assert [d["decision_id"] for d in found] == rec.ids["1.4.1"]
    assert [d["output"] for d in found] == [rec.outputs[i] for i in rec.ids["1.4.1"]]
    local = [d.to_dict() for d in find_decisions(model_version="1.4.1", url=str(rec.path))]
    for remote, mine in zip(found, local):
        # Phoenix keeps a float of seconds: the time comes back rounded to about a microsecond.
        assert abs(parse_time(remote["timestamp"]) - parse_time(mine["timestamp"])) <= 1000
        assert remote["service"] is None  # Phoenix keeps no resource attributes
        assert {k: v for k, v in remote.items() if k not in ("timestamp", "service")} == {
            k: v for k, v in mine.items() if k not in ("timestamp", "service")}

    chunked = cli("query", "--backend", "phoenix", "--url", url, "--model-version", "1.4.2", "--since", "1h",
                  "--format", "json", "--limit", "0")
    assert [json.loads(line)["decision_id"] for line in chunked.stdout.splitlines()] == rec.ids["1.4.2"]

    service = cli("query", "--backend", "phoenix", "--url", url, "--service", "credit-scoring", "--since", "1h")
    assert service.returncode == 2 and "cannot filter by service" in service.stderr
    assert "Traceback" not in service.stderr


def test_the_chain_verifies_from_phoenixs_answers(phoenix, tmp_path):
    """Phoenix keeps float seconds and no resource: the canonical form leaves out what it loses."""
    url, grpc = phoenix
    rec = record(tmp_path / "audit.db", {"chain-1": 30, "chain-2": 1500}, endpoint=grpc,
                 checkpoint_key="phoenix-ckpt-key")
    stream = rec.spans()[0].attributes[semconv.AUDIT_STREAM]
    query = Query(start_ns=min(s.start_ns for s in rec.spans()) - 10**9, end_ns=time.time_ns() + 10**9)
    deadline = time.monotonic() + 60
    while True:
        got = [(p, r) for p, r in trail.records(connect('phoenix', url), query, [])
               if r.attributes.get(semconv.AUDIT_STREAM) == stream]
        if len(got) >= len(rec.spans()) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    # two calls, one chunked in two, the model record of each version, and the checkpoint
    assert len(got) == len(rec.spans()) == 1 + 2 + 1 + 2 + 1
    report = chaincheck.check(got, chain_keys.read_keys(["phoenix-ckpt-key"], [], []), require_signed=True)
    assert report.ok, report.ordered_problems()[:3]
    edited = next(r for _, r in got if semconv.OUTPUTS in r.attributes).attributes
    edited[semconv.OUTPUTS] = [1 - edited[semconv.OUTPUTS][0], *edited[semconv.OUTPUTS][1:]]
    assert chaincheck.check(got).counts() == {"edited": 1}


def test_a_decision_reproduces_from_phoenix(phoenix, tmp_path):
    """The decision and its model record come from Phoenix, the model from the artifact store."""
    from conftest import KEY

    from otel_rai.provenance.reproduce import reproduce

    url, grpc = phoenix
    rec = record(tmp_path / "audit.db", {"repro-1": 5, "repro-2": 1300}, endpoint=grpc)
    backend = connect("phoenix", url)
    deadline = time.monotonic() + 60
    while len(list(find_decisions(model_version="repro-2", backend=backend, since="1h"))) < 1300:
        assert time.monotonic() < deadline, "Phoenix did not store the spans within 60 s"
        time.sleep(0.5)
    for decision_id in ("repro-1-3", "repro-2-1200"):  # the second: row 1200 of a call chunked in two
        result = reproduce(decision_id, list(rec.inputs[decision_id]), backend=backend, since="1h", key=KEY,
                           artifacts_store=tmp_path / "artifacts")
        assert result.reproduced and result.record is not None, (decision_id, result.notes)
        assert result.record.version == decision_id.rsplit("-", 1)[0]
    assert "re-run as row 1200 of 1300 rows" in " ".join(result.notes)
