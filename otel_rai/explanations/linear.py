"""Linear models: exact interventional SHAP values, ``φ_j = coef_j · (x_j − mean_j(background))``.

For ``f(x) = coef · x + intercept`` with independent features, the interventional Shapley value of
feature j is ``coef_j (x_j − E[x_j])``; the base value is ``f(E[x]) = coef · E[x] + intercept``. The
mean is taken over the *whole* background (SHAP's LinearExplainer summarises raw data to 100 rows).

The explained output is the linear score: ``decision_function`` for classifiers, the prediction for
regressors, and the log of the prediction for log-link GLMs. Which one a model has is checked once,
against the model itself, on background rows; a model that does not match is not linear here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from otel_rai.explanations.errors import MissingBackground, UnsupportedModel
from otel_rai.explanations.explanation import Explanation, choose_class, explained_classes, feature_names

METHOD = "linear"

_LINEAR_SVM = ("LinearSVC", "LinearSVR")
_LOGISTIC = ("LogisticRegression", "LogisticRegressionCV")
#: Background rows on which the model's own output is checked against the linear score, and the
#: tolerances of that check (the second absolute one for the exponential of a log-link model).
_CHECK_ROWS = 64
_CHECK_RTOL = 1e-9
_CHECK_ATOL = 1e-9
_CHECK_EXP_ATOL = 1e-12


def is_linear(model: Any) -> bool:
    """Whether `model` is a scikit-learn linear model (or linear SVM) with ``coef_`` and ``intercept_``."""
    cls = type(model)
    linear_module = cls.__module__.startswith("sklearn.linear_model") or cls.__name__ in _LINEAR_SVM
    return linear_module and hasattr(model, "coef_") and hasattr(model, "intercept_")


def matrix(X: Any) -> np.ndarray:
    """Rows as a float64 matrix (no copy for a float64 ndarray)."""
    if hasattr(X, "toarray"):  # scipy sparse
        X = X.toarray()
    return np.asarray(X, dtype=np.float64)


class LinearExplainer:
    """Exact interventional SHAP values of a linear model against the mean of `background`."""

    method = METHOD

    def __init__(self, model: Any, background: Any) -> None:
        if background is None:
            raise MissingBackground("the linear method needs background data")
        coef = model.coef_
        coef = np.atleast_2d(coef.toarray() if hasattr(coef, "toarray") else np.asarray(coef, np.float64))
        self.classes = getattr(model, "classes_", None)
        if self.classes is None and coef.shape[0] != 1:
            raise UnsupportedModel("multi-output linear regressor")
        self.coef = coef
        self.intercept = np.broadcast_to(np.asarray(model.intercept_, np.float64).reshape(-1), (coef.shape[0],)).copy()
        rows = matrix(background)
        self.mean = rows.mean(axis=0)
        self.base = self.coef @ self.mean + self.intercept
        self.output = self._output(model, rows[:_CHECK_ROWS])
        self._model = model
        self._names = feature_names(None, model, coef.shape[1])

    def _output(self, model: Any, rows: np.ndarray) -> str:
        """The model's own output that our linear score reproduces, checked on background rows."""
        scores = rows @ self.coef.T + self.intercept
        if self.classes is not None:
            decision = np.asarray(model.decision_function(rows), np.float64).reshape(len(rows), -1)
            if not np.allclose(decision, scores, rtol=_CHECK_RTOL, atol=_CHECK_ATOL):
                raise UnsupportedModel("decision_function is not coef · x + intercept")
            logistic = type(model).__name__ in _LOGISTIC or getattr(model, "loss", None) == "log_loss"
            if logistic and self.coef.shape[0] == 1:
                return "log-odds"
            if type(model).__name__ in _LOGISTIC:
                return "logit"
            return "decision-function"
        predicted = np.asarray(model.predict(rows), np.float64).reshape(-1)
        if np.allclose(predicted, scores[:, 0], rtol=_CHECK_RTOL, atol=_CHECK_ATOL):
            return "raw"
        if np.allclose(predicted, np.exp(scores[:, 0]), rtol=_CHECK_RTOL, atol=_CHECK_EXP_ATOL):
            return "log-prediction"
        raise UnsupportedModel("predict is neither coef · x + intercept nor its exponential")

    def explain(self, X: Any) -> Explanation:
        """The attributions of every row of `X` to the linear score (for several classes: the chosen one's)."""
        x = matrix(X)
        n = len(x)
        if self.coef.shape[0] == 1:  # binary or regression: one score column, nothing to choose
            coef, base = self.coef[0], self.base.repeat(n)
            output = np.dot(x, coef) + self.intercept[0]
            classes = None if self.classes is None else self.classes[1:].repeat(n)
        else:
            scores = x @ self.coef.T + self.intercept
            column = choose_class(self.classes, self.coef.shape[0], scores)
            coef, base, output = self.coef[column], self.base[column], scores[np.arange(n), column]
            classes = explained_classes(self.classes, column, self.coef.shape[0])
        return Explanation(
            values=(x - self.mean) * coef,
            base_values=base,
            feature_names=self._names if not hasattr(X, "columns") else feature_names(X, self._model, x.shape[1]),
            output=self.output,
            method=METHOD,
            output_values=output,
            classes=classes,
        )
