"""`Explanation`: per-row feature attributions, and what they add up to.

Which output is explained (``Explanation.output``):

* ``"log-odds"``: binary classifiers whose score is a logistic margin (LogisticRegression, boosted
  trees): the log-odds of the positive class ``classes_[1]``.
* ``"logit"``: multiclass softmax models: the unnormalised log-probability of the explained class.
* ``"probability"``: forests of classification trees and the model-agnostic methods on classifiers
  with ``predict_proba``: the probability of the explained class.
* ``"decision-function"``: other linear classifiers (LinearSVC, RidgeClassifier, SGD hinge…).
* ``"raw"``: regressors: the prediction itself.
* ``"log-prediction"``: regressors with a log link (Poisson, gamma, tweedie): log of the prediction.

Which class: for binary classifiers always the positive class ``classes_[1]`` (so attributions keep
one sign convention across rows); for multiclass classifiers each row's predicted class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from otel_rai.codec.text import column_names, texts

OUTPUTS = ("log-odds", "logit", "probability", "decision-function", "raw", "log-prediction")


@dataclass
class Explanation:
    """Attributions of `n_rows` rows: ``base_values + values.sum(1) == output_values``."""

    values: np.ndarray  # (n_rows, n_features)
    base_values: np.ndarray  # (n_rows,)
    feature_names: list[str]
    output: str  # one of OUTPUTS
    method: str  # see otel_rai.explanations.METHODS
    output_values: np.ndarray  # (n_rows,) the explained model output of each row
    classes: np.ndarray | None = None  # (n_rows,) the class each row explains; None for regressors
    #: The grid step its values may be published at (`otel_rai.explanations.resolution`); None: none known.
    resolution: float | None = None

    def __len__(self) -> int:
        return len(self.values)

    def rows(self, start: int, stop: int) -> Explanation:
        """The explanation of rows [start, stop)."""
        return Explanation(
            values=self.values[start:stop],
            base_values=self.base_values[start:stop],
            feature_names=self.feature_names,
            output=self.output,
            method=self.method,
            output_values=self.output_values[start:stop],
            classes=None if self.classes is None else self.classes[start:stop],
            resolution=self.resolution,
        )


def choose_class(classes: np.ndarray | None, n_outputs: int, scores: np.ndarray) -> np.ndarray:
    """Column of `scores` (n_rows, n_outputs) explained per row: the only one, the positive class of
    a binary classifier, else the highest score (the predicted class; first on ties, like argmax)."""
    n = len(scores)
    if n_outputs == 1:
        return np.zeros(n, np.int64)
    if classes is not None and len(classes) == 2:
        return np.ones(n, np.int64)
    return np.argmax(scores, axis=1)


def explained_classes(classes: np.ndarray | None, column: np.ndarray, n_outputs: int) -> np.ndarray | None:
    """The class each row's explained column scores: a single column scores ``classes_[1]``."""
    if classes is None:
        return None
    return classes[column + 1] if n_outputs == 1 else classes[column]


def in_fitted_order(model: Any, X: Any) -> Any:
    """`X` with its columns in the order `model` was fitted with, when it has them in another order (a
    pipeline selecting columns by name accepts that). The explainers work in the fitted order: given the
    input's order, they named one column's attribution after another (docs/explanations.md)."""
    fitted = getattr(model, "feature_names_in_", None)
    columns = getattr(X, "columns", None)
    if fitted is None or columns is None or len(columns) != len(fitted) or (columns == fitted).all():
        return X
    if set(columns.tolist()) != set(fitted.tolist()):
        return X  # not the fitted columns: the model (or its explainer) says what is wrong
    return X[list(fitted)]


def feature_names(X: Any, model: Any, n_features: int) -> list[str]:
    """Column names of the input, else the model's ``feature_names_in_``, else ``x0, x1, …``."""
    columns = getattr(X, "columns", None)
    if columns is not None:
        return column_names(columns)
    names = getattr(model, "feature_names_in_", None)
    if names is not None and len(names) == n_features:
        return texts(names)
    return [f"x{i}" for i in range(n_features)]
