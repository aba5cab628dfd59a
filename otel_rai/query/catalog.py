"""Which model versions a backend holds decisions of: for messages ("versions there: ..."), for matching
input rows by feature name (`inputs`), and for the report's version comparison.

The local store answers from its model columns (one grouped SQL query), ClickHouse from its span index
(`Catalogued`); another remote backend by reading the spans of the query's window, as
`otel_rai.query.find_spans` does.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Iterable, Protocol, runtime_checkable

from otel_rai import semconv
from otel_rai.query import Backend, Query, find_spans
from otel_rai.query._decision import _array
from otel_rai.query.local import Local


@dataclass(frozen=True)
class ModelVersion:
    """One model version seen in a backend: its decisions in the window and the input columns it recorded."""

    model_name: str | None
    model_version: str | None
    decisions: int
    first_ns: int
    last_ns: int
    features: tuple[str, ...] | None = None

    @property
    def label(self) -> str:
        """``name version``, as messages print it."""
        return f"{self.model_name} {self.model_version}"


def versions(query: Query, backend: Backend) -> list[ModelVersion]:
    """The model versions with decisions among the spans `query` selects (its decision ids and input
    hashes are ignored), oldest first."""
    query = replace(query, decision_ids=None, input_hashes=None)
    if isinstance(backend, Local):
        filters = Local._filters(query)
        return [ModelVersion(name, version, n, first, last, tuple(features) if features else None)
                for name, version, n, first, last, features in backend.store.model_versions(**filters)]
    if isinstance(backend, Catalogued):
        return [ModelVersion(name, version, n, first, last, tuple(features) if features else None)
                for name, version, n, first, last, features in backend.model_versions(query)]
    return _from_spans(find_spans(query, backend))


@runtime_checkable
class Catalogued(Protocol):
    """A backend that lists its model versions itself (ClickHouse, in SQL)."""

    def model_versions(self, query: Query) -> list[tuple[Any, ...]]:
        """(model name, version, decisions, first and last start ns, input features or None), oldest first."""
        ...


def _from_spans(spans: Iterable) -> list[ModelVersion]:
    seen: dict[tuple[str | None, str | None], ModelVersion] = {}
    for span in spans:
        a = span.attributes
        ids = _array(a.get(semconv.DECISION_IDS))
        if not ids:
            continue
        key = (a.get(semconv.MODEL_NAME), a.get(semconv.MODEL_VERSION))
        features = _array(a.get(semconv.INPUT_FEATURES))
        known = seen.get(key)
        if known is None:
            known = ModelVersion(*key, 0, span.start_ns, span.start_ns)
        seen[key] = replace(known, decisions=known.decisions + len(ids), first_ns=min(known.first_ns, span.start_ns),
                            last_ns=max(known.last_ns, span.start_ns),
                            features=tuple(map(str, features)) if features else known.features)
    return sorted(seen.values(), key=lambda v: v.first_ns)


def described(found: Iterable[ModelVersion], limit: int = 10) -> str:
    """``credit 1.4.1, credit 1.4.2`` (at most `limit`, then how many more), or ``none``."""
    labels = [v.label for v in found]
    if not labels:
        return "none"
    more = len(labels) - limit
    return ", ".join(labels[:limit]) + (f" and {more} more" if more > 0 else "")
