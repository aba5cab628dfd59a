"""Tree ensembles: exact path-dependent TreeSHAP, or Saabas attribution past the time budget.

Before building anything, the cost of exact TreeSHAP per row is estimated from the model's structure
(nodes, and the distinct features on every root-to-leaf path; see `treeshap.Plan`). A model whose
estimate exceeds the budget is explained with `saabas` instead, and the span says so. The decision
is a function of the model alone, never of a clock, so one fitted model always gets one method.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from otel_rai import settings
from otel_rai.explanations import saabas, treeshap
from otel_rai.explanations.errors import UnsupportedModel
from otel_rai.explanations.explanation import Explanation, choose_class, explained_classes, feature_names
from otel_rai.explanations.forest import extract

METHOD = "tree_path_dependent"
#: Rows checked against the model itself, and the tolerance (xgboost sums float32 leaves in float32).
_CHECK_ROWS = 8
_CHECK_RTOL = 1e-5
#: Nanoseconds per unit of work, measured with bench/bench_explain.py on a 2-core x86-64 VM
#: (rounded up): per node (fail codes), per path feature looked up in column tables or G tables,
#: per m² step of a leaf evaluated per row.
NS_PER_UNIT = {"nodes": 4.0, "column_lookups": 6.0, "g_lookups": 10.0, "per_row_steps": 50.0}


def estimate_us(n_nodes: int, paths: treeshap.Paths) -> float:
    """Estimated microseconds per row of exact TreeSHAP on this machine class."""
    work = {"nodes": n_nodes, **treeshap.Plan.of(paths.width).work(paths.width)}
    return sum(NS_PER_UNIT[kind] * units for kind, units in work.items()) / 1000.0


class TreeExplainer:
    """Exact TreeSHAP for a tree ensemble whose estimated cost is within `budget_us` per row, else Saabas."""

    def __init__(self, model: Any, *, method: str | None = None,
                 budget_us: float = settings.default("explain_budget_us")) -> None:
        self.forest = forest = extract(model)
        paths = treeshap.walk(forest)
        self.estimated_us = estimate_us(len(forest.feature), paths)
        if method is None:
            method = METHOD if self.estimated_us <= budget_us else saabas.METHOD
        self.method = method
        self.output = forest.output
        self.engine = treeshap.TreeShap(forest, paths) if method == METHOD else saabas.Saabas(forest, paths)
        self.classes = getattr(model, "classes_", None)
        self._model = model
        self._checked = forest.reference is None

    @property
    def nbytes(self) -> int:
        """Memory held by the engine's tables."""
        return self.engine.nbytes

    def explain(self, X: Any) -> Explanation:
        """The attributions of every row of `X` in the input's column order; the first call checks the
        extracted trees against the model."""
        forest = self.forest
        rows = forest.prepare(X)
        if not self._checked:
            self._check(X, rows)
        values, column, base, raw = self.engine.explain(
            rows, lambda scores: choose_class(self.classes, forest.n_outputs, scores)
        )
        if forest.feature_map is not None:  # back to the input's column order
            values = values[:, np.argsort(forest.feature_map)]
        return Explanation(
            values=values,
            base_values=base,
            feature_names=feature_names(X, self._model, forest.n_features),
            output=self.output,
            method=self.method,
            output_values=raw,
            classes=explained_classes(self.classes, column, forest.n_outputs),
        )

    def _check(self, X: Any, rows: np.ndarray) -> None:
        """Once per explainer: the forest's outputs equal the model's own on the first rows, or this
        model has something the extraction does not represent and is not explained."""
        n = min(len(rows), _CHECK_ROWS)
        probe = X.iloc[:n] if hasattr(X, "iloc") else X[:n]
        leaves = saabas.Saabas.reached(self.forest, rows[:n])
        ours = self.forest.base + self.forest.value[leaves].sum(axis=1)
        theirs = self.forest.reference(probe)
        if ours.shape != theirs.shape or not np.allclose(ours, theirs, rtol=_CHECK_RTOL, atol=_CHECK_RTOL):
            raise UnsupportedModel("the extracted trees do not reproduce the model's output")
        self._checked = True
