"""Pipelines: attributions of the raw input columns.

The final estimator is explained on the transformed features, then every transformed column's
attribution is added to the raw column it was derived from. Sums keep additivity exact. Which raw
column a transformed column comes from is read from the fitted preprocessing:

* `ColumnTransformer`: ``output_indices_`` gives each transformer's output columns, its fitted column
  selection its input columns; `Pipeline` composes; `FeatureUnion` concatenates.
* any other transformer: ``get_feature_names_out`` of its input names. An output named like one
  input (``age``), or prefixed with it (``region_north`` from a one-hot encoder), or suffixed with it
  (``missingindicator_age``) comes from that input (the longest such name wins).

For a linear final estimator the result equals interventional SHAP on the raw columns, because each
raw column then enters the model only through its own transformed columns. For trees it is the sum of
the TreeSHAP values of a raw column's transformed columns. A transformed column derived from several
raw columns (PCA, polynomial features, row normalisation) cannot be attributed this way: such
pipelines are explained as a whole by the model-agnostic method instead.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from otel_rai.explanations.errors import UnsupportedModel
from otel_rai.explanations.explanation import Explanation

#: Transformers whose outputs keep their input's name but mix the columns of a row.
_ROW_WISE = ("Normalizer",)


def is_pipeline(model: Any) -> bool:
    """Whether `model` is a scikit-learn `Pipeline`."""
    return type(model).__name__ == "Pipeline" and hasattr(model, "steps")


def input_names(estimator: Any, n_features: int) -> list[str]:
    """The input column names `estimator` was fitted with, else ``x0``, ``x1``, ..."""
    names = getattr(estimator, "feature_names_in_", None)
    return [str(n) for n in names] if names is not None else [f"x{i}" for i in range(n_features)]


def sources(transformer: Any, names: list[str]) -> np.ndarray:
    """For each output column of a fitted `transformer`, the index of the input column it comes from."""
    if transformer is None or transformer == "passthrough":
        return np.arange(len(names))
    if transformer == "drop":
        return np.zeros(0, np.int64)
    kind = type(transformer).__name__
    if kind == "Pipeline":
        mapping = np.arange(len(names))
        for _, step in transformer.steps:
            mapping = mapping[sources(step, names)]
            names = _output_names(step, names)
        return mapping
    if kind == "ColumnTransformer":
        return _column_transformer(transformer, names)
    if kind == "FeatureUnion":
        parts = [sources(t, names) for _, t, *_ in transformer.transformer_list if t != "drop"]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)
    if kind in _ROW_WISE:
        raise UnsupportedModel(f"{kind} mixes the columns of a row")
    return _by_name(names, _output_names(transformer, names))


def _output_names(transformer: Any, names: list[str]) -> list[str]:
    if transformer is None or transformer == "passthrough":
        return names
    if not hasattr(transformer, "get_feature_names_out"):
        raise UnsupportedModel(f"{type(transformer).__name__} has no get_feature_names_out")
    return [str(n) for n in transformer.get_feature_names_out(names)]


def _by_name(inputs: list[str], outputs: list[str]) -> np.ndarray:
    if outputs == inputs:
        return np.arange(len(inputs))
    mapping = []
    for name in outputs:
        matches = [i for i, n in enumerate(inputs) if name == n or name.startswith(n + "_") or name.endswith("_" + n)]
        if not matches:
            raise UnsupportedModel("an output column that names no single input column")
        longest = max(len(inputs[i]) for i in matches)
        best = [i for i in matches if len(inputs[i]) == longest]
        if len(best) > 1:
            raise UnsupportedModel("an output column name that fits several input columns")
        mapping.append(best[0])
    return np.asarray(mapping, np.int64)


def _column_transformer(ct: Any, names: list[str]) -> np.ndarray:
    mapping = np.full(_n_outputs(ct), -1, np.int64)
    for name, transformer, columns in ct.transformers_:
        out = ct.output_indices_.get(name)
        if out is None or out.stop == out.start:
            continue
        selected = _selected(columns, names)
        mapping[out] = selected[sources(transformer, [names[i] for i in selected])]
    if (mapping < 0).any():
        raise UnsupportedModel("ColumnTransformer outputs without a source column")
    return mapping


def _n_outputs(ct: Any) -> int:
    return max((s.stop for s in ct.output_indices_.values()), default=0)


def _selected(columns: Any, names: list[str]) -> np.ndarray:
    """A ColumnTransformer column selection as input column indices."""
    if isinstance(columns, slice):
        return np.arange(len(names))[columns]
    items = [columns] if isinstance(columns, (str, int, np.integer)) else list(columns)
    if items and all(isinstance(c, (bool, np.bool_)) for c in items):
        return np.flatnonzero(items)
    return np.asarray([names.index(c) if isinstance(c, str) else int(c) for c in items], np.int64)


class PipelineExplainer:
    """Explains the final step on transformed rows, then sums back to the raw columns."""

    def __init__(self, pipe: Any, background: Any, explain_final: Callable[[Any, Any], Any]) -> None:
        *steps, (_, final) = pipe.steps
        self._pre = pipe[:-1] if steps else None
        n_inputs = getattr(pipe, "n_features_in_", None)
        if n_inputs is None:
            raise UnsupportedModel("a pipeline that does not know its input columns")
        self.names = input_names(pipe, n_inputs)
        source = sources(self._pre, self.names) if self._pre is not None else np.arange(n_inputs)
        self._to_inputs = np.zeros((len(source), n_inputs))  # sums each transformed column into its source
        self._to_inputs[np.arange(len(source)), source] = 1.0
        if self._pre is not None and background is not None:
            background = self._pre.transform(background)
        self.inner = explain_final(final, background)
        self.method = self.inner.method
        self.output = self.inner.output

    @property
    def nbytes(self) -> int:
        """Memory held by the final step's explainer."""
        return getattr(self.inner, "nbytes", 0)

    def explain(self, X: Any) -> Explanation:
        """The final step's attributions on the transformed `X`, summed back to the raw columns."""
        inner = self.inner.explain(self._pre.transform(X) if self._pre is not None else X)
        values = inner.values @ self._to_inputs
        columns = getattr(X, "columns", None)
        return Explanation(
            values=values,
            base_values=inner.base_values,
            feature_names=[str(c) for c in columns] if columns is not None else self.names,
            output=inner.output,
            method=inner.method,
            output_values=inner.output_values,
            classes=inner.classes,
        )
