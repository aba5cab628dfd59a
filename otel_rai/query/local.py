"""The local audit store (`otel_rai.store`) as a query backend: indexed SQL, no server."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from otel_rai import store
from otel_rai.codec.records import SpanRecord
from otel_rai.query import Query

#: None: ``OTEL_RAI_STORE``, else ``audit.db`` in the otel-rai data directory.
DEFAULT_URL = None


class Local:
    """The query backend of one local audit store."""

    def __init__(self, path: Path) -> None:
        self.store = store.Store(path)

    @classmethod
    def of(cls, opened: store.Store) -> Local:
        """A backend reading a store that is open already (the instrumented process's own)."""
        backend = cls.__new__(cls)
        backend.store = opened
        return backend

    @staticmethod
    def _filters(query: Query) -> dict[str, Any]:
        return {
            "model_version": query.model_version,
            "model_name": query.model_name,
            "service": query.service,
            "start_ns": query.start_ns,
            "end_ns": query.end_ns,
            "decision_ids": query.decision_ids,
            "input_hashes": query.input_hashes,
        }

    def spans(self, query: Query) -> Iterator[SpanRecord]:
        """The store's spans for `query`, by indexed SQL."""
        return self.store.spans(**self._filters(query))

    def count(self, query: Query) -> int:
        """The number of decisions the store holds for `query`."""
        return self.store.count_decisions(**self._filters(query))

    def model_summaries(self, query: Query, record_span: str) -> list[tuple[Any, ...]]:
        """What `Store.model_summaries` says for `query` (``otel-rai model list``, in SQL)."""
        return self.store.model_summaries(record_span, **self._filters(query))


def connect(url: str | None) -> Local:
    """The store file at `url` (a path), else the default store."""
    return Local(Path(url).expanduser() if url else store.default_path())
