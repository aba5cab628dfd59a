"""Connections to an audit store file: created owner-only, write-ahead log, a busy timeout, and
``BEGIN IMMEDIATE`` for every write, so threads and processes sharing one file queue for the write lock
instead of failing or interleaving; multi-row inserts in few statements."""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import time
import urllib.parse
from itertools import chain
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from otel_rai import _fork, settings
from otel_rai.errors import StoreError
from otel_rai.store import schema

#: How long a writer waits for another writer's transaction before it fails.
BUSY_TIMEOUT_S = 60.0
#: How often `journal_mode_wal` tries again while another connection writes in rollback mode.
_WAL_RETRY_S = 0.005


def create_file(path: Path) -> None:
    """Create the store file (and its directory) readable by its owner only, unless it exists.

    Never open and close an existing store file outside SQLite: closing any descriptor of a file
    drops every POSIX lock this process holds on it, including those of its open SQLite connections,
    and another process could then checkpoint and truncate the write-ahead log under them.
    """
    settings.private_directory(path.parent)
    try:
        # SQLite gives its -wal and -shm files the permissions of the database file.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass


@contextlib.contextmanager
def writing(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction; ``IMMEDIATE`` takes the write lock first, so it cannot fail half-way
    on a lock upgrade, and waits up to `BUSY_TIMEOUT_S` for another writer. Only inside a store call
    (`apart_from_fork`): a child forked while this process holds the write lock could never write."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")  # where a full disk shows: the transaction must not stay open after it
    except BaseException:
        with contextlib.suppress(sqlite3.Error):  # SQLite may have rolled back already
            conn.execute("ROLLBACK")
        raise


def journal_mode_wal(conn: sqlite3.Connection) -> str:
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
            time.sleep(_WAL_RETRY_S)


def apart_from_fork(method: Callable[..., Any]) -> Callable[..., Any]:
    """`method` as one call into SQLite that a fork waits for (`_fork.store_calls`): the store's
    background users (the audit worker, the export) are never in SQLite while the process forks, which
    could leave the child one of SQLite's mutexes or lock records held for ever."""

    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        with _fork.store_calls():
            return method(*args, **kwargs)

    return call


@apart_from_fork
def connect(path: Path, *, create: bool) -> sqlite3.Connection:
    """A connection to the store at `path`, created (owner-only) if `create` and it does not exist."""
    if create:
        try:
            create_file(path)
        except OSError as exc:
            raise StoreError(f"cannot create the audit store {path}: {exc.strerror or exc}") from None
    elif not path.exists():
        raise StoreError(f"no audit store at {path}")
    try:
        uri = f"file:{urllib.parse.quote(str(path))}?mode=rw"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=BUSY_TIMEOUT_S,
                               check_same_thread=False, cached_statements=_STATEMENTS_CACHED)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the audit store {path}: {exc}") from None
    try:
        if create:
            with writing(conn):
                (app_id,) = conn.execute("PRAGMA application_id").fetchone()
                if app_id == 0 and conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
                    schema.initialise(conn)
        schema.check(conn, path)  # before anything changes a file that is not ours
        if create and journal_mode_wal(conn).lower() != "wal":
            raise StoreError(f"{path}: SQLite cannot use a write-ahead log here (a network file system?)")
        # FULL: a committed decision survives a power cut, not only a crash of the process.
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA cache_size = -16384")
        # The same on every build (Debian's zeroes each freed page, others none): deleting delivered spans
        # zeroes their bytes on the pages it writes anyway, not on the pages it frees (docs/store.md).
        conn.execute("PRAGMA secure_delete = FAST")
    except sqlite3.DatabaseError as exc:
        conn.close()
        if str(exc) == "file is not a database":  # SQLite read the header and wrote nothing
            raise StoreError(f"{path} is not an otel-rai audit store (not an SQLite database)") from None
        raise StoreError(f"{path} is not a usable otel-rai audit store ({exc})") from None
    except StoreError:
        conn.close()
        raise
    return conn


#: Rows per INSERT statement, at most. sqlite3 lets go of the interpreter lock for every step of a
#: statement, and getting it back from the application's threads can take a whole switch interval
#: (5 ms): a writer stepping once per row would hold the write lock for seconds. So rows go in a few
#: statements of power-of-two sizes and one of the last few rows (`_EXACT_ROWS`), all prepared once and cached.
_MAX_ROWS_PER_INSERT = 512


#: Rows up to which the last statement of an insert takes exactly the rows left, not power-of-two parts of
#: them. sqlite3 lets go of the interpreter lock five times an ``execute``, and each time costs tens of µs
#: of CPU while an application thread waits for the lock (bench/RESULTS.md): a worker cycle of a few calls
#: then writes each table in one statement rather than up to five.
_EXACT_ROWS = 32

#: INSERT statements remembered (the sizes of each table's: `_EXACT_ROWS` and the larger powers of two),
#: as SQL text here and prepared by each connection (`connect`).
_STATEMENTS_CACHED = 512


@functools.lru_cache(maxsize=_STATEMENTS_CACHED)
def _insert_sql(head: str, width: int, rows: int) -> str:
    one = f"({', '.join('?' * width)})"
    return f"{head} VALUES {', '.join([one] * rows)}"


def insert(conn: sqlite3.Connection, head: str, width: int, rows: Iterable[Sequence[Any]]) -> None:
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
        left = len(rows) - start
        if left <= _EXACT_ROWS and left * width <= limit:
            size = left
        while size > left:
            size //= 2
        conn.execute(_insert_sql(head, width, size), tuple(chain.from_iterable(rows[start : start + size])))
        start += size
