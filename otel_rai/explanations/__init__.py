"""Per-decision feature attributions: `explain`, and the methods behind it (docs/explanations.md).

    explanation = otel_rai.explain(model, X, background=X_train)
    explanation.base_values + explanation.values.sum(1)   # == explanation.output_values

One module per method: `linear`, `treeshap` (exact, with the tree representation in `forest`),
`saabas` (budget fallback for trees), `sampling` (model-agnostic), `pipeline` (raw columns).
`engine` picks and caches; `record` explains each worker batch (the span format is `codec.reasons`).
Imports `capture` (models and quiet calls) and the foundation modules, nothing above.
"""

from __future__ import annotations

from typing import Any

from otel_rai.capture import models
from otel_rai.capture.recorder import run_quietly
from otel_rai.codec.reasons import format_reasons, parse_top
from otel_rai.explanations import resolution
from otel_rai.explanations.engine import METHODS, Options, cache
from otel_rai.explanations.errors import ExplanationError, MissingBackground, ModelChanged, UnsupportedModel
from otel_rai.explanations.explanation import OUTPUTS, Explanation, in_fitted_order

__all__ = [
    "METHODS",
    "OUTPUTS",
    "Explanation",
    "ExplanationError",
    "MissingBackground",
    "ModelChanged",
    "UnsupportedModel",
    "explain",
    "format_reasons",
    "parse_top",
]


def explain(
    model: Any,
    X: Any,
    *,
    background: Any = None,
    method: str | None = None,
    budget_us: float | None = None,
    max_evals: int | None = None,
    published: bool = False,
) -> Explanation:
    """Feature attributions of `model`'s output for each row of `X`.

    background: reference rows (same format as `X`) for the methods that need them (linear models,
        the model-agnostic method); default: the ``background`` given to `register_model`.
    method: one of `METHODS` instead of the automatic choice (docs/explanations.md).
    budget_us, max_evals: limits of the tree and model-agnostic methods (defaults as `instrument`).
    published: True sets the explanation's `resolution`, the grid its values are rounded to on a decision
        span by default (`resolution.step`), so that what a caller shows equals what the span records.

    ``base_values + values.sum(1) == output_values`` for every row. Model calls made while
    explaining are not recorded as decisions. The explainer is built once per fitted model (keyed by
    its fingerprint) and reused; explain batches rather than single rows in a loop when not
    instrumented, since the fingerprint is then recomputed on every call.
    """
    registration = models.registration_of(model)
    if background is None:
        background = registration.background
    options = Options(
        budget_us=Options.budget_us if budget_us is None else float(budget_us),
        max_evals=Options.max_evals if max_evals is None else int(max_evals),
    )

    def run() -> Explanation:
        explainer = cache.get(model, models.fingerprint_of(model), background, method, options)
        explanation = explainer.explain(in_fitted_order(model, X))
        if published:
            explanation.resolution = resolution.step(explainer, background)
        return explanation

    return run_quietly(run)

