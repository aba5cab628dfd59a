"""`SpanRecord`s as OTLP JSON, the encoding of the OTLP/HTTP JSON protocol.

`encode` writes what the OTel Collector's file exporter writes and its ``otlpjsonfile`` receiver reads:
a ``{"resourceSpans": [...]}`` object (one per line in a file), lowerCamelCase field names, trace and
span ids as hex, enums as integers, 64-bit integers as strings. `decode` reads that, plus the variants
backends answer with: ids in base64 (Tempo), ``batches`` for ``resourceSpans`` (Tempo's v1 API),
``instrumentationLibrarySpans`` for ``scopeSpans`` (OTLP before 0.15), enum names instead of numbers.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any, Iterable, Iterator

from otel_rai.codec.records import SpanRecord
from otel_rai.errors import InputError

# OTLP Span.flags: bit 8 says whether bit 9 is known; bit 9 says the parent is remote.
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200
_KINDS = {"SPAN_KIND_INTERNAL": 1, "SPAN_KIND_SERVER": 2, "SPAN_KIND_CLIENT": 3, "SPAN_KIND_PRODUCER": 4,
          "SPAN_KIND_CONSUMER": 5}
_STATUS = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}
_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


class OtlpJsonError(InputError):
    """The input is not OTLP JSON trace data."""


# --- encoding ------------------------------------------------------------------------------------


def _non_finite(v: float) -> str:
    """Protobuf's JSON mapping of NaN and the infinities (JSON has no such numbers)."""
    return "NaN" if v != v else ("Infinity" if v > 0 else "-Infinity")


def _value(v: Any) -> dict[str, Any]:
    if isinstance(v, str):
        return {"stringValue": v}
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}
    if isinstance(v, float):
        return {"doubleValue": v if math.isfinite(v) else _non_finite(v)}
    if isinstance(v, (list, tuple)):
        return {"arrayValue": {"values": [_value(x) for x in v]}}
    if isinstance(v, dict):
        return {"kvlistValue": {"values": _attributes(v)}}
    if isinstance(v, bytes):
        return {"bytesValue": base64.b64encode(v).decode("ascii")}
    return {} if v is None else {"stringValue": str(v)}


def _attributes(attributes: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": k, "value": _value(v)} for k, v in attributes.items()]


def _span(r: SpanRecord) -> dict[str, Any]:
    span: dict[str, Any] = {"traceId": r.trace_id, "spanId": r.span_id}
    if r.trace_state:
        span["traceState"] = r.trace_state
    if r.parent_span_id:
        span["parentSpanId"] = r.parent_span_id
    span["flags"] = _HAS_IS_REMOTE | (_IS_REMOTE if r.parent_is_remote else 0)
    span.update(
        name=r.name,
        kind=r.kind,
        startTimeUnixNano=str(r.start_ns),
        endTimeUnixNano=str(r.end_ns),
        attributes=_attributes(r.attributes),
    )
    if r.events:
        span["events"] = [
            {"timeUnixNano": str(e["time_ns"]), "name": e["name"], "attributes": _attributes(e["attributes"])}
            for e in r.events
        ]
    if r.links:
        span["links"] = [
            {"traceId": link["trace_id"], "spanId": link["span_id"],
             **({"traceState": link["trace_state"]} if link["trace_state"] else {}),
             "attributes": _attributes(link["attributes"]), "flags": _HAS_IS_REMOTE}
            for link in r.links
        ]
    status: dict[str, Any] = {}
    if r.status_message:
        status["message"] = r.status_message
    if r.status_code:
        status["code"] = r.status_code
    span["status"] = status
    return span


def encode(records: Iterable[SpanRecord]) -> dict[str, Any]:
    """One ``{"resourceSpans": [...]}`` object: the records grouped by resource, then by scope."""
    resources: dict[tuple, dict[tuple, list[dict[str, Any]]]] = {}
    originals: dict[tuple, SpanRecord] = {}
    for r in records:
        rkey = (repr(sorted(r.resource.items())), r.resource_schema_url)
        originals.setdefault(rkey, r)
        resources.setdefault(rkey, {}).setdefault((r.scope_name, r.scope_version), []).append(_span(r))
    out = []
    for rkey, scopes in resources.items():
        first = originals[rkey]
        resource_spans: dict[str, Any] = {
            "resource": {"attributes": _attributes(first.resource)},
            "scopeSpans": [
                {"scope": {"name": name, **({"version": version} if version else {})}, "spans": spans}
                for (name, version), spans in scopes.items()
            ],
        }
        if first.resource_schema_url:
            resource_spans["schemaUrl"] = first.resource_schema_url
        out.append(resource_spans)
    return {"resourceSpans": out}


# --- decoding ------------------------------------------------------------------------------------


def decode_id(value: Any, size: int) -> str | None:
    """A trace (`size` 16) or span (`size` 8) id given as hex or base64, as lowercase hex; None if empty."""
    if not value:
        return None
    if not isinstance(value, str):
        raise OtlpJsonError(f"an id must be a string, not {type(value).__name__}")
    if len(value) == 2 * size:
        try:
            bytes.fromhex(value)
            return value.lower()
        except ValueError:
            pass
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != size:
        raise OtlpJsonError(f"{value!r} is neither a hex nor a base64 id of {size} bytes")
    return raw.hex()


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise OtlpJsonError(f"expected an integer, got {value!r}")
    return int(value)


def decode_value(value: dict[str, Any]) -> Any:
    """An OTLP ``AnyValue`` as the Python value (arrays as lists, key-value lists as dicts)."""
    if not isinstance(value, dict) or not value:
        return None
    kind, v = next(iter(value.items()))
    if kind == "stringValue":
        return str(v)
    if kind == "boolValue":
        return bool(v)
    if kind == "intValue":
        return _int(v)
    if kind == "doubleValue":
        return _NON_FINITE[v] if isinstance(v, str) and v in _NON_FINITE else float(v)
    if kind == "arrayValue":
        return [decode_value(x) for x in (v or {}).get("values", [])]
    if kind == "kvlistValue":
        return decode_attributes((v or {}).get("values", []))
    if kind == "bytesValue":
        return str(v)  # base64 text: attribute values stay JSON-printable
    raise OtlpJsonError(f"unknown attribute value kind {kind!r}")


def decode_attributes(attributes: list[dict[str, Any]] | None) -> dict[str, Any]:
    """OTLP JSON key-value pairs as a dict of plain values."""
    return {kv["key"]: decode_value(kv.get("value", {})) for kv in attributes or ()}


def _enum(value: Any, names: dict[str, int]) -> int:
    if isinstance(value, str) and value in names:
        return names[value]
    return _int(value or 0)


def _decode_span(
    s: dict[str, Any], resource: dict[str, Any], schema_url: str, scope: dict[str, Any]
) -> SpanRecord:
    status = s.get("status") or {}
    flags = _int(s.get("flags") or 0)
    return SpanRecord(
        trace_id=decode_id(s.get("traceId"), 16) or "",
        span_id=decode_id(s.get("spanId"), 8) or "",
        name=str(s.get("name", "")),
        start_ns=_int(s.get("startTimeUnixNano") or 0),
        end_ns=_int(s.get("endTimeUnixNano") or 0),
        attributes=decode_attributes(s.get("attributes")),
        parent_span_id=decode_id(s.get("parentSpanId"), 8),
        parent_is_remote=bool(flags & _HAS_IS_REMOTE and flags & _IS_REMOTE),
        kind=_enum(s.get("kind"), _KINDS),
        status_code=_enum(status.get("code"), _STATUS),
        status_message=str(status.get("message") or ""),
        trace_state=str(s.get("traceState") or ""),
        events=[
            {"name": str(e.get("name", "")), "time_ns": _int(e.get("timeUnixNano") or 0),
             "attributes": decode_attributes(e.get("attributes"))}
            for e in s.get("events") or ()
        ] or (),
        links=[
            {"trace_id": decode_id(link.get("traceId"), 16), "span_id": decode_id(link.get("spanId"), 8),
             "trace_state": str(link.get("traceState") or ""),
             "attributes": decode_attributes(link.get("attributes"))}
            for link in s.get("links") or ()
        ] or (),
        resource=resource,
        resource_schema_url=schema_url,
        scope_name=str(scope.get("name") or ""),
        scope_version=str(scope.get("version") or ""),
    )


def decode(data: dict[str, Any]) -> Iterator[SpanRecord]:
    """The spans of one OTLP JSON traces object: ``{"resourceSpans": [...]}`` (Tempo: ``{"batches": [...]}``)."""
    if not isinstance(data, dict):
        raise OtlpJsonError("OTLP JSON trace data must be an object with resourceSpans")
    try:
        for rs in data.get("resourceSpans", data.get("batches")) or ():
            resource = decode_attributes((rs.get("resource") or {}).get("attributes"))
            schema_url = str(rs.get("schemaUrl") or "")
            for ss in rs.get("scopeSpans", rs.get("instrumentationLibrarySpans")) or ():
                scope = ss.get("scope", ss.get("instrumentationLibrary")) or {}
                for s in ss.get("spans") or ():
                    yield _decode_span(s, resource, schema_url, scope)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, OtlpJsonError):
            raise
        raise OtlpJsonError(f"malformed OTLP JSON ({type(exc).__name__}: {exc})") from None
