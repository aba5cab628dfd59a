"""`Decision`: one row of a decision span, whichever backend it came from."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

from otel_rai import semconv
from otel_rai._time import rfc3339
from otel_rai.codec.records import ERROR, SpanRecord

#: Array attributes that do not hold one entry per row.
_CALL_ARRAYS = (semconv.INPUT_FEATURES, semconv.OUTPUT_CLASSES)


@dataclass(frozen=True)
class Decision:
    """Everything recorded about one decision.

    `values` holds this row's entry of every other per-row attribute (``ml.output.scores.<class>``,
    allowlisted ``ml.input.value.<feature>``, and what later conventions add); `attributes` holds the
    span's attributes that describe the whole call.
    """

    decision_id: str
    time_ns: int
    model_name: str | None
    model_version: str | None
    model_fingerprint: str | None
    operation: str | None
    input_hash: str | None
    output: Any
    trace_id: str
    span_id: str
    row: int
    service: str | None = None
    error: str | None = None
    values: Mapping[str, Any] = field(default_factory=dict)
    attributes: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def timestamp(self) -> str:
        """The decision time (the start of the call) in RFC 3339, UTC."""
        return rfc3339(self.time_ns)

    def _prefixed(self, prefix: str) -> dict[str, Any]:
        return {k[len(prefix) :]: v for k, v in self.values.items() if k.startswith(prefix)}

    @property
    def scores(self) -> dict[str, Any]:
        """Per-class scores of this row, by class label."""
        return self._prefixed(semconv.OUTPUT_SCORES_PREFIX)

    @property
    def features(self) -> dict[str, Any]:
        """Allowlisted raw feature values of this row, by feature name."""
        return self._prefixed(semconv.INPUT_VALUE_PREFIX)

    def to_dict(self, *, full: bool = False) -> dict[str, Any]:
        """A JSON-ready dict; `full` adds the span's other attributes and the other per-row values."""
        out = {
            "decision_id": self.decision_id,
            "timestamp": self.timestamp,
            "service": self.service,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "model_fingerprint": self.model_fingerprint,
            "operation": self.operation,
            "input_hash": self.input_hash,
            "output": self.output,
            "scores": self.scores,
            "error": self.error,
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "row": self.row,
        }
        if full:
            out["values"] = dict(self.values)
            out["attributes"] = dict(self.attributes)
        return out


def _array(value: Any) -> list[Any] | None:
    """An array attribute; Jaeger's model keeps arrays as JSON strings, so those are read back."""
    if isinstance(value, str) and value.startswith("["):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return list(value) if isinstance(value, (list, tuple)) else None


#: Per-row attributes that have their own `Decision` field; the others go to `Decision.values`.
_OWN_FIELDS = (semconv.DECISION_IDS, semconv.INPUT_HASHES, semconv.OUTPUTS)


def decisions_of(record: SpanRecord) -> Iterator[Decision]:
    """The decisions of one span, in row order (none for a chunked call's parent span)."""
    a = record.attributes
    ids = _array(a.get(semconv.DECISION_IDS))
    if not ids:
        return
    n = len(ids)

    def column(key: str) -> list[Any]:
        values = _array(a.get(key))
        return values if values is not None and len(values) == n else [None] * n

    hashes, outputs = column(semconv.INPUT_HASHES), column(semconv.OUTPUTS)
    others = {k: column(k) for k in a if semconv.is_per_row(k) and k not in _OWN_FIELDS}
    call = {k: _array(v) if k in _CALL_ARRAYS else v for k, v in a.items() if not semconv.is_per_row(k)}
    offset = a.get(semconv.BATCH_OFFSET) or 0
    error = (record.status_message or "error") if record.status_code == ERROR else None
    for i in range(n):
        yield Decision(
            decision_id=str(ids[i]),
            time_ns=record.start_ns,
            model_name=a.get(semconv.MODEL_NAME),
            model_version=a.get(semconv.MODEL_VERSION),
            model_fingerprint=a.get(semconv.MODEL_FINGERPRINT),
            operation=a.get(semconv.OPERATION),
            input_hash=hashes[i],
            output=outputs[i],
            trace_id=record.trace_id,
            span_id=record.span_id,
            row=int(offset) + i,
            service=record.service,
            error=error,
            values={k: v[i] for k, v in others.items()},
            attributes=call,
        )
