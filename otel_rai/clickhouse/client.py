"""Connecting to ClickHouse: a server over HTTP(S), or chDB (ClickHouse in this process) on a directory.

    http://localhost:8123            https://user:password@host:8443/otel
    chdb:///var/lib/otel-rai/ch      chdb://memory

The path of an HTTP URL, or ``?database=`` on either kind, names the database (default ``otel``, as in
``collector/otelcol.yaml``). Credentials come from the URL, else from ``CLICKHOUSE_USER`` and
``CLICKHOUSE_PASSWORD``. Both kinds go through clickhouse-connect (``pip install 'otel-rai[clickhouse]'``;
chDB also needs ``chdb``), so the same SQL runs on both. chDB opens one directory per process at a time.

A `Connection` connects at its first query; every failure is a one-line `BackendError` naming the URL.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from otel_rai import settings
from otel_rai.clickhouse import schema
from otel_rai.errors import BackendError

DEFAULT_URL = "http://localhost:8123"
_DEFAULT_PORTS = {"http": 8123, "https": 8443}
#: Seconds to wait for an HTTP answer; a month's report over 10^8 decisions takes seconds, not minutes.
TIMEOUT_S = 300


@dataclass(frozen=True)
class Location:
    """Where a ClickHouse is: `kind` ``http`` (with `secure`) or ``chdb`` (with `path`, None in memory)."""

    kind: str
    database: str
    host: str = ""
    port: int = 0
    secure: bool = False
    username: str | None = None
    password: str | None = None
    path: str | None = None

    @property
    def shown(self) -> str:
        """The URL without credentials, for messages."""
        if self.kind == "chdb":
            return f"chdb://{self.path or 'memory'}"
        return f"{'https' if self.secure else 'http'}://{self.host}:{self.port}/{self.database}"


def _database(name: str) -> str:
    """`name` if it can go into SQL unquoted (it names the tables of every statement)."""
    if not name.replace("_", "").isalnum() or not name.isascii():
        raise ValueError(f"otel-rai: clickhouse: database {name!r} must be letters, digits and underscores")
    return name


def location(url: str) -> Location:
    """The `Location` of `url`; ValueError (a usage error) for a URL that is neither kind."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qs(parts.query)
    database = (query.get("database") or [""])[0]
    if parts.scheme == "chdb":
        rest = url[len("chdb://"):].split("?", 1)[0] if url.startswith("chdb://") else ""
        if not rest:
            raise ValueError(f"otel-rai: clickhouse: {url!r}: give chdb:///a/directory or chdb://memory")
        path = None if rest in ("memory", ":memory:") else rest
        return Location("chdb", _database(database or schema.DATABASE), path=path)
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"otel-rai: clickhouse: {url!r} is not a URL like http://localhost:8123 or chdb:///a/directory")
    try:
        port = parts.port or _DEFAULT_PORTS[parts.scheme]
    except ValueError:
        raise ValueError(f"otel-rai: clickhouse: {url!r} has an invalid port") from None
    return Location(
        "http", _database(database or parts.path.strip("/") or schema.DATABASE), host=parts.hostname, port=port,
        secure=parts.scheme == "https",
        username=urllib.parse.unquote(parts.username) if parts.username else settings.env("CLICKHOUSE_USER"),
        password=urllib.parse.unquote(parts.password) if parts.password else settings.env("CLICKHOUSE_PASSWORD"),
    )


class Connection:
    """A ClickHouse reached through clickhouse-connect, opened at the first query."""

    def __init__(self, where: Location, layout: schema.Layout | None = None) -> None:
        self.where = where
        self.layout = layout or schema.Layout(database=where.database)
        self._client: Any = None

    def table(self, name: str) -> str:
        """The qualified name to read `name` through (the Distributed table in a cluster)."""
        return f"{self.layout.database}.{name}"

    def _connect(self) -> Any:
        if self._client is not None:
            return self._client
        try:
            import clickhouse_connect
        except ImportError:
            raise BackendError("the clickhouse backend needs clickhouse-connect: "
                               "pip install 'otel-rai[clickhouse]'") from None
        w = self.where
        try:
            if w.kind == "chdb":
                self._client = clickhouse_connect.get_client(dsn=f"chdb://{w.path or 'memory'}")
            else:
                self._client = clickhouse_connect.get_client(
                    host=w.host, port=w.port, secure=w.secure, username=w.username or "default",
                    password=w.password or "", send_receive_timeout=TIMEOUT_S,
                )
        except ImportError:
            raise BackendError("chdb:// URLs need chDB: pip install chdb") from None
        except Exception as exc:  # clickhouse-connect's errors, and the transport's
            raise self._error(exc, "cannot connect to") from None
        return self._client

    def _error(self, exc: BaseException, doing: str = "failed at") -> BackendError:
        text = str(exc).strip().splitlines()
        first = next((line.strip() for line in text if line.strip()), type(exc).__name__)
        if self.where.password:
            first = first.replace(self.where.password, "***")
        return BackendError(f"clickhouse {doing} {self.where.shown}: {first[:300]}")

    def rows(self, sql: str, parameters: Mapping[str, Any] | None = None,
             settings: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """The rows `sql` selects (parameters bound as ``{name:Type}``)."""
        return self.query(sql, parameters, settings).result_rows

    def query(self, sql: str, parameters: Mapping[str, Any] | None = None,
              settings: Mapping[str, Any] | None = None) -> Any:
        """clickhouse-connect's QueryResult of `sql` (rows, and `summary` with the rows read)."""
        client = self._connect()
        try:
            return client.query(sql, parameters=dict(parameters or {}), settings=dict(settings or {}))
        except Exception as exc:
            raise self._error(exc) from None

    def command(self, sql: str) -> None:
        """Run a statement that returns nothing (DDL, ALTER, OPTIMIZE)."""
        client = self._connect()
        try:
            client.command(sql)
        except Exception as exc:
            raise self._error(exc) from None

    def insert(self, table: str, rows: Sequence[Sequence[Any]], columns: Iterable[str]) -> None:
        """Insert `rows` (lists in `columns` order) into `table` (a name of `schema`)."""
        if not rows:
            return
        client = self._connect()
        try:
            client.insert(table, rows, column_names=list(columns), database=self.layout.database)
        except Exception as exc:
            raise self._error(exc, "refused rows at") from None

    def has_schema(self) -> bool:
        """Whether otel-rai's tables exist (the collector route needs them before spans arrive)."""
        found = self.rows("SELECT count() FROM system.tables"
                          " WHERE database = {db:String} AND name IN {names:Array(String)}",
                          {"db": self.layout.database, "names": list(_NEEDED)})
        return found[0][0] == len(_NEEDED)

    def create_schema(self) -> None:
        """Create every table and view that does not exist yet (`schema.statements`)."""
        for statement in schema.statements(self.layout):
            self.command(statement)

    def close(self) -> None:
        """Close the client (chDB keeps its engine open while any client of the directory is)."""
        if self._client is not None:
            self._client.close()
            self._client = None


_NEEDED = (schema.TRACES, schema.SPANS, schema.DECISIONS, schema.INPUTS, schema.GROUPS, schema.OUTCOMES,
           schema.DRIFT, schema.MODEL_RECORDS)


def connect(url: str | None = None, layout: schema.Layout | None = None) -> Connection:
    """A `Connection` to `url` (default `DEFAULT_URL`); nothing is opened yet."""
    where = location(url or DEFAULT_URL)
    if layout is not None and layout.database != where.database:
        layout = schema.Layout(where.database, layout.retention_days, layout.granularity, layout.cluster)
    return Connection(where, layout)
