"""End to end with a real Phoenix: export decisions of two model versions over OTLP, query one with the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from conftest import KEY, need
from recorded import record
from servers import free_ports, wait_for_port

import otel_rai
from otel_rai import semconv
from otel_rai._time import parse_time
from otel_rai.chain import keys as chain_keys
from otel_rai.chain import verify as chaincheck
from otel_rai.codec.reasons import parse_top
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


#: How long Phoenix may take to store the spans it received. It takes them into its database in the
#: background: with the whole suite on two slow shared cores, the earlier tests' backlog once held a test's
#: spans back for a minute.
STORED_WITHIN_S = 180


def _stored(count: Callable[[], int], wanted: int) -> None:
    """Wait until `count()`, what Phoenix answers, reaches `wanted`."""
    deadline = time.monotonic() + STORED_WITHIN_S
    while count() < wanted:
        assert time.monotonic() < deadline, f"Phoenix did not store the spans within {STORED_WITHIN_S} s"
        time.sleep(0.5)


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "otel_rai", *args], env=env, capture_output=True, text=True,
                          timeout=120)


def test_the_cli_finds_exactly_one_versions_decisions_in_phoenix(phoenix, tmp_path):
    url, grpc = phoenix
    # The store is the write-ahead log of the OTLP export to Phoenix.
    rec = record(tmp_path / "audit.db", {"1.4.1": 40, "1.4.2": 1200}, endpoint=grpc)
    _stored(lambda: len(list(find_decisions(model_version="1.4.2", backend="phoenix", url=url, since="1h"))), 1200)

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
        assert remote["service"] == "credit-scoring"  # Phoenix keeps no resource, but the project is the service
        assert {k: v for k, v in remote.items() if k not in ("timestamp", "service")} == {
            k: v for k, v in mine.items() if k not in ("timestamp", "service")}

    chunked = cli("query", "--backend", "phoenix", "--url", url, "--model-version", "1.4.2", "--since", "1h",
                  "--format", "json", "--limit", "0")
    assert [json.loads(line)["decision_id"] for line in chunked.stdout.splitlines()] == rec.ids["1.4.2"]

    service = cli("query", "--backend", "phoenix", "--url", url, "--service", "credit-scoring", "--since", "1h",
                  "--model-version", "1.4.1", "--format", "json")
    assert service.returncode == 0, service.stderr
    assert [json.loads(line)["decision_id"] for line in service.stdout.splitlines()] == rec.ids["1.4.1"]
    other = cli("query", "--backend", "phoenix", "--url", url, "--service", "another-service", "--since", "1h")
    assert other.returncode == 0 and other.stdout == "" and "no decisions match in phoenix" in other.stderr


def test_the_chain_verifies_from_phoenixs_answers(phoenix, tmp_path):
    """Phoenix keeps float seconds and no resource: the canonical form leaves out what it loses."""
    url, grpc = phoenix
    rec = record(tmp_path / "audit.db", {"chain-1": 30, "chain-2": 1500}, endpoint=grpc,
                 checkpoint_key="phoenix-ckpt-key")
    stream = rec.spans()[0].attributes[semconv.AUDIT_STREAM]
    query = Query(start_ns=min(s.start_ns for s in rec.spans()) - 10**9, end_ns=time.time_ns() + 10**9)
    deadline = time.monotonic() + STORED_WITHIN_S
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


# --- decisions as Phoenix shows them: kind, input, output; a screenshot of its UI -----------------------


def _rest(url: str, path: str, **params: str) -> dict:
    query = urllib.parse.urlencode(params)
    with urllib.request.urlopen(f"{url}{path}{'?' + query if query else ''}", timeout=30) as response:
        return json.load(response)


def _graphql(url: str, query: str, **variables: object) -> dict:
    body = json.dumps({"query": query, "variables": variables}).encode()
    request = urllib.request.Request(f"{url}/graphql", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = json.load(response)
    assert not answer.get("errors"), answer["errors"]
    return answer["data"]


SPANS_OF_PROJECT = """
query ($name: String!, $filter: String) {
  getProjectByName(name: $name) {
    spans(first: 100, filterCondition: $filter) {
      edges { node { name spanKind input { value mimeType } output { value mimeType } } }
    }
  }
}"""


@pytest.fixture(scope="module")
def ui_decisions(phoenix, tmp_path_factory):
    """The example's applicants decided by a credit model and exported to Phoenix: (url, service, spans)."""
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    import otel_rai

    url, grpc = phoenix
    service = "credit-scoring-ui"
    rng = np.random.default_rng(4)
    frame = pd.DataFrame({"income": rng.lognormal(10.5, 0.5, 300).round(-2), "debt_ratio": rng.uniform(0, 0.8, 300),
                          "region": rng.choice(["north", "south", "east", "west"], 300)})
    y = (np.log(frame.income) - 10.5 - 2 * frame.debt_ratio > -0.9).astype(int)
    model = make_pipeline(ColumnTransformer([("n", StandardScaler(), ["income", "debt_ratio"]),
                                             ("c", OneHotEncoder(), ["region"])]), LogisticRegression()).fit(frame, y)
    patch = pytest.MonkeyPatch()
    patch.setenv("OTEL_RAI_HOME", str(tmp_path_factory.mktemp("ui-home")))
    try:
        otel_rai.instrument(endpoint=grpc, hash_key=KEY, service_name=service, capture_features=["region"])
        otel_rai.register_model(model, name="credit", version="1.4.1", background=frame)
        ids = [f"A-{1090 + i}/1.4.1" for i in range(6)]
        with otel_rai.decisions(ids=ids):
            model.predict_proba(frame.head(6))
        with otel_rai.decisions(ids=["A-1096/1.4.1"]):
            model.predict_proba(frame.iloc[6:7])
        assert otel_rai.flush(60).complete
        otel_rai.uninstrument()  # the closing checkpoint goes too
    finally:
        patch.undo()
    local = {}  # what was sent, read back from Phoenix's REST API
    deadline = time.monotonic() + STORED_WITHIN_S
    while len(local) < 4:  # two decision spans, the model's record and the checkpoint
        assert time.monotonic() < deadline, f"Phoenix did not store the spans within {STORED_WITHIN_S} s"
        try:
            found = _rest(url, f"/v1/projects/{service}/spans", limit="100")["data"]
        except urllib.error.HTTPError as exc:  # 404 until Phoenix has ingested the project's first span
            if exc.code != 404:
                raise
            found = []
        local = {s["context"]["span_id"]: s for s in found}
        time.sleep(0.5)
    return url, service, list(local.values()), frame.head(7)


def test_phoenix_returns_the_kind_input_and_output_of_each_decision(ui_decisions):
    url, service, spans, frame = ui_decisions
    decisions = [s for s in spans if s["span_kind"] == "DECISION"]
    others = [s for s in spans if s["span_kind"] != "DECISION"]
    # a record and a checkpoint are no decisions: Phoenix shows them without a kind
    assert len(decisions) == 2 and sorted(s["name"] for s in others) == [semconv.CHECKPOINT_SPAN,
                                                                         semconv.MODEL_RECORD_SPAN]
    single = next(s for s in decisions if len(s["attributes"][semconv.DECISION_IDS]) == 1)
    a = single["attributes"]
    shown_in, shown_out = json.loads(a[semconv.UI_INPUT_VALUE]), json.loads(a[semconv.UI_OUTPUT_VALUE])
    assert shown_in == {"decision_id": "A-1096/1.4.1", "input_hash": a[semconv.INPUT_HASHES][0],
                        semconv.UI_ALLOWLISTED_KEY: {"region": frame.region.iloc[6]}}
    assert shown_in["input_hash"] == otel_rai.hash_input(frame.iloc[6], KEY)
    assert shown_out["label"] == a[semconv.OUTPUTS][0]
    assert shown_out["score"] == a[f"{semconv.OUTPUT_SCORES_PREFIX}{shown_out['label']}"][0]
    assert list(shown_out["reasons"]) == [name for name, _ in parse_top(a[semconv.EXPLANATION_TOP][0])]
    assert a[semconv.UI_INPUT_MIME_TYPE] == a[semconv.UI_OUTPUT_MIME_TYPE] == "application/json"
    for raw in frame.income.tolist() + frame.debt_ratio.tolist():  # only the allowlisted region is shown
        assert repr(raw) not in a[semconv.UI_INPUT_VALUE] + a[semconv.UI_OUTPUT_VALUE]
    # The kind filters the list: what a user types in Phoenix's span filter, through its REST API...
    only = _rest(url, f"/v1/projects/{service}/spans", span_kind="DECISION", limit="100")["data"]
    assert sorted(s["context"]["span_id"] for s in only) == sorted(s["context"]["span_id"] for s in decisions)
    # ... and its GraphQL API, which the UI itself reads: kinds, inputs and outputs as the UI shows them.
    edges = _graphql(url, SPANS_OF_PROJECT, name=service, filter="span_kind == 'DECISION'")[
        "getProjectByName"]["spans"]["edges"]
    nodes = [e["node"] for e in edges]
    assert len(nodes) == 2 and {n["spanKind"] for n in nodes} == {"decision"}
    by_value = {n["input"]["value"]: n for n in nodes}
    assert by_value[a[semconv.UI_INPUT_VALUE]]["output"]["value"] == a[semconv.UI_OUTPUT_VALUE]
    assert {n["input"]["mimeType"] for n in nodes} == {"json"}


def test_a_decision_in_phoenixs_ui(ui_decisions):
    """Phoenix's own UI, in headless Chromium: the project's spans list the decisions with their kind, input
    and output; the screenshot is kept (and committed as docs/phoenix-decision.png)."""
    from browser import artifact_dir, chromium
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    url, service, spans, _ = ui_decisions
    project = next(p for p in _rest(url, "/v1/projects")["data"] if p["name"] == service)
    single = next(s for s in spans if s["span_kind"] == "DECISION" and len(s["attributes"][semconv.DECISION_IDS]) == 1)
    with chromium(1600, 1000) as driver:
        driver.get(f"{url}/projects/{project['id']}/spans")
        wait = WebDriverWait(driver, 120)
        wait.until(expected_conditions.presence_of_element_located(
            (By.XPATH, "//*[contains(text(), 'A-1096/1.4.1')]")))
        text = driver.find_element(By.TAG_NAME, "body").text
        assert "predict_proba credit" in text and "A-1096/1.4.1" in text and semconv.CHECKPOINT_SPAN in text
        driver.save_screenshot(str(artifact_dir() / "phoenix-spans.png"))
        row = driver.find_element(By.XPATH, "//*[contains(text(), 'A-1096/1.4.1')]")
        row.click()  # the span's details: its input and output
        listed = len(driver.find_elements(By.XPATH, "//*[contains(text(), 'input_hash')]"))
        # The list's input column holds the same text: wait for the detail pane's own, drawn on screen.
        wait.until(lambda d: sum(e.is_displayed() for e in d.find_elements(
            By.XPATH, "//*[contains(text(), 'input_hash')]")) > listed)
        detail = driver.find_element(By.TAG_NAME, "body").text
        assert single["attributes"][semconv.INPUT_HASHES][0] in detail and "reasons" in detail
        driver.save_screenshot(str(artifact_dir() / "phoenix-decision.png"))


def test_the_example_exports_through_rotel_to_phoenix_and_reads_back_from_it(phoenix, tmp_path):
    """The docs/deploy.md recipe: OTEL_EXPORTER_OTLP_ENDPOINT to rotel, forwarding to Phoenix, and the example
    reading its decisions back from Phoenix."""
    from servers import Rotel
    from test_example import run_example

    url, grpc = phoenix
    collector = Rotel(grpc, tmp_path).start()
    try:
        out = run_example(tmp_path, "--backend", "phoenix", "--url", url,
                          OTEL_EXPORTER_OTLP_ENDPOINT=collector.grpc_endpoint).stdout
    finally:
        collector.stop()
    assert "read back from phoenix: credit 1.4.2, this run" in out
    lines = out.splitlines()
    start = lines.index("read back from phoenix: credit 1.4.2, this run")
    assert all("/1.4.2 output=" in line for line in lines[start + 1 : start + 4])
    assert "its lowest score" in out and "Reasons (log-odds of class 1, linear" in out
    assert "--backend phoenix --url" in lines[-1]  # what to run next, against the same backend


def test_a_decision_reproduces_from_phoenix(phoenix, tmp_path):
    """The decision and its model record come from Phoenix, the model from the artifact store."""
    from conftest import KEY

    from otel_rai.provenance.reproduce import reproduce

    url, grpc = phoenix
    rec = record(tmp_path / "audit.db", {"repro-1": 5, "repro-2": 1300}, endpoint=grpc)
    backend = connect("phoenix", url)
    _stored(lambda: len(list(find_decisions(model_version="repro-2", backend=backend, since="1h"))), 1300)
    for decision_id in ("repro-1-3", "repro-2-1200"):  # the second: row 1200 of a call chunked in two
        result = reproduce(decision_id, list(rec.inputs[decision_id]), backend=backend, since="1h", key=KEY,
                           artifacts_store=tmp_path / "artifacts")
        assert result.reproduced and result.record is not None, (decision_id, result.notes)
        assert result.record.version == decision_id.rsplit("-", 1)[0]
    assert "re-run as row 1200 of 1300 rows" in " ".join(result.notes)
