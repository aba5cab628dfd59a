"""The explanation part of the audit record, computed in the audit worker a batch at a time.

Calls of one fitted model in a worker cycle are explained together (one explainer call on their
concatenated inputs), then split back per call. Everything runs quietly: the model calls an
explainer makes are not decisions. A failure only costs the explanation: the call gets the
exception, and its span records the exception's type in ``ml.explanation.error``.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Callable, Sequence

import numpy as np

from otel_rai.capture import models
from otel_rai.capture.fingerprint import fingerprint
from otel_rai.capture.recorder import DecisionCall, run_quietly
from otel_rai.explanations import engine, resolution
from otel_rai.explanations.errors import ExplanationError, ModelChanged
from otel_rai.explanations.explanation import in_fitted_order
from otel_rai.settings import Settings

_log = logging.getLogger(__name__)
_warned: set[tuple[str, str]] = set()


def wanted(call: DecisionCall, settings: Settings) -> bool:
    """Whether this call is explained here: on globally, for the model, for the call, it returned, and
    its caller did not hand over an explanation already (``decisions(explanation=...)``)."""
    switched_on = settings.explain and call.explain and call.info.registration.explain
    return switched_on and call.error is None and bool(call.ids) and call.explanation is None


def attach(batch: Sequence[Any], settings: Settings, on_failure: Callable[[str, BaseException], None]) -> None:
    """Set ``call.explanation`` on every decision call of a worker batch to be explained: an
    `Explanation`, or an exception. Other work in the batch (outcome tasks) is left alone."""
    groups: dict[tuple[int, str], list[DecisionCall]] = {}
    for call in batch:
        if isinstance(call, DecisionCall) and wanted(call, settings):
            groups.setdefault((id(call.model), call.info.fingerprint), []).append(call)
    options = _options(settings.explain_budget_us, settings.explain_max_evals)
    for group in groups.values():
        run_quietly(_explain_group, group, settings, options, on_failure)


#: Distinct (budget, max_evals) pairs whose `engine.Options` are remembered.
_OPTIONS_CACHED = 16


@functools.lru_cache(maxsize=_OPTIONS_CACHED)
def _options(budget_us: float, max_evals: int) -> engine.Options:
    return engine.Options(budget_us=budget_us, max_evals=max_evals)


def _explain_group(calls: list[DecisionCall], settings: Settings, options: engine.Options, on_failure: Any) -> None:
    first = calls[0]
    try:
        if _refitted(first.model, first.info):
            raise ModelChanged("refitted after the decision")
        explainer = engine.cache.get(
            first.model, first.info.fingerprint, first.info.registration.background, None, options
        )
    except Exception as exc:
        _fail(calls, exc, first.info.fingerprint, on_failure)
        return
    for batch in _joinable(calls):
        try:
            explanation = explainer.explain(in_fitted_order(first.model, _joined([c.X for c in batch])))
            if not settings.explain_exact_values:
                explanation.resolution = resolution.step(explainer, first.info.registration.background)
            if len(batch) == 1:
                batch[0].explanation = explanation
                continue
            offset = 0
            for call in batch:
                n = len(call.ids)
                call.explanation = explanation.rows(offset, offset + n)
                offset += n
        except Exception as exc:
            _fail(batch, exc, first.info.fingerprint, on_failure)


def _refitted(model: Any, info: models.ModelInfo) -> bool:
    """Whether `model` no longer is the fit that decided. Usually answered by the metadata cache; after
    any fit in the process, by hashing the model (not cached: it may be mid-fit right now)."""
    if models.current_info(model) is info:
        return False
    return fingerprint(model) != info.fingerprint


def _fail(calls: list[DecisionCall], exc: Exception, fingerprint: str, on_failure: Any) -> None:
    for call in calls:
        call.explanation = exc
    if not isinstance(exc, ExplanationError):
        on_failure("explain", exc)
    elif (fingerprint, type(exc).__name__) not in _warned:  # a property of the model: say it once
        _warned.add((fingerprint, type(exc).__name__))
        _log.warning("otel-rai: decisions of model %s are not explained: %s", fingerprint, type(exc).__name__)


def _joinable(calls: list[DecisionCall]) -> list[list[DecisionCall]]:
    """Runs of calls whose inputs concatenate: 2-D arrays of one width, or frames with one set of columns."""
    runs: list[list[DecisionCall]] = []
    last = None
    for call in calls:
        kind = _kind(call.X)
        if runs and kind is not None and kind == last:
            runs[-1].append(call)
        else:
            runs.append([call])
        last = kind
    return runs


def _kind(X: Any) -> Any:
    """What inputs must share to be joined. A frame's dtypes are compared as dtypes: two categoricals
    with different categories would join into text columns."""
    if isinstance(X, np.ndarray) and X.ndim == 2:
        return ("array", X.shape[1], X.dtype)
    if hasattr(X, "iloc") and hasattr(X, "columns"):
        columns, dtypes = X.columns, X.dtypes
        return ("frame", tuple(columns.tolist() if hasattr(columns, "tolist") else columns),
                tuple(dtypes.tolist() if hasattr(dtypes, "tolist") else dtypes))
    return None


def _joined(inputs: list[Any]) -> Any:
    if len(inputs) == 1:
        return inputs[0]
    if isinstance(inputs[0], np.ndarray):
        return np.concatenate(inputs)
    import pandas as pd

    return pd.concat(inputs, ignore_index=True)
