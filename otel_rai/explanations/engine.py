"""Which method explains a model, built once per fitted model and cached by its fingerprint.

Automatic choice:

1. `Pipeline`: its final step by these rules, on the transformed rows, summed back to the raw
   columns (`pipeline`); the whole pipeline by the model-agnostic method when the preprocessing
   mixes columns.
2. Tree ensembles (`forest`): exact TreeSHAP within the per-row time budget, else Saabas (`trees`).
3. Linear models: `linear`.
4. Anything else, and 2./3. when the model has a feature the method cannot represent: the
   model-agnostic method (`sampling`), which needs background data.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from otel_rai import _fork, settings
from otel_rai.explanations import linear, pipeline, saabas, sampling, trees
from otel_rai.explanations.errors import UnsupportedModel
from otel_rai.explanations.forest import is_tree_model

METHODS = (linear.METHOD, trees.METHOD, saabas.METHOD, sampling.EXACT, sampling.PERMUTATION)
_AGNOSTIC = (sampling.EXACT, sampling.PERMUTATION)
#: Explainers kept (one per model fingerprint, background, method and options), the oldest dropped first.
_CACHE_SIZE = 32
#: Memory the cached explainers' tables may hold before the oldest are dropped.
_CACHE_BYTES = 256 << 20


@dataclass(frozen=True)
class Options:
    """Limits of the explanation methods (`otel_rai.instrument(explain_*=...)`)."""

    budget_us: float = settings.default("explain_budget_us")  # per row, exact TreeSHAP, estimated from the model
    max_evals: int = settings.default("explain_max_evals")  # model evaluations per row, model-agnostic method


def build(model: Any, background: Any, method: str | None = None, options: Options = Options()) -> Any:
    """An explainer for `model`: an object with ``method``, ``output`` and ``explain(X)``."""
    if method is not None and method not in METHODS:
        raise ValueError(f"otel-rai: explain(): method must be one of {', '.join(METHODS)}, not {method!r}")
    if method in _AGNOSTIC:
        return _agnostic(model, background, options, method)
    if pipeline.is_pipeline(model):
        try:
            return pipeline.PipelineExplainer(model, background, lambda final, bg: build(final, bg, method, options))
        except UnsupportedModel:  # preprocessing that mixes columns, or a final step no method represents
            if method is not None:
                raise
            return _agnostic(model, background, options)
    if method in (trees.METHOD, saabas.METHOD) or (method is None and is_tree_model(model)):
        return _or_agnostic(lambda: trees.TreeExplainer(model, method=method, budget_us=options.budget_us),
                            model, background, options, method)
    if method == linear.METHOD or (method is None and linear.is_linear(model)):
        return _or_agnostic(lambda: linear.LinearExplainer(model, background), model, background, options, method)
    return _agnostic(model, background, options)


def _or_agnostic(make: Any, model: Any, background: Any, options: Options, method: str | None) -> Any:
    try:
        return make()
    except UnsupportedModel:
        if method is not None or background is None:
            raise
        return _agnostic(model, background, options)


def _agnostic(model: Any, background: Any, options: Options, method: str | None = None) -> Any:
    return sampling.AgnosticExplainer(model, background, max_evals=options.max_evals, method=method)


class Cache:
    """Explainers by (model fingerprint, background, method, options): at most `size` of them, whose
    tables hold at most `max_bytes` (the newest is kept whatever its size).

    Hits read without the lock (the decision path reads on every worker cycle); building happens
    under it, and the oldest entries are dropped when over a limit. An entry keeps its background
    object alive, so that ``id`` cannot be reused by another object while the entry exists.
    """

    def __init__(self, size: int = _CACHE_SIZE, max_bytes: int = _CACHE_BYTES) -> None:
        self._size = size
        self._max_bytes = max_bytes
        self._reset()
        _fork.reset_in_child(self)

    def _reset(self) -> None:
        """Empty, with a fresh lock: a forked child may inherit locks held mid-build."""
        self._items: dict[tuple, tuple[Any, Any]] = {}
        self._lock = threading.Lock()

    def get(self, model: Any, fingerprint: str, background: Any, method: str | None, options: Options) -> Any:
        """The explainer, built on first use; a model that cannot be explained raises the same
        error every time without being rebuilt (building is deterministic)."""
        key = (fingerprint, id(background), method, options)
        entry = self._items.get(key)
        if entry is None:
            with self._lock:
                entry = self._items.get(key)
                if entry is None:
                    try:
                        entry = (build(model, background, method, options), background)
                    except Exception as exc:
                        entry = (_Failed(exc), background)
                    self._items[key] = entry
                    while len(self._items) > 1 and (len(self._items) > self._size or self._nbytes() > self._max_bytes):
                        del self._items[next(iter(self._items))]
        if isinstance(entry[0], _Failed):
            raise entry[0].error.with_traceback(None)
        return entry[0]

    def _nbytes(self) -> int:
        """Tables grow as classes are first explained, so this is measured, not remembered."""
        return sum(getattr(explainer, "nbytes", 0) for explainer, _ in self._items.values())

    def clear(self) -> None:
        """Forget every cached explainer and build failure."""
        with self._lock:
            self._items.clear()


class _Failed:
    """A cached build failure."""

    def __init__(self, error: Exception) -> None:
        self.error = error


cache = Cache()
