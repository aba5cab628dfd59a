"""``otel-rai``: query, show, verify, export, replay; one-line errors and exit statuses; extensions."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import stat
import sys
import types

import numpy as np
import pandas as pd
import pytest
from conftest import KEY
from recorded import record
from servers import attributes, free_port
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import otel_rai
from otel_rai import cli, semconv
from otel_rai.audit.hashing import HashKey, hash_rows
from otel_rai.cli import show

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$")


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    return record(tmp_path_factory.mktemp("cli") / "audit.db", {"1.4.1": 500, "1.4.2": 7})


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str) -> None:
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


# --- query ---------------------------------------------------------------------------------------


def test_json_lines_one_per_decision_of_a_500_row_batch(capsys, rec):
    code, out, err = run(capsys, "query", "--model-version", "1.4.1", "--store", str(rec.path), "--format", "json")
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [d["decision_id"] for d in lines] == rec.ids["1.4.1"]
    for d in lines:
        assert {"decision_id", "model_name", "model_version", "input_hash", "output", "timestamp", "trace_id",
                "span_id"} <= d.keys()
        assert RFC3339.match(d["timestamp"]) and d["output"] == rec.outputs[d["decision_id"]]
        assert d["input_hash"] == otel_rai.hash_input(rec.inputs[d["decision_id"]], KEY)


def test_table_and_csv(capsys, rec):
    code, out, _ = run(capsys, "query", "--model-version", "1.4.2", "--model-name", "credit",
                       "--service", "credit-scoring", "--store", str(rec.path))
    header, *rows = out.splitlines()
    assert code == 0 and header.split()[:3] == ["TIME", "(UTC)", "DECISION"]
    assert [r.split()[2] for r in rows] == rec.ids["1.4.2"]
    assert all(len(r) <= 160 for r in rows)
    code, out, _ = run(capsys, "query", "--model-version", "1.4.2", "--store", str(rec.path), "--format", "csv")
    table = list(csv.DictReader(io.StringIO(out)))
    assert [r["decision_id"] for r in table] == rec.ids["1.4.2"]
    assert set(json.loads(table[0]["scores"])) == {"0", "1"}


def test_filters_by_time_id_and_hash(capsys, rec):
    spans = rec.spans()
    start = next(s.start_ns for s in spans if s.name == "predict_proba credit"  # the 1.4.2 call
                 and s.attributes[semconv.MODEL_VERSION] == "1.4.2")
    code, out, _ = run(capsys, "query", "--store", str(rec.path), "--format", "json",
                       "--start", f"{start // 10**9}", "--since", "1h")
    assert code == 2  # --since and --start exclude each other
    from otel_rai._time import rfc3339

    code, out, _ = run(capsys, "query", "--store", str(rec.path), "--format", "json", "--start", rfc3339(start))
    assert [json.loads(x)["decision_id"] for x in out.splitlines()] == rec.ids["1.4.2"]
    wanted = rec.ids["1.4.1"][42]
    code, out, _ = run(capsys, "query", "--store", str(rec.path), "--format", "json",
                       "--decision-id", wanted, "--decision-id", rec.ids["1.4.2"][0])
    assert [json.loads(x)["decision_id"] for x in out.splitlines()] == [wanted, rec.ids["1.4.2"][0]]
    h = otel_rai.hash_input(rec.inputs[wanted], KEY)
    code, out, _ = run(capsys, "query", "--store", str(rec.path), "--format", "json", "--input-hash", h,
                       "--model-version", "1.4.1")
    assert wanted in [json.loads(x)["decision_id"] for x in out.splitlines()]


def test_limit_says_when_there_is_more(capsys, rec):
    code, out, err = run(capsys, "query", "--store", str(rec.path), "--limit", "10", "--format", "json")
    assert code == 0 and len(out.splitlines()) == 10
    assert "showing the first 10 decisions" in err
    code, out, err = run(capsys, "query", "--store", str(rec.path), "--limit", "0", "--format", "json")
    assert len(out.splitlines()) == 507 and err == ""


def test_an_unknown_version_is_an_empty_result(capsys, rec):
    code, out, err = run(capsys, "query", "--model-version", "9.9.9", "--store", str(rec.path))
    assert code == 0 and out == "" and "no decisions match" in err


@pytest.mark.parametrize("args, message", [
    (["--start", "yesterday"], "cannot read 'yesterday' as a time"),
    (["--since", "5 parsecs"], "cannot read '5 parsecs' as a duration"),
    (["--start", "2026-11-24", "--end", "2026-11-23"], "must be before the end"),
    (["--limit", "-3"], "not a whole number"),
    (["--backend", "jaeger", "--url", "localhost:16686"], "not an http(s) URL"),
    (["--backend", "jaeger", "--store", "x.db"], "--store is for the local backend"),
    (["--backend", "nosuch"], "invalid choice"),
])
def test_usage_errors_are_one_line_and_exit_2(capsys, args, message):
    code, out, err = run(capsys, "query", *args)
    assert code == 2 and message in err and out == ""
    one_line_error(err)


def test_runtime_errors_are_one_line_and_exit_1(capsys, tmp_path):
    notes = tmp_path / "notes.db"
    notes.write_text("hello")
    for args, message in [
        (["--store", str(notes)], "is not an otel-rai audit store (not an SQLite database)"),
        (["--store", str(tmp_path / "none.db")], "no audit store at"),
        (["--backend", "jaeger", "--url", f"http://127.0.0.1:{free_port()}"], "cannot reach jaeger"),
    ]:
        code, out, err = run(capsys, "query", *args)
        assert code == 1 and message in err, err
        assert "searching jaeger over the last 7 days" in err or "jaeger" not in args
        assert "Traceback" not in err


def test_an_unexpected_failure_is_one_line_too(capsys, rec, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("otel_rai.query.decisions", broken)
    code, _, err = run(capsys, "query", "--store", str(rec.path))
    assert code == 1 and "internal error: RuntimeError: disk on fire (run with --debug" in err
    one_line_error(err)


# --- show ----------------------------------------------------------------------------------------


def test_show_everything_about_one_decision(capsys, rec):
    wanted = rec.ids["1.4.1"][3]
    code, out, _ = run(capsys, "show", wanted, "--store", str(rec.path))
    assert code == 0
    fields = {line[:12].strip(): line[13:] for line in out.splitlines() if line[:1].isalpha()}
    assert fields["decision"] == wanted
    assert fields["model"] == "credit 1.4.1  (sklearn.linear_model._logistic.LogisticRegression)"
    assert fields["output"] == str(rec.outputs[wanted])
    assert fields["input hash"].startswith(otel_rai.hash_input(rec.inputs[wanted], KEY) + "  (key id ")
    assert "scores" in fields and "row 3 of the call" in out
    code, out, _ = run(capsys, "show", wanted, "--store", str(rec.path), "--format", "json")
    (full,) = [json.loads(line) for line in out.splitlines()]
    assert full["attributes"][semconv.BATCH_SIZE] == 500 and full["row"] == 3
    code, out, err = run(capsys, "show", "A-nope", "--store", str(rec.path))
    assert code == 1 and "no decision 'A-nope'" in err


def test_a_command_module_adds_a_subcommand_and_show_takes_its_sections(capsys, rec, monkeypatch):
    module = types.ModuleType("otel_rai.cli.hello")

    def add_parser(subparsers):
        p = subparsers.add_parser("hello", help="say hello")
        p.add_argument("name")
        p.set_defaults(func=lambda args: print(f"hello {args.name}") or 0)

    module.add_parser = add_parser
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(cli, "COMMANDS", (*cli.COMMANDS, "hello"))
    monkeypatch.setattr(show, "SECTIONS", (lambda d: f"explanation\n  why {d.decision_id}: because",))
    assert run(capsys, "hello", "auditor")[:2] == (0, "hello auditor\n")
    code, out, _ = run(capsys, "show", rec.ids["1.4.2"][0], "--store", str(rec.path))
    assert out.rstrip().endswith(f"explanation\n  why {rec.ids['1.4.2'][0]}: because")


# --- verify --------------------------------------------------------------------------------------


@pytest.fixture
def applicants(tmp_path):
    """Decisions of a DataFrame pipeline with number, string and integer columns."""
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"income": rng.lognormal(10, 0.5, 40).round(-2), "region": rng.choice(["n", "s"], 40),
                          "children": rng.integers(0, 4, 40)})
    y = (frame.income > frame.income.median()).astype(int)
    pipe = make_pipeline(ColumnTransformer([("n", StandardScaler(), ["income", "children"]),
                                            ("c", OneHotEncoder(), ["region"])]), LogisticRegression()).fit(frame, y)
    path = tmp_path / "audit.db"
    otel_rai.instrument(store=path, hash_key=KEY)
    otel_rai.register_model(pipe, name="credit", version="7")
    with otel_rai.decisions(ids=[f"A-{i}" for i in range(5)]):
        pipe.predict(frame.head(5))
    otel_rai.uninstrument()
    return path, frame.head(5)


def test_verify_json_objects_in_the_models_column_order(capsys, applicants, tmp_path):
    path, frame = applicants
    rows = [{"children": int(r.children), "region": r.region, "income": float(r.income)} for r in frame.itertuples()]
    rows.append({"children": 9, "region": "x", "income": 1.0})  # nobody's input
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    code, out, err = run(capsys, "verify", "--input", str(tmp_path / "rows.json"), "--key", KEY,
                         "--model-version", "7", "--store", str(path), "--format", "json")
    found = [json.loads(line) for line in out.splitlines()]
    assert [[d["decision_id"] for d in m["decisions"]] for m in found] == [[f"A-{i}"] for i in range(5)] + [[]]
    assert code == 3 and "5 of 6 input rows match a decision" in err


def test_verify_csv_types_cells_like_pandas(capsys, applicants, tmp_path, monkeypatch):
    path, frame = applicants
    frame.to_csv(tmp_path / "rows.csv", index=False)
    monkeypatch.setenv("OTEL_RAI_HASH_KEY", KEY)
    assert hash_rows(pd.read_csv(tmp_path / "rows.csv"), HashKey.from_material(KEY)) == hash_rows(
        frame, HashKey.from_material(KEY))  # the oracle: pandas reads back what the model saw
    code, out, err = run(capsys, "verify", "--input", str(tmp_path / "rows.csv"), "--store", str(path))
    assert code == 0 and "5 of 5 input rows match a decision" in err
    assert [line.split()[2] for line in out.splitlines()[1:]] == [f"A-{i}" for i in range(5)]


def test_verify_needs_a_key_and_never_invents_one(capsys, applicants, tmp_path):
    path, frame = applicants
    frame.to_csv(tmp_path / "rows.csv", index=False)
    code, _, err = run(capsys, "verify", "--input", str(tmp_path / "rows.csv"), "--store", str(path))
    assert code == 1 and "no hash key: give --key or --key-file" in err
    assert not (tmp_path / "otel-rai-home" / "hash.key").exists()
    code, _, err = run(capsys, "verify", "--input", str(tmp_path / "rows.csv"), "--store", str(path),
                       "--key", "another-key-0123456789abcdef")
    assert code == 3 and "0 of 5 input rows" in err and "another-key" not in err
    (tmp_path / "rows.txt").write_text("x")
    code, _, err = run(capsys, "verify", "--input", str(tmp_path / "rows.txt"), "--key", KEY, "--store", str(path))
    assert code == 1 and "give a .json, .jsonl or .csv file" in err


# --- export and replay ---------------------------------------------------------------------------


def test_export_jsonl_csv_and_otlp_json_with_a_progress_bar(capsys, rec, tmp_path):
    for fmt, name in (("jsonl", "a.jsonl"), ("csv", "a.csv"), ("otlp-json", "a.otlp.jsonl")):
        target = tmp_path / name
        code, out, err = run(capsys, "export", "--store", str(rec.path), "--format", fmt, "-o", str(target),
                             "--progress")
        assert code == 0 and out == ""
        assert "100%  507/507 decisions" in err and "exported 507 decisions" in err
        assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert len((tmp_path / "a.jsonl").read_text().splitlines()) == 507
    assert len(list(csv.DictReader(open(tmp_path / "a.csv")))) == 507
    lines = [json.loads(line) for line in (tmp_path / "a.otlp.jsonl").read_text().splitlines()]
    span_ids = [s["spanId"] for line in lines for rs in line["resourceSpans"] for ss in rs["scopeSpans"]
                for s in ss["spans"]]
    assert span_ids == [s.span_id for s in rec.spans()]


def test_replay_an_otlp_json_export_and_a_store_into_a_receiver(capsys, rec, tmp_path, receiver):
    target = tmp_path / "audit.otlp.jsonl"
    assert run(capsys, "export", "--store", str(rec.path), "--format", "otlp-json", "-o", str(target))[0] == 0
    for source in (target, rec.path):
        receiver.requests.clear()
        code, _, err = run(capsys, "replay", str(source), "--endpoint", receiver.endpoint)
        # two decision spans, the record of each version's model, and the closing checkpoint
        assert code == 0 and "replayed 5 spans" in err
        got = receiver.spans()
        assert [span.span_id.hex() for _, span in got] == [s.span_id for s in rec.spans()]
        assert [i for _, span in got for i in attributes(span).get(semconv.DECISION_IDS, ())] == (
            rec.ids["1.4.1"] + rec.ids["1.4.2"])
        assert {resource["service.name"] for resource, _ in got} == {"credit-scoring"}


def test_replay_errors(capsys, rec, tmp_path, monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    code, _, err = run(capsys, "replay", str(rec.path), "--endpoint", f"http://127.0.0.1:{free_port()}")
    assert code == 1 and "did not take the spans (unreachable?); 0 spans were replayed" in err
    one_line_error(err)
    code, _, err = run(capsys, "replay", str(rec.path), "--endpoint", "127.0.0.1:4317")
    assert code == 2 and "needs a scheme" in err
    (tmp_path / "bad.jsonl").write_text('{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": 1}]}]}]}\n')
    code, _, err = run(capsys, "replay", str(tmp_path / "bad.jsonl"), "--endpoint", "http://127.0.0.1:1")
    assert code == 1 and "bad.jsonl, line 1: not OTLP JSON" in err
    one_line_error(err)


def test_the_console_script_and_python_dash_m(tmp_path):
    import subprocess
    from pathlib import Path

    root = Path(__file__).parent.parent
    assert '[project.scripts]\notel-rai = "otel_rai.cli:main"' in (root / "pyproject.toml").read_text()
    env = {**os.environ, "PYTHONPATH": str(root)}
    result = subprocess.run([sys.executable, "-m", "otel_rai", "--help"], env=env, capture_output=True, text=True)
    assert result.returncode == 0
    assert all(c in result.stdout for c in ("query", "show", "verify", "export", "replay"))
