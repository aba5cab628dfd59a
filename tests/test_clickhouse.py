"""ClickHouse as the audit store, against the real engine (chDB, ClickHouse 26.x in this process).

The oracles: Go's own strconv and encoding/json for the exporter's value texts (tests/gojson), the local
store for every command's answers, Fairlearn for the report's figures, ClickHouse's EXPLAIN and its
rows-read counter for the lookups, and ClickHouse's parser for the cluster DDL.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import re
import shutil
import struct
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import KEY, need
from fairlearn import metrics as flm
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

import otel_rai
from otel_rai import cli, query, semconv, store
from otel_rai.chain import verify as chaincheck
from otel_rai.clickhouse import client, load, schema, values
from otel_rai.codec import otlpproto
from otel_rai.codec.records import SpanRecord
from otel_rai.codec.sdk import ReadableSpans
from otel_rai.query import Query
from otel_rai.query import clickhouse as chq

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINT_KEY = "ckpt-key-0123456789abcdef0123456789"
GO_ORACLE = Path(__file__).parent / "gojson" / "main.go"


# --- the exporter's value texts ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def go_oracle(tmp_path_factory) -> Path:
    """tests/gojson/main.go, built with the Go toolchain (Debian's golang-go)."""
    go = shutil.which("go")
    need("the Go toolchain (apt-get install golang-go)", go is not None)
    out = tmp_path_factory.mktemp("go")
    env = {**os.environ, "HOME": str(out), "GOCACHE": str(out / "cache"), "GOPATH": str(out / "gopath"),
           "GOFLAGS": "-mod=mod", "GO111MODULE": "off"}
    subprocess.run([go, "build", "-o", str(out / "gojson"), str(GO_ORACLE)], env=env, check=True,
                   capture_output=True, timeout=300)
    return out / "gojson"


#: Characters that Go and Python escape differently, or that HTML escaping and UTF-8 care about. Not \b and
#: \f: Go escapes them as \b and \f since 1.22 (collector 0.136 is built with Go 1.24), as \u0008 and \u000c
#: before, and Debian's Go is 1.19; `test_backspace_and_form_feed_as_go_since_1_22` covers them.
_ALPHABET = ["a", "Z", "0", " ", '"', "\\", "/", "<", ">", "&", "\n", "\r", "\t", "\x00", "\x01", "\x1f", "\x7f",
             "é", "中", "😀", "\u2028", "\u2029", "\ufffd", "'", "[", "]", "{", ","]
_DOUBLES = [0.0, -0.0, 1e-6, 1e-7, 9.999999999999999e-7, 1.0000000000000002e-6, 1e20, 1e21, 9.999999999999999e20,
            1e16, 1e15, 123456789012345680000.0, 5e-324, 1.7976931348623157e308, 0.1, 1 / 3, -1.5, 100.0, 1e-5,
            1e-4, 12345.678, 1e100, -1e-100, 2.5e-8, math.nan, math.inf, -math.inf]


def _random_value(rng: random.Random):
    def text():
        return "".join(rng.choice(_ALPHABET) for _ in range(rng.randint(0, 8)))

    def double():
        c = rng.random()
        if c < 0.3:
            return rng.choice(_DOUBLES)
        if c < 0.6:  # any finite bit pattern
            while not math.isfinite(f := struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0]):
                pass
            return f
        if c < 0.8:
            return round(rng.uniform(-1000, 1000), rng.randint(0, 6))
        return float(rng.randint(-10**6, 10**6)) * 10.0 ** rng.randint(-30, 30)

    def integer():
        return rng.choice([0, 1, -1, 2**63 - 1, -2**63, rng.randint(-10**12, 10**12)])

    make = rng.choice([text, double, integer, lambda: rng.random() < 0.5])
    return [make() for _ in range(rng.randint(0, 6))] if rng.random() < 0.6 else make()


def _typed(v):
    """A value in the oracle's input form (doubles as exact hex)."""
    if isinstance(v, bool):
        return {"t": "bool", "v": v}
    if isinstance(v, int):
        return {"t": "int", "v": str(v)}
    if isinstance(v, float):
        return {"t": "double", "v": v.hex()}
    if isinstance(v, str):
        return {"t": "str", "v": v}
    return {"t": "array", "v": [_typed(x) for x in v]}


def test_value_texts_are_what_go_writes(go_oracle):
    rng = random.Random(19)
    cases = [_random_value(rng) for _ in range(20_000)]
    out = subprocess.run([str(go_oracle)], input="".join(json.dumps(_typed(c)) + "\n" for c in cases),
                         capture_output=True, text=True, check=True, timeout=120).stdout.splitlines()
    assert len(out) == len(cases)
    wrong = [(c, json.loads(o)["s"], values.as_string(c)) for c, o in zip(cases, out)
             if json.loads(o)["s"] != values.as_string(c)]
    assert wrong == []
    # The generator reached what matters: HTML escapes, exponent notation, emptied arrays.
    texts = [values.as_string(c) for c in cases]
    assert any("\\u003c" in t for t in texts) and any("e-" in t for t in texts) and "" in texts


def test_backspace_and_form_feed_as_go_since_1_22():
    # "Marshal and Encode now escape '\b' and '\f' characters as \b and \f" (Go 1.22 release notes).
    assert values.as_string(["a\bb\fc"]) == '["a\\bb\\fc"]'


@pytest.mark.parametrize("value, text", [
    (1.0, "1"), (-0.0, "-0"), (1e21, "1e+21"), (1e-7, "1e-7"), (1.5e-10, "1.5e-10"), (1e20, "100000000000000000000"),
    (0.000001, "0.000001"), (math.nan, "json: unsupported value: NaN"), (math.inf, "json: unsupported value: +Inf"),
    ([0.5, math.nan], ""), ([1.0, 2.5], "[1,2.5]"), (["<a&b>"], '["\\u003ca\\u0026b\\u003e"]'), (True, "true"),
    ([True, False], "[true,false]"), (None, ""), (b"\x00\xff", "AP8="), (7, "7"), ("x", "x"),
])
def test_value_texts_of_each_kind(value, text):
    assert values.as_string(value) == text


def test_every_attribute_otel_rai_writes_has_a_type():
    written = {*semconv.SPAN_ATTRIBUTES, *semconv.ALERT_SPAN_ATTRIBUTES, *semconv.MONITORING_SPAN_ATTRIBUTES,
               *semconv.MODEL_RECORD_ATTRIBUTES, *semconv.UI_SPAN_ATTRIBUTES, *semconv.CHAIN_ATTRIBUTES}
    assert set(values.KINDS) == written


def _value_of(kind: str, rng: random.Random):
    text = "".join(rng.choice(_ALPHABET) for _ in range(rng.randint(0, 6)))
    if kind == values.INT:
        return rng.choice([0, 7, -3, 2**63 - 1])
    if kind == values.DOUBLE:
        return rng.choice([0.25, -1e-9, 3.0, 1e300, math.nan, math.inf])
    if kind == values.DOUBLE_ARRAY:
        return [rng.choice([0.0, 1.0, 0.125, 1e-7, 7e22]) for _ in range(rng.randint(0, 4))]
    if kind == values.ARRAY:
        return rng.choice([[text, "b"], [1, 2], [0.5], [True], [], [1.5, 2.0]])
    return rng.choice([text, "5", "1.4.2", "true", "[1]", ""])


def test_values_read_back_with_their_types():
    rng = random.Random(7)
    names = [*values.KINDS, semconv.OUTPUT_SCORES_PREFIX + "yes", semconv.INPUT_VALUE_PREFIX + "sex"]
    for _ in range(200):
        for name in names:
            value = _value_of(values.kind_of(name), rng)
            text = values.as_string(value)
            back = values.parse(name, text)
            if values.kind_of(name) in (values.STRING, values.INT):
                assert back == value and type(back) is type(value), (name, value, back)
            elif isinstance(value, float) and math.isnan(value):
                assert math.isnan(back)
            elif text == "" and value != []:
                assert back == ""  # an array Go refused: lost, as in the exporter
            else:  # doubles and arrays: equal as numbers (1.0 came back as 1.0, or as 1 in an untyped array)
                assert back == value, (name, value, back)
                if values.kind_of(name) == values.DOUBLE_ARRAY:
                    assert all(type(v) is float for v in back)
    assert values.parse("app.note", "[1, 2]") == [1, 2] and values.parse("app.note", "5") == "5"
    assert values.parse(semconv.FAIRNESS_VALUE, "NaN") != values.parse(semconv.FAIRNESS_VALUE, "NaN")  # new pdata


# --- a recorded trail, loaded into ClickHouse ---------------------------------------------------------------


def _applicants(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"income": rng.normal(0, 1, n), "debt": rng.normal(0, 1, n),
                      "sex": rng.choice(["f", "m", "<x&y>"], n, p=[0.45, 0.45, 0.1])})
    y = (X.income - 0.5 * X.debt + (X.sex == "m") > 0.3).astype(int).to_numpy()
    return X, y


def _pipeline(X: pd.DataFrame, y: np.ndarray):
    prep = ColumnTransformer([("n", "passthrough", ["income", "debt"]), ("s", OneHotEncoder(), ["sex"])])
    return make_pipeline(prep, LogisticRegression()).fit(X, y)


def record_trail(path: Path) -> dict:
    """Real decisions of every kind: a chunked batch with groups, outcomes, explanations and an alert; single
    rows; a failed call; signed checkpoints; a second service whose sex is allowlisted on the spans."""
    X, y = _applicants(1200, 0)
    truth = {}
    otel_rai.instrument(store=path, hash_key=KEY, service_name="credit-scoring", sensitive_features=["sex"],
                        fairness=otel_rai.FairnessConfig(window=5000), max_rows_per_span=100,
                        checkpoint_key=CHECKPOINT_KEY, explain_top_k=2)
    try:
        model = otel_rai.register_model(_pipeline(X, y), name="credit", version="1.0", background=X.iloc[:50])
        with otel_rai.decisions(ids=[f"b{i}" for i in range(600)]):
            model.predict(X.iloc[:600])  # six chunk spans and their parent
        for i in range(600):
            if i % 3:
                otel_rai.record_outcome(f"b{i}", int(y[i]))
                truth[f"b{i}"] = int(y[i])
        v2 = otel_rai.register_model(_pipeline(X, y), name="credit", version="2.0")
        for i in range(600, 660):
            with otel_rai.decisions(ids=[f"s{i}"]):
                v2.predict_proba(X.iloc[i:i + 1])
        with pytest.raises(ValueError), otel_rai.decisions(ids=["bad-0", "bad-1"]):
            v2.predict(X.iloc[:2, :1])  # a failed call: its rows are no decisions
        assert otel_rai.flush(60).complete
    finally:
        otel_rai.uninstrument()
    otel_rai.instrument(store=path, hash_key=KEY, service_name="loans", capture_features=["sex"],
                        checkpoint_key=CHECKPOINT_KEY)
    try:
        v3 = otel_rai.register_model(_pipeline(X, y), name="credit", version="3.0")
        for start in range(700, 1100, 100):
            v3.predict(X.iloc[start:start + 100])
        assert otel_rai.flush(60).complete
    finally:
        otel_rai.uninstrument()
    return {"X": X, "y": y, "truth": truth}


@pytest.fixture(scope="module")
def trail(tmp_path_factory, chdb_dir):
    """The recorded store and the ClickHouse it was loaded into with `export --to clickhouse`."""
    home = tmp_path_factory.mktemp("home")
    os.environ["OTEL_RAI_HOME"] = str(home)
    try:
        path = home / "audit.db"
        facts = record_trail(path)
        url = f"chdb://{chdb_dir}?database=trail_{os.urandom(3).hex()}"
        assert cli.main(["export", "--to", "clickhouse", "--url", url, "--store", str(path),
                         "--include", "groups", "--include", "outcomes", "--include", "drift"]) == 0
    finally:
        del os.environ["OTEL_RAI_HOME"]
    return {"path": path, "url": url, **facts}


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def both(capsys, trail, *args: str) -> tuple[tuple[int, str, str], tuple[int, str, str]]:
    """The same command on the local store and on ClickHouse."""
    return (run(capsys, *args, "--store", str(trail["path"])),
            run(capsys, *args, "--backend", "clickhouse", "--url", trail["url"]))


def test_the_loader_writes_every_span_and_the_views_every_decision(trail):
    local = store.Store(trail["path"])
    records = list(local.spans())
    db = client.connect(trail["url"])
    (spans,), = db.rows(f"SELECT count() FROM {db.table(schema.TRACES)}")
    (indexed,), = db.rows(f"SELECT count() FROM {db.table(schema.SPANS)}")
    (decisions, ids), = db.rows(f"SELECT count(), uniqExact(DecisionId) FROM {db.table(schema.DECISIONS)}")
    (groups, outcomes), = db.rows(f"SELECT (SELECT count() FROM {db.table(schema.GROUPS)}),"
                                  f" (SELECT count() FROM {db.table(schema.OUTCOMES)})")
    expected = [d for r in records for d in (r.attributes.get(semconv.DECISION_IDS) or ())]
    assert spans == indexed == len(records)
    assert decisions == ids == len(expected)
    import sqlite3

    with sqlite3.connect(trail["path"]) as conn:
        (local_groups,), = conn.execute("SELECT count(*) FROM decision_groups").fetchall()
    assert groups == local_groups == 660 and outcomes == len(trail["truth"])  # the sex of versions 1.0 and 2.0


def test_every_record_reads_back_intact(trail):
    """Through the exporter's texts and back: every record still matches its hash, and what a span holds
    (not what the table drops: the resource's schema URL, parent-is-remote) is what the store holds."""
    local = {(r.trace_id, r.span_id): r for r in store.Store(trail["path"]).spans()}
    backend = chq.connect(trail["url"])
    back = list(backend.chained(Query()))
    assert len(back) == len(local)
    kinds = {r.name for r in back}
    assert {semconv.CHECKPOINT_SPAN, semconv.ALERT_SPAN} <= kinds
    for r in back:
        original = local[(r.trace_id, r.span_id)]
        assert r.attributes == original.attributes
        for name, value in r.attributes.items():
            if values.kind_of(name) in (values.STRING, values.INT):
                assert type(value) is type(original.attributes[name]), name
        assert (r.name, r.start_ns, r.end_ns, r.status_code, r.status_message, r.kind, r.parent_span_id,
                r.scope_name, r.scope_version, r.service) == (
            original.name, original.start_ns, original.end_ns, original.status_code, original.status_message,
            original.kind, original.parent_span_id, original.scope_name, original.scope_version, original.service)
        assert [(e["name"], e["time_ns"]) for e in r.events] == [(e["name"], e["time_ns"]) for e in original.events]
        assert chaincheck.canonical.matches(r)


# --- every command gives the local store's answers ------------------------------------------------------------


@pytest.mark.parametrize("args", [
    ("query", "--format", "json", "--limit", "0"),
    ("query", "--model-version", "2.0", "--format", "csv"),
    ("query", "--model-version", "1.0", "--limit", "50"),
    ("query", "--service", "loans", "--model-name", "credit", "--format", "json"),
    ("query", "--decision-id", "b17", "--decision-id", "s640", "--decision-id", "nobody", "--format", "json"),
    ("export", "--format", "jsonl", "--model-version", "1.0"),
    ("export", "--format", "csv"),
    ("show", "b333"),
    ("show", "s601", "--format", "json"),
])
def test_commands_answer_as_the_local_store(capsys, trail, args):
    local, clickhouse = both(capsys, trail, *args)
    assert local[0] == clickhouse[0] == 0, (local[2], clickhouse[2])
    assert clickhouse[1] == local[1] and local[1]


def test_a_time_window_answers_as_the_local_store(capsys, trail):
    starts = sorted(r.start_ns for r in store.Store(trail["path"]).spans())
    middle = starts[len(starts) // 2]
    window = ("--start", str(middle), "--end", str(starts[-3]))
    from otel_rai._time import rfc3339

    window = ("--start", rfc3339(middle), "--end", rfc3339(starts[-3]))
    local, clickhouse = both(capsys, trail, "query", "--format", "json", "--limit", "0", *window)
    assert clickhouse[1] == local[1] and local[1].count("\n") > 10


def test_input_hashes_find_the_same_decisions(capsys, trail, tmp_path):
    X = trail["X"]
    rows_file = tmp_path / "applicants.json"
    picked = [3, 250, 610, 800, 1190]  # a batch row, a single-row call, a loans call, one never decided
    rows_file.write_text(json.dumps([X.iloc[i].to_dict() for i in picked]))
    args = ("verify", "--input", str(rows_file), "--key", KEY, "--format", "json")
    local, clickhouse = both(capsys, trail, *args)
    assert local[0] == clickhouse[0] == 3  # the last row matches nothing
    assert clickhouse[1] == local[1]
    matched = [json.loads(line) for line in local[1].splitlines()]
    assert [len(m["decisions"]) > 0 for m in matched] == [True, True, True, True, False]


def test_verify_chain_gives_the_same_verdict(capsys, trail):
    args = ("verify-chain", "--checkpoint-key", CHECKPOINT_KEY, "--require-signed")
    local, clickhouse = both(capsys, trail, *args)
    assert local[0] == clickhouse[0] == 0
    assert clickhouse[1] == local[1] and "2 streams" not in local[1]
    assert local[2].split(" from ")[0] == clickhouse[2].split(" from ")[0]
    assert "chain intact" in clickhouse[2] and "verified signed" in clickhouse[1]


def _figures(page: str) -> dict:
    root = ET.fromstring(page.removeprefix("<!DOCTYPE html>"))
    bars = {b.get("data-group"): float(b.get("data-rate")) for b in root.iter("{http://www.w3.org/2000/svg}rect")
            if b.get("class") == "bar" and b.get("data-group") is not None}
    cells = {td.get("data-metric"): "".join(td.itertext()) for td in root.iter("td") if td.get("data-metric")}
    counts = {td.get("id"): td.text for td in root.iter("td") if td.get("id")}
    tables = ["|".join("".join(c.itertext()) for c in tr) for tr in root.iter("tr")]
    alerts = [[td.text for td in tr][1:] for tr in root.iter("tr") if tr.get("class") == "alert"]
    text = "".join(root.itertext())
    period = re.search(r"Decisions from (.*?) to (.*?)\.", text).groups()
    # The whole page but the time it was generated: every section (counts, model, fairness, time charts,
    # explanations, alerts, quality and drift) says the same.
    page = re.sub(r"<p>Generated by otel-rai .*?</p>", "", page)
    return {"bars": bars, "cells": cells, "counts": counts, "tables": tables, "alerts": alerts, "period": period,
            "page": page}


@pytest.mark.parametrize("version, extra", [("1.0", ()), ("3.0", ("--sensitive-feature", "sex")),
                                            ("2.0", ("--positive-label", "0"))])
def test_the_report_gives_the_same_numbers(capsys, trail, tmp_path, version, extra):
    pages = []
    for source in (("--store", str(trail["path"])), ("--backend", "clickhouse", "--url", trail["url"])):
        out = tmp_path / f"{len(pages)}.html"
        code, _, err = run(capsys, "report", "--model-version", version, "--min-group-size", "1", "--out", str(out),
                           *extra, *source)
        assert code == 0, err
        pages.append(_figures(out.read_text()))
    local, clickhouse = pages
    assert clickhouse == local
    if version != "2.0":
        assert len(local["bars"]) == 3  # f, m and <x&y>: groups were reported


def test_the_report_equals_fairlearn(capsys, trail, tmp_path):
    out = tmp_path / "report.html"
    code, _, err = run(capsys, "report", "--model-version", "1.0", "--min-group-size", "1", "--out", str(out),
                       "--backend", "clickhouse", "--url", trail["url"])
    assert code == 0, err
    root = ET.fromstring(out.read_text().removeprefix("<!DOCTYPE html>"))
    X, y, truth = trail["X"].iloc[:600], trail["y"][:600], trail["truth"]
    decided = [d for d in query.find_decisions(model_version="1.0", url=str(trail["path"]))]
    y_pred = np.array([d.output for d in decided])
    sex = X.sex.to_numpy()
    assert root.find(".//td[@id='decisions']").text == "600"
    assert root.find(".//td[@id='labelled']").text == str(len(truth))
    cell = {td.get("data-metric"): "".join(td.itertext()) for td in root.iter("td") if td.get("data-metric")}
    assert float(cell["demographic parity ratio"]) == pytest.approx(
        flm.demographic_parity_ratio(y, y_pred, sensitive_features=sex), abs=5e-5)
    labelled = np.array([f"b{i}" in truth for i in range(600)])
    assert float(cell["equalized odds difference"]) == pytest.approx(
        flm.equalized_odds_difference(y[labelled], y_pred[labelled], sensitive_features=sex[labelled]), abs=5e-5)
    assert [tr for tr in root.iter("tr") if tr.get("class") == "alert"]  # the live alert, read by name


def test_the_report_pushes_counting_down(trail):
    """The report's numbers are SQL aggregates: every query it runs returns a few rows, never the decisions."""
    backend = chq.connect(trail["url"])
    seen = []
    original = backend.db.rows

    def counting(sql, parameters=None, settings=None):
        found = original(sql, parameters, settings)
        seen.append(len(found))
        return found

    backend.db.rows = counting
    tally = backend.tally(Query(model_version="1.0"), 1, ["sex"])
    assert tally.decisions == 600 and set(tally.groups["sex"]) == {"f", "m", "<x&y>"}
    assert seen and max(seen) <= 3


# --- lookups read a granule, not the table -------------------------------------------------------------------


DAY = 86_400 * 10**9
#: Ten days ago, at 20:26:40: recent enough for the tables' 185-day TTL, which drops older rows on insert.
T0 = (time.time_ns() // DAY - 10) * DAY + 73_600 * 10**9


def _synthetic(n_spans: int, rows_per_span: int, *, step_s: int = 1, seed: int = 0) -> list[SpanRecord]:
    """Decision spans in the shape the SDK writes them (ids, hashes, outputs, scores), `step_s` apart."""
    rng = random.Random(seed)
    out = []
    for s in range(n_spans):
        ids = [f"D{s}-{i}" for i in range(rows_per_span)]
        start = T0 + s * step_s * 10**9
        out.append(SpanRecord(
            trace_id=f"{rng.getrandbits(128):032x}", span_id=f"{rng.getrandbits(64):016x}",
            name="predict credit", start_ns=start, end_ns=start + 1000, scope_name=semconv.SCOPE,
            resource={semconv.SERVICE_NAME: "svc"},
            attributes={semconv.MODEL_NAME: "credit", semconv.MODEL_VERSION: f"v{s % 3}", semconv.DECISION_IDS: ids,
                        semconv.INPUT_HASHES: [f"{rng.getrandbits(128):032x}" for _ in ids],
                        semconv.OUTPUTS: [rng.randint(0, 1) for _ in ids],
                        semconv.OUTPUT_SCORES_PREFIX + "1": [rng.random() for _ in ids]}))
    return out


def test_a_decision_id_or_an_input_hash_reads_no_more_than_a_granule(clickhouse_url):
    """With 64-row granules, 20,000 decisions make hundreds of granules; a lookup must read about one."""
    layout = schema.Layout(database=client.location(clickhouse_url).database, granularity=64)
    db = client.connect(clickhouse_url, layout)
    db.create_schema()
    spans = _synthetic(400, 50)
    load.load(db, spans)
    db.command(f"OPTIMIZE TABLE {db.table(schema.DECISIONS)} FINAL")
    backend = chq.ClickHouse(db)
    wanted = spans[123].attributes[semconv.DECISION_IDS][7]
    found = list(query.decisions(Query(decision_ids=frozenset([wanted])), backend))
    assert [d.decision_id for d in found] == [wanted]
    lookup, span = int(backend.last_summary["lookup"]["read_rows"]), int(backend.last_summary["spans"]["read_rows"])
    assert lookup <= 64 * 2 and span <= 64 * 2, backend.last_summary  # against 20,000 rows and 400 spans
    plan = backend.explain(f"SELECT * FROM {db.table(schema.DECISIONS)} WHERE DecisionId = {{d:String}}",
                           {"d": wanted})
    selected, total = map(int, re.search(r"PrimaryKey.*?Granules: (\d+)/(\d+)", plan, re.DOTALL).groups())
    assert selected <= 2 and total >= 300, plan
    digest = spans[321].attributes[semconv.INPUT_HASHES][3]
    found = list(query.decisions(Query(input_hashes=frozenset([digest])), backend))
    assert [d.input_hash for d in found] == [digest]
    assert int(backend.last_summary["lookup"]["read_rows"]) <= 64 * 2


def test_a_page_of_one_version_and_one_day_reads_one_partition(clickhouse_url):
    db = client.connect(clickhouse_url, schema.Layout(database=client.location(clickhouse_url).database,
                                                      granularity=64))
    db.create_schema()
    spans = _synthetic(6000, 1, step_s=45)  # three days, three versions
    load.load(db, spans)
    db.command(f"OPTIMIZE TABLE {db.table(schema.SPANS)} FINAL")  # one part a day, as merges leave it
    backend = chq.ClickHouse(db)
    day = T0 // DAY * DAY + DAY
    plan = backend.explain(f"SELECT * FROM {db.table(schema.SPANS)} WHERE ModelVersion = 'v1' AND Timestamp >="
                           f" fromUnixTimestamp64Nano({day}) AND Timestamp < fromUnixTimestamp64Nano({day + DAY})")
    parts = re.search(r"Min-Max.*?Parts: (\d+)/(\d+)", plan, re.DOTALL)
    keys = re.search(r"PrimaryKey.*?Granules: (\d+)/(\d+)", plan, re.DOTALL)
    assert parts and int(parts[1]) == 1 and int(parts[2]) >= 3, plan  # one day of three or four
    assert keys and int(keys[1]) * 2 < int(keys[2]), plan  # within the day, only version v1's granules
    first = [d.decision_id for d in itertools.islice(
        query.decisions(Query(model_version="v1", start_ns=day, end_ns=day + DAY), backend), 50)]
    expected = [i for r in spans if r.attributes[semconv.MODEL_VERSION] == "v1" and day <= r.start_ns < day + DAY
                for i in r.attributes[semconv.DECISION_IDS]][:50]
    assert first == expected


# --- copies, tampering, spools ------------------------------------------------------------------------------


def test_copies_delivered_twice_count_once(capsys, trail, tmp_path, chdb_dir):
    """At-least-once delivery: the same spans loaded twice read back once, count once in the report, and
    verify-chain counts them as copies, not problems."""
    url = f"chdb://{chdb_dir}?database=twice_{os.urandom(3).hex()}"
    for _ in range(2):
        assert cli.main(["export", "--to", "clickhouse", "--url", url, "--store", str(trail["path"]),
                         "--include", "groups", "--include", "outcomes", "--include", "drift"]) == 0
    capsys.readouterr()
    once = run(capsys, "query", "--format", "json", "--limit", "0", "--backend", "clickhouse", "--url", trail["url"])
    twice = run(capsys, "query", "--format", "json", "--limit", "0", "--backend", "clickhouse", "--url", url)
    assert twice[1] == once[1]
    pages = []
    for source in (trail["url"], url):
        out = tmp_path / f"{len(pages)}.html"
        assert run(capsys, "report", "--model-version", "1.0", "--out", str(out), "--backend", "clickhouse",
                   "--url", source)[0] == 0
        pages.append(_figures(out.read_text()))
    assert pages[0] == pages[1]
    code, _, err = run(capsys, "verify-chain", "--backend", "clickhouse", "--url", url)
    records = len(list(store.Store(trail["path"]).spans()))
    assert code == 0 and f"{records} delivered more than once" in err


def test_tampering_gives_the_local_verdict(capsys, trail, tmp_path, chdb_dir):
    """The same edit and deletion, in a copy of the store and in ClickHouse: the same problems."""
    copy = tmp_path / "audit.db"
    shutil.copy(trail["path"], copy)
    url = f"chdb://{chdb_dir}?database=tampered_{os.urandom(3).hex()}"
    assert cli.main(["export", "--to", "clickhouse", "--url", url, "--store", str(copy)]) == 0
    records = list(store.Store(copy).spans())
    # Decision spans: an outcome span deleted leaves its local outcomes row, which only the local store checks.
    decided = [r for r in records if r.attributes.get(semconv.DECISION_IDS)]
    edited, deleted = decided[3], decided[9]
    import sqlite3

    with sqlite3.connect(copy) as conn:
        attributes = json.loads(conn.execute("SELECT attributes FROM spans WHERE span_id = ?",
                                             (edited.span_id,)).fetchone()[0])
        attributes[semconv.MODEL_VERSION] = "other"
        conn.execute("UPDATE spans SET attributes = ?, model_version = 'other' WHERE span_id = ?",
                     (json.dumps(attributes), edited.span_id))
        conn.execute("DELETE FROM decisions WHERE span = (SELECT seq FROM spans WHERE span_id = ?)", (deleted.span_id,))
        conn.execute("DELETE FROM spans WHERE span_id = ?", (deleted.span_id,))
    db = client.connect(url)
    db.command(f"ALTER TABLE {db.table(schema.TRACES)} UPDATE SpanAttributes = mapUpdate(SpanAttributes,"
               f" map('{semconv.MODEL_VERSION}', 'other')) WHERE SpanId = '{edited.span_id}'"
               " SETTINGS mutations_sync = 2")
    db.command(f"DELETE FROM {db.table(schema.TRACES)} WHERE SpanId = '{deleted.span_id}'")
    reports = []
    for source in (("--store", str(copy)), ("--backend", "clickhouse", "--url", url)):
        code, out, _ = run(capsys, "verify-chain", "--format", "json", *source)
        assert code == 3
        report = json.loads(out)
        reports.append([(p["kind"], p["stream"], p["seq"], p["span_id"]) for p in report["problems"]])
    assert reports[0] == reports[1] and {k for k, *_ in reports[0]} == {"edited", "deleted"}


def _tampered(records: list[SpanRecord], rng: random.Random) -> list[SpanRecord]:
    """`records` with random damage: deletions, edits, copies, records claiming a taken place, foreign ones."""
    out = []
    for r in records:
        roll = rng.random()
        if roll < 0.05:
            continue
        r = SpanRecord(**{**r.__dict__, "attributes": dict(r.attributes)})
        if roll < 0.1:
            r.attributes[semconv.MODEL_VERSION] = "edited"
        elif roll < 0.13:
            out.append(SpanRecord(**{**r.__dict__, "attributes": dict(r.attributes)}))  # a copy
        elif roll < 0.15:
            other = dict(r.attributes)
            other[semconv.AUDIT_RECORD_HASH] = f"{rng.getrandbits(256):064x}"
            out.append(SpanRecord(**{**r.__dict__, "span_id": f"{rng.getrandbits(64):016x}", "attributes": other}))
        elif roll < 0.17:
            del r.attributes[semconv.AUDIT_SEQ]
        out.append(r)
    return out


def test_the_ordered_walk_reports_what_the_whole_trail_check_reports(trail):
    """`check_ordered` (bounded memory, the trail in chain order) against `check` (everything in memory,
    any order), over many randomly damaged trails."""
    records = list(store.Store(trail["path"]).spans())
    rng = random.Random(3)
    keys = {}
    from otel_rai.chain.keys import read_keys

    keys = read_keys([CHECKPOINT_KEY], [], [])
    for _ in range(200):
        damaged = _tampered(records, rng)
        rng.shuffle(damaged)
        ordered = sorted(damaged, key=lambda r: (r.attributes.get(semconv.AUDIT_STREAM, ""),
                                                 chaincheck.seq_of(r.attributes.get(semconv.AUDIT_SEQ)) or 0))
        for require_signed in (False, True):
            whole = chaincheck.check([(None, r) for r in damaged], keys, require_signed=require_signed)
            walked = chaincheck.check_ordered(ordered, keys, require_signed=require_signed)
            walked, whole = walked.to_dict(), whole.to_dict()
            for report in (walked, whole):  # streams in the order met: the same set either way
                report["streams"].sort(key=lambda s: s["stream"])
            assert walked == whole


def test_a_spool_loads_what_waits_in_it(capsys, trail, tmp_path, chdb_dir):
    """A spool keeps only the OTLP encoding of each span waiting for export: those are loaded."""
    records = list(store.Store(trail["path"]).spans(model_version="2.0"))
    spool = store.Store(tmp_path / "spool.db", create=True)
    to_span = ReadableSpans()
    spool.append(queued=[((r.resource, r.resource_schema_url, r.scope_name, r.scope_version),
                          len(r.attributes.get(semconv.DECISION_IDS) or ()), otlpproto.encode_span(to_span(r)))
                         for r in records])
    url = f"chdb://{chdb_dir}?database=spool_{os.urandom(3).hex()}"
    code, _, err = run(capsys, "export", "--to", "clickhouse", "--url", url, "--store", str(tmp_path / "spool.db"))
    decisions = sum(len(r.attributes.get(semconv.DECISION_IDS) or ()) for r in records)
    assert code == 0 and f"loaded {len(records)} spans ({decisions} decisions) from spool" in err
    local = run(capsys, "query", "--format", "json", "--model-version", "2.0", "--store", str(trail["path"]))
    loaded = run(capsys, "query", "--format", "json", "--backend", "clickhouse", "--url", url)
    assert loaded[1] == local[1]


# --- errors -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("url, status, message", [
    ("ftp://host", 2, "is not a URL like http://localhost:8123"),
    ("http://host:99999", 2, "invalid port"),
    ("chdb://", 2, "give chdb:///a/directory"),
    ("http://127.0.0.1:{port}", 1, "clickhouse cannot connect to http://127.0.0.1:{port}/otel"),
    ("http://u:hunter2@127.0.0.1:{port}/db-name", 2, "database 'db-name'"),
])
def test_bad_urls_and_unreachable_servers_are_one_line(capsys, url, status, message):
    from servers import free_port

    port = free_port()
    code, out, err = run(capsys, "query", "--backend", "clickhouse", "--url", url.format(port=port))
    assert code == status and message.format(port=port) in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and "hunter2" not in err


def test_a_database_without_the_schema_is_one_line(capsys, clickhouse_url):
    code, _, err = run(capsys, "show", "x", "--backend", "clickhouse", "--url", clickhouse_url)
    assert code == 1 and err.startswith("otel-rai: clickhouse failed at chdb://") and len(err.splitlines()) == 1


def test_export_to_clickhouse_reads_only_a_local_store(capsys, clickhouse_url):
    code, _, err = run(capsys, "export", "--to", "clickhouse", "--backend", "jaeger", "--url", clickhouse_url)
    assert code == 2 and "reads a local store or spool" in err
    code, _, err = run(capsys, "export", "--to", "clickhouse", "--url", clickhouse_url, "--output", "x.jsonl")
    assert code == 2 and "writes no file" in err


# --- the DDL ----------------------------------------------------------------------------------------------------


def test_the_cluster_statements_parse(chdb_dir):
    db = client.connect(f"chdb://{chdb_dir}")
    for statement in schema.statements(schema.Layout(cluster="otel")):
        (formatted,), = db.rows("SELECT formatQuery({q:String})", {"q": statement})
        assert "ON CLUSTER otel" in formatted


def test_the_shipped_files_create_the_tables_the_package_creates(chdb_dir):
    """collector/clickhouse/*.sql, run as they are, give the tables otel-rai's code creates and reads."""
    db = client.connect(f"chdb://{chdb_dir}")
    database = f"shipped_{os.urandom(3).hex()}"
    for name in ("otel_traces.sql", "otel_rai.sql"):
        text = (ROOT / "collector/clickhouse" / name).read_text()
        text = text.replace("otel.", f"{database}.").replace("EXISTS otel;", f"EXISTS {database};")
        for statement in text.split(";\n"):
            if "CREATE" in statement:
                db.command(statement)
    shipped = client.connect(f"chdb://{chdb_dir}?database={database}")
    assert shipped.has_schema()
    assert schema.files()["otel_rai.sql"] == (ROOT / "collector/clickhouse/otel_rai.sql").read_text()


def test_small_pages_give_the_same_answers(capsys, trail, monkeypatch):
    """Paging (keyset pages of the index, fetches bounded by decisions, chain pages by sequence number) at
    its smallest: every boundary falls somewhere, the answers stay the local store's."""
    monkeypatch.setattr(chq, "FIRST_PAGE", 2)
    monkeypatch.setattr(chq, "MAX_PAGE", 3)
    monkeypatch.setattr(chq, "FIRST_FETCH_DECISIONS", 1)
    monkeypatch.setattr(chq, "MAX_FETCH_DECISIONS", 150)
    monkeypatch.setattr(chq, "CHAIN_PAGE", 2)
    monkeypatch.setattr(chq, "FETCH", 3)
    ids = ("--decision-id", "b1", "--decision-id", "b599", "--decision-id", "s650")
    for args in (("query", "--format", "json", "--limit", "0"), ("verify-chain", "--format", "json"),
                 ("query", *ids, "--format", "json")):
        local, clickhouse = both(capsys, trail, *args)
        assert clickhouse[:2] == local[:2]


def test_a_window_of_the_chain_and_an_export_subset_answer_as_the_local_store(capsys, trail, chdb_dir):
    from otel_rai._time import rfc3339

    starts = sorted(r.start_ns for r in store.Store(trail["path"]).spans())
    window = ("--start", rfc3339(starts[20] // 1000 * 1000), "--end", rfc3339(starts[-5]))
    local, clickhouse = both(capsys, trail, "verify-chain", "--format", "json", *window)
    # The same verdict. Not necessarily intact: a window of start times can cut a stream where a long span
    # (a model record lasts as long as its artifact's save) started before one sealed ahead of it.
    assert local[0] == clickhouse[0] and clickhouse[1] == local[1]
    url = f"chdb://{chdb_dir}?database=subset_{os.urandom(3).hex()}"
    assert cli.main(["export", "--to", "clickhouse", "--url", url, "--store", str(trail["path"]),
                     "--model-version", "2.0"]) == 0
    capsys.readouterr()
    loaded = run(capsys, "query", "--format", "json", "--limit", "0", "--backend", "clickhouse", "--url", url)
    local = run(capsys, "query", "--format", "json", "--limit", "0", "--model-version", "2.0",
                "--store", str(trail["path"]))
    assert loaded[1] == local[1]


def test_an_otlp_json_export_holds_the_same_spans(capsys, trail):
    """What OTLP JSON carries that the exporter's table drops (the resource's schema URL, parent-is-remote)
    aside, the spans exported from ClickHouse are the local store's, and still verify."""
    from otel_rai.codec import otlpjson

    def spans(out: str) -> dict:
        found = {}
        for line in out.splitlines():
            for r in otlpjson.decode(json.loads(line)):
                found[(r.trace_id, r.span_id)] = (r.name, r.start_ns, r.end_ns, r.attributes, r.status_code,
                                                  r.status_message, r.parent_span_id, r.service, r.scope_name)
        return found

    local, clickhouse = both(capsys, trail, "export", "--format", "otlp-json")
    assert local[0] == clickhouse[0] == 0
    assert spans(clickhouse[1]) == spans(local[1])


def test_outputs_compare_in_sql_as_the_report_compares_them(chdb_dir):
    """The report compares labels as `printed` writes them (1, 1.0, "1" and true alike). ClickHouse sees the
    exporter's JSON: its label key and positive test must agree with `printed` on every kind of output."""
    from otel_rai.fairness.metrics import printed

    rng = random.Random(11)
    pool = [0, 1, 2, -1, 10**15, 2**53 + 1, 1.0, 0.0, -0.0, 0.5, 1.5, 1e-5, 1e-7, 1e20, 1e21, 3.25e22, True, False,
            None, "1", "0", "yes", "no", "1.0", "", "a<b&c", "é\n\"x\"", "None", "1e-05", "true"]
    outputs = [rng.choice(pool) for _ in range(400)] + pool
    db = client.connect(f"chdb://{chdb_dir}")
    key = chq._label_key("t")
    for label in ("1", 1, "0", "yes", 0.5, "1e-05", 1e-5, True, "None", "1.0", 1e21):
        parameters = {"outputs": values.as_string(outputs), **chq._positive_parameters(label)}
        found = db.rows(f"SELECT {key}, {chq._positive(key)} FROM (SELECT arrayJoin(JSONExtractArrayRaw("
                        "{outputs:String})) AS t)", parameters)
        assert len(found) == len(outputs)
        for value, (k, positive) in zip(outputs, found):
            assert chq._label(k) == printed(value), (value, k)
            assert bool(positive) == (printed(value) == printed(label)), (value, label, k)


def test_urls_are_a_location_or_a_usage_error():
    rng = random.Random(5)
    parts = ["http://", "https://", "chdb://", "chdb:///", "ftp://", "", "u:p@", "h", "localhost", ":8123", ":0",
             ":99999", ":x", "/", "/otel", "/a-b", "?database=", "otel", "memory", "[::1]", "é", "%41", "#f"]
    for _ in range(3000):
        url = "".join(rng.choice(parts) for _ in range(rng.randint(1, 6)))
        try:
            where = client.location(url)
        except ValueError as exc:
            assert str(exc).startswith("otel-rai: clickhouse: ") and "\n" not in str(exc)
            continue
        assert where.kind in ("http", "chdb") and where.database.replace("_", "").isalnum()
        if where.kind == "http":
            assert "u:p" not in where.shown and where.port > 0  # credentials are never shown


def test_monitor_model_and_reproduce_answer_as_the_local_store(capsys, trail, tmp_path):
    """`monitor`, `model list|show|diff|export` and `reproduce`: the same output from ClickHouse as from the
    local store, for every version and model of the trail (records read from the table kept past the TTL)."""
    artifacts = ("--artifacts", str(trail["path"].parent / "artifacts"))
    versions = ["1.0", "2.0", "3.0"]
    commands = [("model", "list", "--format", "json"), ("model", "list")]
    for v in versions:
        commands += [("monitor", "--model-version", v, "--format", "json"),
                     ("monitor", "--model-version", v, "--positive-label", "0"),
                     ("model", "show", "credit", v, "--format", "json", *artifacts),
                     ("model", "export", "credit", v, "--format", "cyclonedx")]
    for a, b in itertools.combinations(versions, 2):
        commands.append(("model", "diff", "credit", a, b, "--format", "json"))
    X = trail["X"]
    for i, decision in ((3, "b3"), (250, "b250"), (610, "s610")):
        rows_file = tmp_path / f"{decision}.json"
        rows_file.write_text(json.dumps(X.iloc[i].to_dict()))
        commands.append(("reproduce", decision, "--input", str(rows_file), "--key", KEY, *artifacts))
    verdicts = []
    for command in commands:
        local, clickhouse = both(capsys, trail, *command)
        if "cyclonedx" in command:  # each BOM has its own serial number and time
            local, clickhouse = (_bom(local), _bom(clickhouse))
        assert clickhouse[:2] == local[:2], (command, local, clickhouse)
        # reproduce: REPRODUCED (0) or DIFFERS (3), as the local store says; everything else succeeds.
        assert local[0] in ((0, 3) if command[0] == "reproduce" else (0,)), (command, local)
        verdicts.append(local[1].splitlines()[-1] if command[0] == "reproduce" else "")
    assert any(v.startswith("REPRODUCED") for v in verdicts), verdicts


def _bom(result: tuple[int, str, str]) -> tuple[int, dict, str]:
    bom = json.loads(result[1])
    del bom["serialNumber"], bom["metadata"]["timestamp"]
    return result[0], bom, result[2]


def test_model_records_outlive_the_traces_ttl(trail, tmp_path, chdb_dir):
    """The traces' TTL drops the partition of a model record while its decisions are kept: the record is
    still found (otel_rai_model_records keeps it), and is one of the rows ClickHouse's own SQL counts."""
    url = f"chdb://{chdb_dir}?database=ttl_{os.urandom(3).hex()}"
    assert cli.main(["export", "--to", "clickhouse", "--url", url, "--store", str(trail["path"])]) == 0
    db = client.connect(url)
    db.command(f"ALTER TABLE {db.table(schema.TRACES)} DELETE WHERE SpanName = '{semconv.MODEL_RECORD_SPAN}'"
               " SETTINGS mutations_sync = 2")
    (left,), = db.rows(f"SELECT count() FROM {db.table(schema.TRACES)} WHERE SpanName = '{semconv.MODEL_RECORD_SPAN}'")
    (kept,), = db.rows(f"SELECT count() FROM {db.table(schema.MODEL_RECORDS)}")
    local = [r for r in store.Store(trail["path"]).spans() if r.name == semconv.MODEL_RECORD_SPAN]
    assert left == 0 and kept == len(local) > 0
    from otel_rai.provenance import lookup

    found = list(lookup.records(chq.connect(url), Query(model_version="1.0")))
    assert [r.fingerprint for r in found] == [r.attributes[semconv.MODEL_FINGERPRINT] for r in local
                                              if r.attributes.get(semconv.MODEL_VERSION) == "1.0"]


DAY_NS = 86_400 * 10**9


class _Clock:
    """`time.time_ns` moved through simulated days (each reading a microsecond after the last)."""

    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        self.now += 1000
        return self.now


def _generated_trail(path: Path, seed: int) -> dict:
    """Decisions of two models in several versions each, over several simulated days: batches and single
    rows, groups, outcomes for some, drift snapshots; what each day and version holds is random."""
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(seed)
    X, y = _applicants(600, seed)
    days = int(rng.integers(3, 6))
    start = (time.time_ns() // DAY_NS - days - 1) * DAY_NS
    clock, real = _Clock(start), time.time_ns
    made: dict[tuple[str, str], list[str]] = {}
    time.time_ns = clock
    try:
        otel_rai.instrument(store=path, hash_key=KEY, service_name=f"svc-{seed}", sensitive_features=["sex"],
                            checkpoint_key=CHECKPOINT_KEY, explain_top_k=2)
        fitted = {}
        for name, n_versions in (("credit", int(rng.integers(1, 4))), ("fraud", int(rng.integers(1, 3)))):
            for v in range(n_versions):
                estimator = (_pipeline(X, (y + v) % 2 if v % 2 else y) if name == "credit" else
                             make_pipeline(ColumnTransformer([("sex", OneHotEncoder(), ["sex"])],
                                                             remainder="passthrough"),
                                           RandomForestClassifier(n_estimators=3, random_state=v)).fit(X, y))
                fitted[(name, f"{v + 1}.0")] = otel_rai.register_model(estimator, name=name, version=f"{v + 1}.0",
                                                                       background=X.iloc[:30])
        count = 0
        for day in range(days):
            clock.now = max(clock.now, start + day * DAY_NS + int(rng.integers(0, DAY_NS // 2)))
            for (name, version), model in fitted.items():
                if rng.random() < 0.3:
                    continue  # this version made no decision that day
                for _ in range(int(rng.integers(1, 4))):
                    rows = int(rng.choice([1, 1, 7, 40]))
                    at = int(rng.integers(0, len(X) - rows))
                    ids = [f"{seed}-{count + i}" for i in range(rows)]
                    count += rows
                    with otel_rai.decisions(ids=ids):
                        (model.predict_proba if rng.random() < 0.5 else model.predict)(X.iloc[at:at + rows])
                    made.setdefault((name, version), []).extend(ids)
                    for i, decision_id in enumerate(ids):
                        if rng.random() < 0.4:
                            otel_rai.record_outcome(decision_id, int(y[at + i]))
                    clock.now += int(rng.integers(1, 3600)) * 10**9
        assert otel_rai.flush(60).complete
    finally:
        otel_rai.uninstrument()
        time.time_ns = real
    return {"X": X, "start": start, "days": days, "made": made}


@pytest.mark.parametrize("seed", [11, 12])
def test_generated_trails_answer_as_the_local_store(capsys, tmp_path, chdb_dir, seed):
    """Over generated trails (models, versions and days drawn at random), every command gives from
    ClickHouse what it gives from the local store: each version's page of each day, decisions by id and by
    input, the report (one version and all of a model's), monitor, the model commands, verify-chain."""
    from otel_rai._time import rfc3339

    home = tmp_path / "home"
    os.environ["OTEL_RAI_HOME"] = str(home)
    try:
        path = home / "audit.db"
        facts = _generated_trail(path, seed)
        url = f"chdb://{chdb_dir}?database=generated_{seed}_{os.urandom(3).hex()}"
        assert cli.main(["export", "--to", "clickhouse", "--url", url, "--store", str(path), "--include", "groups",
                         "--include", "outcomes", "--include", "drift"]) == 0
        trail = {"path": path, "url": url}
        rng = random.Random(seed)
        commands: list[tuple[str, ...]] = [("model", "list", "--format", "json"), ("verify-chain", "--format", "json"),
                                           ("verify-chain", "--format", "json", "--key", KEY)]
        for (name, version), ids in facts["made"].items():
            model = ("--model-name", name, "--model-version", version)
            for day in range(facts["days"]):
                begin = facts["start"] + day * DAY_NS
                commands.append(("query", *model, "--start", rfc3339(begin), "--end", rfc3339(begin + DAY_NS),
                                 "--format", "json", "--limit", "0"))
            commands += [("show", rng.choice(ids), "--format", "json"),
                         ("monitor", *model, "--format", "json"),
                         ("model", "show", name, version, "--format", "json")]
        for name in {name for name, _ in facts["made"]}:
            commands.append(("report", "--model-name", name, "--min-group-size", "1", "--out", "REPORT"))
        rows_file = tmp_path / "rows.json"
        rows_file.write_text(json.dumps([facts["X"].iloc[rng.randrange(len(facts["X"]))].to_dict()
                                         for _ in range(5)]))
        commands.append(("verify", "--input", str(rows_file), "--key", KEY, "--format", "json"))
        for command in commands:
            outcomes = []
            for source in (("--store", str(path)), ("--backend", "clickhouse", "--url", url)):
                out = tmp_path / f"{len(outcomes)}.html"
                code, text, err = run(capsys, *[str(out) if a == "REPORT" else a for a in command], *source)
                if "REPORT" in command:
                    assert code == 0, err
                    text = re.sub(r"<p>Generated by otel-rai .*?</p>", "", out.read_text())
                outcomes.append((code, text))
            assert outcomes[0] == outcomes[1], command
            assert outcomes[0][0] in (0, 3), (command, outcomes[0])  # 3: verify found a row never decided
        from otel_rai.query import catalog

        for q in (Query(), Query(model_name="fraud"), Query(start_ns=facts["start"] + DAY_NS)):
            listed = catalog.versions(q, query.connect("local", str(path)))
            assert catalog.versions(q, chq.connect(url)) == listed, q
        assert len(catalog.versions(Query(), chq.connect(url))) == len(facts["made"])
        del trail
    finally:
        del os.environ["OTEL_RAI_HOME"]


@pytest.mark.parametrize("edit", ["group", "outcome", "group row deleted", "outcome row deleted"])
def test_copied_groups_and_outcomes_are_checked_as_locally(capsys, trail, tmp_path, chdb_dir, edit):
    """An edit of a copied group or outcome (or its row deleted), made in a copy of the store and in
    ClickHouse: verify-chain with the input hash key reports the same problem in both; without the key,
    both count the digests they could not check."""
    import sqlite3

    copy = tmp_path / "audit.db"
    shutil.copy(trail["path"], copy)
    url = f"chdb://{chdb_dir}?database=copied_{os.urandom(3).hex()}"
    assert cli.main(["export", "--to", "clickhouse", "--url", url, "--store", str(copy), "--include", "groups",
                     "--include", "outcomes"]) == 0
    db = client.connect(url)
    decision = sorted(trail["truth"])[5]
    local_sql, clickhouse_sql = {
        "group": ("UPDATE decision_groups SET grp = 'zz' WHERE decision_id = ?",
                  f"ALTER TABLE {db.table(schema.GROUPS)} UPDATE Group = 'zz' WHERE DecisionId = {{d:String}}"),
        "outcome": ("UPDATE outcomes SET y_true = '7' WHERE decision_id = ?",
                    f"ALTER TABLE {db.table(schema.OUTCOMES)} UPDATE YTrue = '7' WHERE DecisionId = {{d:String}}"),
        "group row deleted": ("DELETE FROM decision_groups WHERE decision_id = ?",
                              f"ALTER TABLE {db.table(schema.GROUPS)} DELETE WHERE DecisionId = {{d:String}}"),
        "outcome row deleted": ("DELETE FROM outcomes WHERE decision_id = ?",
                                f"ALTER TABLE {db.table(schema.OUTCOMES)} DELETE WHERE DecisionId = {{d:String}}"),
    }[edit]
    with sqlite3.connect(copy) as conn:
        assert conn.execute(local_sql, (decision,)).rowcount == 1
    db.command(clickhouse_sql.replace("{d:String}", f"'{decision}'") + " SETTINGS mutations_sync = 2")
    reports = []
    for source in (("--store", str(copy)), ("--backend", "clickhouse", "--url", url)):
        code, out, _ = run(capsys, "verify-chain", "--format", "json", "--key", KEY, *source)
        report = json.loads(out)
        reports.append((code, [(p["kind"], p["detail"], p["stream"], p["seq"], p["span_id"])
                               for p in report["problems"]], report["unverified_local_rows"]))
    assert reports[0] == reports[1]
    assert reports[0][0] == 3 and len(reports[0][1]) == 1 and reports[0][2] == 0, reports[0]
    unkeyed = [json.loads(run(capsys, "verify-chain", "--format", "json", *source)[1])["unverified_local_rows"]
               for source in (("--store", str(trail["path"])), ("--backend", "clickhouse", "--url", url))]
    assert unkeyed[0] == unkeyed[1] > 0
