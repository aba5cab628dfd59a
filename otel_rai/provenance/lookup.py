"""Model records and model summaries from any query backend.

A record is a span of the audit stream, so every backend that stores spans has it: it is found like a
decision, by model name and version (the attributes every backend can filter on), then by span name and
fingerprint. A decision's record is the one with its fingerprint, from its own stream (process) when
there is one, else the latest before it.

``otel-rai model list`` sums decisions per model: a backend with a ``model_summaries(query, record_span)``
method (the local store and ClickHouse, in SQL) answers itself; any other is read span by span. A backend
that keeps records apart (`KeepsRecords`: ClickHouse keeps them past the traces' TTL) is asked for them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Iterator, Protocol, runtime_checkable

from otel_rai import semconv
from otel_rai._time import rfc3339
from otel_rai.codec.records import SpanRecord
from otel_rai.provenance.record import ModelRecord
from otel_rai.query import Backend, Decision, Query, find_spans

_ALL = Query()


@runtime_checkable
class Summarising(Protocol):
    """A backend that sums decisions per model itself."""

    def model_summaries(self, query: Query, record_span: str) -> list[tuple[Any, ...]]:
        """(name, version, fingerprint, first decision ns, last decision ns, decisions, records) rows."""
        ...


@runtime_checkable
class KeepsRecords(Protocol):
    """A backend that keeps model records apart from the decisions (ClickHouse: past the traces' TTL)."""

    def model_records(self, query: Query, fingerprint: str | None = None) -> list[SpanRecord]:
        """The model record spans of `query` (name, version, service, window), oldest first."""
        ...


@dataclass(frozen=True)
class ModelSummary:
    """One fitted model as the trail shows it: ``otel-rai model list``."""

    name: str | None
    version: str | None
    fingerprint: str
    first_ns: int | None
    last_ns: int | None
    decisions: int
    records: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``otel-rai model list --format json``)."""
        return {
            "name": self.name, "version": self.version, "fingerprint": self.fingerprint,
            "first_decision": None if self.first_ns is None else rfc3339(self.first_ns),
            "last_decision": None if self.last_ns is None else rfc3339(self.last_ns),
            "decisions": self.decisions, "records": self.records,
        }


def records(backend: Backend, query: Query = _ALL, fingerprint: str | None = None) -> Iterator[ModelRecord]:
    """The model records `backend` holds for `query` (name, version, service, window), oldest first."""
    if isinstance(backend, KeepsRecords):
        yield from (ModelRecord.from_span(span) for span in backend.model_records(query, fingerprint))
        return
    for span in find_spans(replace(query, decision_ids=None, input_hashes=None), backend):
        if span.name == semconv.MODEL_RECORD_SPAN and (
                fingerprint is None or span.attributes.get(semconv.MODEL_FINGERPRINT) == fingerprint):
            yield ModelRecord.from_span(span)


def record_of(decision: Decision, backend: Backend, start_ns: int | None = None) -> ModelRecord | None:
    """The record of `decision`'s model: the one of its fingerprint from its stream, else the latest one
    before it, else any. Searched from `start_ns` (remote backends: their default window before it)."""
    if decision.model_fingerprint is None:
        return None
    q = Query(model_version=decision.model_version, model_name=decision.model_name, start_ns=start_ns,
              end_ns=decision.time_ns + 1)
    found = list(records(backend, q, decision.model_fingerprint))
    if not found:  # recorded after the decision, e.g. by another process serving the same model
        found = list(records(backend, replace(q, end_ns=None), decision.model_fingerprint))
    if not found:
        return None
    stream = decision.attributes.get(semconv.AUDIT_STREAM)
    same = [r for r in found if stream is not None and r.stream == stream]
    before = [r for r in found if r.time_ns <= decision.time_ns]
    return (same or before or found)[-1]


def latest(found: list[ModelRecord]) -> dict[str, ModelRecord]:
    """The newest record of each fingerprint, in order of first appearance."""
    out: dict[str, ModelRecord] = {}
    for r in found:
        out.pop(str(r.fingerprint), None)
        out[str(r.fingerprint)] = r
    return out


def summaries(backend: Backend, query: Query = _ALL) -> list[ModelSummary]:
    """One `ModelSummary` per (name, version, fingerprint) with spans in `query`'s window."""
    if isinstance(backend, Summarising):
        rows = backend.model_summaries(query, semconv.MODEL_RECORD_SPAN)
        return [ModelSummary(n, v, fp, first, last, int(count or 0), int(recs or 0))
                for n, v, fp, first, last, count, recs in rows]
    totals: dict[tuple[Any, Any, str], list[Any]] = {}
    for span in find_spans(replace(query, decision_ids=None, input_hashes=None), backend):
        _add(totals, span)
    return [ModelSummary(n, v, fp, *t) for (n, v, fp), t in totals.items()]


def _add(totals: dict[tuple[Any, Any, str], list[Any]], span: SpanRecord) -> None:
    a = span.attributes
    fp = a.get(semconv.MODEL_FINGERPRINT)
    if fp is None:
        return
    t = totals.setdefault((a.get(semconv.MODEL_NAME), a.get(semconv.MODEL_VERSION), str(fp)), [None, None, 0, 0])
    ids = a.get(semconv.DECISION_IDS)
    if span.name == semconv.MODEL_RECORD_SPAN:
        t[3] += 1
    elif ids:
        n = len(ids) if isinstance(ids, (list, tuple)) else int(a.get(semconv.BATCH_SIZE) or 0)
        t[0] = span.start_ns if t[0] is None else min(t[0], span.start_ns)
        t[1] = span.start_ns if t[1] is None else max(t[1], span.start_ns)
        t[2] += n
