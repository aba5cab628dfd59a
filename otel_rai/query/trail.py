"""Reading a trail for the chain's verification (``otel-rai verify-chain``): the local store in write
order, a backend that offers it in chain order (ClickHouse, `Chained`), and any other backend in time
order.

In the local store, every column a reader uses besides the hashed record is checked against it, so that
no edit can hide a decision from a query, ``verify --input`` or the report while the chain says intact:

* ``spans``: model name, version, fingerprint, operation and number of decisions (from the record's
  attributes); ``origins``: the service (the record's ``ml.audit.service``, sealed with it);
* ``decisions``: id, input hash, output and ``input_key``; ``input_index``: each entry names a decision
  with that key, and each decision below the watermark has its entry;
* ``decision_groups``: each decision's rows against its span's keyed ``ml.fairness.groups_digest``;
* ``outcomes``: each row against the keyed digest of its outcome span (``ml.audit.outcome``), and each
  outcome span has its row. Rows older than the first outcome span (earlier versions wrote none) are
  not checked.

The keyed digests need the input hash key (`hash_keys`); without it, they are counted as not verified.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Sequence

from otel_rai import semconv
from otel_rai.audit.local_rows import groups_digest, local_key, outcome_digest
from otel_rai.chain.verify import EDGE_MARGIN_NS, Problem, Report, check, check_ordered, in_view, seq_of
from otel_rai.codec.records import SpanRecord
from otel_rai.query import Query, find_spans
from otel_rai.query.capabilities import Chained, KeepsRows
from otel_rai.store.store import input_key

if TYPE_CHECKING:  # a type only: hashing imports numpy, which reading the trail does without
    from otel_rai.audit.hashing import HashKey

#: Records checked together against a backend's copied groups and outcomes (one lookup each per page).
_COPIED_PAGE = 2048
#: The span columns checked, and the attribute each repeats.
_SPAN_COLUMNS = (semconv.MODEL_NAME, semconv.MODEL_VERSION, semconv.MODEL_FINGERPRINT, semconv.OPERATION)


class _Local:
    """What the local store keeps beside the records, and the problems found in it."""

    def __init__(self, store: Any, window: Mapping[str, Any], keys: Sequence[bytes], end_ns: int | None) -> None:
        self.store = store
        self.keys = keys
        self.end_ns = end_ns  # outcomes rows from then on are out of view
        self.columns = _Cursor(store.span_columns(**window))
        self.rows = _Cursor(store.decision_rows(**window))
        self.index = store.index_mismatches(**window)
        self.groups, self.outcomes = store.local_rows()
        self.problems: list[Problem] = []
        self.unverified = 0
        self.first_outcome_ns: int | None = None
        self.seen_outcomes: set[str] = set()
        self.grouped: set[str] = set()  # decisions whose groups a record covers
        # Decisions with groups rows, of records that say they had none: the record's position.
        self.ungrouped: dict[str, int] = {}

    def problem(self, kind: str, detail: str, record: SpanRecord, position: int) -> None:
        a = record.attributes
        self.problems.append(Problem(kind, detail, record, a.get(semconv.AUDIT_STREAM),
                                     seq_of(a.get(semconv.AUDIT_SEQ)), position))

    def check(self, position: int, record: SpanRecord) -> None:
        a = record.attributes
        columns = self.columns.at(position)
        if columns is not None and columns[:5] != _columns_of(a):
            self.problem("edited", "its model or decision-count columns differ from the span", record, position)
        if columns is not None and not _same_service(columns[5], columns[6], a.get(semconv.AUDIT_SERVICE)):
            self.problem("edited", "its service (origins table) differs from the span", record, position)
        stored = self.rows.at(position) or []
        if stored != _rows_of(a):
            self.problem("edited", "its rows in the decisions table differ from the span", record, position)
        if position in self.index:
            self.problem("edited", "its input_index entries do not match its decisions", record, position)
        self._check_groups(position, record)
        if record.name == semconv.OUTCOME_SPAN:
            self._check_outcome(position, record)

    def _check_groups(self, position: int, record: SpanRecord) -> None:
        a = record.attributes
        ids = a.get(semconv.DECISION_IDS) or ()
        digests = a.get(semconv.GROUPS_DIGEST)
        if not isinstance(digests, (list, tuple)) or len(digests) != len(ids):
            if semconv.AUDIT_SERVICE in a:  # sealed by a version that covers groups: it had none
                self.ungrouped.update((d, position) for d in map(str, ids) if d in self.groups)
            return
        self.grouped.update(map(str, ids))
        if any(str(i) not in self.groups for i in ids):  # a decision that had groups has none now
            self.problem("deleted", "its decisions' rows in the decision_groups table are missing", record, position)
            return
        if not self.keys:
            self.unverified += len(ids)
            return
        for decision_id, digest in zip(ids, digests):
            rows = self.groups.get(str(decision_id), {})
            if not any(groups_digest(k, str(decision_id), rows) == digest for k in self.keys):
                self.problem("edited", "its decisions' rows in the decision_groups table differ from the span",
                             record, position)
                return

    def _check_outcome(self, position: int, record: SpanRecord) -> None:
        a = record.attributes
        decision_id = str(a.get(semconv.OUTCOME_DECISION_ID))
        if self.first_outcome_ns is None or record.start_ns < self.first_outcome_ns:
            self.first_outcome_ns = record.start_ns
        if decision_id in self.seen_outcomes:  # a later outcome of a decision: the first one is kept
            return
        self.seen_outcomes.add(decision_id)
        row = self.outcomes.get(decision_id)
        if row is None:
            self.problem("deleted", "its row in the outcomes table is missing", record, position)
        elif row[1] != record.start_ns:
            self.problem("edited", "its row in the outcomes table has another time than the span", record, position)
        elif not self.keys:
            self.unverified += 1
        elif not any(outcome_digest(k, decision_id, row[0]) == a.get(semconv.OUTCOME_DIGEST) for k in self.keys):
            self.problem("edited", "its row in the outcomes table differs from the span", record, position)

    def finish(self, last: tuple[int, SpanRecord] | None) -> None:
        """Rows that no record accounts for."""
        foreign = {d: p for d, p in self.ungrouped.items() if d not in self.grouped}
        records = self.store.spans_at(foreign.values()) if foreign else {}
        for decision_id in self.groups:
            if decision_id in foreign:
                position = foreign[decision_id]
                self.problem("foreign", "decision_groups rows for a decision recorded without groups",
                             records[position], position)
        if self.first_outcome_ns is None or last is None:
            return
        end = self.end_ns if self.end_ns is not None else float("inf")
        for decision_id, (_, time_ns) in self.outcomes.items():
            if self.first_outcome_ns <= time_ns < end and decision_id not in self.seen_outcomes:
                self.problem("foreign", f"an outcomes row no outcome span accounts for (decision {decision_id})",
                             last[1], last[0])


class _Cursor:
    """(position, value) rows in ascending position, read alongside the records."""

    def __init__(self, rows: Iterator[tuple[int, Any]]) -> None:
        self._rows = rows
        self._head = next(rows, None)

    def at(self, position: int) -> Any:
        """The value at `position`, or None (rows of spans that are gone are skipped)."""
        while self._head is not None and self._head[0] < position:
            self._head = next(self._rows, None)
        return self._head[1] if self._head is not None and self._head[0] == position else None


def _columns_of(a: Mapping[str, Any]) -> tuple[Any, ...]:
    ids = a.get(semconv.DECISION_IDS) or ()
    return (*(a.get(k) for k in _SPAN_COLUMNS), len(ids))


def _same_service(column: Any, resource: Any, sealed: Any) -> bool:
    """The origins row's service column, its resource's ``service.name`` and the sealed service agree."""
    try:
        named = json.loads(resource).get(semconv.SERVICE_NAME) if resource else None
    except (ValueError, AttributeError):
        return False
    if named is not None and column != str(named):
        return False
    return sealed is None or column == sealed


def records(backend: Any, query: Query, problems: list[Problem], keys: Sequence[bytes] = (),
            unverified: list[int] | None = None) -> Iterator[tuple[int | None, SpanRecord]]:
    """The trail in `backend` that `query`'s window puts in view (`in_view`): the local store in write
    order (every column and table beside the records checked, problems added to `problems`), others in
    time order."""
    view = query
    windowed = query.start_ns is not None or query.end_ns is not None
    if windowed:  # read wider, then keep each stream's stretch that the window puts in view
        query = replace(query, start_ns=None if query.start_ns is None else query.start_ns - EDGE_MARGIN_NS,
                        end_ns=None if query.end_ns is None else query.end_ns + EDGE_MARGIN_NS)
    store = getattr(backend, "store", None)
    read: Callable[[], Iterable[tuple[int | None, SpanRecord]]]
    if store is None:
        found = [(None, record) for record in find_spans(query, backend)]  # a search is not made twice

        def read() -> Iterable[tuple[int | None, SpanRecord]]:
            return found
    else:
        window = {"service": query.service, "start_ns": query.start_ns, "end_ns": query.end_ns}

        def read() -> Iterable[tuple[int | None, SpanRecord]]:
            return store.spans_in_write_order(**window)
    items = in_view(read, view.start_ns, view.end_ns) if windowed else read()
    if store is None:
        yield from items
        return
    local = _Local(store, window, keys, view.end_ns)
    last = None
    for position, record in items:
        local.check(position, record)
        last = (position, record)
        yield position, record
    local.finish(last)
    problems += local.problems
    if unverified is not None:
        unverified.append(local.unverified)


def _rows_of(a: Mapping[str, Any]) -> list[tuple[Any, Any, Any, Any]]:
    """What the ``decisions`` table should hold for a record (as `store.Store.append` writes it)."""
    ids = a.get(semconv.DECISION_IDS) or ()
    n = len(ids)

    def column(key: str) -> Sequence[Any]:
        values = a.get(key)
        return values if isinstance(values, (list, tuple)) and len(values) == n else [None] * n

    hashes = column(semconv.INPUT_HASHES)
    return [(i, h, _Same(o), input_key(h)) for i, h, o in zip(ids, hashes, column(semconv.OUTPUTS))]


class _Same:
    """An output as SQLite gives it back: booleans as 0/1, NaN equal to itself."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __eq__(self, other: Any) -> bool:
        v = self.value
        return v == other or (v != v and other != other)

    __hash__ = None  # type: ignore[assignment]


class _Copied:
    """The groups and outcomes a backend holds beside the records (ClickHouse, copied with ``export
    --include``), checked against the records' keyed digests as the local store checks its own, a page of
    records at a time. Where the backend holds no copy of a table, its digests are counted as not verified
    (they stay local by default), as they are without the key. Rows that no record accounts for are not
    looked for (the local store does that, over its whole tables)."""

    def __init__(self, backend: Any, keys: Sequence[bytes]) -> None:
        self.backend, self.keys = backend, keys
        self.problems: list[Problem] = []
        self.unverified = 0
        self._outcomes: set[str] = set()
        keeps = isinstance(backend, KeepsRows) and hasattr(backend, "holds")
        self._has_groups = keeps and backend.holds("groups")
        self._has_outcomes = keeps and backend.holds("outcomes")

    def through(self, records: Iterable[SpanRecord]) -> Iterator[SpanRecord]:
        """`records`, checked a page at a time on the way."""
        page: list[SpanRecord] = []
        for record in records:
            page.append(record)
            if len(page) >= _COPIED_PAGE:
                self._check(page)
                yield from page
                page = []
        self._check(page)
        yield from page

    def _problem(self, kind: str, detail: str, record: SpanRecord) -> None:
        a = record.attributes
        self.problems.append(Problem(kind, detail, record, a.get(semconv.AUDIT_STREAM),
                                     seq_of(a.get(semconv.AUDIT_SEQ))))

    def _check(self, page: list[SpanRecord]) -> None:
        grouped, outcomes = [], []
        for record in page:
            a = record.attributes
            ids = a.get(semconv.DECISION_IDS) or ()
            digests = a.get(semconv.GROUPS_DIGEST)
            if isinstance(digests, (list, tuple)) and len(digests) == len(ids) and ids:
                grouped.append((record, [str(i) for i in ids], digests))
            if record.name == semconv.OUTCOME_SPAN:
                decision_id = str(a.get(semconv.OUTCOME_DECISION_ID))
                if decision_id not in self._outcomes:  # a later outcome of a decision: the first one is kept
                    self._outcomes.add(decision_id)
                    outcomes.append((record, decision_id))
        if grouped and not (self._has_groups and self.keys):
            self.unverified += sum(len(ids) for _, ids, _ in grouped)
        elif grouped:
            stored = self.backend.groups([i for _, ids, _ in grouped for i in ids])
            for record, ids, digests in grouped:
                if any(i not in stored for i in ids):
                    self._problem("deleted", "its decisions' rows in the decision_groups table are missing", record)
                elif any(not any(groups_digest(k, i, stored[i]) == d for k in self.keys) for i, d in zip(ids, digests)):
                    self._problem("edited", "its decisions' rows in the decision_groups table differ from the span",
                                  record)
        if outcomes and not (self._has_outcomes and self.keys):
            self.unverified += len(outcomes)
        elif outcomes:
            stored = self.backend.outcome_rows([i for _, i in outcomes])
            for record, decision_id in outcomes:
                row = stored.get(decision_id)
                if row is None:
                    self._problem("deleted", "its row in the outcomes table is missing", record)
                elif row[1] != record.start_ns:
                    self._problem("edited", "its row in the outcomes table has another time than the span", record)
                elif not any(outcome_digest(k, decision_id, row[0]) == record.attributes.get(semconv.OUTCOME_DIGEST)
                             for k in self.keys):
                    self._problem("edited", "its row in the outcomes table differs from the span", record)


def local_keys(hash_keys: Iterable[HashKey]) -> list[bytes]:
    """The keys of the local-row digests, from input hash keys (every scheme of each)."""
    return [local_key(k) for k in hash_keys]


def verify(backend: Any, query: Query = Query(), keys: Mapping[str, Any] = {},  # noqa: B006, B008 - read only
           *, anchored: bool = False, require_signed: bool = False,
           hash_keys: Iterable[HashKey] = ()) -> Report:
    """Check the trail that `backend` holds in `query`'s window (see `check`, `records` and `in_view`).
    `hash_keys` verify the keyed digests of the local store's groups and outcomes. A backend that reads
    its trail in chain order (`Chained`) is checked as it is read, in bounded memory."""
    if isinstance(backend, Chained):
        copied = _Copied(backend, local_keys(hash_keys))
        report = check_ordered(copied.through(backend.chained(query)), keys, anchored=anchored,
                               require_signed=require_signed)
        edited = {(p.stream, p.seq) for p in report.problems if p.kind == "edited"}
        report.problems += [p for p in copied.problems if (p.stream, p.seq) not in edited or p.kind != "edited"]
        report.unverified_local_rows = copied.unverified
        return report
    tables: list[Problem] = []
    unverified: list[int] = []
    store = getattr(backend, "store", None)
    report = check(records(backend, query, tables, local_keys(hash_keys), unverified), keys, anchored=anchored,
                   require_signed=require_signed, read_again=None if store is None else store.spans_at)
    edited = {p.position for p in report.problems if p.kind == "edited"}
    report.problems += [p for p in tables if p.position not in edited or p.kind != "edited"]
    report.unverified_local_rows = sum(unverified)
    return report
