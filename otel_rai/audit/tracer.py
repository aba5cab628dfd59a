"""The audit tracer of otel-rai's own provider: spans that end straight into `SpanRecord`\\ s.

The SDK's tracer validates every attribute value as it is set, which costs about 2 µs per attribute,
the biggest single cost of a single-row decision. Everything otel-rai puts on an audit span is built by
otel-rai from plain str/bool/int/float values and lists of them (caller attributes are checked by
`otel_rai.decisions`), so the audit provider's spans skip that step. An ended span goes to the sinks as
the record that the store writes and the export encodes (`codec.otlpproto.encode_record`), without an
SDK `ReadableSpan` in between, which every sink would only take apart again.

An application's own tracer provider (``instrument(tracer_provider=...)``) keeps the SDK's tracer.
"""

from __future__ import annotations

import contextlib
import traceback
from time import time_ns
from typing import Any, Callable, Iterator, Mapping, Protocol, Sequence

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, TracerProvider
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from otel_rai.codec.records import SpanRecord
from otel_rai.codec.sdk import KINDS, STATUS_CODES, from_readable, plain, resource_attributes

_SAMPLED = TraceFlags.SAMPLED
#: The OTLP numbers of a span of kind INTERNAL, and of an unset status.
_INTERNAL = KINDS[SpanKind.INTERNAL]
_UNSET = STATUS_CODES[StatusCode.UNSET]


class CurrentSpanTracer(trace.Tracer):
    """A tracer whose `start_as_current_span` is its `start_span`, made current (the API leaves both
    abstract)."""

    @contextlib.contextmanager
    def start_as_current_span(self, name: str, context: otel_context.Context | None = None, *args: Any,
                              end_on_exit: bool = True, **kwargs: Any) -> Iterator[trace.Span]:
        """`start_span`, made current for the ``with`` block and ended at its exit (unless not `end_on_exit`)."""
        span = self.start_span(name, context, *args, **kwargs)
        with trace.use_span(span, end_on_exit=end_on_exit) as current:
            yield current


class RecordProcessor(Protocol):
    """Where the audit tracer's spans go as they end (the sinks)."""

    def on_record(self, record: SpanRecord, resource: Resource, scope: InstrumentationScope) -> None:
        """An ended span as a record, with the resource and scope of its tracer."""


class AuditTracer(CurrentSpanTracer):
    """Starts `AuditSpan`\\ s whose ended form, a `SpanRecord`, goes to `processors` (always sampled)."""

    def __init__(self, provider: TracerProvider, processors: Sequence[RecordProcessor], scope: InstrumentationScope):
        self._resource = provider.resource
        self._resource_attributes = resource_attributes(provider.resource)
        self._ids = provider.id_generator
        self._processors = tuple(processors)
        self._scope = scope

    def start_span(
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Mapping[str, Any] | None = None,
        links: Sequence[trace.Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> AuditSpan:
        """An `AuditSpan`, always sampled, under the span of `context`; the last two arguments are ignored."""
        parent, trace_id, random = self._parent(context)
        flags = TraceFlags(_SAMPLED | TraceFlags.RANDOM_TRACE_ID) if random else TraceFlags(_SAMPLED)
        ctx = SpanContext(trace_id, self._ids.generate_span_id(), is_remote=False, trace_flags=flags,
                          trace_state=parent.trace_state if parent is not None else None)
        return AuditSpan(self, name, ctx, parent, kind, dict(attributes or {}), tuple(links or ()),
                         start_time if start_time is not None else time_ns())

    def end_span(self, name: str, context: otel_context.Context | None, attributes: dict[str, Any],
                 start_time: int, end_time: int, on_ending: Callable[[SpanRecord], None] | None = None) -> None:
        """A span of kind INTERNAL with `attributes` (given up to it) and status unset, started and ended
        at once: its record goes to `on_ending`, then to the processors, with no span object built."""
        parent, trace_id, _ = self._parent(context)
        state = parent.trace_state if parent is not None else None
        self._hand_over(SpanRecord(
            f"{trace_id:032x}", f"{self._ids.generate_span_id():016x}", name, start_time, end_time,
            plain(attributes, copy=False), None if parent is None else f"{parent.span_id:016x}",
            bool(parent is not None and parent.is_remote), _INTERNAL, _UNSET, "", state.to_header() if state else "",
            (), (), self._resource_attributes, self._resource.schema_url or "", self._scope.name,
            self._scope.version or "",
        ), on_ending)

    def _parent(self, context: otel_context.Context | None) -> tuple[SpanContext | None, int, bool]:
        """(the context of the span under which a new one starts, None for a root; its trace id; whether
        that id is random), as the SDK's tracer tells them."""
        if context is not None and not context:  # an empty context (a call outside any span) holds no parent
            return None, self._ids.generate_trace_id(), self._ids.is_trace_id_random()
        parent = trace.get_current_span(context).get_span_context()
        if parent is None or not parent.is_valid:  # a root span, flagged as the SDK's tracer would
            return None, self._ids.generate_trace_id(), self._ids.is_trace_id_random()
        return parent, parent.trace_id, parent.trace_flags.random_trace_id

    def _end(self, span: AuditSpan) -> None:
        # The span has ended: its record takes over its attributes' dict.
        self._hand_over(from_readable(span, owned=True), span.on_ending)

    def _hand_over(self, record: SpanRecord, on_ending: Callable[[SpanRecord], None] | None) -> None:
        if on_ending is not None:
            on_ending(record)
        for processor in self._processors:
            processor.on_record(record, self._resource, self._scope)


class AuditSpan(trace.Span):
    """A recording span that keeps its data in plain fields until it ends (no per-value validation)."""

    def __init__(self, tracer: AuditTracer, name: str, context: SpanContext, parent: SpanContext | None,
                 kind: SpanKind, attributes: dict[str, Any], links: tuple, start_time: int) -> None:
        self._tracer = tracer
        self.name = name
        self.context = context
        self.parent = parent
        self.kind = kind
        self.attributes = attributes
        self.links = links
        self.start_time = start_time
        self.end_time: int | None = None
        self.events: list[Event] = []
        self.status = Status(StatusCode.UNSET)
        self._ended = False
        #: Called with the span's record before the processors get it (the chain's seal), if set.
        self.on_ending: Callable[[SpanRecord], None] | None = None

    def get_span_context(self) -> SpanContext:
        """The span's context, as given when it started."""
        return self.context

    @property
    def resource(self) -> Resource:
        """The resource of the tracer's provider."""
        return self._tracer._resource

    @property
    def instrumentation_scope(self) -> InstrumentationScope:
        """The tracer's scope."""
        return self._tracer._scope

    def is_recording(self) -> bool:
        """True until `end`: every audit span records."""
        return not self._ended

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        """Set `attributes` as they are, without validation; ignored once the span has ended (its record
        holds the attributes then)."""
        if not self._ended:
            self.attributes.update(attributes)

    def set_attribute(self, key: str, value: Any) -> None:
        """Set one attribute as it is, without validation (not after the end)."""
        if not self._ended:
            self.attributes[key] = value

    def add_event(self, name: str, attributes: Mapping[str, Any] | None = None, timestamp: int | None = None) -> None:
        """Add an event, timed now unless `timestamp` is given (not after the end)."""
        if not self._ended:
            self.events.append(Event(name, dict(attributes or {}), timestamp if timestamp is not None else time_ns()))

    def add_link(self, context: SpanContext, attributes: Mapping[str, Any] | None = None) -> None:
        """Add a link to `context`."""
        self.links = (*self.links, trace.Link(context, attributes))

    def update_name(self, name: str) -> None:
        """Rename the span."""
        self.name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        """Set the status; unlike the SDK's span, a later status always replaces an earlier one (the SDK keeps
        OK and ignores UNSET)."""
        self.status = status if isinstance(status, Status) else Status(status, description)

    def record_exception(self, exception: BaseException, attributes: Mapping[str, Any] | None = None,
                         timestamp: int | None = None, escaped: bool = False) -> None:
        """The SDK's ``exception`` event: the same four attributes, `attributes` overriding them."""
        module, qualname = type(exception).__module__, type(exception).__qualname__
        event = {
            "exception.type": f"{module}.{qualname}" if module and module != "builtins" else qualname,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
        }
        self.add_event("exception", {**event, **(attributes or {})}, timestamp)

    def end(self, end_time: int | None = None) -> None:
        """Hand the span's record to the tracer's processors, once; later calls do nothing."""
        if not self._ended:
            self._ended = True
            self.end_time = end_time if end_time is not None else time_ns()
            self._tracer._end(self)
