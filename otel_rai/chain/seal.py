"""Sealing: every audit span joins its process's stream as it ends, and checkpoint spans sign its head.

Each span gets ``ml.audit.stream`` (random, per process and forked child), ``ml.audit.seq`` (1, 2, 3...),
``ml.audit.prev_hash`` (the previous record's hash) and ``ml.audit.record_hash`` (SHA-256 of its
canonical form, `canonical`). Every `DEFAULT_CHECKPOINT_INTERVAL_S` seconds with new records, and when the
session closes, a checkpoint span records the stream's head; with a key it is signed (`keys`).
What this proves and what it does not: ``docs/audit-trail.md``.
"""

from __future__ import annotations

import functools
import secrets
import threading
import time
from typing import Any, Callable

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from otel_rai import _fork, semconv, settings
from otel_rai.audit.tracer import AuditSpan, AuditTracer, CurrentSpanTracer
from otel_rai.chain.canonical import GENESIS, canonical_body, digest
from otel_rai.chain.keys import Signer
from otel_rai.codec.records import SpanRecord

#: The attributes `Chain._link` adds to a record.
_CHAIN_ATTRIBUTES = (semconv.AUDIT_STREAM, semconv.AUDIT_SEQ, semconv.AUDIT_PREV_HASH, semconv.AUDIT_SERVICE,
                     semconv.AUDIT_RECORD_HASH)

#: How often a stream with new records gets a checkpoint span.
DEFAULT_CHECKPOINT_INTERVAL_S: float = settings.default("checkpoint_interval")


class Chain:
    """The stream of this process. `seal` is called with each span still open, in the order the spans
    end; a lock keeps that order if spans ever end on more than one thread."""

    def __init__(self, key: Signer | None = None, interval_s: float = DEFAULT_CHECKPOINT_INTERVAL_S,
                 service: str | None = None) -> None:
        self._key = key
        self._interval_ns = int(interval_s * 1e9)
        self._service = service  # sealed into every record: the store's service column is checked against it
        self._reset()
        _fork.reset_in_child(self)

    def _reset(self) -> None:
        """A new stream; in a forked child, whose parent goes on with the inherited one."""
        self._lock = threading.Lock()
        self.stream = secrets.token_hex(16)
        self.seq = 0
        self.head = GENESIS
        self.decisions = 0
        self._checkpointed_seq = 0
        self._checkpointed_ns = time.monotonic_ns()

    def seal(self, span: Any, end_ns: int) -> None:
        """Give `span` (an SDK span, not yet ended, that will end at `end_ns`) its place in the stream."""
        ctx = span.get_span_context()
        parent = span.parent
        status = span.status
        attributes = dict(span.attributes)
        self._link(span.name, f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}",
                   None if parent is None else f"{parent.span_id:016x}", status.status_code.value,
                   status.description or "", attributes, span.start_time, end_ns)
        span.set_attributes({key: attributes[key] for key in _CHAIN_ATTRIBUTES if key in attributes})

    def seal_record(self, record: SpanRecord) -> None:
        """`seal` of the audit tracer's span as it ends into `record`, whose attributes it adds to."""
        self._link(record.name, record.trace_id, record.span_id, record.parent_span_id, record.status_code,
                   record.status_message, record.attributes, record.start_ns, record.end_ns)

    def _link(self, name: str, trace_id: str, span_id: str, parent_span_id: str | None, status_code: int,
              status_message: str, attributes: dict[str, Any], start_ns: int, end_ns: int) -> None:
        """The next link of the stream: the chain's attributes of a record, added to its `attributes`
        (which the canonical body covers)."""
        with self._lock:
            self.seq += 1
            attributes[semconv.AUDIT_STREAM] = self.stream
            attributes[semconv.AUDIT_SEQ] = self.seq
            attributes[semconv.AUDIT_PREV_HASH] = self.head
            if self._service is not None:
                attributes[semconv.AUDIT_SERVICE] = self._service
            body = canonical_body(name, trace_id, span_id, parent_span_id, status_code, status_message, attributes)
            self.head = attributes[semconv.AUDIT_RECORD_HASH] = digest(body, start_ns // 1000, end_ns // 1000)
            self.decisions += len(attributes.get(semconv.DECISION_IDS) or ())

    def checkpoint(self, tracer: trace.Tracer, *, force: bool = False) -> bool:
        """End a checkpoint span if `interval_s` has passed (or `force`) and records came since the last
        one. Runs on the audit worker, so that the span is committed with that cycle."""
        now = time.monotonic_ns()
        if self.seq == self._checkpointed_seq or (not force and now - self._checkpointed_ns < self._interval_ns):
            return False
        wall = time.time_ns()
        attributes: dict[str, Any] = {semconv.CHECKPOINT_DECISIONS: self.decisions}
        if self._key is not None:
            attributes[semconv.CHECKPOINT_ALGORITHM] = self._key.algorithm
            attributes[semconv.CHECKPOINT_KEY_ID] = self._key.key_id
        span = tracer.start_span(semconv.CHECKPOINT_SPAN, context=otel_context.Context(), kind=SpanKind.INTERNAL,
                                 attributes=attributes, start_time=wall)
        if span.is_recording():
            self.seal(span, wall)
            if self._key is not None:
                signature = self._key.sign(bytes.fromhex(span.attributes[semconv.AUDIT_RECORD_HASH]))
                span.set_attribute(semconv.CHECKPOINT_SIGNATURE, signature)
        span.end(end_time=wall)
        self._checkpointed_seq, self._checkpointed_ns = self.seq, now
        return True


class _Sealing(trace.Span):
    """An SDK span (of an application's provider) that is sealed into the chain when it ends; everything
    else goes to the span. An `AuditSpan` seals itself (its `on_ending`).
    (A `trace.Span`, because the API ignores a parent in a context that holds anything else.)"""

    def __init__(self, span: Any, chain: Chain) -> None:
        self._span = span
        self._chain = chain

    def __getattr__(self, name: str) -> Any:  # the SDK span's extras: attributes, events, resource...
        return getattr(self._span, name)

    def end(self, end_time: int | None = None) -> None:
        if self._span.is_recording():
            end_time = time.time_ns() if end_time is None else end_time
            self._chain.seal(self._span, end_time)
        self._span.end(end_time=end_time)

    def get_span_context(self) -> Any:
        return self._span.get_span_context()

    def is_recording(self) -> bool:
        return self._span.is_recording()

    def set_attributes(self, attributes: Any) -> None:
        self._span.set_attributes(attributes)

    def set_attribute(self, key: str, value: Any) -> None:
        self._span.set_attribute(key, value)

    def add_event(self, name: str, attributes: Any = None, timestamp: int | None = None) -> None:
        self._span.add_event(name, attributes, timestamp)

    def update_name(self, name: str) -> None:
        self._span.update_name(name)

    def set_status(self, status: Any, description: str | None = None) -> None:
        self._span.set_status(status, description)

    def record_exception(self, exception: BaseException, attributes: Any = None, timestamp: int | None = None,
                         escaped: bool = False) -> None:
        self._span.record_exception(exception, attributes, timestamp, escaped)


class ChainedTracer(CurrentSpanTracer):
    """The audit tracer, with every recording span sealed into `chain` as it ends."""

    def __init__(self, tracer: trace.Tracer, chain: Chain) -> None:
        self.tracer = tracer
        self.chain = chain
        #: `AuditTracer.end_span`, sealed into the chain; None when the wrapped tracer is an SDK tracer (an
        #: application's provider), whose spans only `start_span` makes.
        self.end_span: Callable[..., None] | None = (
            functools.partial(tracer.end_span, on_ending=chain.seal_record) if isinstance(tracer, AuditTracer)
            else None)

    def start_span(self, name: str, context: otel_context.Context | None = None, *args: Any, **kwargs: Any) -> Any:
        """The wrapped tracer's span; a recording one is sealed into the chain when it ends."""
        span = self.tracer.start_span(name, context, *args, **kwargs)
        if isinstance(span, AuditSpan):  # seals itself: no wrapper to go through for every call on it
            span.on_ending = self.chain.seal_record
            return span
        return _Sealing(span, self.chain) if span.is_recording() else span

    def checkpoint(self, *, force: bool = False) -> bool:
        """`Chain.checkpoint` with the wrapped tracer."""
        return self.chain.checkpoint(self.tracer, force=force)
