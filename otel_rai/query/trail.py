"""Reading a trail for the chain's verification (``otel-rai verify-chain``): the local store in write
order, with its ``decisions`` table checked against the spans, a backend that offers it in chain order
(ClickHouse), and any other backend in time order."""

from __future__ import annotations

from typing import Any, Iterator, Mapping, Sequence

from otel_rai import semconv
from otel_rai.chain.verify import Problem, Report, check, check_ordered, seq_of
from otel_rai.codec.records import SpanRecord
from otel_rai.query import Query, find_spans
from otel_rai.query.capabilities import Chained


def records(backend: Any, query: Query, problems: list[Problem]) -> Iterator[tuple[int | None, SpanRecord]]:
    """The trail in `backend` within `query`'s window: the local store in write order, others in time order.
    In the local store, each span's rows of the ``decisions`` table (what SQL readers see) must say what
    the span says; a row that does not is added to `problems` as an edit."""
    local = getattr(backend, "store", None)
    if local is None:
        for record in find_spans(query, backend):
            yield None, record
        return
    window = {"service": query.service, "start_ns": query.start_ns, "end_ns": query.end_ns}
    tables = local.decision_rows(**window)
    row = next(tables, None)
    for position, record in local.spans_in_write_order(**window):
        while row is not None and row[0] < position:  # rows of a span that is gone
            row = next(tables, None)
        stored = row[1] if row is not None and row[0] == position else []
        if stored != _rows_of(record):
            problems.append(Problem("edited", "its rows in the decisions table differ from the span", record,
                                    record.attributes.get(semconv.AUDIT_STREAM), seq_of(record.attributes.get(
                                        semconv.AUDIT_SEQ)), position))
        yield position, record


def _rows_of(record: SpanRecord) -> list[tuple[Any, Any, Any]]:
    """What the ``decisions`` table should hold for `record` (as `store.Store.append` writes it)."""
    a = record.attributes
    ids = a.get(semconv.DECISION_IDS) or ()
    n = len(ids)

    def column(key: str) -> Sequence[Any]:
        values = a.get(key)
        return values if isinstance(values, (list, tuple)) and len(values) == n else [None] * n

    return [(i, h, _Same(o)) for i, h, o in zip(ids, column(semconv.INPUT_HASHES), column(semconv.OUTPUTS))]


class _Same:
    """An output as SQLite gives it back: booleans as 0/1, NaN equal to itself."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __eq__(self, other: Any) -> bool:
        v = self.value
        return v == other or (v != v and other != other)

    __hash__ = None  # type: ignore[assignment]


def verify(backend: Any, query: Query = Query(), keys: Mapping[str, Any] = {},  # noqa: B006, B008 - read only
           *, anchored: bool = False, require_signed: bool = False) -> Report:
    """Check the trail that `backend` holds within `query`'s window (see `check` and `records`). A backend
    that reads its trail in chain order (`Chained`) is checked as it is read, in bounded memory."""
    if isinstance(backend, Chained):
        return check_ordered(backend.chained(query), keys, anchored=anchored, require_signed=require_signed)
    tables: list[Problem] = []
    report = check(records(backend, query, tables), keys, anchored=anchored, require_signed=require_signed)
    edited = {p.position for p in report.problems if p.kind == "edited"}
    report.problems += [p for p in tables if p.position not in edited]  # one problem per edited record
    return report
