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
import re
from typing import Any, Mapping, Sequence
from urllib.parse import unquote

from otel_rai import semconv

#: Rows shown in one span's input and output values: enough to read a batch, small next to the arrays.
MAX_ROWS = 10

#: A JSON string literal of a str (the json module's own C function).
_text = json.encoder.encode_basestring


def _unknown(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON")


# The json module's C encoder, made once: json.dumps makes one a call, a third of the cost of a small object.
# Compact separators, no NaN (`_json` handles it), no circularity check (the view is built here, a tree).
_ENCODER = json.encoder.c_make_encoder(None, _unknown, _text, None, ":", ",", False, False, False)


def _JSON(value: Any) -> str:
    return "".join(_ENCODER(value, 0))
_VALUE_PREFIX = semconv.INPUT_VALUE_PREFIX
_SCORE_PREFIX = semconv.OUTPUT_SCORES_PREFIX
_PREFIXES = (_VALUE_PREFIX, _SCORE_PREFIX)
_CONSTANT = {
    semconv.UI_SPAN_KIND: semconv.UI_KIND_DECISION,
    semconv.UI_DECISION_SYSTEM: semconv.UI_DECISION_SYSTEM_SKLEARN,
    semconv.UI_INPUT_MIME_TYPE: semconv.UI_MIME_JSON,
    semconv.UI_OUTPUT_MIME_TYPE: semconv.UI_MIME_JSON,
}


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


def _scalar(value: Any) -> str:
    """One JSON value: str, int and finite float written directly, anything else by the encoder."""
    kind = type(value)
    if kind is str:
        return _text(value)
    if kind is int or (kind is float and math.isfinite(value)):
        return repr(value)
    return _json(value)


#: What needs the careful path of `_reasons`: a percent-encoded name, a character JSON must escape in a name
#: (names hold no other: `codec.reasons` percent-encodes ``,``, ``=``, ``%`` and non-printables), a
#: number JSON has no literal for, or a value that is a sign alone (no resolution: `codec.reasons`).
_SLOW = re.compile(r'[%"\\]|inf|nan|=[+-](?:,|$)')
#: Feature names as JSON keys, as `_reasons` met them (names repeat in every row of a model); bounded.
_KEYS: dict[str, str] = {}
_MAX_KEYS = 10_000


def _reasons(entry: str) -> str:
    """An ``ml.explanation.top`` entry as a JSON object of feature -> attribution, in rank order, written
    straight from the entry's text (its numbers are ``%+.6g``: JSON needs the plus signs gone)."""
    if not entry:
        return "{}"
    if not _SLOW.search(entry):  # the usual entry: its text, with the names quoted and the plus signs gone
        return '{"' + entry.replace("=+", '":').replace("=-", '":-').replace(",", ',"') + "}"
    parts = []
    for item in entry.split(","):
        name, _, value = item.rpartition("=")
        key = _KEYS.get(name)
        if key is None:
            if len(_KEYS) >= _MAX_KEYS:
                _KEYS.clear()
            key = _KEYS[name] = _text(unquote(name))
        if value in ("+", "-"):  # a sign alone: the direction, as a string
            value = _text(value)
        elif value[0] == "+":
            value = value[1:]
        if value[-1] in "fn":  # inf, nan: not JSON numbers
            value = _text(value)
        parts.append(f"{key}:{value}")
    return "{" + ",".join(parts) + "}"


def decision_view(common: Mapping[str, Any], rows: Mapping[str, Sequence[Any]], error: str | None = None,
                  start: int = 0, stop: int | None = None) -> dict[str, str]:
    """The UI attributes of the rows `start:stop` of a call whose attributes are `common` and `rows`
    (one mapping may be both: a stored span's attributes). `error`: the exception type of a failed call."""
    ids = rows[semconv.DECISION_IDS]
    stop = len(ids) if stop is None else stop
    n = stop - start
    hashes = rows.get(semconv.INPUT_HASHES)
    labels = rows.get(semconv.OUTPUTS)
    top = rows.get(semconv.EXPLANATION_TOP)
    allowlisted, scores = {}, {}
    for key, values in rows.items():
        if key.startswith(_PREFIXES):
            if key.startswith(_VALUE_PREFIX):
                allowlisted[key[len(_VALUE_PREFIX):]] = values
            else:
                scores[key[len(_SCORE_PREFIX):]] = values
    name = "label" if semconv.OUTPUT_CLASSES in common else "value"
    only = None  # a binary decision function scores one class whatever the label
    if len(scores) == 1 and common.get(semconv.OPERATION) == "decision_function":
        only = next(iter(scores.values()))
    if n == 1:  # most calls: one row, written straight as text
        i = start
        fields = [f'"decision_id":{_scalar(ids[i])}']
        if hashes is not None:
            fields.append(f'"input_hash":{_scalar(hashes[i])}')
        if allowlisted:
            fields.append(f'"{semconv.UI_ALLOWLISTED_KEY}":'
                          + _json({feature: values[i] for feature, values in allowlisted.items()}))
        input_value = "{" + ",".join(fields) + "}"
        fields = []
        if error is not None:
            fields.append(f'"error":{_text(error)}')  # the type only: a message may quote an input value
        elif labels is not None:
            label = labels[i]
            fields.append(f'"{name}":{_scalar(label)}')
            own = only if only is not None else scores.get(str(label))
            if own is not None:
                fields.append(f'"score":{_scalar(own[i])}')
        if top is not None:
            fields.append(f'"reasons":{_reasons(top[i])}')
        output_value = "{" + ",".join(fields) + "}"
    else:
        inputs: list[dict[str, Any]] = []
        outputs: list[str] = []
        for i in range(start, start + min(n, MAX_ROWS)):
            row: dict[str, Any] = {"decision_id": ids[i]}
            if hashes is not None:
                row["input_hash"] = hashes[i]
            if allowlisted:
                row[semconv.UI_ALLOWLISTED_KEY] = {feature: values[i] for feature, values in allowlisted.items()}
            inputs.append(row)
            row = {"decision_id": ids[i]}
            if error is not None:
                row["error"] = error
            elif labels is not None:
                label = row[name] = labels[i]
                own = only if only is not None else scores.get(str(label))
                if own is not None:
                    row["score"] = own[i]
            encoded = _json(row)
            if top is not None:  # the reasons go in as written: the object's last member
                encoded = f'{encoded[:-1]},"reasons":{_reasons(top[i])}}}'
            outputs.append(encoded)
        input_value = _json({"rows": n, "shown": len(inputs), "decisions": inputs})
        output_value = f'{{"rows":{n},"shown":{len(outputs)},"decisions":[{",".join(outputs)}]}}'
    return {
        **_CONSTANT,
        semconv.UI_DECISION_MODEL_NAME: f"{common[semconv.MODEL_NAME]} {common[semconv.MODEL_VERSION]}",
        semconv.UI_INPUT_VALUE: input_value,
        semconv.UI_OUTPUT_VALUE: output_value,
    }


def view_of(attributes: Mapping[str, Any], error: str | None = None) -> dict[str, str]:
    """The UI attributes of a stored decision span that has none (a local store's: `otel-rai replay` adds
    them): a span with decisions, or a chunked call's parent. None of a span that is neither."""
    if semconv.UI_SPAN_KIND in attributes or semconv.MODEL_NAME not in attributes:
        return {}
    if semconv.DECISION_IDS in attributes:
        return decision_view(attributes, attributes, error)
    if semconv.BATCH_CHUNKS in attributes:
        return parent_view(attributes, int(attributes.get(semconv.BATCH_SIZE) or 0),
                           int(attributes[semconv.BATCH_CHUNKS]))
    return {}


def parent_view(common: Mapping[str, Any], n: int, chunks: int) -> dict[str, str]:
    """The UI attributes of a chunked call's parent span: what it is and how its rows are split."""
    summary = _json({"rows": n, "chunks": chunks})
    return {
        **_CONSTANT,
        semconv.UI_DECISION_MODEL_NAME: f"{common[semconv.MODEL_NAME]} {common[semconv.MODEL_VERSION]}",
        semconv.UI_INPUT_VALUE: summary,
        semconv.UI_OUTPUT_VALUE: summary,
    }
