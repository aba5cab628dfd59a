"""Attribute values as text, the way the collector's ClickHouse exporter writes them, and back.

The exporter (opentelemetry-collector-contrib ``exporter/clickhouseexporter``) stores every attribute in a
``Map(LowCardinality(String), String)`` column, each value turned into text by pdata's ``Value.AsString``:

* a string as it is; a bool as ``true`` / ``false``; an int in decimal;
* a double the way JavaScript prints a number: fixed notation from 1e-6 up to 1e21, else exponent
  notation (``1e-7``, ``1.5e+21``), in the fewest digits that read back to the same double; a NaN or
  infinite double as ``json: unsupported value: NaN`` (``+Inf``, ``-Inf``) up to collector 0.150, and as
  ``NaN`` / ``Infinity`` / ``-Infinity`` from 0.151 on;
* an array as Go's ``encoding/json`` writes it: compact; ``<``, ``>``, ``&``, U+2028 and U+2029 escaped
  as ``\\u003c`` and so on (up to collector 0.151; later ones leave them as they are); numbers as above;
  and an array holding a NaN or an infinity as the empty string (the JSON encoder refuses it, and the
  exporter keeps the empty result).

`as_string` writes what collector 0.136 (the version `collector/otelcol.yaml` is written for) writes;
`parse` reads what any of those versions wrote. Types do not survive the trip: ``"5"`` may have been
the string or the int, ``1`` the int or the double 1.0. `parse` restores them by attribute name
(`KINDS`: every name of `otel_rai.semconv`); another name's value is a string, or a list if it is a
JSON array. Numbers are equal either way, and the chain hashes every number as a double, so a record
read back still matches its hash, unless the exporter emptied one of its arrays (a NaN score).
"""

from __future__ import annotations

import base64
import json
import math
import re
from typing import Any, Callable

from otel_rai import semconv

#: The last digit of a single-digit negative exponent, which JavaScript does not pad (1e-07 -> 1e-7).
_PADDED_EXPONENT = re.compile(r"e-0(\d)$")
#: Fixed notation from here up to `_FIXED_BELOW`; exponent notation outside.
_FIXED_FROM, _FIXED_BELOW = 1e-6, 1e21
#: What Go's JSON encoder escapes beyond what Python's does (HTML-sensitive characters and JavaScript's
#: line separators), as the six-character escapes it writes.
_GO_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_GO_ESCAPED = re.compile("[<>&\u2028\u2029\ud800-\udfff]")
_compact = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def number(f: float) -> str:
    """A finite double as JavaScript (and Go's JSON encoder) print it."""
    text = repr(f)
    if "e" not in text:  # Python's fixed range, 1e-4 up to 1e16, lies inside JavaScript's
        return text[:-2] if text.endswith(".0") else text
    mantissa, _, exponent = text.partition("e")
    sign = "-" if mantissa.startswith("-") else ""
    digits = mantissa.lstrip("-").replace(".", "")
    point = int(exponent) + 1  # digits before the decimal point
    if _FIXED_FROM <= abs(f) < _FIXED_BELOW:
        if point <= 0:
            return f"{sign}0.{'0' * -point}{digits}"
        if point >= len(digits):
            return sign + digits + "0" * (point - len(digits))
        return f"{sign}{digits[:point]}.{digits[point:]}"
    head = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return _PADDED_EXPONENT.sub(r"e-\1", f"{sign}{head}e{point - 1:+03d}")


def _double(f: float) -> str:
    if math.isfinite(f):
        return number(f)
    return "json: unsupported value: " + ("NaN" if f != f else ("+Inf" if f > 0 else "-Inf"))


def _go_string(text: str) -> str:
    """Escapes Go adds to a JSON text that Python's encoder wrote (HTML characters, line separators, and
    a lone surrogate, which is not UTF-8, as the replacement character)."""
    return _GO_ESCAPED.sub(lambda m: _GO_ESCAPES.get(m[0], "\\ufffd"), text)


def _json(v: Any) -> str:
    """`v` as Go's JSON encoder writes it, before `_go_string`; ValueError for a NaN or an infinity."""
    kind = type(v)
    if kind is str:
        return _compact(v)
    if kind is bool:
        return "true" if v else "false"
    if kind is int:
        return str(v)
    if kind is float:
        if not math.isfinite(v):
            raise ValueError("not JSON")
        return number(v)
    if v is None:
        return "null"
    if kind is list or kind is tuple:
        return "[" + ",".join(map(_json, v)) + "]"
    if isinstance(v, (bytes, bytearray)):  # Go writes a []byte as base64 text
        return '"' + base64.b64encode(v).decode("ascii") + '"'
    if isinstance(v, dict):  # Go writes a map's keys in order
        return "{" + ",".join(_compact(str(k)) + ":" + _json(x) for k, x in sorted(v.items())) + "}"
    return _json(v.item()) if hasattr(v, "item") else _compact(str(v))  # a numpy scalar


def _array(values: Any) -> str:
    try:
        if all(type(v) is str for v in values):  # the common case: ids, hashes, labels (at C speed)
            return _go_string(_compact(list(values)))
        return _go_string(_json(list(values)))
    except ValueError:  # a NaN or an infinity: Go's encoder fails and the exporter keeps ""
        return ""


def element(value: Any) -> str:
    """One entry of an array attribute as JSON, as the exporter writes it inside the array's text."""
    return _go_string(_json(value))


def as_string(value: Any) -> str:
    """`value` (an OTel attribute value) as the exporter writes it into a map column."""
    kind = type(value)
    if kind is str:
        return value
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    if kind is float:
        return _double(value)
    if kind is list or kind is tuple:
        return _array(value)
    if value is None:
        return ""
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dict):
        try:
            return _go_string(_json(value))
        except ValueError:
            return ""
    return as_string(value.item()) if hasattr(value, "item") else str(value)  # a numpy scalar


def attributes(values: dict[str, Any]) -> dict[str, str]:
    """A map column's value: every attribute as text."""
    return {k: as_string(v) for k, v in values.items()}


# --- reading back ---------------------------------------------------------------------------------

STRING, INT, DOUBLE, ARRAY, DOUBLE_ARRAY = "string", "int", "double", "array", "double array"

#: The attributes otel-rai writes on its spans, as semconv lists them.
_WRITTEN = (semconv.SPAN_ATTRIBUTES, semconv.ALERT_SPAN_ATTRIBUTES, semconv.MONITORING_SPAN_ATTRIBUTES,
            semconv.MODEL_RECORD_ATTRIBUTES, semconv.UI_SPAN_ATTRIBUTES, semconv.CHAIN_ATTRIBUTES)
#: The type of every attribute otel-rai writes. tests/test_clickhouse.py checks that it names every
#: attribute of `semconv.SPAN_ATTRIBUTES`: a new attribute needs its type here.
KINDS: dict[str, str] = {
    **{name: STRING for names in _WRITTEN for name in names},
    semconv.BATCH_SIZE: INT,
    semconv.BATCH_OFFSET: INT,
    semconv.BATCH_CHUNKS: INT,
    semconv.AUDIT_SEQ: INT,
    semconv.CHECKPOINT_DECISIONS: INT,
    semconv.FAIRNESS_VALUE: DOUBLE,
    semconv.FAIRNESS_THRESHOLD: DOUBLE,
    semconv.DECISION_IDS: ARRAY,
    semconv.INPUT_HASHES: ARRAY,
    semconv.OUTPUTS: ARRAY,
    semconv.INPUT_FEATURES: ARRAY,
    semconv.OUTPUT_CLASSES: ARRAY,
    semconv.EXPLANATION_TOP: ARRAY,
    semconv.EXPLANATION_BASE_VALUES: DOUBLE_ARRAY,
    semconv.EXPLANATION_RESOLUTION: DOUBLE,
    semconv.GROUPS_DIGEST: ARRAY,
    semconv.TRAINING_ROWS: INT,
    semconv.TRAINING_BATCHES: INT,
    semconv.TRAINING_DURATION_MS: DOUBLE,
    semconv.MONITORING_VALUE: DOUBLE,
    semconv.MONITORING_THRESHOLD: DOUBLE,
    semconv.MONITORING_BASELINE: DOUBLE,
}
#: Attributes named by a prefix: per-class scores (doubles) and allowlisted raw values (any JSON).
PREFIX_KINDS = ((semconv.OUTPUT_SCORES_PREFIX, DOUBLE_ARRAY), (semconv.INPUT_VALUE_PREFIX, ARRAY))
_INTEGER = re.compile(r"^-?\d+$")
#: Non-finite doubles as the two generations of pdata write them.
_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf,
               "json: unsupported value: NaN": math.nan, "json: unsupported value: +Inf": math.inf,
               "json: unsupported value: -Inf": -math.inf}


#: Names seen, with their parser: a span's dozen names repeat in every span.
_SEEN: dict[str, Callable[[str], Any]] = {}
#: Bound on `_SEEN` (names are few; this only bounds a pathological trail).
_SEEN_MAX = 10_000


def kind_of(name: str) -> str | None:
    """The type of attribute `name`, None for a name otel-rai does not define."""
    kind = KINDS.get(name)
    if kind is None:
        kind = next((k for prefix, k in PREFIX_KINDS if name.startswith(prefix)), None)
    return kind


def _json_array(text: str) -> list[Any] | None:
    if not text.startswith("["):
        return None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, list) else None


def _as_double(v: Any) -> Any:
    return float(v) if type(v) is int else v


def _parse_double(text: str) -> Any:
    found = _NON_FINITE.get(text)
    if found is not None:
        return found
    try:
        return float(text)
    except ValueError:
        return text


_PARSERS: dict[str | None, Callable[[str], Any]] = {
    STRING: lambda text: text,
    INT: lambda text: int(text) if _INTEGER.match(text) else text,
    DOUBLE: _parse_double,
    ARRAY: lambda text: (lambda a: text if a is None else a)(_json_array(text)),
    DOUBLE_ARRAY: lambda text: (lambda a: text if a is None else [_as_double(v) for v in a])(_json_array(text)),
    None: lambda text: (lambda a: text if a is None else a)(_json_array(text)),
}


def parse(name: str, text: str) -> Any:
    """The value of attribute `name` from the exporter's text (see the module docstring)."""
    parser = _SEEN.get(name)
    if parser is None:
        if len(_SEEN) > _SEEN_MAX:
            _SEEN.clear()
        parser = _SEEN[name] = _PARSERS[kind_of(name)]
    return parser(text)


def parse_attributes(values: dict[str, str]) -> dict[str, Any]:
    """A map column's value as attributes, typed by name."""
    return {k: parse(k, v) for k, v in values.items()}


def parse_other(values: dict[str, str]) -> dict[str, Any]:
    """A map of attributes otel-rai does not define (resource, events, links): strings, and JSON arrays
    as lists."""
    return {k: _PARSERS[None](v) for k, v in values.items()}
