"""Build the decision span(s) of one captured call and end them through the audit tracer.

A call of up to ``max_rows_per_span`` rows is one span. A larger call is a parent span carrying the
model and batch attributes plus one child span per chunk; each chunk carries the model attributes too
(so an attribute search finds it), its ``ml.batch.offset``, and the per-row arrays of its rows.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Collection, Sequence

import numpy as np
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from otel_rai import semconv
from otel_rai.audit import outputs, redaction, ui
from otel_rai.audit.hashing import HashKey, hash_rows, hash_rows_many
from otel_rai.audit.local_rows import groups_digests, groups_digests_many, local_key
from otel_rai.capture.models import ModelInfo
from otel_rai.capture.recorder import DecisionCall
from otel_rai.capture.scope import given_labels
from otel_rai.codec.reasons import encode_top
from otel_rai.codec.text import column_names, text_of
from otel_rai.explanations.explanation import Explanation
from otel_rai.settings import Settings

#: Called with (stage, exception) when part of the audit record could not be built.
FailureHook = Callable[[str, BaseException], None]


@functools.lru_cache(maxsize=8)
def _local_key(key: HashKey) -> bytes:
    return local_key(key)


class _ModelAttributes:
    """What every span of one model, operation and hash key carries alike, built once: the head of its
    call-level attributes (in their order, for one row), and its classes as an attribute array."""

    __slots__ = ("info", "key", "head", "_classes")

    def __init__(self, info: ModelInfo, operation: str, key: HashKey) -> None:
        self.info, self.key = info, key  # held: the cache is keyed by their ids
        self.head: dict[str, Any] = {
            semconv.MODEL_NAME: info.name,
            semconv.MODEL_CLASS: info.qualified_class,
            semconv.MODEL_VERSION: info.version,
            semconv.MODEL_FINGERPRINT: info.fingerprint,
            semconv.OPERATION: operation,
            semconv.BATCH_SIZE: 1,
            semconv.INPUT_HASH_KEY_ID: key.key_id,
            semconv.INPUT_HASH_SCHEME: key.scheme,
        }
        if info.registration.alias is not None:
            self.head[semconv.MODEL_ALIAS] = info.registration.alias
        self._classes: list[Any] | None = None

    def classes(self) -> list[Any]:
        """``ml.output.classes`` (computed on first use: it may fail, and then fails that span's outputs)."""
        if self._classes is None:
            self._classes = outputs.attribute_values(self.info.classes)
        return self._classes


@functools.lru_cache(maxsize=1024)
def _score_name(label: str) -> str:
    """``ml.output.scores.<label>``, one str per label: the spans of a model then carry the very same
    attribute names, which lets the chain's native encoder reuse their sorted order (`codec._native`)."""
    return semconv.OUTPUT_SCORES_PREFIX + label


_MODELS: dict[tuple[int, str, int], _ModelAttributes] = {}
#: Entries `_MODELS` holds before it is emptied: a process serves a few models.
_MAX_MODELS = 256


def _model_attributes(info: ModelInfo, operation: str, key: HashKey) -> _ModelAttributes:
    found = _MODELS.get((id(info), operation, id(key)))
    if found is None:
        if len(_MODELS) >= _MAX_MODELS:
            _MODELS.clear()
        found = _MODELS[(id(info), operation, id(key))] = _ModelAttributes(info, operation, key)
    return found


def _feature_names(call: DecisionCall) -> list[str] | None:
    columns = getattr(call.X, "columns", None)
    if columns is not None:
        return column_names(columns)
    return list(call.info.feature_names) if call.info.feature_names is not None else None


def _captured_values(call: DecisionCall, names: list[str] | None, allow: frozenset[str]) -> dict[str, list]:
    """Allowlisted raw feature values, ``ml.input.value.<name>``: numbers as floats, the rest as str."""
    if not allow or names is None:
        return {}
    captured = {}
    for name in sorted(allow.intersection(names)):
        j = names.index(name)
        column = call.X.iloc[:, j] if hasattr(call.X, "iloc") else np.asarray(call.X)[:, j]
        values = np.asarray(column)
        if values.dtype.kind in "biuf":
            captured[semconv.INPUT_VALUE_PREFIX + name] = values.astype(np.float64).tolist()
        else:
            captured[semconv.INPUT_VALUE_PREFIX + name] = ["" if v is None else text_of(v) for v in values]
    return captured


def _allowlisted_groups(call: DecisionCall, allow: Collection[str], present: Collection[str]) -> dict[str, list[str]]:
    """``ml.input.value.<name>`` arrays of allowlisted ``decisions(groups=...)`` values not already in `present`."""
    out: dict[str, list[str]] = {}
    if not allow or not call.groups:
        return out
    for name in sorted(allow.intersection(call.groups)):
        key = semconv.INPUT_VALUE_PREFIX + name
        if key not in present:
            out[key] = given_labels(call, name)
    return out


def attributes(call: DecisionCall, settings: Settings, on_failure: FailureHook) -> tuple[dict, dict]:
    """(call-level attributes, per-row arrays) of one call. Failures become ``ml.audit.error``."""
    info = call.info
    model = _model_attributes(info, call.operation, settings.hash_key)
    common: dict[str, Any] = {**call.attributes, **model.head}
    n = len(call.ids)
    if n != 1:
        common[semconv.BATCH_SIZE] = n
    rows: dict[str, list] = {semconv.DECISION_IDS: call.ids}
    errors = []
    allow = settings.capture_features
    try:
        names = _feature_names(call)
        if names is not None:
            common[semconv.INPUT_FEATURES] = names
        if allow:
            rows.update(_captured_values(call, names, allow))
            rows.update(_allowlisted_groups(call, allow, present=rows))
    except Exception as exc:
        on_failure("features", exc)
        errors.append(f"features: {type(exc).__name__}")
    try:
        hashes = call.input_hashes
        rows[semconv.INPUT_HASHES] = hash_rows(call.X, settings.hash_key) if hashes is None else hashes
    except Exception as exc:
        if call.error is None:  # input the model itself rejected need not be hashable
            on_failure("hash", exc)
            errors.append(f"hash: {type(exc).__name__}")
    if call.error is None:
        try:
            # Taken, not read: its tuple and dict then go with this span rather than live to the cycle's end,
            # where the garbage collector's young passes would move them to the oldest generation (more
            # full collections; bench/RESULTS.md).
            encoded, call.encoded_output = call.encoded_output, None
            values, scores = outputs.encode(call.operation, call.output, info.classes) if encoded is None else encoded
            rows[semconv.OUTPUTS] = values
            if scores:
                for label, column in scores.items():
                    rows[_score_name(label)] = column
            if info.classes is not None:
                common[semconv.OUTPUT_CLASSES] = model.classes()  # one list for the model's spans: never written
        except Exception as exc:
            on_failure("outputs", exc)
            errors.append(f"outputs: {type(exc).__name__}")
    if _covers_groups(call):
        try:  # the chain's cover for the groups the local store keeps (docs/audit-trail.md)
            digests = call.groups_digests
            rows[semconv.GROUPS_DIGEST] = (groups_digests(_local_key(settings.hash_key), call.ids, call.group_labels)
                                           if digests is None else digests)
        except Exception as exc:
            on_failure("groups", exc)
            errors.append(f"groups: {type(exc).__name__}")
    # A failed call explains nothing, even when its caller computed an explanation beforehand.
    given = call.explanation if call.error is None else None
    if given is not None:
        try:
            explained, explained_rows = explanation_attributes(given, settings.explain_top_k,
                                                               settings.explain_exact_values, call.encoded_top)
            common.update(explained)
            rows.update(explained_rows)
        except Exception as exc:
            on_failure("explain", exc)
            errors.append(f"explain: {type(exc).__name__}")
    for key in [key for key, values in rows.items() if len(values) != n]:
        # A partial array would misattribute rows: drop it.
        errors.append(f"{key}: {len(rows.pop(key))} entries for {n} rows")
    if errors:
        # Only exception types and counts: an exception message could quote a raw feature value.
        common[semconv.AUDIT_ERROR] = "; ".join(errors)
    return common, rows


def explanation_attributes(result: Explanation | BaseException | None, k: int,
                           exact: bool = False, top: list[str] | None = None) -> tuple[dict, dict]:
    """(call-level attributes, per-row arrays) of one call's explanation, or of why it failed. The
    values are rounded to the explanation's resolution unless `exact` (docs/explanations.md). `top`:
    its ``ml.explanation.top`` entries, if already encoded (`encode_explanations`)."""
    if result is None:
        return {}, {}
    if isinstance(result, BaseException):  # the type only: a message could quote an input value
        return {semconv.EXPLANATION_ERROR: type(result).__name__}, {}
    common: dict[str, Any] = {
        semconv.EXPLANATION_METHOD: result.method,
        semconv.EXPLANATION_OUTPUT: result.output,
    }
    classes = result.classes
    if classes is not None and len(classes) and (len(classes) == 1 or (classes == classes[0]).all()):
        common[semconv.EXPLANATION_CLASS] = text_of(classes[0])
    resolution = _written_resolution(result, exact)
    if resolution is not None:
        common[semconv.EXPLANATION_RESOLUTION] = resolution
    rows = {
        semconv.EXPLANATION_TOP: encode_top(result.feature_names, result.values, k, resolution) if top is None else top,
        semconv.EXPLANATION_BASE_VALUES: result.base_values.tolist(),
    }
    return common, rows



def hash_inputs(calls: Sequence[DecisionCall], settings: Settings) -> None:
    """Hash the inputs of a worker batch's calls where joining them saves work (`hash_rows_many`);
    the rest are hashed one call at a time by `attributes`."""
    try:
        hashed = hash_rows_many([c.X for c in calls], settings.hash_key)
    except Exception:  # each call is then hashed alone, and fails (and is counted) alone
        return
    for call, hashes in zip(calls, hashed):
        call.input_hashes = hashes


def encode_outputs(calls: Sequence[DecisionCall]) -> None:
    """Encode the outputs of a worker batch's calls together where that saves work (`outputs.encode_many`);
    the rest are encoded one call at a time by `attributes`."""
    try:
        outputs.encode_many(calls)
    except Exception:  # each call is then encoded alone, and fails (and is counted) alone
        return


def _written_resolution(result: Explanation, exact: bool) -> float | None:
    """The step an explanation's values are written at: 0 (as computed) if `exact`, else its own. One
    rule for a span's entries and for a cycle's encoded together, which must be the same."""
    return 0.0 if exact else result.resolution


def encode_explanations(calls: Sequence[DecisionCall], settings: Settings) -> None:
    """Encode the ``ml.explanation.top`` entries of a worker batch's explained calls together, one
    `encode_top` for the calls that share their feature names and resolution (the same entries: a row's
    do not depend on its neighbours), into each call's ``encoded_top``; the rest are encoded one call at
    a time by `attributes`."""
    runs: dict[tuple, list[DecisionCall]] = {}
    try:
        for call in calls:
            e = call.explanation
            if call.error is None and type(e) is Explanation and type(e.values) is np.ndarray and e.values.ndim == 2:
                resolution = _written_resolution(e, settings.explain_exact_values)
                runs.setdefault((id(e.feature_names), e.values.shape[1], resolution), []).append(call)
    except Exception:  # a caller's odd explanation (an unhashable resolution): each call is encoded alone
        return
    for (_, _, resolution), run in runs.items():
        if len(run) < 2:
            continue
        try:
            entries = encode_top(run[0].explanation.feature_names,
                                 np.concatenate([c.explanation.values for c in run]), settings.explain_top_k,
                                 resolution)
        except Exception:  # each call is then encoded alone, and fails (and is counted) alone
            continue
        at = 0
        for call in run:
            n = len(call.explanation.values)
            call.encoded_top = entries[at : at + n]
            at += n


def _covers_groups(call: DecisionCall) -> bool:
    """Whether the call's span carries ``ml.fairness.groups_digest``: it succeeded and has groups."""
    return bool(call.group_labels) and call.error is None


def digest_groups(calls: Sequence[DecisionCall], settings: Settings) -> None:
    """Digest the groups of a worker batch's calls together (`groups_digests_many`), once `group_labels`
    are set; the rest are digested one call at a time by `attributes`."""
    grouped = list(filter(_covers_groups, calls))
    if not grouped:
        return
    try:
        digests = groups_digests_many(_local_key(settings.hash_key), [(c.ids, c.group_labels) for c in grouped])
    except Exception:  # each call is then digested alone, and fails (and is counted) alone
        return
    for call, found in zip(grouped, digests):
        call.groups_digests = found


def _end(span: Span, call: DecisionCall, settings: Settings) -> None:
    error = call.error
    if error is not None:
        # Only what `redaction` lets through: a message may quote the input (docs/audit-trail.md).
        described = redaction.describe(error, full_messages=settings.record_exception_messages)
        span.add_event(
            semconv.EXCEPTION_EVENT,
            {
                semconv.EXCEPTION_TYPE: described.type,
                semconv.EXCEPTION_MESSAGE: described.message,
                semconv.EXCEPTION_STACKTRACE: described.stacktrace,
                semconv.EXCEPTION_ESCAPED: "True",
            },
            timestamp=call.end_ns,
        )
        span.set_status(Status(StatusCode.ERROR, described.status))
    span.end(end_time=call.end_ns)


def _view(common: dict, rows: dict, call: DecisionCall, on_failure: FailureHook, start: int = 0,
          stop: int | None = None) -> dict[str, str]:
    """The trace-UI attributes of rows `start:stop` (`ui`); none if they cannot be built (the record stands)."""
    try:
        return ui.decision_view(common, rows, None if call.error is None else type(call.error).__name__, start, stop)
    except Exception as exc:
        on_failure("ui", exc)
        return {}


def _one_span(call: DecisionCall, settings: Settings, on_failure: FailureHook) -> dict[str, Any]:
    """The attributes of a call that is one span: all its rows, and their trace-UI view if asked for
    (added to the call-level dict, in that order: one dict a span, not a third)."""
    common, rows = attributes(call, settings, on_failure)
    view = _view(common, rows, call, on_failure) if settings.trace_ui else None
    common[semconv.BATCH_OFFSET] = 0
    common.update(rows)
    if view:
        common.update(view)
    return common


def emit(call: DecisionCall, tracer: trace.Tracer, settings: Settings, on_failure: FailureHook) -> int:
    """Create and end the span(s) of `call`; returns how many spans were ended."""
    name = semconv.span_name(call.operation, call.info.name)
    n, size = len(call.ids), settings.max_rows_per_span
    end_span = getattr(tracer, "end_span", None)
    if end_span is not None and n <= size and call.error is None:  # one span, no event: no span object
        end_span(name, call.parent, _one_span(call, settings, on_failure), call.start_ns, call.end_ns)
        return 1
    span = tracer.start_span(name, context=call.parent, kind=SpanKind.INTERNAL, start_time=call.start_ns)
    if not span.is_recording():
        span.end(end_time=call.end_ns)
        return 1
    if n <= size:
        span.set_attributes(_one_span(call, settings, on_failure))
        _end(span, call, settings)
        return 1
    common, rows = attributes(call, settings, on_failure)
    view = settings.trace_ui
    chunks = range(0, n, size)
    span.set_attributes({**common, semconv.BATCH_CHUNKS: len(chunks),
                         **(ui.parent_view(common, n, len(chunks)) if view else {})})
    parent = trace.set_span_in_context(span, call.parent)
    for offset in chunks:
        child = tracer.start_span(name, context=parent, kind=SpanKind.INTERNAL, start_time=call.start_ns)
        child.set_attributes(
            {
                **common,
                semconv.BATCH_SIZE: min(size, n - offset),
                semconv.BATCH_OFFSET: offset,
                **{key: values[offset : offset + size] for key, values in rows.items()},
                **(_view(common, rows, call, on_failure, offset, min(n, offset + size)) if view else {}),
            }
        )
        _end(child, call, settings)
    _end(span, call, settings)
    return 1 + len(chunks)
