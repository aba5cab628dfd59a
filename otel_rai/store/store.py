"""`Store`: one audit store file, written by the store sink and read by the query tooling.

Safe to share between threads (each thread gets its own connection) and between processes (see
`connection`); a forked child opens new connections. The schema is in `schema`.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import sys
import threading
from array import array
from itertools import chain, groupby, repeat
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from otel_rai import _fork, semconv, settings
from otel_rai.codec import compact, native
from otel_rai.codec.records import SpanRecord
from otel_rai.codec.text import text_of
from otel_rai.errors import StoreError
from otel_rai.store import schema
from otel_rai.store.connection import apart_from_fork, connect, insert, writing

DEFAULT_NAME = "audit.db"
#: Rows written between two bulk fills of ``input_index``.
INDEX_EVERY = 65_536
#: Rows `Store.index_inputs` adds in one sorted bulk transaction, at most.
_INDEX_BATCH_ROWS = 1 << 20


def default_path() -> Path:
    """``OTEL_RAI_STORE`` (when a path), else ``audit.db`` in the otel-rai data directory."""
    configured = settings.from_env("store")
    if isinstance(configured, str):
        return Path(configured).expanduser()
    return settings.data_dir() / DEFAULT_NAME


def location(store: str | os.PathLike[str] | bool | None, *, default: bool) -> Path | None:
    """Where the store of a session lives, or None for no store.

    `store` is a path, True (the default path), False (no store), or None: the default path if
    ``OTEL_RAI_STORE`` is set or `default` is true, else no store.
    """
    if store is None:
        store = settings.from_env("store")
    if store is None:
        store = default
    if store is False:
        return None
    if store is True:
        return default_path()
    return Path(store).expanduser()


#: The JSON of every stored value: one encoder, not one a call. ASCII, so that no string can fail the
#: write (a lone surrogate, which UTF-8 cannot encode, is written as its JSON escape).
json_text = compact.encoder()


def _extra(r: SpanRecord) -> str | None:
    """The rarely used parts of a record, as JSON; None when there are none."""
    if not (r.parent_is_remote or r.trace_state or r.events or r.links):  # an audit span's usual case
        return None
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
    return json_text(extra) if extra else None


def _file_id(path: str) -> tuple[int, int]:
    """(device, inode) of the file at `path`."""
    st = os.stat(path)
    return st.st_dev, st.st_ino


def input_key(input_hash: Any) -> int | None:
    """The ``input_index`` key: the hash's first 64 bits as a signed integer (SQLite's INTEGER)."""
    try:
        return int(input_hash[:16], 16) - (1 << 63)
    except (TypeError, ValueError):  # missing, or not one of our hex hashes
        return None


def _per_row(values: Any, n: int) -> Sequence[Any]:
    """A per-row array of `n` entries, or `n` Nones where the span has none (e.g. hashing failed)."""
    return values if isinstance(values, (list, tuple)) and len(values) == n else [None] * n


#: The attributes a record's rows hold in columns of their own (`_native.store_rows` reads them in this order).
_ROW_ATTRIBUTES = (semconv.MODEL_NAME, semconv.MODEL_VERSION, semconv.MODEL_FINGERPRINT, semconv.OPERATION,
                   semconv.DECISION_IDS, semconv.INPUT_HASHES, semconv.OUTPUTS)


def _record_rows(records: Sequence[SpanRecord]) -> tuple[list[tuple], list[tuple], list[tuple], int]:
    """What `Store.append` writes of `records`, but their seqs and origins: each one's ``spans`` columns,
    the ``decisions`` columns of each record of one decision (its index in `records`, decision id, input
    hash, output, input key), those of each record of more (its index, the rows' indexes, ids, hashes,
    outputs, input keys), and how many decisions they hold. Built natively where the module was built."""
    built = None
    if native.module is not None and type(records) is list:
        built = native.module.store_rows(records, _ROW_ATTRIBUTES, json_text, _extra, input_key)
    if built is not None:
        spans, single, multi = built
        many = [_decisions(i, records[i].attributes) for i in multi]
        return spans, single, many, len(single) + sum(len(columns[1]) for columns in many)
    spans, single, many, n_decisions = [], [], [], 0
    for i, r in enumerate(records):
        a = r.attributes
        ids = a.get(semconv.DECISION_IDS) or ()
        n = len(ids)
        spans.append((
            *_SPAN_FIELDS(r), a.get(semconv.MODEL_NAME), a.get(semconv.MODEL_VERSION),
            a.get(semconv.MODEL_FINGERPRINT), a.get(semconv.OPERATION), n, json_text(a), _extra(r),
        ))
        if n == 1:  # a single-row call's one decision, without the per-row machinery of `_decisions`
            n_decisions += 1
            h, output = _per_row(a.get(semconv.INPUT_HASHES), 1)[0], _per_row(a.get(semconv.OUTPUTS), 1)[0]
            single.append((i, ids[0], h, output, input_key(h)))
        elif n:
            n_decisions += n
            many.append(_decisions(i, a))
    return spans, single, many, n_decisions


#: Hex digits of our input hashes (128 bits).
_HASH_DIGITS = 32
#: Each byte with its top bit flipped.
_FLIP_TOP = bytes(b ^ 0x80 for b in range(256))


def input_keys(hashes: Sequence[Any]) -> list[int | None]:
    """`input_key` of each hash; read as one block of bytes when they are all our hex hashes (a large call's
    rows: 0.3 µs a row one by one). No NumPy: the commands that only read the store never load it."""
    try:
        if set(map(len, hashes)) == {_HASH_DIGITS}:
            raw = bytearray.fromhex("".join(hashes))
            if len(raw) == _HASH_DIGITS // 2 * len(hashes):  # no spaces between the digits
                # Unsigned minus 2**63 is the signed reading with the top bit flipped.
                raw[:: _HASH_DIGITS // 2] = raw[:: _HASH_DIGITS // 2].translate(_FLIP_TOP)
                keys = array("q", raw)[::2]  # each hash's first 8 bytes, big-endian
                if sys.byteorder == "little":
                    keys.byteswap()
                return keys.tolist()
    except (TypeError, ValueError):  # a missing or foreign hash: each on its own
        pass
    return list(map(input_key, hashes))


def _decisions(i: int, attributes: Mapping[str, Any]) -> tuple:
    """The ``decisions`` columns of record `i`, of more than one decision (see `_record_rows`)."""
    ids = attributes[semconv.DECISION_IDS]
    n = len(ids)
    hashes = _per_row(attributes.get(semconv.INPUT_HASHES), n)
    return i, range(n), ids, hashes, _per_row(attributes.get(semconv.OUTPUTS), n), input_keys(hashes)


#: A ``decision_groups`` row's key: decision id, attribute.
_GROUP_KEY = itemgetter(0, 1)


def _in_key_order(rows: Iterable[tuple]) -> list[tuple]:
    """``decision_groups`` rows in the order of their key. The ids of one call share its time prefix and
    are random after it, so a large call's rows would land all over the table's B-tree; in order, each
    insert lands where the previous one did (bench/RESULTS.md: 2.0 -> 0.6 µs per row of a 100k-row call)."""
    rows = list(rows)
    if len(rows) > 1:
        rows.sort(key=_GROUP_KEY)
    return rows


#: A span's resource attributes, resource schema URL, scope name and scope version (an ``origins`` row).
Origin = tuple[dict[str, Any], str, str, str]
#: A span queued for export: its origin, its number of decisions, and its OTLP encoding.
Queued = tuple[Origin, int, bytes]


#: The `Origin` of a record.
record_origin = attrgetter("resource", "resource_schema_url", "scope_name", "scope_version")
#: A record's own columns of its ``spans`` row, read in one C call.
_SPAN_FIELDS = attrgetter("trace_id", "span_id", "parent_span_id", "name", "kind", "start_ns", "end_ns",
                          "status_code", "status_message")


def _by_decision(rows: Iterable[tuple[str, str, str]]) -> dict[str, dict[str, str]]:
    """{decision id: {attribute: group}} of (decision id, attribute, group) rows in decision id order.
    Decisions of the same groups share one dict, read only: a store's decisions fall in a few groups."""
    out: dict[str, dict[str, str]] = {}
    shared: dict[tuple, dict[str, str]] = {}
    for decision_id, found in groupby(rows, itemgetter(0)):
        key = tuple((attribute, group) for _, attribute, group in found)
        out[decision_id] = shared.get(key) or shared.setdefault(key, dict(key))
    return out


def _last_seq(conn: sqlite3.Connection) -> int:
    """The last seq handed out: a store's spans and a spool's queued spans share one sequence."""
    (last,) = conn.execute(
        "SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name IN ('spans', 'outbox')").fetchone()
    return last


_SPAN_COLUMNS = (
    "s.seq, s.origin, s.trace_id, s.span_id, s.parent_span_id, s.name, s.kind, s.start_ns, s.end_ns, "
    "s.status_code, s.status_message, s.attributes, s.extra"
)


class Store:
    """One audit store file. Safe to share between threads; each thread gets its own connection."""

    @apart_from_fork
    def __init__(self, path: str | os.PathLike[str], *, create: bool = False) -> None:
        self.path = Path(path).expanduser()
        self._create = create
        self._origins: dict[tuple[str, str, str, str], int] = {}
        self._origin_records: dict[int, tuple[dict[str, Any], str, str, str]] = {}
        self._reset()
        self._connection()  # open now: a bad path or a foreign file fails here, clearly
        # What "the store" is while open: this file and (from the first write) this write-ahead log.
        self._file_path = os.fspath(self.path)
        self._file_id = _file_id(self._file_path)
        self._wal_path = os.fspath(self.path.with_name(self.path.name + "-wal"))
        self._wal_id: tuple[int, int] | None = None
        if create:
            self._upgrade()
            self._connection().execute(schema.DRIFT_SNAPSHOTS)  # a file from before the table
        _fork.reset_in_child(self)

    def _reset(self) -> None:
        """Fresh connections; a forked child keeps (never closes) the ones it inherited."""
        if getattr(self, "_connections", None):
            _inherited.extend(conn for _, conn in self._connections)
        self._local = threading.local()
        self._connections: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._lock = threading.Lock()

    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = connect(self.path, create=self._create)
            with self._lock:
                self._connections.append((threading.current_thread(), conn))
        return conn

    @apart_from_fork
    def close(self) -> None:
        """Close the connections of this thread and of threads that have ended; a later use opens a new
        one. A connection of a thread still running stays open: closing it under a statement in progress
        crashes the interpreter (an audit worker that a short close timeout left retrying a commit)."""
        with self._lock:
            connections, self._connections = self._connections, []
        here = threading.current_thread()
        for thread, conn in connections:
            if thread is here or not thread.is_alive():
                conn.close()
            else:
                _inherited.append(conn)  # closed by the interpreter's exit, never under its thread
        self._local = threading.local()

    def _upgrade(self) -> None:
        """Bring a schema 1 file up to date: its outbox held seqs only, so the spans it queued are
        encoded from their records now, and go out as they would have."""
        conn = self._connection()
        if int(schema.meta(conn)["schema_version"]) >= schema.SCHEMA_VERSION:
            return
        from otel_rai.codec import otlpproto  # the OTel SDK: only for this one-off upgrade
        from otel_rai.codec.sdk import ReadableSpans

        with writing(conn):
            if int(schema.meta(conn)["schema_version"]) >= schema.SCHEMA_VERSION:  # another process was first
                return
            rows = conn.execute(f"SELECT {_SPAN_COLUMNS}, s.n_decisions FROM outbox o JOIN spans s"
                                " ON s.seq = o.seq ORDER BY o.seq").fetchall()
            to_span = ReadableSpans()
            conn.execute("DROP TABLE outbox")
            conn.execute(schema.OUTBOX)
            insert(conn, "INSERT INTO outbox", 4, [
                (row[0], row[1], row[-1], otlpproto.encode_span(to_span(self._record(row[:-1])))) for row in rows
            ])
            conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(schema.SCHEMA_VERSION),))
            conn.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION}")

    # --- writing ---

    def _origin(self, conn: sqlite3.Connection, origin: Origin, new: dict, seen: dict) -> int:
        """The ``origins`` id of a resource and scope, added if new. `seen` spares encoding the resource
        again for spans that share one dict (all the spans of a process)."""
        attributes, schema_url, scope_name, scope_version = origin
        resource = seen.get(id(attributes))
        if resource is None:
            resource = seen[id(attributes)] = json_text(attributes)
        key = (resource, schema_url, scope_name, scope_version)
        found = self._origins.get(key) or new.get(key)
        if found is None:
            service = attributes.get(semconv.SERVICE_NAME)
            conn.execute(
                "INSERT OR IGNORE INTO origins"
                " (service, resource, resource_schema_url, scope_name, scope_version) VALUES (?, ?, ?, ?, ?)",
                (None if service is None else text_of(service), *key),
            )
            (found,) = conn.execute(
                "SELECT id FROM origins WHERE resource = ? AND resource_schema_url = ? AND scope_name = ?"
                " AND scope_version = ?",
                key,
            ).fetchone()
            new[key] = found
        return found

    @apart_from_fork
    def append(
        self,
        records: Sequence[SpanRecord] = (),
        *,
        queued: Sequence[Queued] = (),
        groups: Iterable[tuple[str, str, str]] = (),
        outcomes: Iterable[tuple[str, str, int]] = (),
        snapshots: Iterable[tuple[str, str, int, str]] = (),
        outbox_rows: list[tuple[int, int, int, bytes]] | None = None,
    ) -> tuple[int, int]:
        """Write `records` and queue `queued` for export, in one transaction. Both given, they are the
        same spans in the same order (a store that is the write-ahead log of an export); a spool queues
        only. `groups` (decision id, attribute, group) and `outcomes` (decision id, ground truth as JSON,
        time) go to the local-only tables; a decision's first outcome is the one kept; `snapshots` (model
        version, model name, time, histograms as JSON) too. `outbox_rows`, if given, receives the
        ``outbox`` rows written, once committed: (seq, origin id, decisions, encoded span).
        Returns (the seq of the last span, the number of decisions written to ``decisions``)."""
        if records and queued and len(records) != len(queued):
            raise ValueError("otel-rai: the records and the queued spans of a write must be the same spans")
        conn = self._connection()
        new_origins: dict = {}
        seen: dict = {}  # valid during this call only, while `records` keeps the dicts alive
        # The rows are built before the write lock is taken (other writers, the exporter deleting
        # exported spans, wait for it); only the seqs and origin ids are filled in under it.
        spans, single, decisions, n_decisions = _record_rows(records)
        groups = _in_key_order(groups)  # stable: of two rows of one key, the later one is still the one kept

        def origin_of(record: SpanRecord) -> int:
            return self._origin(conn, record_origin(record), new_origins, seen)

        with writing(conn):
            first = _last_seq(conn) + 1
            if native.module is not None and type(records) is list:
                span_rows, rows = native.module.numbered_rows(records, spans, single, first, origin_of)
            else:
                span_rows = [(first + i, origin_of(r), *span) for i, (r, span) in enumerate(zip(records, spans))]
                rows = [(first + i, 0, *columns) for i, *columns in single]
            insert(conn, "INSERT INTO spans", 18, span_rows)
            rows += chain.from_iterable(
                zip(repeat(first + i, len(idx)), idx, *columns) for i, idx, *columns in decisions)
            if single and decisions:
                rows.sort()  # in span order, where the table's key puts them
            insert(conn, "INSERT INTO decisions", 6, rows)
            outbox = [(first + i, self._origin(conn, origin, new_origins, seen), n, encoded)
                      for i, (origin, n, encoded) in enumerate(queued)]
            insert(conn, "INSERT INTO outbox", 4, outbox)
            insert(conn, "INSERT OR REPLACE INTO decision_groups", 3, groups)
            insert(conn, "INSERT OR IGNORE INTO outcomes", 3, outcomes)
            insert(conn, "INSERT OR REPLACE INTO drift_snapshots", 4, snapshots)
            self._check_file()
        self._origins.update(new_origins)  # only once committed: a rolled-back id would be reused
        if outbox_rows is not None:
            outbox_rows += outbox
        return first + max(len(records), len(queued)) - 1, n_decisions

    def _check_file(self) -> None:
        """Raise `StoreError` unless the file at `path` is still the one opened, with its write-ahead log.

        SQLite writes on through its open descriptors when the file is deleted or replaced, and every
        such commit is lost; so each write checks, before it commits, that the path still names the same
        file (device and inode) and that the write-ahead log is there and is the one of the first write.
        Two ``stat`` calls a transaction."""
        try:
            file_id = _file_id(self._file_path)
            wal_id = _file_id(self._wal_path)
        except FileNotFoundError as exc:
            what = "its write-ahead log" if exc.filename == self._wal_path else "the file"
            raise StoreError(f"{self.path}: {what} is gone since it was opened; nothing more is written "
                             "to it") from None
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot check the file ({exc.strerror or exc})") from None
        if self._wal_id is None:
            self._wal_id = wal_id
        if file_id != self._file_id or wal_id != self._wal_id:
            what = "the file" if file_id != self._file_id else "its write-ahead log"
            raise StoreError(f"{self.path}: {what} was replaced since it was opened; nothing more is "
                             "written to it")

    @apart_from_fork
    def index_inputs(self, max_rows: int = _INDEX_BATCH_ROWS) -> int:
        """Add the decisions past the ``input_index`` watermark to it, up to about `max_rows` in one
        sorted bulk transaction; returns how many rows were indexed."""
        conn = self._connection()
        with writing(conn):
            through = int(schema.meta(conn)["input_index_through"])
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

    @apart_from_fork
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

    @apart_from_fork
    def outbox_done(self, last: int, *, forget: bool = False) -> None:
        """The queued spans up to seq `last` were exported. Spans are written in seq order under the
        write lock, so every queued span up to `last` was in an exported batch. With `forget` (a spool),
        the spans and their decisions are deleted too."""
        conn = self._connection()
        with writing(conn):
            # Caught up, the usual case: emptying the table frees its pages whole, for a third of the cost
            # of deleting its rows one by one. AUTOINCREMENT still never gives a seq again.
            if conn.execute("SELECT max(seq) <= ? FROM outbox", (last,)).fetchone()[0] == 1:
                conn.execute("DELETE FROM outbox")
            else:
                conn.execute("DELETE FROM outbox WHERE seq <= ?", (last,))
            if forget:
                conn.execute("DELETE FROM decisions WHERE span <= ?", (last,))
                conn.execute("DELETE FROM spans WHERE seq <= ?", (last,))

    @apart_from_fork
    def outbox_pending(self, through: int | None = None) -> int:
        """Spans waiting for export (those up to seq `through`, if given)."""
        sql, args = "SELECT count(*) FROM outbox", ()
        if through is not None:
            sql, args = sql + " WHERE seq <= ?", (through,)
        return self._connection().execute(sql, args).fetchone()[0]

    @apart_from_fork
    def outbox_waiting(self, through: int) -> bool:
        """Whether any span up to seq `through` waits for export: `outbox_pending` without the count,
        which reads every row."""
        return bool(self._connection().execute(
            "SELECT EXISTS (SELECT 1 FROM outbox WHERE seq <= ?)", (through,)).fetchone()[0])

    @apart_from_fork
    def meta(self) -> dict[str, str]:
        """The ``meta`` table: the format and schema version, and what a writer noted (`set_meta`)."""
        with self._reading():
            return schema.meta(self._connection())

    @apart_from_fork
    def set_meta(self, values: Mapping[str, str]) -> None:
        """Note `values` in the ``meta`` table (a spool's destination, for example)."""
        conn = self._connection()
        with writing(conn):
            conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", list(values.items()))

    @apart_from_fork
    def outbox_totals(self) -> tuple[int, int]:
        """(spans, decisions) waiting for export."""
        return tuple(self._connection().execute(
            "SELECT count(*), coalesce(sum(n_decisions), 0) FROM outbox").fetchone())

    @apart_from_fork
    def last_seq(self) -> int:
        """The last sequence number given to a span (written or queued)."""
        return _last_seq(self._connection())

    # --- reading ---

    @apart_from_fork
    def origin_of(self, origin: int) -> Origin:
        """The resource and scope of origin `origin` (cached)."""
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
            status_message=message, trace_state=more.get("trace_state", ""), events=more.get("events", ()),
            links=more.get("links", ()), resource=resource, resource_schema_url=schema_url,
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
            args.append(json_text(sorted(decision_ids)))
        if input_hashes is not None:
            hashes = sorted(input_hashes)
            keys = [k for k in map(input_key, hashes) if k is not None]
            # Indexed rows by key (a key collision is filtered out by the caller's exact match), plus
            # the rows past the watermark, which are not indexed yet.
            clauses.append(
                "s.seq IN (SELECT span FROM input_index WHERE input_key IN (SELECT value FROM json_each(?))"
                " UNION SELECT span FROM decisions"
                " WHERE span > CAST((SELECT value FROM meta WHERE key = 'input_index_through') AS INTEGER)"
                " AND input_hash IN (SELECT value FROM json_each(?)))"
            )
            args += [json_text(keys), json_text(hashes)]
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

    def spans_at(self, seqs: Iterable[int]) -> dict[int, SpanRecord]:
        """{seq: span} of the spans written at `seqs`; a `StoreError` if one is gone (deleted since)."""
        wanted = sorted(set(seqs))
        with self._reading():
            rows = self._connection().execute(
                f"SELECT {_SPAN_COLUMNS} FROM spans s WHERE s.seq IN (SELECT value FROM json_each(?))",
                (json_text(wanted),))
            found = {row[0]: self._record(row) for row in rows}
        gone = [seq for seq in wanted if seq not in found]
        if gone:
            raise StoreError(f"{self.path}: the span written at seq {gone[0]} is gone (deleted while it was read)")
        return found

    def decision_rows(self, **query: Any) -> Iterator[tuple[int, list[tuple[Any, Any, Any, Any]]]]:
        """(seq, [(decision id, input hash, output, input key) in row order]) of the spans matching the
        filters that hold decisions, in write order: the ``decisions`` table, to compare with the spans."""
        where, args = self._where(**query)
        sql = (f"SELECT d.span, d.decision_id, d.input_hash, d.output, d.input_key FROM decisions d"
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

    # --- what verify-chain compares with the records: every column a reader uses ---

    def span_columns(self, **query: Any) -> Iterator[tuple[int, tuple[Any, ...]]]:
        """(seq, (model_name, model_version, model_fingerprint, operation, n_decisions, origin service,
        origin resource JSON)) of the spans matching the filters, in write order."""
        where, args = self._where(**query)
        sql = (f"SELECT s.seq, s.model_name, s.model_version, s.model_fingerprint, s.operation, s.n_decisions,"
               f" o.service, o.resource FROM spans s LEFT JOIN origins o ON o.id = s.origin{where} ORDER BY s.seq")
        with self._reading():
            for seq, *columns in self._connection().execute(sql, args):
                yield seq, tuple(columns)

    @apart_from_fork
    def index_mismatches(self, **query: Any) -> set[int]:
        """The spans (of those matching the filters) whose ``input_index`` entries do not say what their
        ``decisions`` rows say: an entry that is wrong or names no decision, or an indexed decision
        (below the watermark) with no entry."""
        where, args = self._where(**query)
        spans = f"SELECT s.seq FROM spans s{where}"
        with self._reading():
            conn = self._connection()
            wrong = conn.execute(
                f"SELECT DISTINCT i.span FROM input_index i LEFT JOIN decisions d ON d.span = i.span AND d.idx = i.idx"
                f" WHERE i.span IN ({spans}) AND (d.span IS NULL OR d.input_key IS NOT i.input_key)", args)
            found = {row[0] for row in wrong}
            missing = conn.execute(
                f"SELECT DISTINCT d.span FROM decisions d WHERE d.span IN ({spans}) AND d.input_key IS NOT NULL"
                " AND d.span <= CAST((SELECT value FROM meta WHERE key = 'input_index_through') AS INTEGER)"
                " AND NOT EXISTS (SELECT 1 FROM input_index i"
                " WHERE i.input_key = d.input_key AND i.span = d.span AND i.idx = d.idx)", args)
            return found | {row[0] for row in missing}

    @apart_from_fork
    def local_rows(self) -> tuple[dict[str, dict[str, str]], dict[str, tuple[str, int]]]:
        """Every ``decision_groups`` row ({decision id: {attribute: group}}, see `_by_decision`) and ``outcomes``
        row ({decision id: (ground truth JSON, time)})."""
        with self._reading():
            conn = self._connection()
            groups = _by_decision(conn.execute(
                "SELECT decision_id, attribute, grp FROM decision_groups ORDER BY decision_id"))
            outcomes = {d: (y, t) for d, y, t in conn.execute("SELECT decision_id, y_true, time_ns FROM outcomes")}
        return groups, outcomes

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """A damaged file or row is a `StoreError` naming the file, not a crash."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path} is damaged ({exc})") from None
        except (ValueError, TypeError, KeyError, RecursionError) as exc:
            raise StoreError(f"{self.path} holds a record otel-rai cannot read ({type(exc).__name__})") from None

    @apart_from_fork
    def groups(self, decision_ids: Iterable[str]) -> dict[str, dict[str, str]]:
        """{decision id: {sensitive attribute: group}} of the decisions that have groups (see `_by_decision`)."""
        return _by_decision(self._connection().execute(
            "SELECT decision_id, attribute, grp FROM decision_groups"
            " WHERE decision_id IN (SELECT value FROM json_each(?)) ORDER BY decision_id",
            (json_text(sorted(set(decision_ids))),),
        ))

    @apart_from_fork
    def outcomes(self, decision_ids: Iterable[str]) -> dict[str, Any]:
        """{decision id: ground truth} of the decisions with a recorded outcome."""
        rows = self._connection().execute(
            "SELECT decision_id, y_true FROM outcomes WHERE decision_id IN (SELECT value FROM json_each(?))",
            (json_text(sorted(set(decision_ids))),),
        )
        return {decision_id: json.loads(y_true) for decision_id, y_true in rows}

    @apart_from_fork
    def outcome_records(self, decision_ids: Iterable[str]) -> dict[str, tuple[Any, int]]:
        """{decision id: (ground truth, time recorded in Unix ns)} of the decisions with a recorded outcome."""
        rows = self._connection().execute(
            "SELECT decision_id, y_true, time_ns FROM outcomes WHERE decision_id IN (SELECT value FROM json_each(?))",
            (json_text(sorted(set(decision_ids))),),
        )
        return {decision_id: (json.loads(y_true), time_ns) for decision_id, y_true, time_ns in rows}

    @apart_from_fork
    def drift_snapshots(self, model_version: str, model_name: str | None = None, start_ns: int | None = None,
                        end_ns: int | None = None) -> list[tuple[int, str, dict[str, Any]]]:
        """(time, model name, histograms) of the drift monitor's snapshots of a model version in [start, end),
        oldest first (docs/monitoring.md); none from a store written before the table existed."""
        sql = "SELECT time_ns, model_name, histograms FROM drift_snapshots WHERE model_version = ?"
        args: list[Any] = [model_version]
        for clause, value in (("model_name = ?", model_name), ("time_ns >= ?", start_ns), ("time_ns < ?", end_ns)):
            if value is not None:
                sql += " AND " + clause
                args.append(value)
        with self._reading():
            try:
                rows = self._connection().execute(sql + " ORDER BY time_ns", args).fetchall()
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):
                    return []
                raise
            return [(time_ns, name, json.loads(histograms)) for time_ns, name, histograms in rows]

    @apart_from_fork
    def count_decisions(self, **query: Any) -> int:
        """Decisions in the spans `spans(**query)` yields (an upper bound when filtering by id or hash)."""
        where, args = self._where(**query)
        sql = f"SELECT coalesce(sum(n_decisions), 0) FROM spans s{where}"
        with self._reading():
            return self._connection().execute(sql, args).fetchone()[0]

    @apart_from_fork
    def model_versions(self, **query: Any) -> list[tuple[Any, ...]]:
        """(model name, model version, decisions, first start_ns, last start_ns, input features or None) of
        every model version with decisions among the spans `spans(**query)` yields, oldest first; the
        features are those its newest span recorded (``ml.input.features``)."""
        where, args = self._where(**query)
        where = (where + " AND" if where else " WHERE") + " s.n_decisions > 0"
        sql = (f"SELECT s.model_name, s.model_version, sum(s.n_decisions), min(s.start_ns), max(s.start_ns),"
               f" max(s.seq) FROM spans s{where} GROUP BY s.model_name, s.model_version ORDER BY min(s.start_ns)")
        features = "SELECT json_extract(attributes, '$.\"' || ? || '\"') FROM spans WHERE seq = ?"
        with self._reading():
            conn = self._connection()
            out = []
            for name, version, n, first, last, newest in conn.execute(sql, args).fetchall():
                (names,) = conn.execute(features, (semconv.INPUT_FEATURES, newest)).fetchone()
                out.append((name, version, n, first, last, json.loads(names) if names else None))
            return out

    @apart_from_fork
    def model_summaries(self, record_span: str, **query: Any) -> list[tuple[Any, ...]]:
        """Per (model name, version, fingerprint) of the spans matching the filters: (name, version,
        fingerprint, first and last decision time or None, decisions, spans named `record_span`), in
        order of first appearance."""
        where, args = self._where(**query)
        where = (where + " AND " if where else " WHERE ") + "s.model_fingerprint IS NOT NULL"
        sql = ("SELECT s.model_name, s.model_version, s.model_fingerprint,"
               " min(CASE WHEN s.n_decisions > 0 THEN s.start_ns END),"
               " max(CASE WHEN s.n_decisions > 0 THEN s.start_ns END),"
               " coalesce(sum(s.n_decisions), 0), sum(s.name = ?)"
               f" FROM spans s{where} GROUP BY 1, 2, 3 ORDER BY min(s.start_ns)")
        with self._reading():
            return [tuple(row) for row in self._connection().execute(sql, [record_span, *args])]

    @apart_from_fork
    def query_plan(self, **query: Any) -> str:
        """SQLite's plan for `spans(**query)`, for tests and for curious operators."""
        sql, args = self._select(**query)
        return "\n".join(row[-1] for row in self._connection().execute("EXPLAIN QUERY PLAN " + sql, args))


#: Connections left open: a forked child's inherited ones (closing them there could disturb the parent's
#: locks), and those of threads still running when their store closed.
_inherited: list[sqlite3.Connection] = []
