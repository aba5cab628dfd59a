"""Exact path-dependent TreeSHAP (SHAP's ``feature_perturbation="tree_path_dependent"``) in numpy.

For a leaf with value v, let P be the distinct features on its root-to-leaf path (m of them) and, for
j ∈ P, z_j the product of the cover ratios ``cover[child] / cover[node]`` of the path's splits on j.
A row *fails* j when it leaves the path at some split on j; R ⊆ P is the set it fails. The leaf's
path-dependent game is ``f(S) = v · Π_{j∈S∩P} [j∉R] · Π_{j∈P\\S} z_j``, and with
``w_m(t) = t!(m−t−1)!/m!``, ``F(A) = Σ_{T⊆A} w_m(|T|) Π_{j∈A\\T} z_j`` its Shapley values are

* j ∈ R:  φ_j = −v · G(R)
* j ∉ R:  φ_j = v · (1 − z_j)/z_j · G(R ∪ {j})

where ``G(R) = Π_{j∈R} z_j · F(P \\ R)``. A leaf's contribution depends only on R, a bit pattern of at
most m bits, so it is a table lookup; the tables are built once per fitted model. Summing over leaves
gives the TreeSHAP values, and ``Σ_j φ_j = f(x) − E`` with ``E = Σ_leaves v · Π_{j∈P} z_j``.

Three kernels evaluate a leaf, fastest first, each within a memory cap:

* column tables: one table of 2^m entries per (leaf, feature), sign, ratio and v included;
* G tables: one table of 2^m entries per leaf, the coefficient applied per row;
* per row: the same formulas through elementary symmetric polynomials of the z's, O(m²).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import sparse

from otel_rai.explanations.errors import UnsupportedModel
from otel_rai.explanations.forest import Forest

#: Widest path (distinct features) that gets a G table, and a column table.
MAX_G_BITS = 12
MAX_COLUMN_BITS = 10
#: Table entries (8 bytes each) per model for each kind of table.
MAX_G_ENTRIES = 1 << 22
MAX_COLUMN_ENTRIES = 1 << 22
#: Size of the per-chunk work arrays, in elements: small enough to stay in cache.
_NODE_CHUNK = 1 << 17
_COLUMN_CHUNK = 1 << 17
#: Elements of the (leaves, 2^m, m+1) work array of one step of building the G tables.
_G_BUILD_ENTRIES = 1 << 22


# --- the paths of a forest ----------------------------------------------------------------------------


@dataclass
class Paths:
    """Every root-to-leaf path. Nodes are renumbered breadth-first, so each depth is a contiguous
    block: position ``p`` holds node ``order[p]``; the edge into position p (p ≥ n_roots) is
    ``edge_*[p − n_roots]``."""

    order: np.ndarray
    n_roots: int
    level_bounds: list[tuple[int, int]]  # [start, stop) positions of each depth ≥ 1
    edge_parent: np.ndarray  # parent position of each edge
    edge_split: np.ndarray  # parent's column in `Forest.goes_left` (its index in `splits`)
    edge_is_left: np.ndarray
    edge_bit: np.ndarray  # the parent's feature's position among the path's distinct features
    splits: np.ndarray  # internal nodes
    leaf_position: np.ndarray  # position of each leaf
    width: np.ndarray  # m: distinct features on each leaf's path
    features: np.ndarray  # (n_leaves, max m), -1 padded
    zeros: np.ndarray  # (n_leaves, max m) zero fractions, 1 padded

    @property
    def leaves(self) -> np.ndarray:
        """The node index of each leaf."""
        return self.order[self.leaf_position]


def walk(forest: Forest) -> Paths:
    """Breadth-first over all trees at once, carrying each node's distinct path features and z's."""
    splits = np.flatnonzero(forest.feature >= 0)
    split_index = np.full(len(forest.feature), -1, np.int64)
    split_index[splits] = np.arange(len(splits))
    frontier = forest.roots
    features = np.full((len(frontier), 0), -1, np.int64)
    zeros = np.ones((len(frontier), 0))
    width = np.zeros(len(frontier), np.int64)
    blocks, edges, found = [frontier], [], []
    start = 0
    while True:
        leaf = forest.feature[frontier] < 0
        found.append((start + np.flatnonzero(leaf), width[leaf], features[leaf], zeros[leaf]))
        rows = np.flatnonzero(~leaf)
        if not len(rows):
            break
        rows = np.concatenate([rows, rows])
        is_left = np.arange(len(rows)) < len(rows) // 2
        parents = frontier[rows]
        children = np.where(is_left, forest.left[parents], forest.right[parents])
        feature = forest.feature[parents]
        features = np.hstack([features[rows], np.full((len(rows), 1), -1, np.int64)])
        zeros = np.hstack([zeros[rows], np.ones((len(rows), 1))])
        match = features == feature[:, None]
        seen = match.any(axis=1)
        bit = np.where(seen, match.argmax(axis=1), width[rows])
        at = np.arange(len(rows))
        features[at, bit] = feature
        zeros[at, bit] *= forest.cover[children] / forest.cover[parents]
        width = width[rows] + ~seen
        edges.append((start + rows, split_index[parents], is_left, bit))
        start += len(frontier)
        frontier = children
        blocks.append(frontier)
    sizes = np.cumsum([len(b) for b in blocks])
    widest = max(int(w.max(initial=0)) for _, w, _, _ in found)

    def padded(a: np.ndarray, fill: float) -> np.ndarray:
        a = a[:, :widest]
        return np.pad(a, ((0, 0), (0, widest - a.shape[1])), constant_values=fill)

    joined = lambda i: np.concatenate([e[i] for e in edges]) if edges else np.zeros(0, np.int64)  # noqa: E731
    return Paths(
        order=np.concatenate(blocks),
        n_roots=len(forest.roots),
        level_bounds=list(zip(sizes[:-1].tolist(), sizes[1:].tolist())),
        edge_parent=joined(0),
        edge_split=joined(1),
        edge_is_left=joined(2).astype(bool),
        edge_bit=joined(3),
        splits=splits,
        leaf_position=np.concatenate([f[0] for f in found]),
        width=np.concatenate([f[1] for f in found]),
        features=np.concatenate([padded(f[2], -1) for f in found]),
        zeros=np.concatenate([padded(f[3], 1.0) for f in found]),
    )


def fail_codes(forest: Forest, paths: Paths, X: np.ndarray) -> np.ndarray:
    """(n_leaves, n_rows) int64: bit j set when the row fails the leaf's j-th distinct path feature.

    Leaf-major, like all work arrays here: a kernel then reads each table for all rows at once.
    """
    left = forest.goes_left(X, paths.splits).T
    failed = np.left_shift(left[paths.edge_split] != paths.edge_is_left[:, None], paths.edge_bit[:, None])
    codes = np.zeros((len(paths.order), len(X)), np.int64)
    offset = paths.n_roots
    for start, stop in paths.level_bounds:
        np.bitwise_or(codes[paths.edge_parent[start - offset : stop - offset]],
                      failed[start - offset : stop - offset], out=codes[start:stop])
    return codes[paths.leaf_position]


def shapley_weights(m: int) -> np.ndarray:
    """``w_m(t) = t!(m−t−1)!/m!`` for t = 0..m, with w_m(m) = 0 (no coalition leaves out everyone)."""
    return np.array([math.factorial(t) * math.factorial(m - t - 1) / math.factorial(m) for t in range(m)] + [0.0])


def g_tables(z: np.ndarray) -> np.ndarray:
    """G(R) for every fail set R (bit j = path feature j) of leaves with zero fractions z (n, m)."""
    n, m = z.shape
    size = 1 << m
    z_failed = np.ones((n, size))
    e = np.zeros((n, size, m + 1))  # e[U, k]: k-th elementary symmetric polynomial of z over U
    e[:, 0, 0] = 1.0
    for h in range(m):
        low = 1 << h
        z_failed[:, low : 2 * low] = z_failed[:, :low] * z[:, h, None]
        e[:, low : 2 * low] = e[:, :low]
        e[:, low : 2 * low, 1:] += z[:, h, None, None] * e[:, :low, :-1]
    t = np.array([bin(u).count("1") for u in range(size)])[:, None] - np.arange(m + 1)
    w = np.where(t >= 0, shapley_weights(m)[np.clip(t, 0, m)], 0.0)
    f = np.einsum("lsk,sk->ls", e, w)  # F(U) by satisfied set U
    return z_failed * f[:, ::-1]  # F(P \ R) sits at index (2^m − 1) − R


# --- kernels: each adds its leaves' contributions for one output column -------------------------------


@dataclass
class _ByFeature:
    """One column per (leaf, path position), and the sparse sum that adds columns into features."""

    leaf: np.ndarray
    position: np.ndarray
    features: np.ndarray  # the features that have columns
    to_features: sparse.csr_matrix  # (len(features), n_columns) of ones

    @classmethod
    def of(cls, paths: Paths, leaves: np.ndarray) -> _ByFeature:
        leaf, position = np.nonzero(np.arange(paths.features.shape[1]) < paths.width[leaves, None])
        leaf = leaves[leaf]
        features, row = np.unique(paths.features[leaf, position], return_inverse=True)
        n = len(leaf)
        to_features = sparse.csr_matrix((np.ones(n), (row, np.arange(n))), shape=(len(features), n))
        return cls(leaf, position, features, to_features)

    def add(self, values: np.ndarray, phi: np.ndarray) -> None:
        phi[self.features] += self.to_features @ values


class _ColumnTables:
    """tables[base_c + R] = φ of column c when the row fails R."""

    def __init__(self, paths: Paths, leaves: np.ndarray, g: np.ndarray, g_base: np.ndarray, v: np.ndarray) -> None:
        cols = self.cols = _ByFeature.of(paths, leaves)
        size = 1 << paths.width[cols.leaf]
        self.base = np.concatenate([[0], np.cumsum(size)[:-1]]).astype(np.int64)
        self.tables = np.empty(int(size.sum()))
        z = paths.zeros[cols.leaf, cols.position]
        for m in np.unique(paths.width[cols.leaf]):
            mine = np.flatnonzero(paths.width[cols.leaf] == m)
            fail_set = np.arange(1 << m)
            bit = (1 << cols.position[mine])[:, None]
            failed = (fail_set & bit) != 0
            coefficient = np.where(failed, -1.0, ((1.0 - z[mine]) / z[mine])[:, None]) * v[cols.leaf[mine], None]
            g_index = g_base[cols.leaf[mine], None] + (fail_set | bit)
            self.tables[self.base[mine, None] + fail_set] = coefficient * g[g_index]

    def add(self, codes: np.ndarray, phi: np.ndarray, buffers: _Buffers) -> None:
        cols = self.cols
        index = buffers.get("index", len(cols.leaf), codes.shape[1], np.int64)
        np.take(codes, cols.leaf, axis=0, out=index)
        index += self.base[:, None]
        values = buffers.get("values", len(cols.leaf), codes.shape[1], np.float64)
        np.take(self.tables, index, out=values)
        cols.add(values, phi)


class _GTables:
    """g[base_leaf + (R | bit_j)] times −v (j failed) or v (1 − z_j)/z_j (j satisfied)."""

    def __init__(self, paths: Paths, leaves: np.ndarray, g: np.ndarray, g_base: np.ndarray, v: np.ndarray) -> None:
        cols = self.cols = _ByFeature.of(paths, leaves)
        z = paths.zeros[cols.leaf, cols.position]
        self.g = g
        self.base = g_base[cols.leaf, None]
        self.bit = np.left_shift(1, cols.position).astype(np.int64)[:, None]
        self.satisfied = (v[cols.leaf] * (1.0 - z) / z)[:, None]
        self.failed = -v[cols.leaf, None]

    def add(self, codes: np.ndarray, phi: np.ndarray, buffers: _Buffers) -> None:
        cols = self.cols
        c, n = len(cols.leaf), codes.shape[1]
        code = buffers.get("code", c, n, np.int64)
        np.take(codes, cols.leaf, axis=0, out=code)
        index = buffers.get("index", c, n, np.int64)
        np.bitwise_or(code, self.bit, out=index)
        index += self.base
        values = buffers.get("values", c, n, np.float64)
        np.take(self.g, index, out=values)
        np.bitwise_and(code, self.bit, out=index)
        coefficient = buffers.get("coefficient", c, n, np.float64)
        coefficient[...] = self.satisfied
        np.copyto(coefficient, self.failed, where=index != 0)
        values *= coefficient
        cols.add(values, phi)


class _PerRow:
    """Leaves without a table: e_k of the satisfied z's, then F(U) and, unwinding z_j, F(U \\ {j})."""

    def __init__(self, paths: Paths, leaves: np.ndarray, v: np.ndarray) -> None:
        self.leaves = leaves
        self.width = paths.width[leaves]
        depth = self.depth = int(self.width.max(initial=0))
        self.zeros = paths.zeros[leaves, :depth]
        self.value = v[leaves]
        features = paths.features[leaves, :depth]
        leaf, position = np.nonzero(features >= 0)
        order = np.argsort(features[leaf, position], kind="stable")
        self.flat = (leaf * depth + position)[order]
        self.features, self.starts = np.unique(features[leaf, position][order], return_index=True)
        self.weights = np.zeros((depth + 1, depth + 1))
        for m in range(1, depth + 1):
            self.weights[m, : m + 1] = shapley_weights(m)

    def add(self, codes: np.ndarray, phi: np.ndarray, buffers: _Buffers) -> None:
        codes = codes[self.leaves].T
        n, n_leaves = codes.shape
        depth, z, m = self.depth, self.zeros, self.width
        in_path = np.arange(depth) < m[:, None]
        satisfied = (((codes[:, :, None] >> np.arange(depth)) & 1) == 0) & in_path
        e = np.zeros((n, n_leaves, depth + 1))
        e[..., 0] = 1.0
        for j in range(depth):
            e[..., 1:] += np.where(satisfied[..., j], z[:, j], 0.0)[..., None] * e[..., :-1]
        n_satisfied = satisfied.sum(axis=2)
        scale = self.value * np.where(in_path & ~satisfied, z, 1.0).prod(axis=2)
        f_all = self._f(e, n_satisfied, m)
        out = np.empty((n, n_leaves, depth))
        unwound = np.empty_like(e)
        unwound[..., 0] = 1.0
        for j in range(depth):
            for k in range(1, depth + 1):
                unwound[..., k] = e[..., k] - z[:, j] * unwound[..., k - 1]
            f_without = self._f(unwound, n_satisfied - 1, m)
            out[..., j] = np.where(satisfied[..., j], scale * (1.0 - z[:, j]) * f_without, -scale * f_all)
        out = out.reshape(n, n_leaves * depth)[:, self.flat]
        phi[self.features] += np.add.reduceat(out, self.starts, axis=1).T

    def _f(self, e: np.ndarray, size: np.ndarray, m: np.ndarray) -> np.ndarray:
        """F(A) = Σ_k e_k(z_A) · w_m(|A| − k)."""
        total = np.zeros(size.shape)
        for k in range(e.shape[-1]):
            t = size - k
            total += np.where(t >= 0, e[..., k] * self.weights[m, np.maximum(t, 0)], 0.0)
        return total


class _Buffers:
    """Work arrays reused across the chunks of one call (fresh arrays would page-fault every chunk)."""

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}

    def get(self, name: str, n: int, c: int, dtype: type) -> np.ndarray:
        array = self._arrays.get(name)
        if array is None or array.size < n * c:
            array = self._arrays[name] = np.empty(n * c, dtype)
        return array[: n * c].reshape(n, c)


# --- the explainer --------------------------------------------------------------------------------------


@dataclass
class Plan:
    """Which kernel evaluates each leaf. Depends only on the path widths and the memory caps, so
    the cost of a model is known before any table is built."""

    columns: np.ndarray  # bool per leaf: column tables
    g: np.ndarray  # bool per leaf: a G table (column-table leaves have one too)
    per_row: np.ndarray  # bool per leaf

    @classmethod
    def of(cls, width: np.ndarray, relevant: np.ndarray | None = None, column_entries: int | None = None) -> Plan:
        """The plan for leaves of these path widths: `relevant` ones only (default all) get column tables,
        within `column_entries` (default `MAX_COLUMN_ENTRIES`)."""
        relevant = np.ones(len(width), bool) if relevant is None else relevant
        column_entries = MAX_COLUMN_ENTRIES if column_entries is None else column_entries
        g = _narrowest(width, MAX_G_BITS, MAX_G_ENTRIES, np.ones(len(width), bool))
        columns = _narrowest(width, MAX_COLUMN_BITS, column_entries, relevant & g, entries=width << width)
        return cls(columns=columns, g=g, per_row=relevant & ~g)

    def work(self, width: np.ndarray) -> dict[str, int]:
        """Units of work per row, by kernel: path features looked up, or m² for per-row leaves."""
        return {
            "column_lookups": int(width[self.columns].sum()),
            "g_lookups": int(width[self.g & ~self.columns].sum()),
            "per_row_steps": int((width[self.per_row] ** 2).sum()),
        }


class TreeShap:
    """Exact path-dependent TreeSHAP for one `Forest`: build once per fitted model, apply to any rows."""

    def __init__(self, forest: Forest, paths: Paths) -> None:
        if paths.width.max(initial=0) > 64:
            raise UnsupportedModel("a path with more than 64 distinct features")
        self.forest = forest
        self.paths = paths
        self._values = forest.value[paths.leaves]  # (n_leaves, n_outputs)
        self.expected = forest.base + paths.zeros.prod(axis=1) @ self._values
        plan = Plan.of(paths.width)
        self._g_leaves = plan.g
        size = np.where(plan.g, 1 << paths.width, 0)
        self._g_base = np.concatenate([[0], np.cumsum(size)[:-1]]).astype(np.int64)
        self._g = np.empty(int(size.sum()))
        for m in np.unique(paths.width[plan.g]):
            group = np.flatnonzero(plan.g & (paths.width == m))
            step = max(1, _G_BUILD_ENTRIES // ((m + 1) << m))
            for start in range(0, len(group), step):
                leaves = group[start : start + step]
                self._g[self._g_base[leaves, None] + np.arange(1 << m)] = g_tables(paths.zeros[leaves, :m])
        self._column_entries = 0
        self._kernels: dict[int, list] = {}
        self._lock = threading.Lock()  # the audit worker and explain() callers may share this

    @property
    def nbytes(self) -> int:
        """Memory held by the tables (G tables, and the column tables built so far)."""
        columns = sum(kernel.tables.nbytes for kernels in list(self._kernels.values())
                      for kernel in kernels if isinstance(kernel, _ColumnTables))
        return self._g.nbytes + columns

    def _kernels_for(self, k: int) -> list:
        """The kernels of output column k, built on first use (the column-table cap is per model)."""
        with self._lock:
            return self._kernels[k] if k in self._kernels else self._build_kernels(k)

    def _build_kernels(self, k: int) -> list:
        paths, v = self.paths, self._values[:, k]
        plan = Plan.of(paths.width, v != 0, MAX_COLUMN_ENTRIES - self._column_entries)
        self._column_entries += int((paths.width << paths.width)[plan.columns].sum())
        kernels = []
        if plan.columns.any():
            kernels.append(_ColumnTables(paths, np.flatnonzero(plan.columns), self._g, self._g_base, v))
        g_only = plan.g & ~plan.columns & (v != 0)
        if g_only.any():
            kernels.append(_GTables(paths, np.flatnonzero(g_only), self._g, self._g_base, v))
        if plan.per_row.any():
            kernels.append(_PerRow(paths, np.flatnonzero(plan.per_row), v))
        self._kernels[k] = kernels
        return kernels

    def explain(
        self, X: np.ndarray, choose: Callable[[np.ndarray], np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(values, explained output column per row, its expected value, its output for the row).

        `choose` maps raw outputs (n_rows, n_outputs) to the column explained for each row.
        """
        n = len(X)
        values = np.zeros((n, self.forest.n_features))
        column = np.zeros(n, np.int64)
        raw = np.zeros(n)
        buffers = _Buffers()
        step = max(1, _NODE_CHUNK // len(self.paths.order))
        sub = max(1, _COLUMN_CHUNK // max(1, int(self.paths.width.sum())))
        for start in range(0, n, step):
            codes = fail_codes(self.forest, self.paths, X[start : start + step])
            outputs = self.forest.base + (codes == 0).T @ self._values
            chosen = np.asarray(choose(outputs), np.int64)
            rows = np.arange(start, start + len(chosen))
            column[rows] = chosen
            raw[rows] = outputs[np.arange(len(chosen)), chosen]
            for k in np.unique(chosen):
                mine = np.flatnonzero(chosen == k)
                for s in range(0, len(mine), sub):
                    part = mine[s : s + sub]
                    phi = np.zeros((self.forest.n_features, len(part)))
                    part_codes = codes[:, part] if len(part) < codes.shape[1] else codes
                    for kernel in self._kernels_for(int(k)):
                        kernel.add(part_codes, phi, buffers)
                    values[rows[part]] = phi.T
        return values, column, self.expected[column], raw


def _narrowest(width: np.ndarray, max_bits: int, max_entries: int, allowed: np.ndarray,
               entries: np.ndarray | None = None) -> np.ndarray:
    """Allowed leaves with at most `max_bits` path features, narrowest first, within `max_entries`."""
    entries = (1 << np.minimum(width, 62)) if entries is None else entries
    size = np.where(allowed & (width <= max_bits), entries, np.iinfo(np.int64).max // 2)
    order = np.argsort(size, kind="stable")
    chosen = np.zeros(len(width), bool)
    fits = (np.cumsum(size[order].astype(np.float64)) <= max_entries) & (size[order] < np.iinfo(np.int64).max // 2)
    chosen[order[fits]] = True
    return chosen
