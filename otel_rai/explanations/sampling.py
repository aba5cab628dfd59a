"""Any model: interventional Shapley values from model calls, with a fixed budget per row.

The value of a coalition S for row x is ``v(S) = mean_b f(x_S, b_{¬S})`` over background rows b: the
features in S come from x, the others from the background. Then:

* ``exact``: when ``2^M · n_background ≤ max_evals`` (M features), every coalition is evaluated and
  ``φ_j = Σ_{S∌j} |S|!(M−|S|−1)!/M! · (v(S∪{j}) − v(S))``: the exact interventional SHAP values for
  this background.
* ``permutation``: otherwise, p antithetic pairs of random feature orders (an order and its reverse);
  walking an order from ∅ to all features credits each feature with the change of v when it joins.
  φ is the mean over the 2p walks; each walk evaluates M+1 coalitions, and p is the largest that keeps
  ``2p(M+1) · n_background`` within ``max_evals``, at least 1.

Both are additive for every row: ``v(∅) + Σφ = v(all) = f(x)``, with base value ``v(∅)``, the mean
model output over the background rows used. Errors (see docs/explanations.md): the background is a
fixed sample of at most `BACKGROUND_ROWS` rows of the registered background; ``permutation`` adds the
sampling error of p order pairs. The orders and the sample are drawn once per model with a fixed
seed, so the same row always gets the same explanation.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from otel_rai.config import DEFAULT_EXPLAIN_MAX_EVALS
from otel_rai.explanations.errors import MissingBackground, UnsupportedModel
from otel_rai.explanations.explanation import Explanation, choose_class, explained_classes, feature_names

EXACT = "exact"
PERMUTATION = "permutation"
#: Background rows the coalition values average over.
BACKGROUND_ROWS = 32
#: Most features the forced ``exact`` method enumerates (2^M coalitions).
MAX_EXACT_FEATURES = 16
#: Synthetic rows per model call.
_CALL_ROWS = 1 << 16
_SEED = 0


def output_function(model: Any) -> tuple[Callable[[Any], np.ndarray], str]:
    """The scores explained (n_rows, n_outputs) and their name: probabilities of a classifier with
    ``predict_proba``, else its ``decision_function``; a regressor's prediction."""
    if hasattr(model, "classes_"):
        if hasattr(model, "predict_proba"):
            return lambda X: np.asarray(model.predict_proba(X), np.float64), "probability"
        if hasattr(model, "decision_function"):
            return lambda X: np.asarray(model.decision_function(X), np.float64).reshape(_n_rows(X), -1), "decision-function"
        raise UnsupportedModel("a classifier without predict_proba or decision_function")
    return lambda X: np.asarray(model.predict(X), np.float64).reshape(_n_rows(X), -1), "raw"


def _n_rows(X: Any) -> int:
    return X.shape[0]


class _Rows:
    """Rows of an ndarray or a DataFrame, and the synthetic rows that mix two of them per feature."""

    def __init__(self, X: Any) -> None:
        self.frame = X if hasattr(X, "iloc") else None
        if self.frame is not None:
            self.columns = [X[c].to_numpy() for c in X.columns]
        else:
            X = X.toarray() if hasattr(X, "toarray") else np.asarray(X)
            self.columns = [X[:, j] for j in range(X.shape[1])]
        self.n_features = len(self.columns)

    def __len__(self) -> int:
        return len(self.columns[0]) if self.columns else 0

    def mixed(self, rows: np.ndarray, background: _Rows, masks: np.ndarray) -> Any:
        """For each row r in `rows`, coalition s and background row b: feature j from row r where
        ``masks[s, j]``, else from b. Shape (len(rows) · n_coalitions · n_background, n_features)."""
        n_b = len(background)
        take_x = masks[None, :, None, :]  # (1, n_coalitions, 1, M)
        shape = (len(rows), len(masks), n_b)
        columns = []
        for j, (x, b) in enumerate(zip(self.columns, background.columns)):
            column = np.where(take_x[..., j], x[rows][:, None, None], b[None, None, :])
            columns.append(np.broadcast_to(column, shape).reshape(-1))
        if self.frame is None:
            return np.stack(columns, axis=1)
        import pandas as pd

        return pd.DataFrame(
            {name: pd.array(values, dtype=self.frame[name].dtype) for name, values in zip(self.frame.columns, columns)}
        )


class AgnosticExplainer:
    def __init__(
        self, model: Any, background: Any, *, max_evals: int = DEFAULT_EXPLAIN_MAX_EVALS, method: str | None = None
    ) -> None:
        if background is None:
            raise MissingBackground("the model-agnostic method needs background data")
        self._model = model
        self._f, self.output = output_function(model)
        self.classes = getattr(model, "classes_", None)
        full = _Rows(background)
        rng = np.random.default_rng(_SEED)
        keep = np.sort(rng.choice(len(full), min(len(full), BACKGROUND_ROWS), replace=False))
        self._background = _Rows(background.iloc[keep] if hasattr(background, "iloc") else _subset(background, keep))
        m, n_b = full.n_features, len(keep)
        if method == EXACT and m > MAX_EXACT_FEATURES:
            raise UnsupportedModel(f"exact Shapley values of more than {MAX_EXACT_FEATURES} features")
        if method == EXACT or (method is None and (1 << m) * n_b <= max_evals):
            self.method = EXACT
            self._masks = ((np.arange(1 << m)[:, None] >> np.arange(m)) & 1).astype(bool)
        else:
            self.method = PERMUTATION
            pairs = max(1, max_evals // (n_b * 2 * (m + 1)))
            orders = np.array([rng.permutation(m) for _ in range(pairs)])
            self._orders = np.concatenate([orders, orders[:, ::-1]])
            self._masks = self._walk_masks(self._orders, m)
        self.evals_per_row = len(self._masks) * n_b

    @staticmethod
    def _walk_masks(orders: np.ndarray, m: int) -> np.ndarray:
        """Coalitions visited by the walks: row w·(m+1) + i holds the first i features of order w."""
        masks = np.zeros((len(orders), m + 1, m), bool)
        for i in range(1, m + 1):
            masks[np.arange(len(orders)), i:, orders[:, i - 1]] = True
        return masks.reshape(-1, m)

    def explain(self, X: Any) -> Explanation:
        rows = _Rows(X)
        n, m = len(rows), rows.n_features
        n_b = len(self._background)
        per_call = max(1, _CALL_ROWS // (len(self._masks) * n_b))
        values = np.zeros((n, m))
        base = np.zeros(n)
        raw = np.zeros(n)
        column = np.zeros(n, np.int64)
        n_outputs = 1
        for start in range(0, n, per_call):
            chunk = np.arange(start, min(n, start + per_call))
            scores = self._f(rows.mixed(chunk, self._background, self._masks))
            n_outputs = scores.shape[1]
            v = scores.reshape(len(chunk), len(self._masks), n_b, n_outputs).mean(axis=2)  # (rows, coalitions, k)
            chosen = choose_class(self.classes, n_outputs, v[:, -1])  # the last coalition has every feature
            v = v[np.arange(len(chunk)), :, chosen]  # (rows, coalitions)
            values[chunk] = self._shapley(v, m)
            base[chunk] = v[:, 0]
            raw[chunk] = v[:, -1]
            column[chunk] = chosen
        return Explanation(
            values=values,
            base_values=base,
            feature_names=feature_names(X, self._model, m),
            output=self.output,
            method=self.method,
            output_values=raw,
            classes=explained_classes(self.classes, column, n_outputs),
        )

    def _shapley(self, v: np.ndarray, m: int) -> np.ndarray:
        if self.method == EXACT:
            return _exact_shapley(v, m)
        steps = np.diff(v.reshape(len(v), len(self._orders), m + 1), axis=2)  # (rows, walks, m)
        phi = np.zeros((len(v), m))
        for w, order in enumerate(self._orders):
            phi[:, order] += steps[:, w]
        return phi / len(self._orders)


def _subset(X: Any, keep: np.ndarray) -> Any:
    X = X.toarray() if hasattr(X, "toarray") else np.asarray(X)
    return X[keep]


def _exact_shapley(v: np.ndarray, m: int) -> np.ndarray:
    """φ_j = Σ_{S∌j} |S|!(m−|S|−1)!/m! (v(S∪{j}) − v(S)), v indexed by coalition bitmask."""
    coalitions = np.arange(1 << m)
    size = np.array([bin(s).count("1") for s in coalitions])
    weight = np.array([math.factorial(s) * math.factorial(m - s - 1) / math.factorial(m) if s < m else 0.0
                       for s in size])
    phi = np.zeros((len(v), m))
    for j in range(m):
        without = coalitions[(coalitions >> j) & 1 == 0]
        phi[:, j] = (v[:, without | (1 << j)] - v[:, without]) @ weight[without]
    return phi
