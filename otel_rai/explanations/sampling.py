"""Any model: interventional Shapley values from model calls, with a fixed budget per row.

With background rows B, the value of a coalition S for row x is ``v(S) = mean_{b∈B} f(x_S, b_{¬S})``:
the features in S come from x, the others from a background row. The interventional SHAP value of
feature j is the Shapley value of this game. Two estimators, both within ``max_evals`` model
evaluations per explained row (M features):

* ``exact``, when ``2^M · |B| ≤ max_evals``: every coalition, every background row, and
  ``φ_j = Σ_{S∌j} |S|!(M−|S|−1)!/M! · (v(S∪{j}) − v(S))``. No estimation error.
* ``permutation``, otherwise: ``W = max_evals // (M+1)`` walks (rounded down to pairs). A walk takes a
  random feature order and one random background row b, and moves from b to x one feature at a
  time; each feature is credited with the change of f when it switches to x's value. φ is the mean
  credit over the walks: an unbiased estimate of the exact values for the whole background. The
  walks come in antithetic pairs (an order and its reverse, same b), which cancels much of the
  order noise. The first step of every walk starts from ``v(∅)`` (the mean of f over the whole
  background, computed once) instead of f(b): still unbiased, and every row is exactly additive.

So ``base + Σφ = f(x)`` for every row, with base ``v(∅)``. Orders and background rows are drawn
once per model with a fixed seed: the same row always gets the same explanation. Measured error of
``permutation`` in docs/explanations.md.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from otel_rai import settings
from otel_rai.explanations.errors import MissingBackground, UnsupportedModel
from otel_rai.explanations.explanation import Explanation, choose_class, explained_classes, feature_names

EXACT = "exact"
PERMUTATION = "permutation"
#: Most features the ``exact`` method enumerates when asked for explicitly (2^M coalitions).
MAX_EXACT_FEATURES = 16
#: Synthetic rows per model call.
_CALL_ROWS = 1 << 16
#: Orders and background rows are drawn with this seed: the same row always gets the same explanation.
_SEED = 0


def output_function(model: Any) -> tuple[Callable[[Any], np.ndarray], str]:
    """The scores explained, (n_rows, n_outputs), and their name: the probabilities of a classifier
    with ``predict_proba``, else its ``decision_function``; a regressor's prediction."""
    if hasattr(model, "classes_"):
        if hasattr(model, "predict_proba"):
            return lambda X: np.asarray(model.predict_proba(X), np.float64), "probability"
        if hasattr(model, "decision_function"):
            return _as_columns(model.decision_function), "decision-function"
        raise UnsupportedModel("a classifier without predict_proba or decision_function")
    return _as_columns(model.predict), "raw"


def _as_columns(method: Callable[[Any], Any]) -> Callable[[Any], np.ndarray]:
    return lambda X: np.asarray(method(X), np.float64).reshape(X.shape[0], -1)


class _Rows:
    """The columns of an ndarray or a DataFrame, and synthetic rows mixing two such tables."""

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

    def mixed(self, rows: np.ndarray, background: _Rows, masks: np.ndarray, sources: np.ndarray) -> Any:
        """For each of `rows` and each coalition c: one synthetic row per background row in
        ``sources[c]``, taking feature j from the row where ``masks[c, j]``, else from the background.
        Ordered (row, coalition, source), as one table of len(rows)·n_coalitions·n_sources rows."""
        shape = (len(rows), *sources.shape)
        columns = []
        for j, (x, b) in enumerate(zip(self.columns, background.columns)):
            column = np.where(masks[None, :, None, j], x[rows][:, None, None], b[sources][None])
            columns.append(np.broadcast_to(column, shape).reshape(-1))
        if self.frame is None:
            return np.stack(columns, axis=1)
        import pandas as pd

        return pd.DataFrame(
            {name: pd.array(values, dtype=self.frame[name].dtype) for name, values in zip(self.frame.columns, columns)}
        )

    def slice(self, start: int, stop: int) -> Any:
        """Rows [start, stop) in the table's own format."""
        if self.frame is not None:
            return self.frame.iloc[start:stop]
        return np.stack([c[start:stop] for c in self.columns], axis=1)


class AgnosticExplainer:
    """Interventional Shapley values of any model from calls to it: exact or antithetic permutation
    sampling, within `max_evals` model evaluations per row (see the module docstring)."""

    def __init__(
        self, model: Any, background: Any, *, max_evals: int = settings.default("explain_max_evals"),
        method: str | None = None,
    ) -> None:
        if background is None:
            raise MissingBackground("the model-agnostic method needs background data")
        self._model = model
        self._f, self.output = output_function(model)
        self.classes = getattr(model, "classes_", None)
        self._background = rows = _Rows(background)
        m, n_background = rows.n_features, len(rows)
        if method == EXACT and m > MAX_EXACT_FEATURES:
            raise UnsupportedModel(f"exact Shapley values of more than {MAX_EXACT_FEATURES} features")
        if method == EXACT or (method is None and (1 << m) * n_background <= max_evals):
            self.method = EXACT
            self._masks = ((np.arange(1 << m)[:, None] >> np.arange(m)) & 1).astype(bool)
            self._sources = np.broadcast_to(np.arange(n_background), (len(self._masks), n_background))
        else:
            self.method = PERMUTATION
            rng = np.random.default_rng(_SEED)
            pairs = max(1, max_evals // (2 * (m + 1)))
            orders = np.array([rng.permutation(m) for _ in range(pairs)])
            self._orders = np.concatenate([orders, orders[:, ::-1]])
            start = np.tile(rng.integers(n_background, size=pairs), 2)  # a pair shares its background row
            self._masks = _walk_masks(self._orders, m)
            self._sources = np.repeat(start, m + 1)[:, None]
        self.evals_per_row = self._sources.size
        self._empty = np.flatnonzero(~self._masks.any(axis=1))  # the ∅ coalition of every walk
        total = 0.0
        for start in range(0, n_background, _CALL_ROWS):
            total = total + self._f(rows.slice(start, start + _CALL_ROWS)).sum(axis=0)
        self._base = total / n_background  # v(∅) over the whole background, per output

    def explain(self, X: Any) -> Explanation:
        """The attributions of every row of `X`, for the chosen output column of each row."""
        rows = _Rows(X)
        n, m = len(rows), rows.n_features
        per_call = max(1, _CALL_ROWS // self.evals_per_row)
        values = np.zeros((n, m))
        base = np.zeros(n)
        raw = np.zeros(n)
        column = np.zeros(n, np.int64)
        n_outputs = len(self._base)
        for start in range(0, n, per_call):
            chunk = np.arange(start, min(n, start + per_call))
            scores = self._f(rows.mixed(chunk, self._background, self._masks, self._sources))
            v = scores.reshape(len(chunk), *self._sources.shape, n_outputs).mean(axis=2)  # (rows, coalitions, k)
            v[:, self._empty] = self._base
            chosen = choose_class(self.classes, n_outputs, v[:, -1])  # the last coalition holds every feature
            v = v[np.arange(len(chunk)), :, chosen]
            values[chunk] = _exact_shapley(v, m) if self.method == EXACT else self._walked(v, m)
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

    def _walked(self, v: np.ndarray, m: int) -> np.ndarray:
        """Mean credit per feature over the walks; v holds each walk's m+1 coalitions in order."""
        steps = np.diff(v.reshape(len(v), len(self._orders), m + 1), axis=2)  # (rows, walks, m)
        phi = np.zeros((len(v), m))
        for w, order in enumerate(self._orders):
            phi[:, order] += steps[:, w]
        return phi / len(self._orders)


def _walk_masks(orders: np.ndarray, m: int) -> np.ndarray:
    """Coalitions of the walks: row w·(m+1) + i holds the first i features of order w."""
    masks = np.zeros((len(orders), m + 1, m), bool)
    for i in range(1, m + 1):
        masks[np.arange(len(orders)), i:, orders[:, i - 1]] = True
    return masks.reshape(-1, m)


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
