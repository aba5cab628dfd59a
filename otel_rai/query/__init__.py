"""Find decisions wherever their spans were stored.

    from otel_rai.query import find_decisions
    for d in find_decisions(model_version="1.4.2", since="24h"):
        print(d.decision_id, d.output, d.timestamp)

Backends share one small interface, `Backend`: ``spans(query)`` yields the spans that may hold
matching decisions, in time order. This module filters again (exactly, so a backend may over-match) and
expands each span into its `Decision`\\ s. Each backend is one module in this package: ``local`` (the
SQLite audit store), ``clickhouse``, ``jaeger``, ``tempo``, ``phoenix``, ``mlflow``, listed in `BACKENDS`;
each defines ``DEFAULT_URL`` and ``connect(url) -> Backend``, so adding one is adding one module and its
name. A backend may also offer the capabilities of `capabilities` (aggregates, named spans, the chain in
order).
`inputs` matches input rows to decisions (``otel-rai verify``) and `trail` reads a trail for the chain's
verification. Imports `store`, `chain`, `audit.hashing`, `codec` and the foundation modules.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Iterable, Iterator, Protocol, runtime_checkable

from otel_rai import semconv
from otel_rai._time import window
from otel_rai.codec.records import SpanRecord
from otel_rai.errors import BackendError, StoreError
from otel_rai.query._decision import Decision, decisions_of

__all__ = [
    "Backend",
    "BackendError",
    "Countable",
    "Decision",
    "Query",
    "StoreError",
    "backends",
    "connect",
    "find_decisions",
    "find_spans",
]


@dataclass(frozen=True)
class Query:
    """What to look for. Times are Unix nanoseconds, the window is [start, end); None matches all."""

    model_version: str | None = None
    model_name: str | None = None
    service: str | None = None
    start_ns: int | None = None
    end_ns: int | None = None
    decision_ids: frozenset[str] | None = None
    input_hashes: frozenset[str] | None = None

    def span_matches(self, span: SpanRecord) -> bool:
        """Whether `span` passes the model, service and time filters."""
        a = span.attributes
        return (
            (self.model_version is None or a.get(semconv.MODEL_VERSION) == self.model_version)
            and (self.model_name is None or a.get(semconv.MODEL_NAME) == self.model_name)
            and (self.service is None or span.service == self.service)
            and (self.start_ns is None or span.start_ns >= self.start_ns)
            and (self.end_ns is None or span.start_ns < self.end_ns)
        )

    def decision_matches(self, d: Decision) -> bool:
        """Whether `d` passes the decision id and input hash filters."""
        return (self.decision_ids is None or d.decision_id in self.decision_ids) and (
            self.input_hashes is None or d.input_hash in self.input_hashes
        )

    @property
    def by_row(self) -> bool:
        """Whether the query names decisions (by id or input hash), not only spans."""
        return self.decision_ids is not None or self.input_hashes is not None


@runtime_checkable
class Backend(Protocol):
    """Where decision spans are stored."""

    def spans(self, query: Query) -> Iterator[SpanRecord]:
        """Spans that may hold decisions matching `query`, ordered by start time: every matching one,
        and possibly others (they are filtered again)."""
        ...


@runtime_checkable
class Countable(Protocol):
    """A backend that can count cheaply (used for progress bars)."""

    def count(self, query: Query) -> int:
        """The number of decisions `spans(query)` holds (an upper bound)."""
        ...


#: The backends, one module of this package each.
BACKENDS = ("clickhouse", "jaeger", "local", "mlflow", "phoenix", "tempo")


def backends() -> tuple[str, ...]:
    """The names of the available backends."""
    return BACKENDS


def connect(backend: str = "local", url: str | None = None) -> Backend:
    """The backend `backend` at `url` (a store path for ``local``; each backend has a default)."""
    if backend not in backends():
        raise ValueError(f"otel-rai: unknown backend {backend!r}; choose one of {', '.join(backends())}")
    module = importlib.import_module(f"{__name__}.{backend}")
    return module.connect(url)


def _ids(value: str | Iterable[str] | None) -> frozenset[str] | None:
    if value is None:
        return None
    return frozenset([value] if isinstance(value, str) else (str(v) for v in value))


def find_spans(query: Query, backend: Backend) -> Iterator[SpanRecord]:
    """The spans `backend` holds for `query`, filtered exactly, in time order."""
    for span in backend.spans(query):
        if not query.span_matches(span):
            continue
        if not query.by_row or any(map(query.decision_matches, decisions_of(span))):
            yield span


def decisions(query: Query, backend: Backend, limit: int | None = None) -> Iterator[Decision]:
    """The decisions matching `query`, in time order (then row order), at most `limit` of them."""
    if limit is not None and limit <= 0:
        return
    found = 0
    for span in backend.spans(query):
        if not query.span_matches(span):
            continue
        for d in decisions_of(span):
            if query.decision_matches(d):
                yield d
                found += 1
                if found == limit:
                    return


def find_decisions(
    *,
    model_version: str | None = None,
    model_name: str | None = None,
    service: str | None = None,
    since: timedelta | str | None = None,
    start: datetime | str | int | None = None,
    end: datetime | str | int | None = None,
    decision_id: str | Iterable[str] | None = None,
    input_hash: str | Iterable[str] | None = None,
    limit: int | None = None,
    backend: str | Backend = "local",
    url: str | None = None,
) -> Iterator[Decision]:
    """Decisions matching every filter given, oldest first.

    since: a duration back from now (``"24h"``, ``"7d"``, or a timedelta); or start/end: datetimes
        (naive ones are UTC), RFC 3339 strings or Unix nanoseconds. The window is [start, end).
    decision_id, input_hash: one value or several.
    backend: ``"local"``, ``"clickhouse"``, ``"jaeger"``, ``"tempo"``, ``"phoenix"``, ``"mlflow"`` or a
        `Backend`; url: where it runs (for ``local``, the store file; default ``OTEL_RAI_STORE`` or the data
        directory's ``audit.db``).

    Arguments are checked now; the backend is asked lazily, as the result is iterated.
    """
    start_ns, end_ns = window(since, start, end)
    query = Query(model_version, model_name, service, start_ns, end_ns, _ids(decision_id), _ids(input_hash))
    source = connect(backend, url) if isinstance(backend, str) else backend
    return decisions(query, source, limit)
