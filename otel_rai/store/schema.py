"""The schema of the local audit store (version 2): its tables, how a new file gets them, and how a file
is recognised as one of ours. ``docs/store.md`` describes the tables for readers with plain SQL.

* ``spans``: one row per span in the order written (``seq``), with its full record (enough to send it
  again as OTLP) and its model columns. Indexed by model version + time, and by time.
* ``decisions``: one row per decision, keyed by (span, index in the span's arrays): decision id, input
  hash, output. Indexed by decision id.
* ``input_index``: input hash → decision, keyed by the hash's first 64 bits (``decisions.input_key``).
  Filled in bulk (`Store.index_inputs`), because a random key inserted a few rows at a time costs ten
  times more than an append; lookups also scan the rows past its watermark.
* ``origins``: the resource and instrumentation scope the spans came from.
* ``outbox``: spans written but not yet exported, when the store is the write-ahead log for OTLP, each
  as its OTLP/protobuf encoding, which is what the export sends. A spool keeps nothing else of a span.
* ``meta``: marks the file as an otel-rai store, with its schema version.
* ``decision_groups``, ``outcomes``, ``drift_snapshots``: local only, never part of a span and never
  exported: sensitive groups, ground truths, and the drift monitor's histograms.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from pathlib import Path

from otel_rai.errors import StoreError
from otel_rai.version import __version__

#: ``PRAGMA application_id`` of our files: "ORAI".
APPLICATION_ID = 0x4F524149
SCHEMA_VERSION = 2
FORMAT = "otel-rai audit store"

# AUTOINCREMENT: a spool deletes what was exported, and a seq must never come back while an exporter
# counts on it. In a store, a span's outbox seq is its seq in ``spans``.
OUTBOX = """CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    origin INTEGER NOT NULL REFERENCES origins (id),
    n_decisions INTEGER NOT NULL,
    span BLOB NOT NULL
)"""
# Local only, like the two tables above: the drift monitor's histograms of a model version (docs/monitoring.md).
# Added to schema 2 without a version change: older readers ignore it, and writers create it if missing.
DRIFT_SNAPSHOTS = """CREATE TABLE IF NOT EXISTS drift_snapshots (
    model_version TEXT NOT NULL,
    model_name TEXT NOT NULL,
    time_ns INTEGER NOT NULL,
    histograms TEXT NOT NULL,
    PRIMARY KEY (model_version, model_name, time_ns)
) WITHOUT ROWID"""
SCHEMA = f"""
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE origins (
    id INTEGER PRIMARY KEY,
    service TEXT,
    resource TEXT NOT NULL,
    resource_schema_url TEXT NOT NULL,
    scope_name TEXT NOT NULL,
    scope_version TEXT NOT NULL,
    UNIQUE (resource, resource_schema_url, scope_name, scope_version)
);
CREATE TABLE spans (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    origin INTEGER NOT NULL REFERENCES origins (id),
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    parent_span_id TEXT,
    name TEXT NOT NULL,
    kind INTEGER NOT NULL,
    start_ns INTEGER NOT NULL,
    end_ns INTEGER NOT NULL,
    status_code INTEGER NOT NULL,
    status_message TEXT NOT NULL,
    model_name TEXT,
    model_version TEXT,
    model_fingerprint TEXT,
    operation TEXT,
    n_decisions INTEGER NOT NULL,
    attributes TEXT NOT NULL,
    extra TEXT
);
CREATE INDEX spans_by_version ON spans (model_version, start_ns);
CREATE INDEX spans_by_time ON spans (start_ns);
CREATE TABLE decisions (
    span INTEGER NOT NULL REFERENCES spans (seq),
    idx INTEGER NOT NULL,
    decision_id TEXT NOT NULL,
    input_hash TEXT,
    output,
    input_key INTEGER,
    PRIMARY KEY (span, idx)
) WITHOUT ROWID;
CREATE INDEX decisions_by_id ON decisions (decision_id);
CREATE TABLE input_index (
    input_key INTEGER NOT NULL,
    span INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    PRIMARY KEY (input_key, span, idx)
) WITHOUT ROWID;
{OUTBOX};
-- Local only, never part of a span and never exported: the group of each decision for every sensitive
-- attribute (otel_rai.groups), and the ground truth recorded later (record_outcome), for the report.
CREATE TABLE decision_groups (
    decision_id TEXT NOT NULL,
    attribute TEXT NOT NULL,
    grp TEXT NOT NULL,
    PRIMARY KEY (decision_id, attribute)
) WITHOUT ROWID;
CREATE TABLE outcomes (
    decision_id TEXT PRIMARY KEY,
    y_true TEXT NOT NULL,
    time_ns INTEGER NOT NULL
) WITHOUT ROWID;
{DRIFT_SNAPSHOTS};
CREATE VIEW decision_rows AS
SELECT d.decision_id, s.start_ns AS time_ns, o.service, s.model_name, s.model_version,
       s.model_fingerprint, s.operation, d.input_hash, d.output, s.trace_id, s.span_id,
       d.span, d.idx, s.status_message AS error, s.attributes AS span_attributes
FROM decisions d JOIN spans s ON s.seq = d.span JOIN origins o ON o.id = s.origin;
"""


def meta(conn: sqlite3.Connection) -> dict[str, str]:
    """The ``meta`` table as a dict."""
    return dict(conn.execute("SELECT key, value FROM meta").fetchall())


def check(conn: sqlite3.Connection, path: Path) -> None:
    """Raise `StoreError` unless `conn` is an otel-rai store this version can read."""
    (app_id,) = conn.execute("PRAGMA application_id").fetchone()
    if app_id != APPLICATION_ID:
        empty = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
        what = "an empty file" if empty else "an SQLite database of another application"
        raise StoreError(f"{path} is not an otel-rai audit store ({what})")
    found = meta(conn)
    if found.get("format") != FORMAT:
        raise StoreError(f"{path} is not an otel-rai audit store (its meta table does not say so)")
    version = found.get("schema_version", "0")
    if not version.isdigit():
        raise StoreError(f"{path} is not a usable otel-rai audit store (schema version {version[:20]!r})")
    version = int(version)
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path} was written by a newer otel-rai (store schema {version}; this one reads {SCHEMA_VERSION})"
        )


def initialise(conn: sqlite3.Connection) -> None:
    """Create the schema in an empty database (inside the caller's write transaction)."""
    for statement in SCHEMA.split(";\n"):  # not executescript(), which would commit the transaction
        if statement.strip():
            conn.execute(statement)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    conn.executemany(
        "INSERT INTO meta (key, value) VALUES (?, ?)",
        [
            ("format", FORMAT),
            ("schema_version", str(SCHEMA_VERSION)),
            ("created_at", datetime.now(timezone.utc).isoformat(timespec="seconds")),
            ("created_by", f"otel-rai {__version__}"),
            ("input_index_through", "0"),
        ],
    )
