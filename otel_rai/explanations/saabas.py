"""Saabas path attribution: the fallback for forests whose exact TreeSHAP exceeds the time budget.

Every node has an expected value ``E[node]``: the cover-weighted mean of the leaves below it. Walking a
row's decision path, each split moves the expectation from ``E[node]`` to ``E[child]``; that change is
credited to the split's feature. Per tree the credits add up to ``leaf value − E[root]``, so the
attributions are additive like SHAP values, with base value ``base + Σ_trees E[root]``. They are not
Shapley values: a feature split on near the root collects less credit than TreeSHAP gives it. SHAP
computes the same numbers with ``shap_values(X, approximate=True)``.

Cost per row: one root-to-leaf walk per tree plus one sparse row sum, against TreeSHAP's visit of every
leaf of every tree.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import sparse

from otel_rai.explanations.forest import Forest
from otel_rai.explanations.treeshap import Paths

METHOD = "saabas"


class Saabas:
    """Saabas attribution for a `Forest`: each node's expected value, and what every leaf's path credits
    each feature, computed once."""

    def __init__(self, forest: Forest, paths: Paths) -> None:
        self.forest = forest
        order = paths.order
        child = order[paths.n_roots :]
        parent = order[paths.edge_parent]
        expectation = forest.value.copy()
        for start, stop in reversed(paths.level_bounds):  # children before their parents
            edges = slice(start - paths.n_roots, stop - paths.n_roots)
            total = np.zeros_like(expectation)
            weight = np.zeros(len(order))
            np.add.at(total, parent[edges], forest.cover[child[edges], None] * expectation[child[edges]])
            np.add.at(weight, parent[edges], forest.cover[child[edges]])
            done = np.unique(parent[edges])
            expectation[done] = total[done] / weight[done, None]
        self.expected = forest.base + expectation[forest.roots].sum(axis=0)
        self._leaves = leaves = paths.leaves
        self._leaf_row = np.full(len(order), -1, np.int64)
        self._leaf_row[leaves] = np.arange(len(leaves))
        parent_of = np.full(len(order), -1, np.int64)
        parent_of[child] = parent
        # (leaf, feature, change of expectation) for every split on every leaf's path
        rows, features, steps = [], [], []
        node = leaves
        while True:
            up = parent_of[node]
            on_path = up >= 0
            if not on_path.any():
                break
            rows.append(np.flatnonzero(on_path))
            features.append(forest.feature[up[on_path]])
            steps.append(expectation[node[on_path]] - expectation[up[on_path]])
            node = np.where(on_path, up, node)
        self._path = (np.concatenate(rows), np.concatenate(features), np.concatenate(steps))
        self._credit: dict[int, sparse.csr_matrix] = {}

    @property
    def nbytes(self) -> int:
        """Memory held by the path credits and their per-output tables."""
        rows, features, steps = self._path
        return rows.nbytes + features.nbytes + steps.nbytes + sum(
            m.data.nbytes + m.indices.nbytes + m.indptr.nbytes for m in list(self._credit.values()))

    def _credit_for(self, k: int) -> sparse.csr_matrix:
        """(n_leaves, n_features): what each leaf's path credits each feature, for output column k."""
        if k not in self._credit:
            rows, features, steps = self._path
            shape = (len(self._leaves), self.forest.n_features)
            self._credit[k] = sparse.csr_matrix((steps[:, k], (rows, features)), shape=shape)  # sums repeats
        return self._credit[k]

    @staticmethod
    def reached(forest: Forest, X: np.ndarray) -> np.ndarray:
        """(n_rows, n_trees) the leaf each row reaches in each tree."""
        node = np.broadcast_to(forest.roots, (len(X), len(forest.roots))).copy()
        while True:
            inside = forest.feature[node] >= 0
            if not inside.any():
                return node
            left = forest.goes_left(X, node)
            node = np.where(inside, np.where(left, forest.left[node], forest.right[node]), node)

    def explain(
        self, X: np.ndarray, choose: Callable[[np.ndarray], np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Same contract as `TreeShap.explain`."""
        leaves = self.reached(self.forest, X)
        n, n_trees = leaves.shape
        outputs = self.forest.base + self.forest.value[leaves].sum(axis=1)
        column = np.asarray(choose(outputs), np.int64)
        hits = sparse.csr_matrix(
            (np.ones(leaves.size), self._leaf_row[leaves].reshape(-1), np.arange(0, leaves.size + 1, n_trees)),
            shape=(n, len(self._leaves)),
        )
        values = np.zeros((n, self.forest.n_features))
        for k in np.unique(column):
            mine = np.flatnonzero(column == k)
            values[mine] = (hits[mine] @ self._credit_for(int(k))).toarray()
        return values, column, self.expected[column], outputs[np.arange(n), column]
