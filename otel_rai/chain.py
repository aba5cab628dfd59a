"""The tamper-evident chain: every span of the audit tracer commits to the one before it.

Each process (and each forked child) writes one *stream*. Sealing a span, just before it ends on the
audit worker's thread, gives it the stream id, the next sequence number, the previous record's hash and
its own `record_hash`: SHA-256 of its canonical form (below), which covers those three as well. Every
`interval_s` seconds with new records, and when the session closes, a checkpoint span records the
stream's head; with a key it is signed (HMAC-SHA256, or Ed25519 with the optional ``cryptography``).

The canonical form is what survives every place a span is kept (the local store, OTLP, Jaeger, Tempo,
Phoenix, as `otel_rai.query` reads them back): the span name, trace and span ids, parent span id, status
code and message, the start and end times in whole microseconds, and every ``ml.*`` attribute except
``ml.input.value.*`` (which the collector's privacy filter removes), the record hash and the signature.
Numbers are hashed as float64 (so ``1`` and ``1.0`` agree, as JSON round trips make them), and an
attribute that is a JSON array in a string (Jaeger's v1 storage keeps arrays that way) as the array.
What this proves and what it does not: ``docs/audit-trail.md``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
from typing import Any, Mapping, Protocol, Sequence

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from otel_rai import _fork, semconv
from otel_rai.records import SpanRecord
from otel_rai.tracer import CurrentSpanTracer

VERSION = b"otel-rai.chain.v1"
GENESIS = "0" * 64
#: How often a stream with new records gets a checkpoint span.
DEFAULT_CHECKPOINT_INTERVAL_S = 60.0
#: The checkpoint key when `instrument(checkpoint_key=)` is not given: HMAC-SHA256 key material.
KEY_ENV = "OTEL_RAI_CHECKPOINT_KEY"
#: Backends keep times to the microsecond, some (Phoenix: float seconds) only to about one.
TIME_TOLERANCE_US = 1

_UNHASHED = frozenset({semconv.AUDIT_RECORD_HASH, semconv.CHECKPOINT_SIGNATURE})
#: Compact, key-sorted, ASCII JSON; one encoder, reused (json.dumps would build one per call).
_CANONICAL_JSON = json.JSONEncoder(sort_keys=True, ensure_ascii=True, separators=(",", ":"))
_HASHED: dict[str, bool] = {}  # attribute name -> hashed_attribute(name)


# --- the canonical form --------------------------------------------------------------------------


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
    covered = {}
    for k, v in attributes.items():
        hashed = _HASHED.get(k)
        if hashed is None:
            if len(_HASHED) > 10_000:  # names are few; this only bounds a pathological caller
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
    fields = [name, trace_id.lower(), span_id.lower(), (parent_span_id or "").lower(), int(status_code),
              status_message or "", covered]
    return _CANONICAL_JSON.encode(fields).encode("ascii")


def digest(body: bytes, start_us: int, end_us: int) -> str:
    """SHA-256 over the version tag, the times in microseconds and `body`, as 64 hex digits."""
    return hashlib.sha256(b"%s\n%d\n%d\n%s" % (VERSION, start_us, end_us, body)).hexdigest()


def record_body(record: SpanRecord) -> bytes:
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


# --- checkpoint keys -------------------------------------------------------------------------------


class Signer(Protocol):
    algorithm: str
    key_id: str

    def sign(self, message: bytes) -> str: ...


class HmacKey:
    """A shared secret for HMAC-SHA256 checkpoint signatures. `repr` never shows the secret."""

    algorithm = semconv.CHECKPOINT_ALGORITHM_HMAC

    def __init__(self, material: str | bytes) -> None:
        raw = material.encode("utf-8") if isinstance(material, str) else bytes(material)
        if not raw:
            raise ValueError("otel-rai: the checkpoint key is empty")
        self._secret = raw
        self.key_id = hashlib.blake2b(raw, digest_size=8, person=b"otel-rai.ckpt").hexdigest()

    def __repr__(self) -> str:
        return f"HmacKey(key_id={self.key_id!r})"

    def sign(self, message: bytes) -> str:
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def verify(self, message: bytes, signature: str) -> bool:
        return hmac.compare_digest(self.sign(message), signature)


def _ed25519_key_id(public_raw: bytes) -> str:
    return hashlib.blake2b(public_raw, digest_size=8, person=b"otel-rai.ed25519").hexdigest()


class Ed25519Key:
    """An Ed25519 key (``pip install cryptography``): a private key signs, a public key verifies."""

    algorithm = semconv.CHECKPOINT_ALGORITHM_ED25519

    def __init__(self, key: Any) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519

        if isinstance(key, ed25519.Ed25519PrivateKey):
            self._private: Any = key
            self._public = key.public_key()
        elif isinstance(key, ed25519.Ed25519PublicKey):
            self._private, self._public = None, key
        else:
            raise TypeError("otel-rai: expected an Ed25519 private or public key of the cryptography package")
        raw = self._public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.key_id = _ed25519_key_id(raw)

    def __repr__(self) -> str:
        return f"Ed25519Key(key_id={self.key_id!r})"

    @classmethod
    def from_pem(cls, data: bytes) -> Ed25519Key:
        """A PEM public or private key."""
        from cryptography.hazmat.primitives import serialization

        try:
            loaded: Any = serialization.load_pem_public_key(data)
        except ValueError:
            loaded = serialization.load_pem_private_key(data, password=None)
        return cls(loaded)

    def sign(self, message: bytes) -> str:
        if self._private is None:
            raise ValueError("otel-rai: an Ed25519 public key cannot sign")
        return self._private.sign(message).hex()

    def verify(self, message: bytes, signature: str) -> bool:
        from cryptography.exceptions import InvalidSignature

        try:
            self._public.verify(bytes.fromhex(signature), message)
        except (InvalidSignature, ValueError):
            return False
        return True


def signer(key: Any) -> Signer | None:
    """The checkpoint signer for `key`: None, a secret (str or bytes: HMAC-SHA256), an `HmacKey`, or an
    Ed25519 private key of the ``cryptography`` package (or an `Ed25519Key`)."""
    if key is None or isinstance(key, (HmacKey, Ed25519Key)):
        return key
    if isinstance(key, (str, bytes)):
        return HmacKey(key)
    return Ed25519Key(key)


# --- sealing ---------------------------------------------------------------------------------------


class Chain:
    """The stream of this process. `seal` is called with each span still open, in the order the spans
    end; a lock keeps that order if spans ever end on more than one thread."""

    def __init__(self, key: Signer | None = None, interval_s: float = DEFAULT_CHECKPOINT_INTERVAL_S) -> None:
        self._key = key
        self._interval_ns = int(interval_s * 1e9)
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
        with self._lock:
            self.seq += 1
            chained = {semconv.AUDIT_STREAM: self.stream, semconv.AUDIT_SEQ: self.seq,
                       semconv.AUDIT_PREV_HASH: self.head}
            attributes.update(chained)
            body = canonical_body(span.name, f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}",
                                  None if parent is None else f"{parent.span_id:016x}",
                                  status.status_code.value, status.description or "", attributes)
            self.head = chained[semconv.AUDIT_RECORD_HASH] = digest(body, span.start_time // 1000, end_ns // 1000)
            self.decisions += len(attributes.get(semconv.DECISION_IDS) or ())
        span.set_attributes(chained)

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
    """An audit span that is sealed into the chain when it ends; everything else goes to the span.
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

    def start_span(self, name: str, context: otel_context.Context | None = None, *args: Any, **kwargs: Any) -> Any:
        span = self.tracer.start_span(name, context, *args, **kwargs)
        return _Sealing(span, self.chain) if span.is_recording() else span

    def checkpoint(self, *, force: bool = False) -> bool:
        return self.chain.checkpoint(self.tracer, force=force)
