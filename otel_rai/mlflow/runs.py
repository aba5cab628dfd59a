"""``otel_rai.mlflow.log_fairness``: a model's fairness on validation data, and what drives its decisions,
logged to the MLflow run (`fairness` has the figures; this adds the explanations, which the command line
does not import)."""

from __future__ import annotations

import logging
from typing import Any, Sequence

from otel_rai.explanations import explain
from otel_rai.mlflow.fairness import FairnessCheck, Sensitive, check, log, model_input
from otel_rai.settings import FairnessConfig

_log = logging.getLogger(__name__)

#: Validation rows explained for the report's most attributed features (the first ones).
EXPLAINED_ROWS = 1000


def attributions_of(model: Any, X: Any, background: Any, rows: int = EXPLAINED_ROWS) -> list[dict[str, float]]:
    """{feature: attribution} of each of the first `rows` rows of `X` (none when `model` cannot be
    explained: the report then says that no explanations were recorded)."""
    data = model_input(model, X)
    try:
        explanation = explain(model, data[:rows] if not hasattr(data, "iloc") else data.iloc[:rows],
                              background=background)
    except Exception as exc:  # the figures do not need it
        _log.warning("otel-rai: the validation rows are not explained (%s); the fairness report has no "
                     "most attributed features", type(exc).__name__)
        return []
    names = explanation.feature_names
    return [dict(zip(names, row)) for row in explanation.values.tolist()]


def log_fairness(
    model: Any,
    X_val: Any,
    y_val: Sequence[Any],
    sensitive_features: Sensitive,
    *,
    config: FairnessConfig | None = None,
    model_name: str | None = None,
    version: str | None = None,
    run_id: str | None = None,
    explain_rows: int = EXPLAINED_ROWS,
    background: Any = None,
) -> FairnessCheck:
    """Check `model`'s fairness on validation data and log it to the active MLflow run (or `run_id`).

    sensitive_features: column names of `X_val` (``"sex"``, an intersection ``("sex", "race")``), or a
        mapping {attribute: values, one per row} for attributes that are not model inputs.
    config: thresholds, positive label, score threshold and minimum group size (`FairnessConfig`;
        default: its thresholds, every group counted). model_name, version: for the report's title.
    explain_rows: the first rows explained for the report's most attributed features (0: none);
        background: reference rows for the explainers that need them (default: `register_model`'s).
    Returns the `FairnessCheck`; ``check.passed`` is False when a threshold is violated.
    """
    attributions = attributions_of(model, X_val, background, explain_rows) if explain_rows else []
    result = check(model, X_val, y_val, sensitive_features, config=config, model_name=model_name, version=version,
                   attributions=attributions)
    log(result, run_id)
    return result
