"""The trace-UI view of a decision span: OpenInference-style ``openinference.span.kind``, ``input.value``
and ``output.value`` (Phoenix, MLflow), derived from the span's ``ml.*`` attributes as `spans` built them.

* input: each row's decision id, input hash and allowlisted raw values (``ml.input.value.*``, the only
  raw values a span ever carries), as JSON;
* output: each row's label (a classifier) or value, the score of that label (a probability, log-probability
  or decision-function value; a binary decision function's one value) and its top reasons
  (``ml.explanation.top``), as JSON.

One row is one JSON object; a span of several rows is ``{"rows": n, "shown": k, "decisions": [...]}`` with
the first `MAX_ROWS` rows (the ``ml.*`` arrays keep them all). The view is not covered by the audit chain
(`otel_rai.chain.canonical` hashes ``ml.*`` only): it repeats what is, for a reader's eyes.
"""

from __future__ import annotations

import json
import math
from typing import Any, Mapping, Sequence

from otel_rai import semconv
from otel_rai.codec.reasons import parse_top

#: Rows shown in one span's input and output values: enough to read a batch, small next to the arrays.
MAX_ROWS = 10

_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
_VALUE_PREFIX = semconv.INPUT_VALUE_PREFIX
_SCORE_PREFIX = semconv.OUTPUT_SCORES_PREFIX
_CONSTANT = {
    semconv.UI_SPAN_KIND: semconv.UI_KIND_DECISION,
    semconv.UI_DECISION_SYSTEM: semconv.UI_DECISION_SYSTEM_SKLEARN,
    semconv.UI_INPUT_MIME_TYPE: semconv.UI_MIME_JSON,
    semconv.UI_OUTPUT_MIME_TYPE: semconv.UI_MIME_JSON,
}


def _rows(n: int) -> range:
    return range(min(n, MAX_ROWS))


def _finite(value: Any) -> Any:
    """`value` with NaN and the infinities as strings, as OTLP JSON writes them (JSON has no such numbers)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _json(value: Any) -> str:
    try:
        return _JSON(value)
    except ValueError:  # a NaN or infinity somewhere: rare, so looked for only then
        return _JSON(_finite(value))


def _batched(n: int, items: list[dict[str, Any]]) -> str:
    return _json(items[0]) if n == 1 else _json({"rows": n, "shown": len(items), "decisions": items})


def decision_view(common: Mapping[str, Any], rows: Mapping[str, Sequence[Any]], error: BaseException | None,
                  start: int = 0, stop: int | None = None) -> dict[str, str]:
    """The UI attributes of the rows `start:stop` of a call whose attributes are `common` and `rows`."""
    ids = rows[semconv.DECISION_IDS]
    stop = len(ids) if stop is None else stop
    n = stop - start
    shown = _rows(n)
    hashes = rows.get(semconv.INPUT_HASHES)
    allowlisted = {k[len(_VALUE_PREFIX):]: v for k, v in rows.items() if k.startswith(_VALUE_PREFIX)}
    inputs = []
    for i in shown:
        row: dict[str, Any] = {"decision_id": ids[start + i]}
        if hashes is not None:
            row["input_hash"] = hashes[start + i]
        if allowlisted:
            row[semconv.UI_ALLOWLISTED_KEY] = {name: values[start + i] for name, values in allowlisted.items()}
        inputs.append(row)
    outputs = []
    labels = rows.get(semconv.OUTPUTS)
    scores = {k[len(_SCORE_PREFIX):]: v for k, v in rows.items() if k.startswith(_SCORE_PREFIX)}
    top = rows.get(semconv.EXPLANATION_TOP)
    name = "label" if semconv.OUTPUT_CLASSES in common else "value"
    for i in shown:
        row = {"decision_id": ids[start + i]}
        if error is not None:
            row["error"] = type(error).__name__  # the type only: a message may quote an input value
        elif labels is not None:
            label = labels[start + i]
            row[name] = label
            own = scores.get(str(label)) if scores else None
            if own is None and len(scores) == 1 and common.get(semconv.OPERATION) == "decision_function":
                own = next(iter(scores.values()))
            if own is not None:
                row["score"] = own[start + i]
        if top is not None:
            row["reasons"] = dict(parse_top(top[start + i]))
        outputs.append(row)
    return {
        **_CONSTANT,
        semconv.UI_DECISION_MODEL_NAME: f"{common[semconv.MODEL_NAME]} {common[semconv.MODEL_VERSION]}",
        semconv.UI_INPUT_VALUE: _batched(n, inputs),
        semconv.UI_OUTPUT_VALUE: _batched(n, outputs),
    }


def parent_view(common: Mapping[str, Any], n: int, chunks: int) -> dict[str, str]:
    """The UI attributes of a chunked call's parent span: what it is and how its rows are split."""
    summary = _json({"rows": n, "chunks": chunks})
    return {
        **_CONSTANT,
        semconv.UI_DECISION_MODEL_NAME: f"{common[semconv.MODEL_NAME]} {common[semconv.MODEL_VERSION]}",
        semconv.UI_INPUT_VALUE: summary,
        semconv.UI_OUTPUT_VALUE: summary,
    }
