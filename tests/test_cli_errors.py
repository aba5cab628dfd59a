"""One error style everywhere: every failure of ``otel-rai`` is one line on stderr that starts with
``otel-rai: `` once, names the offending value or file, and exits non-zero without a traceback; the
library's own errors carry the same prefix, once."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
from conftest import KEY
from recorded import record
from servers import free_port
from sklearn.linear_model import LogisticRegression

import otel_rai
from otel_rai import cli
from otel_rai.errors import PREFIX
from otel_rai.query import find_decisions

DOUBLED = PREFIX + PREFIX.strip()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A real store, and every kind of file that is not what a command wants."""
    d = tmp_path_factory.mktemp("cli-errors")
    rec = record(d / "audit.db", {"1.0": 3})
    (d / "notes.db").write_text("hello, not a database")
    (d / "empty.db").write_bytes(b"")
    other = sqlite3.connect(d / "other.db")
    other.execute("CREATE TABLE t (x)")
    other.commit()
    other.close()
    (d / "a-directory").mkdir()
    (d / "rows.txt").write_text("age,income\n1,2\n")
    (d / "broken.json").write_text("{not json")
    (d / "ragged.csv").write_text("age,income\n1,2,3\n")
    (d / "bad.jsonl").write_text('{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": 1}]}]}]}\n')
    (d / "records.jsonl").write_text("[1, 2\n")
    (d / "empty-key").write_text("\n")
    return {"store": str(rec.path), "dir": d, "missing": str(d / "no-such-file")}


def _cases(f: dict) -> list[tuple[str, list[str], str]]:
    """(what, argv, text the message must contain: the offending value or file)."""
    store, d, missing = f["store"], f["dir"], f["missing"]
    closed = free_port()
    cases = []
    # a store that is not one, under every command that reads one
    for bad in ("notes.db", "empty.db", "other.db", "a-directory", "no-such.db"):
        path = str(d / bad)
        for command in (["query"], ["show", "A-1"], ["export"], ["verify-chain"],
                        ["report", "--model-version", "1", "--out", str(d / "r.html")]):
            cases.append((f"store {bad} / {command[0]}", [*command, "--store", path], bad))
    # a URL that is not one, or where nothing answers
    for backend in ("jaeger", "tempo", "phoenix", "clickhouse"):
        for url in ("localhost:16686", "ftp://example.org", "http://", "http://127.0.0.1:99999"):
            cases.append((f"url {url} / {backend}", ["query", "--backend", backend, "--url", url], url))
        cases.append((f"nothing at the url / {backend}",
                      ["query", "--backend", backend, "--url", f"http://127.0.0.1:{closed}", "--since", "1h"],
                      f"127.0.0.1:{closed}"))
    # durations and times
    for since in ("5 parsecs", "1x", "-3h", "h", "24 h", "7days"):
        for command in ("query", "export", "verify-chain"):
            cases.append((f"since {since!r} / {command}", [command, "--store", store, f"--since={since}"], since))
    for start in ("yesterday", "2026-13-01", "noon"):
        cases.append((f"start {start!r}", ["query", "--store", store, "--start", start], start))
    cases.append(("start after end", ["query", "--store", store, "--start", "2026-11-24", "--end", "2026-11-23"],
                  "2026-11-24"))
    # options that do not exist or do not go together
    for argv, text in ((["query", "--backend", "nosuch"], "nosuch"),
                       (["export", "--backend", "elastic"], "elastic"),
                       (["query", "--frobnicate"], "--frobnicate"),
                       (["nosuch-command"], "nosuch-command"),
                       (["query", "--limit", "-3"], "-3"),
                       (["query", "--backend", "jaeger", "--store", store], "--store"),
                       (["export", "--format", "parquet"], "parquet"),
                       (["replay", store, "--endpoint", "127.0.0.1:4317"], "127.0.0.1:4317"),
                       (["replay", store, "--endpoint", "http://127.0.0.1:1", "--headers", "no-equals"], "headers"),
                       (["report", "--store", store, "--out", str(d / "r.html")], "--model-version"),
                       (["query", "--backend", "clickhouse", "--url", "chdb://"], "chdb://"),
                       (["query", "--backend", "clickhouse", "--url", "http://h/no-such-db"], "no-such-db"),
                       (["export", "--to", "clickhouse", "--backend", "jaeger"], "--store"),
                       (["export", "--to", "clickhouse", "--store", store, "--output", "x"], "--output"),
                       (["export", "--to", "clickhouse", "--url", "chdb://", "--store", store], "chdb://")):
        cases.append((" ".join(argv[:3]), argv, text))
    # key files
    cases.append(("missing --key-file", ["verify", "--store", store, "--input", str(d / "rows.txt"),
                                         "--key-file", missing], "no-such-file"))
    cases.append(("empty --key-file", ["verify", "--store", store, "--input", str(d / "rows.txt"),
                                       "--key-file", str(d / "empty-key")], "empty-key"))
    cases.append(("missing --checkpoint-key-file", ["verify-chain", "--store", store,
                                                    "--checkpoint-key-file", missing], "no-such-file"))
    cases.append(("missing --public-key", ["verify-chain", "--store", store, "--public-key", missing],
                  "no-such-file"))
    # input files that cannot be read as what they should be
    for name in ("no-such-file.csv", "rows.txt", "broken.json", "ragged.csv", "a-directory"):
        cases.append((f"verify --input {name}", ["verify", "--store", store, "--key", KEY, "--input", str(d / name)],
                      name))
    for name in ("no-such-file", "bad.jsonl", "a-directory"):
        cases.append((f"replay {name}", ["replay", str(d / name), "--endpoint", "http://127.0.0.1:1"], name))
    for name in ("no-such-file", "records.jsonl"):
        cases.append((f"report --records {name}", ["report", "--model-version", "1", "--records", str(d / name),
                                                   "--out", str(d / "r.html")], name))
    cases.append(("report --out in a missing directory",
                  ["report", "--model-version", "1.0", "--store", store, "--out", str(d / "nowhere" / "r.html")],
                  "nowhere"))
    cases.append(("export --output in a missing directory",
                  ["export", "--store", store, "--output", str(d / "nowhere" / "out.jsonl")], "nowhere"))
    return cases


def test_every_cli_failure_is_one_prefixed_line_naming_what_is_wrong(files, capsys, monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    cases = _cases(files)
    assert len(cases) > 80
    for what, argv, text in cases:
        code = cli.main(argv)
        out, err = capsys.readouterr()
        assert code in (1, 2), (what, code, err)
        lines = err.splitlines()
        assert len(lines) == 1 and err.endswith("\n"), (what, err)
        assert lines[0].startswith(PREFIX) and DOUBLED not in err, (what, err)
        assert "Traceback" not in err and "internal error" not in err, (what, err)
        assert text in err, (what, err)


def test_the_library_prefixes_its_errors_once():
    model = LogisticRegression().fit(np.arange(8.0).reshape(-1, 2), [0, 1, 0, 1])
    failures = [
        lambda: otel_rai.decisions(ids=["a", "a"]).__enter__(),
        lambda: otel_rai.decisions(attributes={"ml.model.name": "x"}).__enter__(),
        lambda: otel_rai.decisions(groups={"": "f"}).__enter__(),
        lambda: otel_rai.register_model(model, "credit", version=""),
        lambda: otel_rai.hash_input({"age": 1}, KEY),
        lambda: otel_rai.hash_input(np.zeros((2, 2)), KEY),
        lambda: otel_rai.hash_input(np.zeros((1, 2, 2)), KEY),
        lambda: list(find_decisions(since="5 parsecs")),
        lambda: list(find_decisions(since="1h", start="2026-11-24")),
        lambda: list(find_decisions(backend="nosuch")),
        lambda: list(find_decisions(backend="jaeger", url="localhost:16686")),
        lambda: otel_rai.explain(model, np.zeros((1, 2)), method="nosuch"),
        lambda: otel_rai.instrument(no_such_option=1),
    ]
    for fail in failures:
        with pytest.raises((ValueError, TypeError)) as caught:
            fail()
        message = str(caught.value)
        assert message.startswith(PREFIX) and DOUBLED not in message, message
        assert "\n" not in message, message
