"""Spans as an OTLP/protobuf ``ExportTraceServiceRequest``: the bytes the SDK's encoder produces, faster.

The SDK's encoder builds a protobuf object for every attribute and value, about 60 µs for an audit
span, which made encoding the largest cost of sustained export. Most attributes of an audit span are
the same strings in every span of a model (name, class, version, fingerprint, operation), so here the
wire format is written directly and the encoding of each string attribute that repeats is remembered,
as is that of the model's feature names and classes; a span then costs little more than its own ids,
hashes and outputs. Where the native encoder was built (`native`), it writes the attributes of a span in
one pass instead, the same bytes. `tests/test_otlpproto.py` compares the bytes with the SDK's encoder, and
`tests/test_native.py` the native encoder's with the Python one's. Field numbers
are those of opentelemetry-proto's ``trace/v1/trace.proto`` and ``common/v1/common.proto``.

The audit worker encodes each span once, as it queues it for export (`encode_span`); a batch of such
spans is `EncodedSpans`, whose `request` the gRPC exporter sends as it is.
"""

from __future__ import annotations

import itertools
import logging
import operator
import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Optional

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode

from otel_rai import semconv
from otel_rai.codec import native
from otel_rai.codec.records import SpanRecord
from otel_rai.codec.sdk import span_context

_log = logging.getLogger(__name__)

_DOUBLE = struct.Struct("<d").pack
_FIXED64 = struct.Struct("<Q").pack
_FIXED32 = struct.Struct("<I").pack
_INT64 = range(-(1 << 63), 1 << 63)

# Span.flags: bit 8 says whether bit 9 is known; bit 9 says the parent is remote.
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200
# Span.kind fields: SDK SpanKind (INTERNAL = 0, ...) as OTLP's (SPAN_KIND_INTERNAL = 1, ...).
_KIND_FIELDS = {kind: b"\x30" + bytes((kind.value + 1,)) for kind in SpanKind}

#: Encoded string attributes, by (field tag, key, value), and the ones seen once so far; each is
#: emptied when full.
_STRING_ATTRIBUTES: dict[tuple[int, str, str], bytes] = {}
_SEEN_ONCE: set[tuple[int, str, str]] = set()
_KEYS: dict[str, bytes] = {}
#: Entries each of those caches holds before it is emptied.
_MAX_CACHED = 4096
#: Array attributes that are the same in every span of a model (a wide model's feature names cost more
#: to encode than the rest of its span): encoded once, by key, element types and values, so that 1, 1.0
#: and True stay apart. Arrays holding a float are not remembered (0.0 and -0.0 are equal keys).
_MODEL_ARRAYS = frozenset({semconv.INPUT_FEATURES, semconv.OUTPUT_CLASSES})
_ARRAY_ATTRIBUTES: dict[tuple, bytes] = {}
#: Attribute mappings the native encoder takes (a `ReadableSpan` shows its dict through a proxy).
_PLAIN_MAPPINGS = (dict, MappingProxyType)


def _varint(n: int) -> bytes:
    if 0 <= n < 0x80:
        return bytes((n,))
    n &= (1 << 64) - 1  # a negative int64 is ten bytes of two's complement
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _head(tag: int, n: int) -> bytes:
    """The tag and length of a length-delimited field of `n` bytes; `tag` is (field number << 3) | 2, one
    byte for fields 1 to 15."""
    return bytes((tag, n)) if n < 0x80 else bytes((tag,)) + _varint(n)


def _len(tag: int, payload: bytes) -> bytes:
    """A length-delimited field."""
    return _head(tag, len(payload)) + payload


def _any_value(value: Any) -> bytes:
    """AnyValue: string 1, bool 2, int 3, double 4, array 5, kvlist 6, bytes 7 (a oneof: always written)."""
    kind = type(value)  # the common exact types first; the rest as the SDK encoder tests them
    if kind is str:
        return _len(0x0A, value.encode())
    if kind is float:
        return b"\x21" + _DOUBLE(value)
    if kind is int and value in _INT64:
        return b"\x18" + _varint(value)
    if kind is list or kind is tuple:
        return _array_value(value)
    return _other_value(value)


def _other_value(value: Any) -> bytes:
    """In the SDK encoder's order of tests: bool before int, str before Sequence."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _len(0x0A, value.encode())
    if isinstance(value, int):
        if value not in _INT64:
            raise ValueError(f"otel-rai: {value} is out of the int64 range")
        return b"\x18" + _varint(value)
    if isinstance(value, float):
        return b"\x21" + _DOUBLE(value)
    if isinstance(value, bytes):
        return _len(0x3A, value)
    if isinstance(value, Sequence):
        return _array_value(value)
    if isinstance(value, Mapping):
        return _len(0x32, b"".join([_len(0x0A, _key_value(str(k), v)) for k, v in value.items()]))
    raise TypeError(f"otel-rai: a value of type {type(value).__name__} cannot be an attribute")


def _key_value(key: str, value: Any) -> bytes:
    """KeyValue: key 1, value 2."""
    return _key_field(key) + _len(0x12, _any_value(value))


def _string_element(v: str) -> bytes:
    e = v.encode()
    n = len(e)
    if n < 126:  # both lengths fit in one byte
        return bytes((0x0A, n + 2, 0x0A, n)) + e
    return _len(0x0A, _len(0x0A, e))


def _float_element(v: float) -> bytes:
    return b"\x0a\x09\x21" + _DOUBLE(v)


def _int_element(v: int) -> bytes:
    if 0 <= v < 0x80:
        return bytes((0x0A, 2, 0x18, v))
    return _element(v)


def _element(v: Any) -> bytes:
    return _len(0x0A, _any_value(v))


#: ArrayValue.values entries of the exact types audit spans carry, skipping `_any_value`'s dispatch.
_ELEMENTS = {str: _string_element, float: _float_element, int: _int_element}


def _array_value(values: Sequence[Any]) -> bytes:
    elements = _ELEMENTS
    return _len(0x2A, b"".join([
        (elements[type(v)] if type(v) in elements else _element)(v) for v in values
    ]))


def _key_field(key: str) -> bytes:
    """KeyValue.key, remembered per key (attribute names are few)."""
    encoded = _KEYS.get(key)
    if encoded is None:
        if len(_KEYS) >= _MAX_CACHED:
            _KEYS.clear()
        encoded = _KEYS[key] = _len(0x0A, key.encode()) if key else b""
    return encoded


def _cached_string(tag: int, key: str, value: str) -> bytes:
    """A string attribute, remembered from its second sighting on: strings that repeat (the model's
    name, version, fingerprint) are encoded once, while those that never repeat (hashes, ids) neither
    evict them nor grow the cache."""
    cache_key = (tag, key, value)
    encoded = _STRING_ATTRIBUTES.get(cache_key)
    if encoded is None:
        encoded = _len(tag, _key_value(key, value))
        if cache_key in _SEEN_ONCE:
            if len(_STRING_ATTRIBUTES) >= _MAX_CACHED:
                _STRING_ATTRIBUTES.clear()
            _STRING_ATTRIBUTES[cache_key] = encoded
        else:
            if len(_SEEN_ONCE) >= _MAX_CACHED:
                _SEEN_ONCE.clear()
            _SEEN_ONCE.add(cache_key)
    return encoded


def _model_array(tag: int, key: str, values: Sequence[Any]) -> bytes:
    """Repeated KeyValue field `tag` of one of `_MODEL_ARRAYS`, remembered (see there)."""
    kinds = tuple(map(type, values))
    cache_key = (tag, key, kinds, tuple(values))
    try:
        encoded = _ARRAY_ATTRIBUTES.get(cache_key)
    except TypeError:  # an element that cannot be a key: encoded every time
        cache_key, encoded = None, None
    if encoded is None:
        encoded = _len(tag, _key_field(key) + _len(0x12, _array_value(values)))
        if cache_key is not None and float not in kinds:
            if len(_ARRAY_ATTRIBUTES) >= _MAX_CACHED:
                _ARRAY_ATTRIBUTES.clear()
            _ARRAY_ATTRIBUTES[cache_key] = encoded
    return encoded


def _attributes(tag: int, attributes: Mapping[str, Any] | None) -> bytes:
    """Repeated KeyValue field `tag`. An attribute that cannot be encoded is left out and logged, as
    the SDK encoder does (by key and type: the value could be a raw input)."""
    if not attributes:
        return b""
    if native.module is not None and type(attributes) in _PLAIN_MAPPINGS:  # the same bytes, in one native pass
        encoded = native.module.otlp_attributes(tag, dict(attributes) if type(attributes) is not dict else attributes)
        if encoded is not None:
            return encoded
    return _python_attributes(tag, attributes)


def _python_attributes(tag: int, attributes: Mapping[str, Any]) -> bytes:
    """`_attributes` in Python."""
    cached, keys = _STRING_ATTRIBUTES, _KEYS
    parts = []
    for key, value in attributes.items():
        kind = type(value)
        try:
            if kind is str:
                encoded = cached.get((tag, key, value))
                parts.append(encoded if encoded is not None else _cached_string(tag, key, value))
                continue
            # KeyValue{key, value: AnyValue}, lengths written inline: this loop is the encoder's hot spot.
            if kind is tuple or kind is list:
                if key in _MODEL_ARRAYS:
                    parts.append(_model_array(tag, key, value))
                    continue
                value_field = _array_value(value)
            elif kind is float:
                value_field = b"\x21" + _DOUBLE(value)
            else:
                value_field = _any_value(value)
            n = len(value_field)
            key_value = (keys.get(key) or _key_field(key)) + (
                bytes((0x12, n)) if n < 0x80 else b"\x12" + _varint(n)) + value_field
            n = len(key_value)
            parts.append((bytes((tag, n)) if n < 0x80 else bytes((tag,)) + _varint(n)) + key_value)
        except UnicodeEncodeError:
            _log.warning("otel-rai: attribute %s is not valid UTF-8; left out of the export", key)
        except (TypeError, ValueError) as exc:  # ValueError: out of range
            _log.warning("otel-rai: attribute %s (%s) cannot be exported: %s", key, kind.__name__,
                         type(exc).__name__)
    return b"".join(parts)


def _flags(parent: SpanContext | None) -> bytes:
    """Span.flags (field 16, fixed32: a two-byte tag)."""
    flags = _HAS_IS_REMOTE | (_IS_REMOTE if parent is not None and parent.is_remote else 0)
    return b"\x85\x01" + _FIXED32(flags)


def _span(span: ReadableSpan) -> bytes:
    """Span: trace_id 1, span_id 2, trace_state 3, parent_span_id 4, name 5, kind 6, start 7, end 8,
    attributes 9, dropped_attributes_count 10, events 11, dropped_events_count 12, links 13,
    dropped_links_count 14, status 15, flags 16."""
    context = span.get_span_context()
    parts = [b"\x0a\x10" + context.trace_id.to_bytes(16, "big"), b"\x12\x08" + context.span_id.to_bytes(8, "big")]
    if context.trace_state:
        parts.append(_len(0x1A, ",".join(f"{k}={v}" for k, v in context.trace_state.items()).encode()))
    if span.parent is not None:
        parts.append(b"\x22\x08" + span.parent.span_id.to_bytes(8, "big"))
    if span.name:
        parts.append(_len(0x2A, span.name.encode()))
    parts.append(_KIND_FIELDS[span.kind])
    if span.start_time:
        parts.append(b"\x39" + _FIXED64(span.start_time))
    if span.end_time:
        parts.append(b"\x41" + _FIXED64(span.end_time))
    parts.append(_attributes(0x4A, span.attributes))
    if span.dropped_attributes:
        parts.append(b"\x50" + _varint(span.dropped_attributes))
    for event in span.events:
        parts.append(_len(0x5A, _event(event)))
    if span.dropped_events:
        parts.append(b"\x60" + _varint(span.dropped_events))
    for link in span.links:
        parts.append(_len(0x6A, _link(link)))
    if span.dropped_links:
        parts.append(b"\x70" + _varint(span.dropped_links))
    status = span.status
    if status is not None:  # Status: message 2, code 3
        parts.append(_len(0x7A, (_len(0x12, status.description.encode()) if status.description else b"")
                          + (b"\x18" + _varint(status.status_code.value) if status.status_code.value else b"")))
    parts.append(_flags(span.parent))
    return b"".join(parts)


def _record_span(record: SpanRecord) -> bytes:
    """`_span` of a `SpanRecord` (the audit tracer's spans end as records): the same fields, from the
    record's hex ids and OTLP numbers. A record does not keep whether a link's context was remote; the
    audit spans have no links."""
    parts = [b"\x0a\x10" + bytes.fromhex(record.trace_id), b"\x12\x08" + bytes.fromhex(record.span_id)]
    if record.trace_state:
        parts.append(_len(0x1A, record.trace_state.encode()))
    if record.parent_span_id is not None:
        parts.append(b"\x22\x08" + bytes.fromhex(record.parent_span_id))
    if record.name:
        parts.append(_len(0x2A, record.name.encode()))
    parts.append(b"\x30" + _varint(record.kind))
    if record.start_ns:
        parts.append(b"\x39" + _FIXED64(record.start_ns))
    if record.end_ns:
        parts.append(b"\x41" + _FIXED64(record.end_ns))
    parts.append(_attributes(0x4A, record.attributes))
    for event in record.events:
        parts.append(_len(0x5A, (b"\x09" + _FIXED64(event["time_ns"]) if event["time_ns"] else b"")
                          + (_len(0x12, event["name"].encode()) if event["name"] else b"")
                          + _attributes(0x1A, event["attributes"])))
    for link in record.links:
        parts.append(_len(0x6A, b"\x0a\x10" + bytes.fromhex(link["trace_id"]) + b"\x12\x08"
                          + bytes.fromhex(link["span_id"]) + _attributes(0x22, link["attributes"])
                          + b"\x35" + _FIXED32(_HAS_IS_REMOTE)))
    code, message = record.status_code, record.status_message
    parts.append(_len(0x7A, (_len(0x12, message.encode()) if message else b"")
                      + (b"\x18" + _varint(code) if code else b"")))
    parts.append(b"\x85\x01" + _FIXED32(_HAS_IS_REMOTE | (_IS_REMOTE if record.parent_is_remote else 0)))
    return b"".join(parts)


def _event(event: Any) -> bytes:
    """Span.Event: time_unix_nano 1, name 2, attributes 3, dropped_attributes_count 4."""
    return ((b"\x09" + _FIXED64(event.timestamp) if event.timestamp else b"")
            + (_len(0x12, event.name.encode()) if event.name else b"")
            + _attributes(0x1A, event.attributes)
            + (b"\x20" + _varint(event.dropped_attributes) if event.dropped_attributes else b""))


def _link(link: Any) -> bytes:
    """Span.Link: trace_id 1, span_id 2, attributes 4, dropped_attributes_count 5, flags 6."""
    return (b"\x0a\x10" + link.context.trace_id.to_bytes(16, "big")
            + b"\x12\x08" + link.context.span_id.to_bytes(8, "big")
            + _attributes(0x22, link.attributes)
            + (b"\x28" + _varint(link.dropped_attributes) if link.dropped_attributes else b"")
            + b"\x35" + _FIXED32(_HAS_IS_REMOTE | (_IS_REMOTE if link.context.is_remote else 0)))


def _scope(scope: Any) -> bytes:
    """InstrumentationScope: name 1, version 2, attributes 3."""
    if scope is None:
        return b""
    return ((_len(0x0A, scope.name.encode()) if scope.name else b"")
            + (_len(0x12, scope.version.encode()) if scope.version else b"")
            + _attributes(0x1A, scope.attributes))


#: The encoded span of a (resource, scope, encoded span, ...) entry.
_SPAN = operator.itemgetter(2)


def _origin_ids(entry: tuple) -> tuple[int, int]:
    """The identities of an entry's resource and scope."""
    return id(entry[0]), id(entry[1])


#: Spans grouped for a request: {resource: {scope: [encoded Span messages]}}, each level in order of
#: first appearance.
Groups = Mapping[Resource, Mapping[Optional[InstrumentationScope], Sequence[bytes]]]


def encode_span(span: ReadableSpan) -> bytes:
    """One Span message, as it appears (length-delimited) in a request."""
    return _len(0x12, _span(span))


def encode_record(record: SpanRecord) -> bytes:
    """`encode_span` of a `SpanRecord`."""
    return _len(0x12, _record_span(record))


def request(groups: Groups) -> bytes:
    """An ExportTraceServiceRequest of spans already encoded (ResourceSpans: resource 1, scope_spans 2,
    schema_url 3; ScopeSpans: scope 1, spans 2, schema_url 3). Its pieces are joined once: the spans are
    most of its bytes, and wrapping each message around them as it is built would copy them again at
    each of three levels (about 0.1 ms of a 200-span request)."""
    pieces: list[bytes] = []
    for resource, scopes in groups.items():
        at = len(pieces)
        # The first piece is the ResourceSpans' tag and length, written once its size is known.
        pieces += (b"", _len(0x0A, _attributes(0x0A, resource.attributes)))
        for scope, encoded in scopes.items():
            head = _len(0x0A, _scope(scope))
            tail = _len(0x1A, scope.schema_url.encode()) if scope is not None and scope.schema_url else b""
            pieces += (_head(0x12, len(head) + sum(map(len, encoded)) + len(tail)), head, *encoded, tail)
        if resource.schema_url:
            pieces.append(_len(0x1A, resource.schema_url.encode()))
        pieces[at] = _head(0x0A, sum(map(len, pieces[at + 1 :])))
    return b"".join(pieces)


def grouped(encoded: Iterable[tuple[Resource, Optional[InstrumentationScope], bytes]]) -> Groups:
    """Encoded spans (with their resource and scope) grouped for `request`."""
    return grouped_runs(_runs(encoded))


def _runs(encoded: Iterable[tuple]) -> Iterator[tuple[Resource, Optional[InstrumentationScope], list[bytes]]]:
    """The runs of encoded spans under the same resource and scope objects."""
    for _, run in itertools.groupby(encoded, key=_origin_ids):
        entries = list(run)
        yield entries[0][0], entries[0][1], list(map(_SPAN, entries))


def grouped_runs(runs: Iterable[tuple[Resource, Optional[InstrumentationScope], list[bytes]]]) -> Groups:
    """`grouped` of runs of encoded spans, each run under one resource and scope: a lookup a run, not a span."""
    groups: dict[Any, dict[Any, list[bytes]]] = {}
    # Grouped by equality, as the SDK does; looked up by identity first, because hashing a Resource
    # encodes its attributes as JSON every time.
    by_id: dict[tuple[int, int], list[bytes]] = {}
    for resource, scope, spans in runs:
        group = by_id.get((id(resource), id(scope)))
        if group is None:
            group = by_id[id(resource), id(scope)] = groups.setdefault(resource, {}).setdefault(scope, [])
        group += spans
    return groups


def encode_spans(spans: Sequence[ReadableSpan]) -> bytes:
    """An ExportTraceServiceRequest of `spans`, grouped by resource, then by instrumentation scope."""
    return request(grouped((s.resource, s.instrumentation_scope or None, encode_span(s)) for s in spans))


class EncodedSpans(Sequence[ReadableSpan]):
    """Spans encoded when they were written (the spool's outbox keeps them so): `request` is what an
    export sends. As a sequence they are decoded again, for an exporter that encodes on its own (the
    SDK's OTLP/HTTP exporter)."""

    def __init__(self, groups: Groups) -> None:
        self._groups = groups
        self._count = sum(len(encoded) for scopes in groups.values() for encoded in scopes.values())
        self._decoded: list[ReadableSpan] | None = None

    def request(self) -> bytes:
        """The ExportTraceServiceRequest of these spans, as bytes."""
        return request(self._groups)

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index: Any) -> Any:
        if self._decoded is None:
            self._decoded = [
                decode_span(encoded, resource, scope)
                for resource, scopes in self._groups.items()
                for scope, spans in scopes.items()
                for encoded in spans
            ]
        return self._decoded[index]


# --- decoding: EncodedSpans for an exporter that encodes on its own ---------------------------------


def _decoded_value(value: Any) -> Any:
    """An AnyValue message as the attribute value it encodes."""
    which = value.WhichOneof("value")
    if which == "array_value":
        return [_decoded_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _decoded_value(kv.value) for kv in value.kvlist_value.values}
    return None if which is None else getattr(value, which)


def _decoded_attributes(key_values: Any) -> dict[str, Any]:
    return {kv.key: _decoded_value(kv.value) for kv in key_values}


def _context(trace_id: bytes, span_id: bytes, trace_state: str = "", remote: bool = False) -> SpanContext:
    return span_context(int.from_bytes(trace_id, "big"), int.from_bytes(span_id, "big"), trace_state, remote)


def decode_span(encoded: bytes, resource: Resource, scope: InstrumentationScope | None) -> ReadableSpan:
    """The span of `encode_span`'s output: it encodes to the same bytes again."""
    from opentelemetry.proto.trace.v1.trace_pb2 import Span  # the SDK exporter's dependency

    _, start = _read_varint(encoded, 1)  # past the tag and length of `encode_span`
    span = Span.FromString(encoded[start:])
    parent = None
    if span.parent_span_id:
        parent = _context(span.trace_id, span.parent_span_id, remote=bool(span.flags & _IS_REMOTE))
    code = StatusCode(span.status.code)
    return ReadableSpan(
        name=span.name,
        context=_context(span.trace_id, span.span_id, span.trace_state),
        parent=parent,
        resource=resource,
        attributes=_decoded_attributes(span.attributes),
        events=[Event(e.name, _decoded_attributes(e.attributes), e.time_unix_nano) for e in span.events],
        links=[Link(_context(link.trace_id, link.span_id, link.trace_state,
                             remote=bool(link.flags & _IS_REMOTE)), _decoded_attributes(link.attributes))
               for link in span.links],
        kind=SpanKind(max(span.kind - 1, 0)),
        status=Status(code, (span.status.message or None) if code is StatusCode.ERROR else None),
        start_time=span.start_time_unix_nano,
        end_time=span.end_time_unix_nano,
        instrumentation_scope=scope,
    )


def _read_varint(data: bytes, at: int) -> tuple[int, int]:
    """(the varint at offset `at`, the offset after it)."""
    value = shift = 0
    while True:
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at += 1
        if byte < 0x80:
            return value, at
        shift += 7
