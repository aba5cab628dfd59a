"""The command line as a user meets it every day: replay refuses what is not OTLP JSON, verify matches by
feature name, unusable files are one-line errors naming them, an unknown version lists the versions that
exist, the score column says what it is, help text has no markup, URL errors name the right backend, and
spools survive spelling an endpoint differently (``otel-rai spool``)."""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import KEY
from recorded import record
from servers import OtlpReceiver, attributes, free_port
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import otel_rai
from otel_rai import cli, query, semconv
from otel_rai.cli import formats
from otel_rai.query import Decision
from otel_rai.sinks import destination, provider

ROOT = Path(__file__).resolve().parents[1]


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str) -> str:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("otel-rai: ") and lines[0].count("otel-rai: ") == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    return record(tmp_path_factory.mktemp("everyday") / "audit.db", {"1.4.1": 20, "1.4.2": 5})


# --- replay ---------------------------------------------------------------------------------------


def _not_otlp_files(tmp_path: Path, capsys, rec) -> dict[str, tuple[Path, str | None]]:
    """Files replay must refuse: {case: (file, what the message must say was found)}."""
    made: dict[str, tuple[Path, str | None]] = {}
    for fmt, found in (("jsonl", "otel-rai export --format jsonl"), ("csv", "CSV")):
        path = tmp_path / f"export.{fmt}"
        assert run(capsys, "export", "--store", rec.path, "--format", fmt, "-o", path)[0] == 0
        made[f"export {fmt}"] = (path, found)
    shapes = {
        "empty": (b"", None),
        "blank lines": (b"\n \n\t\n", None),
        "not UTF-8": (b"\xff\xfe\x00\x81binary", "not UTF-8"),
        "a JSON array": (b"[1, 2, 3]\n", "a JSON array"),
        "an object without resourceSpans": (b'{"spans": []}\n', "without resourceSpans"),
        "an empty object": (b"{}\n", "an empty JSON object"),
        "a JSON number": (b"42\n", "a JSON int"),
        "plain text": (b"hello world\n", "not JSON"),
        "OTLP then decisions": (None, "otel-rai export --format jsonl"),
    }
    otlp = tmp_path / "otlp.jsonl"
    assert run(capsys, "export", "--store", rec.path, "--format", "otlp-json", "-o", otlp)[0] == 0
    for case, (data, found) in shapes.items():
        path = tmp_path / f"{case.replace(' ', '_')}.jsonl"
        if data is None:  # a valid line first: refused at the line that is not, before anything is sent
            data = otlp.read_bytes() + made["export jsonl"][0].read_bytes()
        path.write_bytes(data)
        made[case] = (path, found)
    return made


def test_replay_refuses_every_file_that_is_not_otlp_json_and_sends_nothing(capsys, rec, tmp_path, receiver):
    for case, (path, found) in _not_otlp_files(tmp_path, capsys, rec).items():
        code, _, err = run(capsys, "replay", path, "--endpoint", receiver.endpoint)
        line = one_line_error(err)
        assert code == 1, (case, err)
        assert str(path) in line, case
        if found is not None:
            assert found in line and "replay needs OTLP JSON lines (otel-rai export --format otlp-json)" in line, case
        else:
            assert "nothing to replay" in line, case
    assert receiver.received() == []


def test_replay_of_a_decision_export_to_an_unreachable_endpoint_fails(capsys, rec, tmp_path, monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    decisions = tmp_path / "decisions.jsonl"
    assert run(capsys, "export", "--store", rec.path, "-o", decisions)[0] == 0  # the default format
    dead = f"http://127.0.0.1:{free_port()}"
    code, _, err = run(capsys, "replay", decisions, "--endpoint", dead)
    assert code == 1 and "replay needs OTLP JSON" in one_line_error(err)
    otlp = tmp_path / "otlp.jsonl"
    assert run(capsys, "export", "--store", rec.path, "--format", "otlp-json", "-o", otlp)[0] == 0
    for source in (otlp, rec.path):
        code, _, err = run(capsys, "replay", source, "--endpoint", dead)
        assert code == 1 and "did not take the spans (unreachable?)" in one_line_error(err)


def test_replay_sends_to_the_standard_endpoint_variable_and_needs_one(capsys, rec, tmp_path, receiver, monkeypatch):
    otlp = tmp_path / "otlp.jsonl"
    assert run(capsys, "export", "--store", rec.path, "--format", "otlp-json", "-o", otlp)[0] == 0
    code, _, err = run(capsys, "replay", otlp)
    assert code == 2 and "--endpoint URL, or set OTEL_EXPORTER_OTLP_ENDPOINT" in one_line_error(err)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    code, _, err = run(capsys, "replay", otlp)
    assert code == 0 and f"to {receiver.endpoint}" in err
    assert [span.span_id.hex() for _, span in receiver.spans()] == [s.span_id for s in rec.spans()]


# --- verify: objects by feature name ----------------------------------------------------------------


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    """One store with decisions of two pipelines with different columns: (path, {version: frame})."""
    rng = np.random.default_rng(7)
    n = 6
    credit = pd.DataFrame({"income": rng.lognormal(10, 0.5, n).round(-2), "region": rng.choice(["n", "s"], n),
                           "children": rng.integers(0, 4, n)})
    fraud = pd.DataFrame({"amount": rng.uniform(1, 900, n).round(2), "country": rng.choice(["fr", "de"], n),
                          "hour": rng.integers(0, 24, n), "card_present": rng.integers(0, 2, n).astype(bool)})
    path = tmp_path_factory.mktemp("verify") / "audit.db"
    otel_rai.instrument(store=path, hash_key=KEY)
    try:
        for name, frame, numeric, text in (("credit", credit, ["income", "children"], ["region"]),
                                           ("fraud", fraud, ["amount", "hour", "card_present"], ["country"])):
            y = np.arange(n) % 2
            pipe = make_pipeline(ColumnTransformer([("n", StandardScaler(), numeric), ("c", OneHotEncoder(), text)]),
                                 LogisticRegression()).fit(frame, y)
            otel_rai.register_model(pipe, name=name, version="1")
            with otel_rai.decisions(ids=[f"{name}-{i}" for i in range(n)]):
                pipe.predict(frame)
        assert otel_rai.flush(30).complete
    finally:
        otel_rai.uninstrument()
    return path, {"credit": credit, "fraud": fraud}


def _cells(row: pd.Series) -> dict:
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}


def test_verify_matches_json_objects_by_feature_name_in_every_key_order(capsys, two_models, tmp_path):
    path, frames = two_models
    rows, expected = [], []
    for name, frame in frames.items():
        for i, (_, row) in enumerate(frame.iterrows()):
            cells = _cells(row)
            orders = list(itertools.permutations(cells))
            order = orders[(7 * i + 3) % len(orders)]  # a different key order for each row
            shuffled = {k: cells[k] for k in order}
            if i % 3 == 0:
                shuffled["applicant_name"] = "not a model column"  # ignored: no model has it
            rows.append(shuffled)
            expected.append([f"{name}-{i}"])
    rows.append({"income": 1.0, "region": "x", "children": 99})  # nobody's input
    expected.append([])
    for suffix, text in ((".json", json.dumps(rows)), (".jsonl", "\n".join(map(json.dumps, rows)))):
        source = tmp_path / f"rows{suffix}"
        source.write_text(text)
        code, out, err = run(capsys, "verify", "--input", source, "--key", KEY, "--store", path, "--format", "json")
        found = [[d["decision_id"] for d in json.loads(line)["decisions"]] for line in out.splitlines()]
        assert found == expected
        assert code == 3 and f"{len(rows) - 1} of {len(rows)} input rows match a decision" in err


def test_verify_matches_csv_columns_in_any_order(capsys, two_models, tmp_path):
    path, frames = two_models
    frame = frames["credit"]
    for order in itertools.permutations(frame.columns):
        source = tmp_path / "rows.csv"
        frame[list(order)].to_csv(source, index=False)
        code, out, err = run(capsys, "verify", "--input", source, "--key", KEY, "--store", path)
        assert code == 0, (order, err)
        assert [line.split()[2] for line in out.splitlines()[1:]] == [f"credit-{i}" for i in range(len(frame))]


def test_verify_help_describes_only_options_that_exist(capsys):
    code, out, _ = run(capsys, "verify", "--help")
    assert code == 0 and "by feature name" in out
    parser = _subparsers(cli.build_parser())["verify"]
    known = {option for action in parser._actions for option in action.option_strings}
    assert set(re.findall(r"--[a-z][a-z-]+", out)) <= known | {"--help"}


# --- unusable input files ---------------------------------------------------------------------------


BAD_CONTENTS = {"empty": b"", "blank": b"  \n\n", "not UTF-8": b"\xff\xfe\x00\x9c\x81",
                "latin-1": "né".encode("latin-1")}


def test_every_file_a_command_reads_fails_in_one_line_naming_it(capsys, rec, tmp_path):
    store = ["--store", rec.path]
    commands = {
        "verify --input (.json)": lambda f: ["verify", "--input", f, "--key", KEY, *store],
        "verify --input (.csv)": lambda f: ["verify", "--input", f, "--key", KEY, *store],
        "verify --input (.jsonl)": lambda f: ["verify", "--input", f, "--key", KEY, *store],
        "verify --key-file": lambda f: ["verify", "--input", tmp_path / "ok.json", "--key-file", f, *store],
        "verify-chain --checkpoint-key-file": lambda f: ["verify-chain", *store, "--checkpoint-key-file", f],
        "verify-chain --public-key": lambda f: ["verify-chain", *store, "--public-key", f],
        "replay": lambda f: ["replay", f, "--endpoint", "http://127.0.0.1:9"],
        "report --records": lambda f: ["report", "--model-version", "1.4.1", "--records", f, "--out",
                                       tmp_path / "r.html"],
    }
    suffixes = {"(.csv)": ".csv", "(.jsonl)": ".jsonl"}
    (tmp_path / "ok.json").write_text(json.dumps([[0.0] * 6]))
    for (command, argv), (content, data) in itertools.product(commands.items(), BAD_CONTENTS.items()):
        suffix = next((s for k, s in suffixes.items() if k in command), ".json")
        bad = tmp_path / f"bad {content}{suffix}".replace(" ", "_")
        bad.write_bytes(data)
        code, _, err = run(capsys, *argv(bad))
        line = one_line_error(err)
        assert code != 0, (command, content, err)
        assert str(bad) in line, (command, content, line)
        assert "codec" not in line and "position" not in line, (command, content, line)
        bad.unlink()
    for command, argv in commands.items():  # a directory, and a file that is not there
        for path in (tmp_path, tmp_path / "missing.json"):
            code, _, err = run(capsys, *argv(path))
            assert code != 0 and str(path) in one_line_error(err), (command, path, err)


# --- an unknown model version -----------------------------------------------------------------------


def test_an_unknown_model_version_lists_the_versions_there(capsys, rec, tmp_path):
    listed = "versions there: credit 1.4.1, credit 1.4.2"
    (tmp_path / "rows.json").write_text(json.dumps([[0.0] * 6]))
    for argv in (["query"], ["query", "--format", "json"], ["query", "--format", "csv"], ["show", "1.4.1-0"],
                 ["export", "-o", tmp_path / "x.jsonl"], ["report", "--out", tmp_path / "r.html"],
                 ["verify", "--input", tmp_path / "rows.json", "--key", KEY]):
        code, out, err = run(capsys, *argv, "--model-version", "9.9", "--store", rec.path)
        assert listed in err and "'9.9'" in err, (argv, err)
        assert "Traceback" not in err
    code, _, err = run(capsys, "query", "--model-version", "1.4.1", "--model-name", "fraud", "--store", rec.path)
    assert code == 0 and "no decisions of model 'fraud' version '1.4.1' there; " + listed in err
    code, out, err = run(capsys, "query", "--model-version", "1.4.2", "--store", rec.path)
    assert code == 0 and "versions there" not in err and len(out.splitlines()) == 6


# --- the score column ---------------------------------------------------------------------------------


def test_the_score_column_is_named_for_the_score_it_shows(capsys, tmp_path):
    X = np.random.default_rng(3).normal(size=(40, 3))
    y = (X[:, 0] > 0).astype(int)
    model = LogisticRegression().fit(X, y)
    path = tmp_path / "audit.db"
    otel_rai.instrument(store=path, hash_key=KEY)
    try:
        otel_rai.register_model(model, name="m", version="1")
        expected = {}
        for method in ("predict_proba", "predict_log_proba", "decision_function", "predict"):
            ids = [f"{method}-{i}" for i in range(4)]
            with otel_rai.decisions(ids=ids):
                out = getattr(model, method)(X[:4])
            if method in ("predict_proba", "predict_log_proba"):  # the predicted class's own score
                expected.update(zip(ids, out.max(axis=1)))
            elif method == "decision_function":  # binary: the one value, whatever the label
                expected.update(zip(ids, out))
        assert otel_rai.flush(30).complete
    finally:
        otel_rai.uninstrument()
    headers = {}
    for method, header in (("predict_proba", "P(OUTPUT)"), ("predict_log_proba", "LOG P(OUTPUT)"),
                           ("decision_function", "DECISION VALUE")):
        code, out, _ = run(capsys, "query", "--store", path, "--decision-id", f"{method}-0", "--decision-id",
                           f"{method}-1", "--decision-id", f"{method}-2", "--decision-id", f"{method}-3")
        head, *rows = out.splitlines()
        headers[method] = head
        assert code == 0 and header in head and "SCORE " not in head.replace("SCORE OF", "")
        start = head.index(header)
        for row in rows:
            decision_id = row.split()[2]
            assert float(row[start:].split()[0]) == pytest.approx(expected[decision_id], abs=5e-5)
    code, out, _ = run(capsys, "query", "--store", path)
    assert formats.MIXED_SCORE_COLUMN in out.splitlines()[0]
    decision = Decision("d", 0, "m", "1", None, "predict", None, 1, "0" * 32, "0" * 16, 0)
    assert formats.output_score(decision) is None


def test_the_table_keeps_each_decisions_cells_not_the_decision():
    """The table's widths need every row before the first is written: it holds each decision's cells (a few
    short strings), not the decision with its span's attributes, however many rows."""
    import gc
    import weakref

    refs: list = []
    alive: list = []

    def decisions():
        for i in range(500):
            d = Decision(f"d-{i}", i, "m", "1", None, "predict_proba", "h" * 32, i % 2, "0" * 32, "0" * 16, 0,
                         values={semconv.OUTPUT_SCORES_PREFIX + "1": 0.25}, attributes={"big": ["x" * 100] * 20})
            refs.append(weakref.ref(d))
            yield d
        del d
        gc.collect()
        alive.extend(r for r in refs if r() is not None)

    out = io.StringIO()
    assert formats.write_table(decisions(), out) == 500
    assert len(refs) == 500 and len(alive) <= 1  # the last one, still the writer's loop variable
    assert len(out.getvalue().splitlines()) == 501


# --- help text and report definitions: no markup ------------------------------------------------------


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[name] = sub
                found.update({f"{name} {k}": v for k, v in _subparsers(sub).items()})
    return found


def test_no_help_text_has_markup(capsys):
    parser = cli.build_parser()
    pages = {"": parser.format_help(), **{name: p.format_help() for name, p in _subparsers(parser).items()}}
    assert {"query", "show", "verify", "replay", "report", "spool status", "spool export", "stack up"} <= pages.keys()
    for name, page in pages.items():
        assert "`" not in page, (name, [line for line in page.splitlines() if "`" in line])
        assert not re.search(r":(class|func|meth|attr):", page), name


def test_report_definitions_have_no_markup(tmp_path):
    from otel_rai.report import html
    from otel_rai.report.figures import DecisionRecord

    records = [DecisionRecord(f"d{i}", "m", "1", 1.7e9 + i, i % 2, {"sex": "fm"[i % 2]}, i % 2) for i in range(40)]
    page = html.render(records)
    text = re.sub(r"<[^>]+>", " ", page)
    assert "``" not in text and "`" not in text
    assert "<code>max_a P[h(X)=1 | A=a] − min_a P[h(X)=1 | A=a]</code>" in page


# --- backend URLs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["jaeger", "tempo", "phoenix"])
@pytest.mark.parametrize("url", ["notaurl", "ftp://host", "http://", "localhost:9999", "http://h:99999"])
def test_a_bad_url_shows_the_backends_own_default(capsys, backend, url):
    module = __import__(f"otel_rai.query.{backend}", fromlist=["DEFAULT_URL"])
    code, _, err = run(capsys, "query", "--backend", backend, "--url", url, "--since", "1h")
    line = one_line_error(err)
    assert code == 2 and backend in line, line
    others = {"jaeger": "16686", "tempo": "3200", "phoenix": "6006"}
    if "not an http(s) URL" in line:
        assert module.DEFAULT_URL in line
        assert not any(port in line for name, port in others.items() if name != backend), line


# --- spools: one destination, however it is spelled ---------------------------------------------------


SAME = [
    ("http://localhost:4317", "http://127.0.0.1:4317", "http://127.0.0.2:4317", "http://[::1]:4317",
     "http://LOCALHOST:4317/", "HTTP://Localhost:4317", "localhost:4317", "http://localhost.:4317",
     "http://app.localhost:4317"),
    ("https://collector.example:4317", "HTTPS://Collector.Example:4317/", "https://collector.example:4317/x"),
]
SAME_HTTP = [("http://collector:4318", "http://collector:4318/v1/traces", "http://collector:4318/v1/traces/"),
             ("http://collector", "http://collector:80", "http://collector:80/"),
             ("https://collector", "https://collector:443/v1/traces")]
DIFFERENT = ["http://localhost:4317", "http://localhost:4318", "https://localhost:4317", "http://collector:4317",
             "http://10.0.0.1:4317", "http://localhost"]


def test_every_spelling_of_a_destination_shares_one_spool(monkeypatch, tmp_path):
    monkeypatch.setenv("OTEL_RAI_HOME", str(tmp_path))
    for spellings in SAME:
        assert len({provider.spool_path(None, e, None) for e in spellings}) == 1, spellings
        assert provider.spool_path(None, spellings[0], None) == provider.spool_path(None, spellings[0], "grpc")
    for spellings in SAME_HTTP:
        assert len({provider.spool_path(None, e, "http/protobuf") for e in spellings}) == 1, spellings
    paths = {provider.spool_path(None, e, None) for e in DIFFERENT}
    assert len(paths) == len(DIFFERENT)
    assert provider.spool_path(None, "http://localhost:4317", "http/protobuf") not in paths
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")  # the variable, spelled otherwise
    assert provider.spool_path(None, None, None) == provider.spool_path(None, "http://localhost:4317", None)
    assert destination.identity("http://[::1]:4317") == "grpc http://loopback:4317"


SPOOLING_APP = """
import sys
import numpy as np
from sklearn.linear_model import LogisticRegression
import otel_rai
otel_rai.instrument(endpoint=sys.argv[1], hash_key=sys.argv[2], service_name="spooled")
X = np.arange(12.0).reshape(6, 2)
model = otel_rai.register_model(LogisticRegression().fit(X, [0, 1] * 3), name="m", version="1")
with otel_rai.decisions(ids=[f"{sys.argv[3]}-{i}" for i in range(6)]):
    model.predict(X)
print(otel_rai.flush(float(sys.argv[4])).complete)
"""


def _spooling_process(endpoint: str, prefix: str, flush_s: float, home: Path) -> str:
    env = {**os.environ, "OTEL_RAI_HOME": str(home), "PYTHONPATH": str(ROOT), "OTEL_EXPORTER_OTLP_TIMEOUT": "1"}
    done = subprocess.run([sys.executable, "-c", SPOOLING_APP, endpoint, KEY, prefix, str(flush_s)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _received_ids(receiver: OtlpReceiver) -> list[str]:
    return [i for _, span in receiver.spans() for i in attributes(span).get(semconv.DECISION_IDS, ())]


def test_a_process_exports_what_another_spooled_under_another_spelling(tmp_path):
    port = free_port()
    # Nothing listens yet: the first process leaves its decisions in the spool.
    assert _spooling_process(f"http://localhost:{port}", "first", 0.5, tmp_path) == "False"
    receiver = OtlpReceiver(port).start()
    try:
        assert _spooling_process(f"http://127.0.0.1:{port}/", "second", 30, tmp_path) == "True"
        ids = _received_ids(receiver)
        assert sorted(ids) == sorted([f"first-{i}" for i in range(6)] + [f"second-{i}" for i in range(6)])
    finally:
        receiver.stop()
    assert len(list(tmp_path.glob("spool-*.db"))) == 1


def test_spool_status_lists_what_is_stuck_and_spool_export_sends_it(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("OTEL_RAI_HOME", str(tmp_path))
    dead = f"http://localhost:{free_port()}"
    assert _spooling_process(dead, "stuck", 0.5, tmp_path) == "False"
    code, out, _ = run(capsys, "spool", "status", "--format", "json")
    (status,) = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and status["endpoint"] == dead and status["exporting"] is False
    assert status["destination"] == destination.identity(dead) and status["decisions"] == 6 and status["spans"] >= 1
    code, out, _ = run(capsys, "spool", "status")
    assert code == 0 and "waiting" in out and dead in out
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    code, _, err = run(capsys, "spool", "export")  # its own endpoint is still down: nothing is lost
    assert code == 1 and "did not take the spans" in one_line_error(err) and "stay in the spool" in err
    receiver = OtlpReceiver().start()
    try:
        code, _, err = run(capsys, "spool", "export", "--endpoint", receiver.endpoint)
        assert code == 0, err
        assert sorted(_received_ids(receiver)) == sorted(f"stuck-{i}" for i in range(6))
    finally:
        receiver.stop()
    code, out, _ = run(capsys, "spool", "status", "--format", "json")
    assert json.loads(out)["spans"] == 0
    code, _, err = run(capsys, "spool", "export")
    assert code == 0 and "exported 0 spans" in err


def test_spool_commands_with_no_spool_and_a_foreign_file(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("OTEL_RAI_HOME", str(tmp_path))
    code, _, err = run(capsys, "spool", "status")
    assert code == 0 and "no spool files" in err
    (tmp_path / "spool-00000000.db").write_bytes(b"not a database at all, just text")
    code, _, err = run(capsys, "spool", "status")
    assert code == 1 and "spool-00000000.db" in one_line_error(err)


def test_find_decisions_still_reads_a_store(rec):
    assert len(list(query.find_decisions(url=str(rec.path)))) == 25
