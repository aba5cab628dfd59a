"""The local audit store: every decision span in one SQLite file, one row per decision.

Tables (schema version 2; ``docs/store.md`` describes them for readers with plain SQL):

* ``spans``: one row per span in the order written (``seq``), with its full record (enough to send it
  again as OTLP) and its model columns. Indexed by model version + time, and by time.
* ``decisions``: one row per decision, keyed by (span, index in the span's arrays): decision id, input
  hash, output. Indexed by decision id.
* ``input_index``: input hash → decision, keyed by the hash's first 64 bits (``decisions.input_key``).
  Filled in bulk every `INDEX_EVERY` rows (`Store.index_inputs`), because a random key inserted a few
  rows at a time costs ten times more than an append; lookups also scan the rows past its watermark.
* ``origins``: the resource and instrumentation scope the spans came from.
* ``outbox``: spans written but not yet exported, when the store is the write-ahead log for OTLP, each
  as its OTLP/protobuf encoding, which is what the export sends. A spool keeps nothing else of a span.
* ``meta``: marks the file as an otel-rai store, with its schema version.

Concurrency: WAL journal, a busy timeout, and ``BEGIN IMMEDIATE`` for every write, so threads and
processes sharing one file queue for the write lock instead of failing or interleaving. Each thread
uses its own connection; a forked child opens new ones.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import sqlite3
import threading
import time
import urllib.parse
from datetime import datetime, timezone
from itertools import chain, repeat
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from otel_rai import _fork, config, export, otlpproto, semconv
from otel_rai.records import ReadableSpans, SpanRecord, from_readable, resource_attributes, to_resource
from otel_rai.version import __version__

try:
    import fcntl
except ImportError:  # Windows: one exporting process per store is assumed
    fcntl = None  # type: ignore[assignment]

_log = logging.getLogger(__name__)

#: ``PRAGMA application_id`` of our files: "ORAI".
APPLICATION_ID = 0x4F524149
SCHEMA_VERSION = 2
FORMAT = "otel-rai audit store"
ENV = "OTEL_RAI_STORE"
DEFAULT_NAME = "audit.db"
#: How long a writer waits for another writer's transaction before it fails.
BUSY_TIMEOUT_S = 60.0
#: Rows written between two bulk fills of ``input_index``.
INDEX_EVERY = 65_536
_MAX_UNWRITTEN = 100_000
_EXPORT_POLL_S = 1.0
_FLUSH_POLL_S = 0.05
#: How long exported spans may stay in the outbox while the export keeps busy (see `StoreOutbox.done`).
_DELETE_EVERY_S = 1.0

# AUTOINCREMENT: a spool deletes what was exported, and a seq must never come back while an exporter
# counts on it. In a store, a span's outbox seq is its seq in ``spans``.
_OUTBOX = """CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    origin INTEGER NOT NULL REFERENCES origins (id),
    n_decisions INTEGER NOT NULL,
    span BLOB NOT NULL
)"""
_SCHEMA = f"""
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
{_OUTBOX};
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
CREATE VIEW decision_rows AS
SELECT d.decision_id, s.start_ns AS time_ns, o.service, s.model_name, s.model_version,
       s.model_fingerprint, s.operation, d.input_hash, d.output, s.trace_id, s.span_id,
       d.span, d.idx, s.status_message AS error, s.attributes AS span_attributes
FROM decisions d JOIN spans s ON s.seq = d.span JOIN origins o ON o.id = s.origin;
"""


class StoreError(Exception):
    """An audit store that cannot be used: missing, not ours, from a newer otel-rai, or unreadable."""


def default_path() -> Path:
    """``OTEL_RAI_STORE``, else ``audit.db`` in the otel-rai data directory (see `config.data_dir`)."""
    return Path(os.environ.get(ENV) or config.data_dir() / DEFAULT_NAME).expanduser()


def location(store: str | os.PathLike[str] | bool | None, *, default: bool) -> Path | None:
    """Where the store of a session lives, or None for no store.

    `store` is a path, True (the default path), False (no store), or None: the default path if
    ``OTEL_RAI_STORE`` is set or `default` is true, else no store.
    """
    if store is False:
        return None
    if store is True or (store is None and (default or os.environ.get(ENV))):
        return default_path()
    return None if store is None else Path(store).expanduser()


# --- opening ------------------------------------------------------------------------------------


def _create_file(path: Path) -> None:
    """Create the store file (and its directory) readable by its owner only, unless it exists.

    Never open and close an existing store file outside SQLite: closing any descriptor of a file
    drops every POSIX lock this process holds on it, including those of its open SQLite connections,
    and another process could then checkpoint and truncate the write-ahead log under them.
    """
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        # SQLite gives its -wal and -shm files the permissions of the database file.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass


def _meta(conn: sqlite3.Connection) -> dict[str, str]:
    return dict(conn.execute("SELECT key, value FROM meta").fetchall())


def _verify(conn: sqlite3.Connection, path: Path) -> None:
    """Raise `StoreError` unless `conn` is an otel-rai store this version can read."""
    (app_id,) = conn.execute("PRAGMA application_id").fetchone()
    if app_id != APPLICATION_ID:
        empty = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
        what = "an empty file" if empty else "an SQLite database of another application"
        raise StoreError(f"{path} is not an otel-rai audit store ({what})")
    meta = _meta(conn)
    if meta.get("format") != FORMAT:
        raise StoreError(f"{path} is not an otel-rai audit store (its meta table does not say so)")
    version = meta.get("schema_version", "0")
    if not version.isdigit():
        raise StoreError(f"{path} is not a usable otel-rai audit store (schema version {version[:20]!r})")
    version = int(version)
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path} was written by a newer otel-rai (store schema {version}; this one reads {SCHEMA_VERSION})"
        )


def _initialise(conn: sqlite3.Connection) -> None:
    """Create the schema in an empty database (inside the caller's write transaction)."""
    for statement in _SCHEMA.split(";\n"):  # not executescript(), which would commit the transaction
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


@contextlib.contextmanager
def _writing(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction; ``IMMEDIATE`` takes the write lock first, so it cannot fail half-way
    on a lock upgrade, and waits up to `BUSY_TIMEOUT_S` for another writer."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")  # where a full disk shows: the transaction must not stay open after it
    except BaseException:
        with contextlib.suppress(sqlite3.Error):  # SQLite may have rolled back already
            conn.execute("ROLLBACK")
        raise


def _journal_mode_wal(conn: sqlite3.Connection) -> str:
    """Switch to the write-ahead log; returns the journal mode SQLite ended in. While another connection
    writes to a file still in rollback mode (processes creating one store together), SQLite refuses the
    switch at once, without calling its busy handler: so wait here, as long as a writer would."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            return conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def connect(path: Path, *, create: bool) -> sqlite3.Connection:
    """A connection to the store at `path`, created (owner-only) if `create` and it does not exist."""
    if create:
        try:
            _create_file(path)
        except OSError as exc:
            raise StoreError(f"cannot create the audit store {path}: {exc.strerror or exc}") from None
    elif not path.exists():
        raise StoreError(f"no audit store at {path}")
    try:
        uri = f"file:{urllib.parse.quote(str(path))}?mode=rw"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=BUSY_TIMEOUT_S,
                               check_same_thread=False)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the audit store {path}: {exc}") from None
    try:
        if create:
            with _writing(conn):
                (app_id,) = conn.execute("PRAGMA application_id").fetchone()
                if app_id == 0 and conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
                    _initialise(conn)
        _verify(conn, path)  # before anything changes a file that is not ours
        if create and _journal_mode_wal(conn).lower() != "wal":
            raise StoreError(f"{path}: SQLite cannot use a write-ahead log here (a network file system?)")
        # FULL: a committed decision survives a power cut, not only a crash of the process.
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA cache_size = -16384")
    except sqlite3.DatabaseError as exc:
        conn.close()
        if str(exc) == "file is not a database":  # SQLite read the header and wrote nothing
            raise StoreError(f"{path} is not an otel-rai audit store (not an SQLite database)") from None
        raise StoreError(f"{path} is not a usable otel-rai audit store ({exc})") from None
    except StoreError:
        conn.close()
        raise
    return conn


# --- rows ---------------------------------------------------------------------------------------


_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode  # one encoder, not one a call


def _extra(r: SpanRecord) -> str | None:
    """The rarely used parts of a record, as JSON; None when there are none."""
    extra = {
        key: value
        for key, value in (
            ("parent_is_remote", r.parent_is_remote),
            ("trace_state", r.trace_state),
            ("events", r.events),
            ("links", r.links),
        )
        if value
    }
    return _json(extra) if extra else None


def _input_key(input_hash: Any) -> int | None:
    """The ``input_index`` key: the hash's first 64 bits as a signed integer (SQLite's INTEGER)."""
    try:
        return int(input_hash[:16], 16) - (1 << 63)
    except (TypeError, ValueError):  # missing, or not one of our hex hashes
        return None


def _per_row(values: Any, n: int) -> Sequence[Any]:
    """A per-row array of `n` entries, or `n` Nones where the span has none (e.g. hashing failed)."""
    return values if isinstance(values, (list, tuple)) and len(values) == n else [None] * n


#: A span's resource attributes, resource schema URL, scope name and scope version (an ``origins`` row).
Origin = tuple[dict[str, Any], str, str, str]
#: A span queued for export: its origin, its number of decisions, and its OTLP encoding.
Queued = tuple[Origin, int, bytes]


def _origin(r: SpanRecord) -> Origin:
    return r.resource, r.resource_schema_url, r.scope_name, r.scope_version


def queued(span: ReadableSpan) -> Queued:
    """A span as the outbox keeps it: `export.encoded`, with its resource and scope as an origin."""
    resource, scope, encoded, rows = export.encoded(span)
    origin = (resource_attributes(resource), resource.schema_url or "",
              scope.name if scope else "", (scope.version or "") if scope else "")
    return origin, rows, encoded


def _last_seq(conn: sqlite3.Connection) -> int:
    """The last seq handed out: a store's spans and a spool's queued spans share one sequence."""
    (last,) = conn.execute(
        "SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name IN ('spans', 'outbox')").fetchone()
    return last


#: Rows per INSERT statement, at most. sqlite3 lets go of the interpreter lock for every step of a
#: statement, and getting it back from the application's threads can take a whole switch interval
#: (5 ms): a writer stepping once per row would hold the write lock for seconds. So rows go in a few
#: statements of power-of-two sizes (a handful of distinct statements to prepare, all cached).
_MAX_ROWS_PER_INSERT = 512


@functools.lru_cache(maxsize=256)
def _insert_sql(head: str, width: int, rows: int) -> str:
    one = f"({', '.join('?' * width)})"
    return f"{head} VALUES {', '.join([one] * rows)}"


def _insert(conn: sqlite3.Connection, head: str, width: int, rows: Iterable[Sequence[Any]]) -> None:
    """``head VALUES (...), (...), ...`` for `rows` of `width` columns, in as few statements as the
    connection's limit on bound values allows."""
    rows = list(rows)
    # sqlite3.Connection.getlimit is Python 3.11+; 999 is SQLite's smallest default.
    limit = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) if hasattr(conn, "getlimit") else 999
    size = _MAX_ROWS_PER_INSERT
    while size > 1 and size * width > limit:
        size //= 2
    start = 0
    while start < len(rows):
        while size > len(rows) - start:
            size //= 2
        conn.execute(_insert_sql(head, width, size), tuple(chain.from_iterable(rows[start : start + size])))
        start += size


_SPAN_COLUMNS = (
    "s.seq, s.origin, s.trace_id, s.span_id, s.parent_span_id, s.name, s.kind, s.start_ns, s.end_ns, "
    "s.status_code, s.status_message, s.attributes, s.extra"
)


class Store:
    """One audit store file. Safe to share between threads; each thread gets its own connection."""

    def __init__(self, path: str | os.PathLike[str], *, create: bool = False) -> None:
        self.path = Path(path).expanduser()
        self._create = create
        self._origins: dict[tuple[str, str, str, str], int] = {}
        self._origin_records: dict[int, tuple[dict[str, Any], str, str, str]] = {}
        self._reset()
        self._connection()  # open now: a bad path or a foreign file fails here, clearly
        if create:
            self._upgrade()
        _fork.reset_in_child(self)

    def _reset(self) -> None:
        """Fresh connections; a forked child keeps (never closes) the ones it inherited."""
        if getattr(self, "_connections", None):
            _inherited.extend(self._connections)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = connect(self.path, create=self._create)
            with self._lock:
                self._connections.append(conn)
        return conn

    def close(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()
        self._local = threading.local()

    def _upgrade(self) -> None:
        """Bring a schema 1 file up to date: its outbox held seqs only, so the spans it queued are
        encoded from their records now, and go out as they would have."""
        conn = self._connection()
        if int(_meta(conn)["schema_version"]) >= SCHEMA_VERSION:
            return
        with _writing(conn):
            if int(_meta(conn)["schema_version"]) >= SCHEMA_VERSION:  # another process was first
                return
            rows = conn.execute(f"SELECT {_SPAN_COLUMNS}, s.n_decisions FROM outbox o JOIN spans s"
                                " ON s.seq = o.seq ORDER BY o.seq").fetchall()
            to_span = ReadableSpans()
            conn.execute("DROP TABLE outbox")
            conn.execute(_OUTBOX)
            _insert(conn, "INSERT INTO outbox", 4, [
                (row[0], row[1], row[-1], otlpproto.encode_span(to_span(self._record(row[:-1])))) for row in rows
            ])
            conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # --- writing ---

    def _origin(self, conn: sqlite3.Connection, origin: Origin, new: dict, seen: dict) -> int:
        """The ``origins`` id of a resource and scope, added if new. `seen` spares encoding the resource
        again for spans that share one dict (all the spans of a process)."""
        attributes, schema_url, scope_name, scope_version = origin
        resource = seen.get(id(attributes))
        if resource is None:
            resource = seen[id(attributes)] = _json(attributes)
        key = (resource, schema_url, scope_name, scope_version)
        found = self._origins.get(key) or new.get(key)
        if found is None:
            service = attributes.get(SERVICE_NAME)
            conn.execute(
                "INSERT OR IGNORE INTO origins"
                " (service, resource, resource_schema_url, scope_name, scope_version) VALUES (?, ?, ?, ?, ?)",
                (None if service is None else str(service), *key),
            )
            (found,) = conn.execute(
                "SELECT id FROM origins WHERE resource = ? AND resource_schema_url = ? AND scope_name = ?"
                " AND scope_version = ?",
                key,
            ).fetchone()
            new[key] = found
        return found

    def append(
        self,
        records: Sequence[SpanRecord] = (),
        *,
        queued: Sequence[Queued] = (),
        groups: Iterable[tuple[str, str, str]] = (),
        outcomes: Iterable[tuple[str, str, int]] = (),
    ) -> tuple[int, int]:
        """Write `records` and queue `queued` for export, in one transaction. Both given, they are the
        same spans in the same order (a store that is the write-ahead log of an export); a spool queues
        only. `groups` (decision id, attribute, group) and `outcomes` (decision id, ground truth as JSON,
        time) go to the local-only tables; a decision's first outcome is the one kept.
        Returns (the seq of the last span, the number of decisions written to ``decisions``)."""
        if records and queued and len(records) != len(queued):
            raise ValueError("otel-rai: the records and the queued spans of a write must be the same spans")
        conn = self._connection()
        new_origins: dict = {}
        seen: dict = {}  # valid during this call only, while `records` keeps the dicts alive
        # The rows are built before the write lock is taken (other writers, the exporter deleting
        # exported spans, wait for it); only the seqs and origin ids are filled in under it.
        spans, decisions, n_decisions = [], [], 0  # decisions: (index of the span in `records`, its columns)
        for i, r in enumerate(records):
            a = r.attributes
            ids = a.get(semconv.DECISION_IDS) or ()
            n = len(ids)
            spans.append((
                r.trace_id, r.span_id, r.parent_span_id, r.name, r.kind, r.start_ns, r.end_ns, r.status_code,
                r.status_message, a.get(semconv.MODEL_NAME), a.get(semconv.MODEL_VERSION),
                a.get(semconv.MODEL_FINGERPRINT), a.get(semconv.OPERATION), n, _json(a), _extra(r),
            ))
            if n:
                n_decisions += n
                hashes = _per_row(a.get(semconv.INPUT_HASHES), n)
                decisions.append((i, range(n), ids, hashes, _per_row(a.get(semconv.OUTPUTS), n),
                                  list(map(_input_key, hashes))))
        with _writing(conn):
            first = _last_seq(conn) + 1
            _insert(conn, "INSERT INTO spans", 18, [
                (first + i, self._origin(conn, _origin(r), new_origins, seen), *span)
                for i, (r, span) in enumerate(zip(records, spans))
            ])
            _insert(conn, "INSERT INTO decisions", 6, chain.from_iterable(
                zip(repeat(first + i, len(rows)), rows, *columns) for i, rows, *columns in decisions))
            _insert(conn, "INSERT INTO outbox", 4, [
                (first + i, self._origin(conn, origin, new_origins, seen), n, encoded)
                for i, (origin, n, encoded) in enumerate(queued)
            ])
            _insert(conn, "INSERT OR REPLACE INTO decision_groups", 3, groups)
            _insert(conn, "INSERT OR IGNORE INTO outcomes", 3, outcomes)
        self._origins.update(new_origins)  # only once committed: a rolled-back id would be reused
        return first + max(len(records), len(queued)) - 1, n_decisions

    def index_inputs(self, max_rows: int = 1 << 20) -> int:
        """Add the decisions past the ``input_index`` watermark to it, up to about `max_rows` in one
        sorted bulk transaction; returns how many rows were indexed."""
        conn = self._connection()
        with _writing(conn):
            through = int(_meta(conn)["input_index_through"])
            bound, rows = through, 0
            for seq, n in conn.execute(
                "SELECT seq, n_decisions FROM spans WHERE seq > ? ORDER BY seq", (through,)
            ):
                if rows and rows + n > max_rows:
                    break
                bound, rows = seq, rows + n
            if bound == through:
                return 0
            # Sorted, the inserts walk the index once instead of jumping around it.
            conn.execute(
                "INSERT OR IGNORE INTO input_index SELECT input_key, span, idx FROM decisions"
                " WHERE span > ? AND span <= ? AND input_key IS NOT NULL ORDER BY input_key",
                (through, bound),
            )
            conn.execute("UPDATE meta SET value = ? WHERE key = 'input_index_through'", (str(bound),))
        return rows

    # --- the outbox: spans waiting for export ---

    def outbox_batch(self, max_spans: int, max_rows: int, after: int = 0) -> list[tuple[int, int, bytes]]:
        """The oldest spans waiting for export past seq `after`, within the limits (at least one), as
        (seq, origin id, encoded span)."""
        batch, rows = [], 0
        for seq, origin, n, encoded in self._connection().execute(
            "SELECT seq, origin, n_decisions, span FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, max_spans),
        ).fetchall():
            rows += n
            if batch and rows > max_rows:
                break
            batch.append((seq, origin, encoded))
        return batch

    def outbox_done(self, last: int, *, forget: bool = False) -> None:
        """The queued spans up to seq `last` were exported. Spans are written in seq order under the
        write lock, so every queued span up to `last` was in an exported batch. With `forget` (a spool),
        the spans and their decisions are deleted too."""
        conn = self._connection()
        with _writing(conn):
            conn.execute("DELETE FROM outbox WHERE seq <= ?", (last,))
            if forget:
                conn.execute("DELETE FROM decisions WHERE span <= ?", (last,))
                conn.execute("DELETE FROM spans WHERE seq <= ?", (last,))

    def outbox_pending(self, through: int | None = None) -> int:
        """Spans waiting for export (those up to seq `through`, if given)."""
        sql, args = "SELECT count(*) FROM outbox", ()
        if through is not None:
            sql, args = sql + " WHERE seq <= ?", (through,)
        return self._connection().execute(sql, args).fetchone()[0]

    def last_seq(self) -> int:
        return _last_seq(self._connection())

    # --- reading ---

    def origin_of(self, origin: int) -> Origin:
        found = self._origin_records.get(origin)
        if found is None:
            row = self._connection().execute(
                "SELECT resource, resource_schema_url, scope_name, scope_version FROM origins WHERE id = ?",
                (origin,),
            ).fetchone()
            found = self._origin_records[origin] = (json.loads(row[0]), row[1], row[2], row[3])
        return found

    def _record(self, row: Sequence[Any]) -> SpanRecord:
        (_, origin, trace_id, span_id, parent, name, kind, start, end, code, message, attributes, extra) = row
        resource, schema_url, scope_name, scope_version = self.origin_of(origin)
        more = json.loads(extra) if extra else {}
        return SpanRecord(
            trace_id=trace_id, span_id=span_id, name=name, start_ns=start, end_ns=end,
            attributes=json.loads(attributes), parent_span_id=parent,
            parent_is_remote=more.get("parent_is_remote", False), kind=kind, status_code=code,
            status_message=message, trace_state=more.get("trace_state", ""), events=more.get("events", []),
            links=more.get("links", []), resource=resource, resource_schema_url=schema_url,
            scope_name=scope_name, scope_version=scope_version,
        )

    @staticmethod
    def _where(
        *,
        model_version: str | None = None,
        model_name: str | None = None,
        service: str | None = None,
        start_ns: int | None = None,
        end_ns: int | None = None,
        decision_ids: Iterable[str] | None = None,
        input_hashes: Iterable[str] | None = None,
    ) -> tuple[str, list[Any]]:
        """The WHERE clause of `spans` for these filters (None matches all); the window is [start, end)."""
        clauses, args = [], []
        for clause, value in (
            ("s.model_version = ?", model_version),
            ("s.model_name = ?", model_name),
            ("s.origin IN (SELECT id FROM origins WHERE service = ?)", service),
            ("s.start_ns >= ?", start_ns),
            ("s.start_ns < ?", end_ns),
        ):
            if value is not None:
                clauses.append(clause)
                args.append(value)
        if decision_ids is not None:
            clauses.append(
                "s.seq IN (SELECT span FROM decisions WHERE decision_id IN (SELECT value FROM json_each(?)))"
            )
            args.append(_json(sorted(decision_ids)))
        if input_hashes is not None:
            hashes = sorted(input_hashes)
            keys = [k for k in map(_input_key, hashes) if k is not None]
            # Indexed rows by key (a key collision is filtered out by the caller's exact match), plus
            # the rows past the watermark, which are not indexed yet.
            clauses.append(
                "s.seq IN (SELECT span FROM input_index WHERE input_key IN (SELECT value FROM json_each(?))"
                " UNION SELECT span FROM decisions"
                " WHERE span > CAST((SELECT value FROM meta WHERE key = 'input_index_through') AS INTEGER)"
                " AND input_hash IN (SELECT value FROM json_each(?)))"
            )
            args += [_json(keys), _json(hashes)]
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args

    def _select(self, **query: Any) -> tuple[str, list[Any]]:
        where, args = self._where(**query)
        return f"SELECT {_SPAN_COLUMNS} FROM spans s{where} ORDER BY s.start_ns, s.seq", args

    def spans(self, **query: Any) -> Iterator[SpanRecord]:
        """Spans matching the filters (see `_where`), in time order (ties in write order)."""
        with self._reading():
            for row in self._connection().execute(*self._select(**query)):
                yield self._record(row)

    def spans_in_write_order(self, **query: Any) -> Iterator[tuple[int, SpanRecord]]:
        """(seq, span) for the spans matching the filters, in the order they were written."""
        where, args = self._where(**query)
        with self._reading():
            for row in self._connection().execute(f"SELECT {_SPAN_COLUMNS} FROM spans s{where} ORDER BY s.seq", args):
                yield row[0], self._record(row)

    def decision_rows(self, **query: Any) -> Iterator[tuple[int, list[tuple[Any, Any, Any]]]]:
        """(seq, [(decision id, input hash, output) in row order]) of the spans matching the filters
        that hold decisions, in write order: the ``decisions`` table, to compare with the spans."""
        where, args = self._where(**query)
        sql = (f"SELECT d.span, d.decision_id, d.input_hash, d.output FROM decisions d"
               f" WHERE d.span IN (SELECT s.seq FROM spans s{where}) ORDER BY d.span, d.idx")
        with self._reading():
            span, rows = None, []
            for seq, *row in self._connection().execute(sql, args):
                if seq != span and rows:
                    yield span, rows
                    rows = []
                span = seq
                rows.append(tuple(row))
            if rows:
                yield span, rows

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """A damaged file or row is a `StoreError` naming the file, not a crash."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path} is damaged ({exc})") from None
        except (ValueError, TypeError, KeyError, RecursionError) as exc:
            raise StoreError(f"{self.path} holds a record otel-rai cannot read ({type(exc).__name__})") from None

    def groups(self, decision_ids: Iterable[str]) -> dict[str, dict[str, str]]:
        """{decision id: {sensitive attribute: group}} of the decisions that have groups."""
        out: dict[str, dict[str, str]] = {}
        for decision_id, attribute, group in self._connection().execute(
            "SELECT decision_id, attribute, grp FROM decision_groups"
            " WHERE decision_id IN (SELECT value FROM json_each(?))",
            (_json(sorted(set(decision_ids))),),
        ):
            out.setdefault(decision_id, {})[attribute] = group
        return out

    def outcomes(self, decision_ids: Iterable[str]) -> dict[str, Any]:
        """{decision id: ground truth} of the decisions with a recorded outcome."""
        rows = self._connection().execute(
            "SELECT decision_id, y_true FROM outcomes WHERE decision_id IN (SELECT value FROM json_each(?))",
            (_json(sorted(set(decision_ids))),),
        )
        return {decision_id: json.loads(y_true) for decision_id, y_true in rows}

    def count_decisions(self, **query: Any) -> int:
        """Decisions in the spans `spans(**query)` yields (an upper bound when filtering by id or hash)."""
        where, args = self._where(**query)
        sql = f"SELECT coalesce(sum(n_decisions), 0) FROM spans s{where}"
        with self._reading():
            return self._connection().execute(sql, args).fetchone()[0]

    def query_plan(self, **query: Any) -> str:
        """SQLite's plan for `spans(**query)`, for tests and for curious operators."""
        sql, args = self._select(**query)
        return "\n".join(row[-1] for row in self._connection().execute("EXPLAIN QUERY PLAN " + sql, args))


#: Connections a forked child inherited: closing them there could disturb the parent's locks.
_inherited: list[sqlite3.Connection] = []


# --- the write-ahead log: the outbox as an export queue ---------------------------------------


class StoreOutbox:
    """The store's ``outbox`` as an `export.SpanQueue`. A batch is `otlpproto.EncodedSpans`: what was
    encoded when the spans were written goes out as it is.

    One process at a time exports a store: whichever holds an exclusive ``flock`` on the file
    ``<store>-export.lock``. The lock dies with its process, so after a crash, SIGKILL or a normal exit
    the next process that opens the store with an endpoint takes over and exports what is left, in order.
    """

    def __init__(self, store: Store, *, forget: bool = False) -> None:
        self._store = store
        self._forget = forget
        self._lock_path = store.path.with_name(store.path.name + "-export.lock")
        self._lock_fd: int | None = None
        self._holding = fcntl is None
        self._taken: int | None = None  # the last seq of the batch out for export
        #: Exported up to this seq; up to `_deleted`, also gone from the file (see `done`).
        self._exported = self._deleted = 0
        self._deleted_at = time.monotonic()
        self._counted = False
        self._through: int | None = None
        self._origins: dict[int, tuple[Resource, InstrumentationScope]] = {}

    def written(self, last_seq: int) -> None:
        """This process wrote spans up to `last_seq`: its flushes wait for them."""
        self._through = max(self._through or 0, last_seq)

    def _hold(self) -> bool:
        if self._holding:
            return True
        if self._lock_fd is None:
            self._lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        self._holding = True
        return True

    def _origin(self, origin: int) -> tuple[Resource, InstrumentationScope]:
        found = self._origins.get(origin)
        if found is None:
            attributes, schema_url, scope_name, scope_version = self._store.origin_of(origin)
            found = self._origins[origin] = (to_resource(attributes, schema_url),
                                             InstrumentationScope(scope_name, scope_version or None))
        return found

    def take(self, max_spans: int, max_rows: int) -> Sequence[ReadableSpan]:
        if not self._hold():
            return []
        batch = self._store.outbox_batch(max_spans, max_rows, after=self._exported)
        if not batch:
            if self._counted or time.monotonic() - self._deleted_at >= _DELETE_EVERY_S:
                self._delete()
            return []
        self._taken = batch[-1][0]
        return otlpproto.EncodedSpans(otlpproto.grouped((*self._origin(origin), span) for _, origin, span in batch))

    def done(self) -> None:
        """The batch was delivered. It leaves the outbox with later ones, at most `_DELETE_EVERY_S`
        later, or once the export has caught up while a flush waits: a write transaction per batch
        would keep the export waiting for the worker's write lock. Meanwhile `take` skips it, and
        `pending` still counts it (so that a flush returns with the outbox as delivered); a crash in
        between only sends it again (at least once)."""
        if self._taken is not None:
            self._exported = self._taken
            self._taken = None
            if time.monotonic() - self._deleted_at >= _DELETE_EVERY_S:
                self._delete()

    def _delete(self) -> None:
        """Delete what was exported from the outbox (with a spool, from the file)."""
        self._counted = False
        if self._exported > self._deleted:
            self._store.outbox_done(self._exported, forget=self._forget)
            self._deleted = self._exported
        self._deleted_at = time.monotonic()

    def pending(self) -> int:
        """Spans still in the outbox, exported or not: somebody counting them (a flush waiting for
        them to go) has the export delete the exported ones as soon as it has caught up."""
        if self._through is None:  # first look: what earlier processes left is ours to wait for too
            self._through = self._store.last_seq()
        self._counted = True
        return self._store.outbox_pending(self._through)

    def release(self, *, unlock: bool = True) -> None:
        """Give up the export lock, once what was exported is deleted (else the next exporter would
        send it again). A forked child closes its inherited descriptor without `unlock`: the lock
        belongs to the open file the parent shares, and stays the parent's."""
        if self._holding and unlock:
            try:
                self._delete()
            except (sqlite3.Error, StoreError):
                _log.warning("otel-rai: could not mark exported spans in %s; they will be sent again",
                             self._store.path)
        if self._lock_fd is not None:
            if self._holding and unlock:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None
        self._holding = fcntl is None


# --- the sink -----------------------------------------------------------------------------------


class StoreSink(export.Sink):
    """Writes the audit spans of each worker cycle to the store in one transaction.

    With an `exporter_factory`, the store is the write-ahead log for OTLP: each span is also queued
    in the outbox, and an `export.Exporter` sends queued spans in order and deletes them from the outbox
    once the backend took them (at least once). Spans left queued by an earlier process are sent too.
    Without `keep`, the file is a spool: spans are only queued (encoded, as they will be sent), and
    leave the file once exported.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        exporter_factory: Callable[[], SpanExporter] | None = None,
        *,
        keep: bool = True,
        **exporter_options: Any,
    ) -> None:
        if not keep and exporter_factory is None:
            raise ValueError("otel-rai: a spool (keep=False) needs an exporter")
        self.store = Store(path, create=True)
        self.keep = keep
        self._factory = exporter_factory
        self._options = exporter_options
        self._outbox: StoreOutbox | None = None
        self._closed = False
        self._reset()
        _fork.reset_in_child(self)
        if self._exporter is not None:
            self._exporter.wake()  # export what an earlier process left queued

    def _reset(self) -> None:
        self._received: list[ReadableSpan] = []
        # The spans of the cycles not yet written: as records for a store, encoded for the outbox.
        self._unwritten: list[SpanRecord] = []
        self._unqueued: list[Queued] = []
        self._groups: list[tuple[str, str, str]] = []
        self._outcomes: list[tuple[str, str, int]] = []
        self._unindexed = 0
        if self._outbox is not None:  # a forked child: the export lock stays with the parent
            self._outbox.release(unlock=False)
        self._outbox = None if self._factory is None else StoreOutbox(self.store, forget=not self.keep)
        self._exporter = None
        if self._outbox is not None:
            self._exporter = export.Exporter(self._factory, self._outbox, poll=_EXPORT_POLL_S, **self._options)

    def on_end(self, span: ReadableSpan) -> None:
        scope = span.instrumentation_scope
        if scope is not None and scope.name == semconv.SCOPE and not self._closed:
            self._received.append(span)

    def note_groups(self, ids: Sequence[str], groups: Mapping[str, Sequence[str]]) -> None:
        """The sensitive groups of a call's decisions ({attribute: one group per row}), for the report."""
        for attribute, labels in groups.items():
            self._groups += zip(ids, repeat(attribute), labels)

    def note_outcome(self, decision_id: str, y_true: Any, time_ns: int) -> None:
        """A decision's ground truth, recorded by `record_outcome`. Encoded now, so that a value JSON
        cannot hold fails this outcome alone, not the commit of the cycle's spans."""
        self._outcomes.append((decision_id, _json(y_true.item() if hasattr(y_true, "item") else y_true), time_ns))

    def commit(self) -> None:
        """Write what this cycle ended. A failed write is retried next cycle; beyond `_MAX_UNWRITTEN`
        spans it is retried here, which holds up the worker (back-pressure, never a drop)."""
        if self._received:
            if self.keep:
                self._unwritten += [from_readable(span) for span in self._received]
            if self._outbox is not None:
                self._unqueued += [queued(span) for span in self._received]
            self._received = []
        delay = 0.1
        while self._unwritten or self._unqueued or self._groups or self._outcomes:
            try:
                last, rows = self.store.append(self._unwritten, queued=self._unqueued,
                                               groups=self._groups, outcomes=self._outcomes)
            except (sqlite3.Error, OSError, StoreError):
                if self._unsaved() < _MAX_UNWRITTEN or self._closed:
                    raise  # counted and logged by the worker
                _log.warning("otel-rai: cannot write to the audit store %s; retrying", self.store.path)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if self._unqueued:
                self._outbox.written(last)
                self._exporter.wake()
            self._unwritten, self._unqueued, self._groups, self._outcomes = [], [], [], []
            self._unindexed += rows
        if self._unindexed >= INDEX_EVERY and self.keep:
            self._unindexed = 0
            self.store.index_inputs()

    def pending(self) -> int:
        unwritten = len(self._received) + self._unsaved()
        return unwritten + (self._outbox.pending() if self._outbox is not None else 0)

    def _unsaved(self) -> int:
        return max(len(self._unwritten), len(self._unqueued))

    def exported(self) -> int:
        return self._exporter.exported if self._exporter is not None else 0

    def dropped(self) -> int:
        return self._unsaved() if self._closed else 0

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Wait until the committed spans are written (the worker retries a failed write) and exported
        (without an endpoint they are done once written)."""
        deadline = time.monotonic() + timeout_millis / 1000
        while self._unsaved() and not self._closed and time.monotonic() < deadline:
            time.sleep(_FLUSH_POLL_S)
        if self._exporter is None:
            return not self._unsaved()
        return self._exporter.flush(max(0.0, deadline - time.monotonic())) and not self._unsaved()

    def close(self, timeout: float) -> None:
        """Stop exporting (queued spans stay queued for the next process), index, close."""
        if self._closed:
            return
        self._closed = True
        stopped = True
        if self._exporter is not None:
            stopped = self._exporter.close(min(export.CLOSE_TIMEOUT, timeout))
            left = self._outbox.pending()
            if left:
                _log.warning(
                    "otel-rai: %d audit spans are spooled in %s but not yet exported; the next process "
                    "that opens this store with an OTLP endpoint exports them", left, self.store.path
                )
            self._outbox.release()
        if self._unsaved():
            _log.error("otel-rai: %d audit spans could not be written to %s", self._unsaved(), self.store.path)
        with contextlib.suppress(sqlite3.Error, StoreError):
            while self.keep and self.store.index_inputs():
                pass
        if stopped:  # else the export thread, still in a hanging attempt, will use its connection again
            self.store.close()
