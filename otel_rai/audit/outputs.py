"""What came out: ``ml.outputs`` (one label or value per row) and ``ml.output.scores``.

* ``predict``: the label (classifier) or value (regressor) per row.
* ``predict_proba`` / ``predict_log_proba`` / multi-class ``decision_function``: the label of the
  highest score per row (first on ties). The scores go in one float array per class,
  ``ml.output.scores.<class label>``, again one entry per row (numbers, not strings: formatting a
  float costs more than the rest of the audit record).
* binary ``decision_function``: the label ``classes_[score > 0]``; the score is the one for the second
  class, ``ml.output.scores.<classes_[1]>``.
* ``score_samples``, and ``decision_function`` of a model without classes: the score per row.
* Multi-output results (a 2-D ``predict`` or a list of probability arrays) become one JSON list per row.

Every array is homogeneous, as OTel requires: numbers stay numbers, anything mixed becomes strings.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np

from otel_rai.codec.text import safe, text_of, texts

SCORED = ("predict_proba", "predict_log_proba", "decision_function")
#: OTLP carries integers as int64; larger ones are recorded as text.
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


def attribute_values(values: np.ndarray) -> list[Any]:
    """A 1-D array as a homogeneous OTel attribute array."""
    if values.dtype.kind in "bif" or (values.dtype.kind == "u" and values.dtype.itemsize < 8):
        return values.tolist()
    items = values.tolist()
    kinds = {type(v) for v in items}
    if kinds == {str}:  # labels are untrusted text
        return [safe(v) for v in items]
    if kinds in ({bool}, {float}) or (kinds == {int} and all(_INT64_MIN <= v <= _INT64_MAX for v in items)):
        return items
    return texts(items)


Scores = dict[str, list[float]]


def _class_labels(classes: np.ndarray | None, n_scores: int) -> np.ndarray:
    """The label of each score column: the classes when they match, else the column index."""
    if classes is not None and len(classes) == n_scores:
        return classes
    return np.arange(n_scores)


def _per_class(scores: np.ndarray, labels: np.ndarray) -> Scores:
    columns = scores.astype(np.float64, copy=False).T.tolist()
    return {text_of(label): column for label, column in zip(labels.tolist(), columns)}


def encode(operation: str, output: Any, classes: np.ndarray | None) -> tuple[list[Any], Scores | None]:
    """(``ml.outputs``, the per-class score arrays or None) of one call's output."""
    if isinstance(output, list) and output and all(isinstance(o, np.ndarray) for o in output):
        return _encode_multi_output(output), None
    out = np.asarray(output)
    if out.ndim == 1:
        if operation == "decision_function" and classes is not None and len(classes) == 2:
            return attribute_values(classes[(out > 0).astype(int)]), _per_class(out[:, None], classes[1:])
        return attribute_values(out), None
    if out.ndim == 2 and operation in SCORED:
        labels = _class_labels(classes, out.shape[1])
        return attribute_values(labels[np.argmax(out, axis=1)]), _per_class(out, labels)
    return [json.dumps(np.asarray(row).tolist(), default=text_of) for row in out], None


def _entrywise(dtype: np.dtype) -> bool:
    """Whether `attribute_values` of an array of this dtype is the same entry by entry, whatever the other
    entries are: numbers that fit int64, and text (each made `safe`). The entries of an object or uint64
    array decide together (a mix, or one too large, makes them all text)."""
    return dtype.kind in "bifU" or (dtype.kind == "u" and dtype.itemsize < 8)


def encode_many(calls: Sequence[Any]) -> None:
    """`encode` the outputs of a worker cycle's calls of one model and operation together, one numpy pass
    for them all (the same values), into each call's ``encoded_output``. Calls left out (failed ones,
    multi-output, object labels) are encoded alone by the span."""
    runs: dict[tuple[int, str, tuple, np.dtype], list[Any]] = {}
    for call in calls:
        out = call.output
        if call.error is None and type(out) is np.ndarray and out.ndim in (1, 2) and out.dtype.kind in "biuf":
            runs.setdefault((id(call.info), call.operation, out.shape[1:], out.dtype), []).append(call)
    for (_, operation, width, _), run in runs.items():
        classes = run[0].info.classes
        if width and operation not in SCORED or len(run) < 2:
            continue
        out = np.concatenate([c.output for c in run])
        if out.ndim == 1:
            if operation == "decision_function" and classes is not None and len(classes) == 2:
                labels, scored = classes[(out > 0).astype(int)], out[:, None]
                names = classes[1:]
            else:
                labels, scored, names = out, None, None
        else:
            names = _class_labels(classes, out.shape[1])
            labels, scored = names[np.argmax(out, axis=1)], out
        if not _entrywise(labels.dtype):
            continue
        values = attribute_values(labels)
        columns = None if scored is None else list(_per_class(scored, names).items())
        at = 0
        for call in run:
            n = len(call.output)
            call.encoded_output = (values[at : at + n], None if columns is None else
                                   {label: column[at : at + n] for label, column in columns})
            at += n


def _encode_multi_output(outputs: list[np.ndarray]) -> list[str]:
    """Multi-output probabilities: per row, a JSON list of the argmax column of each output."""
    labels = np.stack([np.argmax(o, axis=1) for o in outputs], axis=1)
    return [json.dumps(row) for row in labels.tolist()]
