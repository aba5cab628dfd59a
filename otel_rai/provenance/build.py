"""The attributes of a model record, built on the audit worker from the first decision call of a fitted
model: parameters, libraries, feature schema, registration, and the training data when the fit was seen."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from otel_rai import semconv
from otel_rai._time import rfc3339
from otel_rai.audit import outputs
from otel_rai.capture.recorder import DecisionCall
from otel_rai.provenance import canonical, environment, params
from otel_rai.provenance.training import Training, columns_of, container_of
from otel_rai.settings import Settings

#: Called with (stage, exception) when a part of the record could not be built.
FailureHook = Callable[[str, BaseException], None]


def model_attributes(call: DecisionCall) -> dict[str, Any]:
    """The attributes a record shares with the decision spans of its model."""
    info = call.info
    return {
        semconv.MODEL_NAME: info.name,
        semconv.MODEL_CLASS: info.qualified_class,
        semconv.MODEL_VERSION: info.version,
        semconv.MODEL_FINGERPRINT: info.fingerprint,
    }


def schema(call: DecisionCall, training: Training | None) -> dict[str, Any]:
    """The feature schema: names, dtypes at fit time (if seen) and at the first call, n_features_in_,
    classes. Names and dtype names only, never values."""
    info = call.info
    names, call_dtypes = columns_of(call.X)
    features = info.feature_names or names or (training.features if training is not None else None)
    n_features = getattr(call.model, "n_features_in_", None)
    out: dict[str, Any] = {
        "n_features_in": int(n_features) if isinstance(n_features, (int, np.integer)) else None,
        "features": list(features) if features is not None else None,
        "classes": outputs.attribute_values(info.classes) if info.classes is not None else None,
        "call": {"container": container_of(call.X), "dtypes": list(call_dtypes)},
        "fit": None,
    }
    if training is not None:
        out["fit"] = {"container": training.container, "dtypes": list(training.dtypes), "rows": training.rows}
    return out


def training_attributes(training: Training) -> dict[str, Any]:
    """The ``ml.model.training.*`` attributes of a fit that was seen."""
    return {
        semconv.TRAINING_HASH: training.hash,
        semconv.TRAINING_HASH_KEY_ID: training.key_id,
        semconv.TRAINING_HASH_SCHEME: training.scheme,
        semconv.TRAINING_ROWS: training.rows,
        semconv.TRAINING_METHOD: training.method,
        semconv.TRAINING_BATCHES: training.batches,
        semconv.TRAINING_TIME: rfc3339(training.end_ns),
        semconv.TRAINING_DURATION_MS: training.duration_ns / 1e6,
    }


def attributes(call: DecisionCall, settings: Settings, training: Training | None,
               on_failure: FailureHook) -> dict[str, Any]:
    """Every attribute of the record of `call`'s model but the artifact's. A part that fails is left out
    and named (by exception type) in ``ml.audit.error``."""
    out = model_attributes(call)
    errors = []
    tree: dict[str, Any] = {}
    try:
        tree = canonical.canonical(call.model, settings.hash_key)
        out[semconv.MODEL_PARAMS] = params.dumps(tree["params"])
    except Exception as exc:
        on_failure("record", exc)
        errors.append(f"params: {type(exc).__name__}")
    try:
        frames = container_of(call.X).startswith("pandas.") or (
            training is not None and training.container.startswith("pandas."))
        classes = [call.info.qualified_class, *params.classes(tree)]
        out[semconv.MODEL_LIBRARIES] = params.dumps(environment.libraries(classes, pandas=frames))
    except Exception as exc:
        on_failure("record", exc)
        errors.append(f"libraries: {type(exc).__name__}")
    try:
        out[semconv.MODEL_SCHEMA] = params.dumps(schema(call, training))
    except Exception as exc:
        on_failure("record", exc)
        errors.append(f"schema: {type(exc).__name__}")
    source = call.info.registration.source_uri
    if source:
        out[semconv.MODEL_SOURCE_URI] = source
    if training is not None:
        out.update(training_attributes(training))
    if errors:
        out[semconv.AUDIT_ERROR] = "; ".join(errors)
    return out
