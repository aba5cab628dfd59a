"""The store sink: each worker cycle's spans go to the local audit store in one transaction, and, when
the store is the write-ahead log of an OTLP export (or a spool), into its outbox, which `StoreOutbox`
hands to an `otlp.Exporter`. One process at a time exports a store (an exclusive lock file).
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import operator
import os
import sqlite3
import threading
import time
from itertools import repeat
from typing import Any, Callable, Mapping, Sequence

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from otel_rai import _fork, semconv
from otel_rai.audit.local_rows import outcome_value
from otel_rai.codec import otlpproto
from otel_rai.codec.records import SpanRecord
from otel_rai.codec.sdk import from_readable, resource_attributes, to_resource
from otel_rai.errors import StoreError
from otel_rai.sinks import base, otlp
from otel_rai.store import Store
from otel_rai.store.store import INDEX_EVERY, Queued, json_text, record_origin

try:
    import fcntl
except ImportError:  # Windows: one exporting process per store is assumed
    fcntl = None  # type: ignore[assignment]

_log = logging.getLogger(__name__)

#: Spans that may wait unwritten after a failed write (retried next cycle); beyond them `commit` retries in
#: place, which holds up the worker: back-pressure, never a drop.
_MAX_UNWRITTEN = 100_000
#: Those in-place retries wait this long at first, doubling up to `_RETRY_MAX_S`.
_RETRY_FIRST_S = 0.1
_RETRY_MAX_S = 5.0
#: How often the export looks at the outbox unwoken: other processes may fill it.
_EXPORT_POLL_S = 1.0
#: How often `force_flush` looks whether the worker's retries have written everything.
_FLUSH_POLL_S = 0.05
#: How long exported spans may stay in the outbox while the export keeps busy (see `StoreOutbox.done`).
_DELETE_EVERY_S = 1.0
#: Spans this process wrote that the export keeps in memory to send without reading them back from
#: the file (about 5 µs a span of the export's CPU): two of its largest batches.
_RECENT_SPANS = 2 * otlp.MAX_BATCH_SPANS
#: Errors of one record's content (a value that SQLite, JSON or protobuf cannot take), as opposed to errors
#: of the store (a full disk, a lock, a damaged or missing file): that record is set aside, the rest written.
_RECORD_ERRORS = (ValueError, TypeError, OverflowError, RecursionError, sqlite3.InterfaceError,
                  sqlite3.ProgrammingError, sqlite3.IntegrityError, sqlite3.DataError)
#: A store error while writing: kept and retried.
_STORE_ERRORS = (sqlite3.Error, OSError, StoreError)


#: The origin id of an outbox row (seq, origin, encoded span).
_ORIGIN = operator.itemgetter(1)


def _ids(attributes: Mapping[str, Any] | None) -> Sequence[str]:
    ids = (attributes or {}).get(semconv.DECISION_IDS)
    return ids if isinstance(ids, (list, tuple)) else ()


def queued(span: ReadableSpan | SpanRecord) -> Queued:
    """A span (or the audit tracer's record of one) as the outbox keeps it: `base.encoded`, with its
    resource and scope as an origin."""
    if type(span) is SpanRecord:
        return record_origin(span), len(_ids(span.attributes)), otlpproto.encode_record(span)
    resource, scope, encoded, rows = base.encoded(span)
    origin = (resource_attributes(resource), resource.schema_url or "",
              scope.name if scope else "", (scope.version or "") if scope else "")
    return origin, rows, encoded


class StoreOutbox:
    """The store's ``outbox`` as an `base.SpanQueue`. A batch is `otlpproto.EncodedSpans`: what was
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
        #: The outbox rows this process wrote lately, (seq, origin id, decisions, encoded span) in seq
        #: order: the export takes them from here, not from the file, while they follow the last span
        #: it exported (no other process wrote in between). Only rows committed while this process held
        #: the export lock, from before the commit until now: another exporter may have sent and
        #: deleted the others.
        self._recent: collections.deque[tuple[int, int, int, bytes]] = collections.deque()
        self._recent_lock = threading.Lock()  # the worker adds, the export takes
        self._holds = 0  # times the export lock was taken or given up: a commit's rows need the same hold
        self._deleted_at = time.monotonic()
        self._counted = False
        self._through: int | None = None
        self._origins: dict[int, tuple[Resource, InstrumentationScope]] = {}

    def hold_before_write(self) -> int | None:
        """Which hold of the export lock this is, if this process holds it: ask before a write, and
        give the answer to `written`."""
        return self._holds if self._holding else None

    def written(self, last_seq: int, rows: Sequence[tuple[int, int, int, bytes]] = (),
                hold: int | None = None) -> None:
        """This process wrote spans up to `last_seq`: its flushes wait for them. The outbox `rows` among
        them (as `Store.append` gives them), committed during `hold` (`hold_before_write`), go out from
        memory if this process has held the export lock all along."""
        self._through = max(self._through or 0, last_seq)
        if hold is None or hold != self._holds or not self._holding:
            return
        with self._recent_lock:
            recent = self._recent
            recent.extend(rows)
            for _ in range(len(recent) - _RECENT_SPANS):  # older ones are read back from the file
                recent.popleft()

    def hold(self) -> bool:
        """Take the export lock if no other process holds it; whether this one holds it now."""
        if self._holding:
            return True
        if self._lock_fd is None:
            self._lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        self._holds += 1
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
        """The oldest spans after the last delivered, as encoded when written; empty while another process
        holds the export lock."""
        if not self.hold():
            return []
        batch = self._recent_batch(max_spans, max_rows) or self._store.outbox_batch(max_spans, max_rows,
                                                                                   after=self._exported)
        if not batch:
            if self._counted or time.monotonic() - self._deleted_at >= _DELETE_EVERY_S:
                self._delete()
            return []
        self._taken = batch[-1][0]
        return otlpproto.EncodedSpans(otlpproto.grouped_runs(
            (*self._origin(origin), [span for _, _, span in run])
            for origin, run in itertools.groupby(batch, key=_ORIGIN)))

    def _recent_batch(self, max_spans: int, max_rows: int) -> list[tuple[int, int, bytes]]:
        """`Store.outbox_batch` from the spans this process wrote lately, when they are the next ones
        (seqs that follow the last exported one without a gap); else empty."""
        recent, after = self._recent, self._exported
        batch: list[tuple[int, int, bytes]] = []
        rows = 0
        with self._recent_lock:
            while recent and recent[0][0] <= after:
                recent.popleft()
            for seq, origin, n, encoded in recent:
                if seq != after + 1 or len(batch) == max_spans:
                    break
                rows += n
                if batch and rows > max_rows:
                    break
                batch.append((seq, origin, encoded))
                after = seq
        return batch

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
        return self._store.outbox_pending(self._counting())

    def waiting(self) -> bool:
        """Whether `pending` is not 0, without counting the rows (a flush asks this while it waits)."""
        return self._store.outbox_waiting(self._counting())

    def _counting(self) -> int:
        """The last seq that `pending` counts up to; the export deletes as soon as it has caught up."""
        if self._through is None:  # first look: what earlier processes left is ours to wait for too
            self._through = self._store.last_seq()
        self._counted = True
        return self._through

    def exported_elsewhere(self) -> bool:
        """Whether another process holds the export lock now, that is, is exporting this store."""
        if self.hold():
            self.release()
            return False
        return True

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
        if unlock:  # (a forked child drops this object: its lock may have been held at the fork)
            self._holds += 1
            with self._recent_lock:
                self._recent.clear()
        if self._lock_fd is not None:
            if self._holding and unlock:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None
        self._holding = fcntl is None


class StoreSink(base.Sink):
    """Writes the audit spans of each worker cycle to the store in one transaction.

    With an `exporter_factory`, the store is the write-ahead log for OTLP: each span is also queued
    in the outbox, and an `otlp.Exporter` sends queued spans in order and deletes them from the outbox
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
        self._received: list[ReadableSpan | SpanRecord] = []
        # The spans of the cycles not yet written: as records for a store, encoded for the outbox.
        self._unwritten: list[SpanRecord] = []
        self._unqueued: list[Queued] = []
        self._unsaved_ids: list[Sequence[str]] = []  # the decision ids of each unsaved span
        self._rejected = 0
        self._last_error: str | None = None
        self._groups: list[tuple[str, str, str]] = []
        self._outcomes: list[tuple[str, str, int]] = []
        self._snapshots: list[tuple[str, str, int, str]] = []
        self._unindexed = 0
        if self._outbox is not None:  # a forked child: the export lock stays with the parent
            self._outbox.release(unlock=False)
        self._outbox = None if self._factory is None else StoreOutbox(self.store, forget=not self.keep)
        self._exporter = None
        if self._outbox is not None:
            self._exporter = otlp.Exporter(self._factory, self._outbox, poll=_EXPORT_POLL_S, **self._options)

    def on_end(self, span: ReadableSpan) -> None:
        """Keep `span` for the next commit, if it is an audit span and the sink is open."""
        scope = span.instrumentation_scope
        if scope is not None and scope.name == semconv.SCOPE and not self._closed:
            self._received.append(span)

    def on_record(self, record: SpanRecord, resource: Resource, scope: InstrumentationScope) -> None:
        """Keep the audit tracer's `record` for the next commit, if the sink is open."""
        if not self._closed:
            self._received.append(record)

    def note_groups(self, ids: Sequence[str], groups: Mapping[str, Sequence[str]]) -> None:
        """The sensitive groups of a call's decisions ({attribute: one group per row}), for the report."""
        for attribute, labels in groups.items():
            self._groups += zip(ids, repeat(attribute), labels)

    def note_outcome(self, decision_id: str, y_true: Any, time_ns: int) -> None:
        """A decision's ground truth, recorded by `record_outcome`. Encoded now, so that a value JSON
        cannot hold fails this outcome alone, not the commit of the cycle's spans."""
        self._outcomes.append((decision_id, outcome_value(y_true), time_ns))

    def note_snapshot(self, model: str, version: str, time_ns: int, histograms: Mapping[str, Any]) -> None:
        """The drift monitor's histograms of a model version (docs/monitoring.md): local only, like outcomes."""
        self._snapshots.append((version, model, time_ns, json_text(histograms)))

    def commit(self) -> set[str]:
        """Write what this cycle ended. A failed write is retried next cycle; beyond `_MAX_UNWRITTEN`
        spans it is retried here, which holds up the worker (back-pressure, never a drop).

        A span that cannot be written for what it holds (not because of the store) is set aside, so
        that one bad record never blocks the others; returns the decision ids of such spans, which
        count as dropped."""
        rejected: set[str] = set()
        if self._received:
            for span in self._received:
                try:
                    record = (span if type(span) is SpanRecord else from_readable(span)) if self.keep else None
                    encoded = queued(span) if self._outbox is not None else None
                except Exception as exc:  # nothing downstream could hold it: set it aside
                    self._reject(_ids(span.attributes), exc, rejected)
                    continue
                if record is not None:
                    self._unwritten.append(record)
                if encoded is not None:
                    self._unqueued.append(encoded)
                self._unsaved_ids.append(_ids(span.attributes))
            self._received = []
        delay = _RETRY_FIRST_S
        while self._unwritten or self._unqueued or self._groups or self._outcomes or self._snapshots:
            outbox_rows: list[tuple[int, int, int, bytes]] = []
            hold = self._outbox.hold_before_write() if self._outbox is not None else None
            try:
                try:
                    last, rows = self.store.append(self._unwritten, queued=self._unqueued, groups=self._groups,
                                                   outcomes=self._outcomes, snapshots=self._snapshots,
                                                   outbox_rows=outbox_rows)
                except _RECORD_ERRORS:
                    last, rows = self._append_one_by_one(rejected)
            except _STORE_ERRORS as exc:
                if isinstance(exc, StoreError) and str(exc) != self._last_error:  # ours: names the file
                    self._last_error = str(exc)
                    _log.error("%s", exc)
                if self._unsaved() < _MAX_UNWRITTEN or self._closed:
                    raise  # counted and logged by the worker
                _log.warning("otel-rai: cannot write to the audit store %s; retrying", self.store.path)
                time.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_S)
                continue
            if self._unqueued and last:
                self._outbox.written(last, outbox_rows, hold)
                self._exporter.wake()
            self._unwritten, self._unqueued, self._unsaved_ids, self._groups, self._outcomes = [], [], [], [], []
            self._snapshots = []
            self._unindexed += rows
        if self._unindexed >= INDEX_EVERY and self.keep:
            self._unindexed = 0
            self.store.index_inputs()
        return rejected

    def _append_one_by_one(self, rejected: set[str]) -> tuple[int, int]:
        """Write the unsaved spans, groups and outcomes one at a time, setting aside those that fail for
        what they hold. A store error stops it: what was written leaves the lists, the rest stays."""
        last = rows = done = 0
        n = self._unsaved()
        failed: list[tuple[int, BaseException]] = []
        try:
            for i in range(n):
                try:
                    seq, written = self.store.append(self._unwritten[i : i + 1], queued=self._unqueued[i : i + 1])
                    last, rows = max(last, seq), rows + written
                except _RECORD_ERRORS as exc:
                    failed.append((i, exc))
                done = i + 1
        finally:
            everything_failed = n > 1 and len(failed) == n  # then it is not their content: keep them all
            if not everything_failed:
                for i, exc in failed:
                    self._reject(self._unsaved_ids[i], exc, rejected)
                del self._unwritten[:done], self._unqueued[:done], self._unsaved_ids[:done]
        if everything_failed:
            raise StoreError(f"cannot write to {self.store.path} ({type(failed[0][1]).__name__})")
        for kind, rows_of in (("groups", self._groups), ("outcomes", self._outcomes), ("snapshots", self._snapshots)):
            for row in rows_of:
                try:
                    self.store.append(**{kind: [row]})
                except _RECORD_ERRORS as exc:
                    self._reject((), exc, rejected, what=kind)
            rows_of.clear()
        return last, rows

    def _reject(self, ids: Sequence[str], exc: BaseException, rejected: set[str], what: str = "span") -> None:
        self._rejected += 1
        rejected.update(ids)
        _log.error("otel-rai: an audit %s could not be written to %s (%s) and was set aside; the other "
                   "records were written", what, self.store.path, type(exc).__name__)

    def durable(self, timeout: float) -> bool:
        """Written to the file (the audit worker retries a failed write); the export may follow later,
        from this process or the next."""
        deadline = time.monotonic() + timeout
        while self._unsaved() and not self._closed and time.monotonic() < deadline:
            time.sleep(_FLUSH_POLL_S)
        return not self._unsaved()

    def pending(self) -> int:
        """Spans not yet written, plus those in the outbox."""
        unwritten = len(self._received) + self._unsaved()
        return unwritten + (self._outbox.pending() if self._outbox is not None else 0)

    def _unsaved(self) -> int:
        return max(len(self._unwritten), len(self._unqueued))

    def exported(self) -> int:
        """Spans this process exported from the outbox."""
        return self._exporter.exported if self._exporter is not None else 0

    def dropped(self) -> int:
        """Spans set aside, and after close the spans that could not be written."""
        return self._rejected + (self._unsaved() if self._closed else 0)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Wait until the committed spans are written (the worker retries a failed write) and exported
        (without an endpoint they are done once written)."""
        deadline = time.monotonic() + timeout_millis / 1000
        if not self.durable(timeout_millis / 1000):
            return False
        if self._exporter is None:
            return True
        # Whatever was written before now, by any process: export goes in seq order, so this adds only
        # other processes' spans written since this one's last (a Pool's children, say).
        self._outbox.written(self.store.last_seq())
        return self._exporter.flush(max(0.0, deadline - time.monotonic())) and not self._unsaved()

    def close(self, timeout: float) -> None:
        """Stop exporting (queued spans stay queued for the next process), index, close."""
        if self._closed:
            return
        self._closed = True
        stopped = True
        if self._exporter is not None:
            stopped = self._exporter.close(min(otlp.CLOSE_TIMEOUT, timeout))
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
