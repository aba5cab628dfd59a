"""The canonical form of an audit record and its hash (chain v1).

The canonical form is what survives every place a span is kept (the local store, OTLP, Jaeger, Tempo,
Phoenix, as `otel_rai.query` reads them back): the span name, trace and span ids, parent span id, status
code and message, the start and end times in whole microseconds, and every ``ml.*`` attribute except
``ml.input.value.*`` (which the collector's privacy filter removes), the record hash and the signature.
Numbers are hashed as float64 (so ``1`` and ``1.0`` agree, as JSON round trips make them), and an
attribute that is a JSON array in a string (Jaeger's v1 storage keeps arrays that way) as the array.

`canonical_body` is written natively (`otel_rai.codec._native`, the usual values of an audit span in one
pass) when that module was built, else, and for any value it leaves to Python, by `_body` here: the same
bytes either way (tests/test_native.py).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping, Sequence

from otel_rai import semconv
from otel_rai.codec import compact, native
from otel_rai.codec.records import SpanRecord

VERSION = b"otel-rai.chain.v1"
GENESIS = "0" * 64
#: Backends keep times to the microsecond, some (Phoenix: float seconds) only to about one.
TIME_TOLERANCE_US = 1

_UNHASHED = frozenset({semconv.AUDIT_RECORD_HASH, semconv.CHECKPOINT_SIGNATURE})
#: Compact, key-sorted, ASCII JSON; one encoder, built once (`compact`).
_CANONICAL_JSON = compact.encoder(sort_keys=True)
_HASHED: dict[str, bool] = {}  # attribute name -> hashed_attribute(name)
#: Names `_HASHED` holds before it is emptied: names are few, so this only bounds a pathological caller.
_MAX_HASHED_NAMES = 10_000


def hashed_attribute(name: str) -> bool:
    """Whether attribute `name` is covered by the record hash."""
    return name.startswith("ml.") and not name.startswith(semconv.INPUT_VALUE_PREFIX) and name not in _UNHASHED


def _array(values: Sequence[Any]) -> Sequence[Any]:
    """Arrays are homogeneous (OTel requires it), so the first entry says how to treat them all."""
    kind = type(values[0]) if values else None
    if kind is str or kind is bool:
        return values  # JSON writes a tuple as an array
    if kind is int or kind is float:
        try:
            return list(map(float, values))  # one C loop
        except (TypeError, ValueError):
            pass
    return [_value(v, nested=True) for v in values]


def _value(v: Any, nested: bool = False) -> Any:
    kind = type(v)
    if kind is str:
        if nested or not v.startswith("["):
            return v
        try:
            parsed = json.loads(v)
        except (ValueError, RecursionError):
            return v
        return _array(parsed) if isinstance(parsed, list) else v
    if kind is tuple or kind is list:
        return _array(v)
    if kind is bool or v is None:
        return v
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, Mapping):
        return {str(k): _value(x, nested=True) for k, x in v.items()}
    return str(v)


def canonical_body(
    name: str,
    trace_id: str,
    span_id: str,
    parent_span_id: str | None,
    status_code: int,
    status_message: str,
    attributes: Mapping[str, Any],
) -> bytes:
    """The time-independent part of a record's canonical form: compact, key-sorted, ASCII JSON."""
    fields = (name, trace_id.lower(), span_id.lower(), (parent_span_id or "").lower(), int(status_code),
              status_message or "")
    if native.module is not None and type(attributes) is dict:
        body = native.module.canonical_body(*fields, attributes, _HASHED, hashed_attribute, _MAX_HASHED_NAMES)
        if body is not None:
            return body
    return _body(fields, attributes)


def _body(fields: tuple, attributes: Mapping[str, Any]) -> bytes:
    """`canonical_body` in Python, from the record's (name, ids, status) `fields` and its attributes."""
    covered = {}
    for k, v in attributes.items():
        hashed = _HASHED.get(k)
        if hashed is None:
            if len(_HASHED) > _MAX_HASHED_NAMES:
                _HASHED.clear()
            hashed = _HASHED[k] = hashed_attribute(k)
        if hashed:
            kind = type(v)
            if kind is str:
                covered[k] = v if v[:1] != "[" else _value(v)
            elif kind is int:
                covered[k] = float(v)
            elif kind is float:
                covered[k] = v
            elif kind is list or kind is tuple:
                covered[k] = _array(v)
            else:
                covered[k] = _value(v)
    return _CANONICAL_JSON([*fields, covered]).encode("ascii")


def digest(body: bytes, start_us: int, end_us: int) -> str:
    """SHA-256 over the version tag, the times in microseconds and `body`, as 64 hex digits."""
    return hashlib.sha256(b"%s\n%d\n%d\n%s" % (VERSION, start_us, end_us, body)).hexdigest()


def record_body(record: SpanRecord) -> bytes:
    """`canonical_body` of a stored or fetched record."""
    return canonical_body(record.name, record.trace_id, record.span_id, record.parent_span_id,
                          record.status_code, record.status_message, record.attributes)


def matches(record: SpanRecord, body: bytes | None = None) -> bool:
    """Whether the record's content still hashes to its ``ml.audit.record_hash``, allowing the backends'
    time rounding (`TIME_TOLERANCE_US`)."""
    claimed = record.attributes.get(semconv.AUDIT_RECORD_HASH)
    if not isinstance(claimed, str):
        return False
    body = record_body(record) if body is None else body
    start, end = record.start_ns // 1000, record.end_ns // 1000
    shifts = range(-TIME_TOLERANCE_US, TIME_TOLERANCE_US + 1)
    if digest(body, start, end) == claimed:
        return True
    return any(digest(body, start + ds, end + de) == claimed for ds in shifts for de in shifts if ds or de)
