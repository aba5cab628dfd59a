"""Reference profiles: bin edges and counts of the reference data, and the binning of live rows.

A profile holds, per feature, its bins and the reference's count in each, never a row:

* a numeric feature (a number dtype) gets ``numeric_bins`` (10) quantile bins: the interior edges are
  the reference's deciles, rounded to ``edge_digits`` (3) significant digits, duplicates merged. Value
  bin i holds ``edges[i-1] <= x < edges[i]``, the first and last bins are open. Each value bin also has
  a position, the reference mean within it (where the binned Wasserstein distance places it);
* a categorical feature (strings, booleans, categories, anything else) keeps its ``top_k`` (10) most
  frequent values by name; the others share the bin "other";
* every feature ends with a missing bin (None, NaN, NA), so the profile holds its missing rate too;
* the model's output gets the same treatment: the predicted class (one bin per class) or, for a
  regressor, the predicted value; and the score, the probability of the positive class (binary) or of
  the predicted class (multi-class).

Edges and positions are aggregates of the reference data, not rows: with few rows or a discrete feature
a decile edge can equal an actual value. They are kept in the process and in the local audit store's
drift snapshots only (never on a span or a metric); coarsen them with fewer `numeric_bins` or
`edge_digits`. Category names are kept in the process only.
"""

from __future__ import annotations

import collections
import functools
import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from otel_rai import semconv

NUMERIC = semconv.DRIFT_KIND_NUMERIC
CATEGORICAL = semconv.DRIFT_KIND_CATEGORICAL
#: Up to this many cells, a DataFrame's values are read in one conversion to objects rather than per column.
_SMALL_FRAME_CELLS = 4096
#: An object column is numeric when its first this-many present values are all numbers.
_KIND_SAMPLE = 1000
#: Block layouts remembered (a service sees a few DataFrame layouts; each plan is a handful of slices).
_BLOCK_PLANS = 1024
#: Up to this many rows, an Arrow-backed column is read as a Python list (its array conversion costs more).
_FEW_ROWS = 8
#: Up to this many rows, numeric bins are found by one comparison against every edge at once.
_BROADCAST_ROWS = 8
#: Up to this many edges a feature, more rows are binned one edge at a time over the whole matrix (a
#: feature's bin counts the edges at or below its value); with more edges a binary search a column costs less.
_EDGE_PASSES = 24


@dataclass(frozen=True)
class FeatureProfile:
    """The bins of one feature and the reference's count in each; the missing bin is the last."""

    name: str
    kind: str
    counts: tuple[int, ...]
    edges: tuple[float, ...] = ()  # numeric: interior edges, ascending
    positions: tuple[float, ...] = ()  # numeric: where each value bin sits
    categories: tuple[str, ...] = ()  # categorical: the named values (in this process only)

    @property
    def bins(self) -> int:
        return len(self.counts)

    @property
    def rows(self) -> int:
        return sum(self.counts)


@dataclass(frozen=True)
class Profile:
    """The reference of one model version: its features, then its prediction and score, if any."""

    features: tuple[FeatureProfile, ...]
    prediction: FeatureProfile | None = None
    score: FeatureProfile | None = None
    rows: int = 0
    source: str = "reference"

    def subjects(self) -> tuple[FeatureProfile, ...]:
        """Every profiled distribution: the features, the prediction, the score."""
        return self.features + tuple(p for p in (self.prediction, self.score) if p is not None)

    def nbytes(self) -> int:
        """Approximate memory of the profile's numbers (what it holds per bin)."""
        return sum(8 * (len(f.counts) + len(f.edges) + len(f.positions)) for f in self.subjects())


# --- values -----------------------------------------------------------------------------------------


def is_missing(value: Any) -> bool:
    """None, NaN, pandas NA/NaT."""
    if value is None:
        return True
    try:
        return bool(value != value)
    except (TypeError, ValueError):  # pandas NA raises on bool()
        return True


def label(value: Any) -> str:
    """A categorical value as the text the profile compares."""
    return value if type(value) is str else str(value)


def is_numeric_dtype(dtype: Any) -> bool:
    """A number dtype (numpy or pandas nullable); booleans are categorical."""
    return getattr(dtype, "kind", "O") in "iuf"


def as_float(column: np.ndarray) -> np.ndarray:
    """A numeric column as float64, missing values as NaN."""
    if column.dtype.kind in "iuf":
        return column.astype(np.float64, copy=False)
    try:
        return column.astype(np.float64)
    except (TypeError, ValueError):
        return np.array([math.nan if is_missing(v) else float(v) for v in column], np.float64)


def coarsen(values: np.ndarray, digits: int | None) -> np.ndarray:
    """`values` rounded to `digits` significant digits (None: unchanged)."""
    if digits is None or not len(values):
        return values
    finite = np.isfinite(values) & (values != 0)
    out = values.copy()
    magnitude = np.floor(np.log10(np.abs(values[finite])))
    scale = 10.0 ** (digits - 1 - magnitude)
    out[finite] = np.round(values[finite] * scale) / scale
    return out


# --- building -----------------------------------------------------------------------------------------


def bin_numeric(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The bin of each value: value bins 0..len(edges), then the missing bin."""
    bins = np.searchsorted(edges, values, side="right")
    bins[np.isnan(values)] = len(edges) + 1
    return bins


def numeric(name: str, values: np.ndarray, bins: int, digits: int | None) -> FeatureProfile:
    """Quantile bins of a numeric feature."""
    values = np.asarray(values, np.float64)
    finite = values[np.isfinite(values)]
    edges = np.empty(0)
    if len(finite):
        quantiles = np.quantile(finite, np.linspace(0.0, 1.0, bins + 1)[1:-1])
        edges = np.unique(coarsen(quantiles, digits))
    index = bin_numeric(values, edges)
    counts = np.bincount(index, minlength=len(edges) + 2)
    finite_index = index[np.isfinite(values)]
    sums = np.bincount(finite_index, weights=values[np.isfinite(values)], minlength=len(edges) + 1)
    held = np.bincount(finite_index, minlength=len(edges) + 1)
    positions = [sums[i] / held[i] if held[i] else _midpoint(edges, i) for i in range(len(edges) + 1)]
    return FeatureProfile(name, NUMERIC, tuple(int(c) for c in counts), tuple(float(e) for e in edges),
                          tuple(float(p) for p in coarsen(np.asarray(positions, np.float64), digits)))


def _midpoint(edges: np.ndarray, i: int) -> float:
    """Where a value bin with no reference value sits: between its edges (an open bin: at its edge)."""
    if not len(edges):
        return 0.0
    if i == 0:
        return float(edges[0])
    if i == len(edges):
        return float(edges[-1])
    return float(edges[i - 1] + edges[i]) / 2


def categorical(name: str, values: Iterable[Any], top_k: int,
                categories: Sequence[str] | None = None) -> FeatureProfile:
    """The `top_k` most frequent values of a categorical feature by name (ties: in text order), or the
    given `categories`; then "other" and missing."""
    counter: collections.Counter[str] = collections.Counter()
    missing = 0
    for v in values:
        if is_missing(v):
            missing += 1
        else:
            counter[label(v)] += 1
    if categories is None:
        categories = [c for c, _ in sorted(counter.items(), key=lambda item: (-item[1], item[0]))[:top_k]]
    named = [counter.get(c, 0) for c in categories]
    other = sum(counter.values()) - sum(named)
    return FeatureProfile(name, CATEGORICAL, (*named, other, missing), categories=tuple(categories))


# --- reading inputs -----------------------------------------------------------------------------------


def feature_names(X: Any, known: Sequence[str] | None) -> list[str] | None:
    """The names of an input's columns: a DataFrame's, else the model's ``feature_names_in_``, else
    ``x0``, ``x1``, ... for a 2-D array; None for anything else."""
    columns = getattr(X, "columns", None)
    if columns is not None:
        return [str(c) for c in columns]
    width = _width(X)
    if width is None:
        return None
    if known is not None and len(known) == width:
        return list(known)
    return [f"x{j}" for j in range(width)]


def _width(X: Any) -> int | None:
    shape = getattr(X, "shape", None)
    if shape is not None:
        return int(shape[1]) if len(shape) == 2 else None
    try:
        first = X[0]
        return len(first) if not isinstance(first, (str, bytes)) else None
    except (TypeError, IndexError, KeyError):
        return None


def kinds(X: Any, names: Sequence[str]) -> list[str]:
    """NUMERIC or CATEGORICAL per column of `X`, from its dtypes (an object column: from its values)."""
    dtypes = getattr(X, "dtypes", None)
    if dtypes is not None:
        return [NUMERIC if is_numeric_dtype(d) else _kind_of_values(X.iloc[:, j].to_numpy())
                for j, d in enumerate(dtypes)]
    a = np.asarray(X) if hasattr(X, "shape") else np.array(X, dtype=object)
    if a.dtype.kind in "iuf":
        return [NUMERIC] * len(names)
    return [_kind_of_values(a[:, j]) for j in range(a.shape[1])]


def _kind_of_values(column: np.ndarray) -> str:
    if is_numeric_dtype(column.dtype):
        return NUMERIC
    present = [v for v in column[:_KIND_SAMPLE] if not is_missing(v)]
    numbers = present and all(
        isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_)) for v in present)
    return NUMERIC if numbers else CATEGORICAL


def matrices(X: Any, numeric_at: Sequence[int], categorical_at: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(float64 rows × numeric columns, object rows × categorical columns) of an input, the columns
    taken at the given positions."""
    if hasattr(X, "iloc") and hasattr(X, "columns"):
        return _frame_matrices(X, numeric_at, categorical_at)
    a = X if isinstance(X, np.ndarray) else np.array(X, dtype=object)
    if a.ndim != 2:
        raise ValueError(f"otel-rai: cannot profile a {a.ndim}-D input")
    if a.dtype.kind in "iuf":
        return a[:, list(numeric_at)].astype(np.float64), a[:, list(categorical_at)].astype(object)
    num = np.empty((a.shape[0], len(numeric_at)))
    for i, j in enumerate(numeric_at):
        num[:, i] = as_float(a[:, j])
    return num, a[:, list(categorical_at)].astype(object)


def _frame_matrices(df: Any, numeric_at: Sequence[int], categorical_at: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    read = _block_matrices(df, numeric_at, categorical_at)
    return read if read is not None else _column_matrices(df, numeric_at, categorical_at)


def _column_matrices(df: Any, numeric_at: Sequence[int],
                     categorical_at: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """The matrices of a DataFrame through its public API."""
    n = len(df)
    if not categorical_at and all(map(is_numeric_dtype, df.dtypes)):
        return df.to_numpy(dtype=np.float64, na_value=np.nan)[:, list(numeric_at)], np.empty((n, 0), object)
    if df.size <= _SMALL_FRAME_CELLS:  # a request-sized frame: one conversion beats a Series per column
        cells = df.to_numpy(dtype=object)
        num = np.empty((n, len(numeric_at)))
        for i, j in enumerate(numeric_at):
            num[:, i] = as_float(cells[:, j])
        return num, cells[:, list(categorical_at)]
    num = np.empty((n, len(numeric_at)))
    for i, j in enumerate(numeric_at):
        num[:, i] = df.iloc[:, j].to_numpy(dtype=np.float64, na_value=np.nan)
    cat = np.empty((n, len(categorical_at)), object)
    for i, j in enumerate(categorical_at):
        cat[:, i] = df.iloc[:, j].to_numpy(dtype=object)
    return num, cat


Columns = slice | np.ndarray


def _span(index: np.ndarray) -> Columns:
    """`index` as a slice when it is a run of consecutive positions (views instead of copies)."""
    if len(index) and np.array_equal(index, np.arange(index[0], index[0] + len(index))):
        return slice(int(index[0]), int(index[0]) + len(index))
    return index


@functools.lru_cache(maxsize=_BLOCK_PLANS)
def _block_plan(width: int, numeric_at: tuple[int, ...], categorical_at: tuple[int, ...],
                placement: bytes) -> tuple[tuple[Columns, Columns] | None, tuple[Columns, Columns] | None]:
    """For a block holding the input columns `placement` (int64 bytes): which of its rows go to which
    numeric and categorical matrix columns, as (source, destination), or None."""
    locs = np.frombuffer(placement, np.int64)
    plans = []
    for wanted in (numeric_at, categorical_at):
        destination = np.full(width, -1, np.int64)
        destination[list(wanted)] = np.arange(len(wanted))
        to = destination[locs]
        chosen = np.flatnonzero(to >= 0)
        plans.append((_span(chosen), _span(to[chosen])) if len(chosen) else None)
    return plans[0], plans[1]


def _put_block(values: np.ndarray, numeric: tuple[Columns, Columns] | None, categorical: tuple[Columns, Columns] | None,
               num: np.ndarray, cat: np.ndarray) -> None:
    """Copy a 2-D block (a row per column, as pandas keeps them) into the matrices, by its plan."""
    if numeric is not None:
        part = values[numeric[0]]
        num[:, numeric[1]] = (part if part.dtype.kind in "iuf" else
                              np.array([as_float(c) for c in part]).reshape(part.shape)).T
    if categorical is not None:
        cat[:, categorical[1]] = values[categorical[0]].T


def _block_matrices(df: Any, numeric_at: Sequence[int],
                    categorical_at: Sequence[int]) -> tuple[np.ndarray, np.ndarray] | None:
    """The matrices read from the DataFrame's blocks (its columns grouped by dtype) without building a Series
    per column or converting the whole frame to objects: for a request-sized frame this is a few µs instead
    of tens. The block layout is pandas' internal API: None when it is not there as expected, and the public
    path reads the frame instead (tests/test_monitoring_drift.py checks that both agree)."""
    try:
        blocks = [(b.mgr_locs.as_array, b.values) for b in df._mgr.blocks]
    except AttributeError:
        return None
    n, width = df.shape
    numeric_at, categorical_at = tuple(numeric_at), tuple(categorical_at)
    num = np.empty((n, len(numeric_at)))
    cat = np.empty((n, len(categorical_at)), object)
    for locs, values in blocks:
        numeric, categorical = _block_plan(width, numeric_at, categorical_at, locs.astype(np.int64).tobytes())
        if not isinstance(values, np.ndarray) and getattr(values, "ndim", 1) == 2:
            values = np.asarray(values, dtype=object)  # a 2-D extension block (datetimes)
        if isinstance(values, np.ndarray) and values.ndim == 2:
            _put_block(values, numeric, categorical, num, cat)
        elif len(locs) == 1:  # an extension array: one column
            if numeric is not None:
                num[:, numeric[1]] = values.to_numpy(dtype=np.float64, na_value=np.nan)[:, None]
            if categorical is not None:
                if n <= _FEW_ROWS and hasattr(values, "__arrow_array__"):  # Arrow strings: a list is cheaper
                    cat[:, categorical[1]] = np.array(values.__arrow_array__().to_pylist(), dtype=object)[:, None]
                else:
                    cat[:, categorical[1]] = np.asarray(values, dtype=object)[:, None]
        else:
            return None
    return num, cat


def read_frames(frames: Sequence[Any], numeric_at: Sequence[int],
                categorical_at: Sequence[int]) -> tuple[np.ndarray, np.ndarray] | None:
    """The matrices of several DataFrames with the same columns, their rows in order, read block by block
    across frames: the work per frame is a look at its blocks (about a µs); the copies and conversions
    happen once for all of them. None when their blocks are not laid out alike (then read them one by
    one, with `matrices`). Internal pandas layout, as in `_block_matrices`."""
    try:
        layouts = [[(b.mgr_locs.as_array, b.values) for b in f._mgr.blocks] for f in frames]
    except AttributeError:
        return None
    keys = [np.asarray(locs, np.int64).tobytes() for locs, _ in layouts[0]]
    for blocks in layouts[1:]:
        if len(blocks) != len(keys) or any(np.asarray(locs, np.int64).tobytes() != key
                                           for (locs, _), key in zip(blocks, keys)):
            return None
    width = frames[0].shape[1]
    numeric_at, categorical_at = tuple(numeric_at), tuple(categorical_at)
    n = sum(len(f) for f in frames)
    num = np.empty((n, len(numeric_at)))
    cat = np.empty((n, len(categorical_at)), object)
    for b, key in enumerate(keys):
        numeric, categorical = _block_plan(width, numeric_at, categorical_at, key)
        if numeric is None and categorical is None:
            continue
        parts = [blocks[b][1] for blocks in layouts]
        if all(isinstance(v, np.ndarray) and v.ndim == 2 for v in parts):
            _put_block(np.concatenate(parts, axis=1), numeric, categorical, num, cat)
        elif all(getattr(v, "ndim", 0) == 1 for v in parts):  # extension arrays: one column each
            if numeric is not None:
                num[:, numeric[1]] = np.concatenate(
                    [v.to_numpy(dtype=np.float64, na_value=np.nan) for v in parts])[:, None]
            if categorical is not None:
                if all(hasattr(v, "__arrow_array__") for v in parts) and n <= _FEW_ROWS * len(parts):
                    items = [x for v in parts for x in v.__arrow_array__().to_pylist()]
                    column = np.empty(n, object)
                    column[:] = items
                else:
                    column = np.concatenate([np.asarray(v, dtype=object) for v in parts])
                cat[:, categorical[1]] = column[:, None]
        else:
            return None
    return num, cat


# --- binning live rows --------------------------------------------------------------------------------


class Binner:
    """Bins the rows of one input layout against a profile's features: one bincount a batch.

    `numeric_at` and `categorical_at` are the input columns of the profile's numeric and categorical
    features, in the profile's order of each kind.
    """

    def __init__(self, features: Sequence[FeatureProfile]) -> None:
        self.features = tuple(features)
        self.numeric = [i for i, f in enumerate(self.features) if f.kind == NUMERIC]
        self.categorical = [i for i, f in enumerate(self.features) if f.kind == CATEGORICAL]
        widest = max((len(self.features[i].edges) for i in self.numeric), default=0)
        self._edges = np.full((len(self.numeric), widest), np.inf)
        for row, i in enumerate(self.numeric):
            edges = self.features[i].edges
            self._edges[row, : len(edges)] = edges
        self._n_edges = np.array([len(self.features[i].edges) for i in self.numeric], np.int64)
        self._edge_rows = np.ascontiguousarray(self._edges.T)  # the k-th edge of every feature, a row each
        self._lookup = [{c: k for k, c in enumerate(self.features[i].categories)} for i in self.categorical]
        sizes = np.array([f.bins for f in self.features], np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.total_bins = int(sizes.sum())

    def bin(self, numeric_values: np.ndarray, categorical_values: np.ndarray) -> np.ndarray:
        """Rows × features bin indices, offset into one flat histogram of every feature's bins."""
        return self.local(numeric_values, categorical_values) + self.offsets

    def local(self, numeric_values: np.ndarray, categorical_values: np.ndarray) -> np.ndarray:
        """Rows × features bin indices, each feature's own (its first bin 0)."""
        if self.numeric and not self.categorical:  # the numeric pass's columns are then the features', in order
            return self._bin_numeric(numeric_values)
        n = len(numeric_values) if len(self.numeric) else len(categorical_values)
        out = np.empty((n, len(self.features)), np.int64)
        if self.numeric:
            out[:, self.numeric] = self._bin_numeric(numeric_values)
        for col, (i, lookup) in enumerate(zip(self.categorical, self._lookup)):
            other, missing = len(lookup), len(lookup) + 1
            out[:, i] = [missing if is_missing(v) else lookup.get(label(v), other) for v in categorical_values[:, col]]
        return out

    def _bin_numeric(self, values: np.ndarray) -> np.ndarray:
        # Three ways to the same bins, by cost: one broadcast comparison for a few rows, one pass an edge
        # (counted in int8: at most _EDGE_PASSES) for more, a binary search a column for many edges.
        if len(values) <= _BROADCAST_ROWS:
            bins = (values[:, :, None] >= self._edges[None, :, :]).sum(axis=2)
        elif len(self._edge_rows) <= _EDGE_PASSES:
            counted = np.zeros(values.shape, np.int8)
            for edges in self._edge_rows:
                counted += values >= edges
            bins = counted.astype(np.int64)
        else:  # a feature a row, which each search then writes in one piece (transposed back)
            bins = np.empty(values.shape[::-1], np.int64)
            for col in range(values.shape[1]):
                bins[col] = np.searchsorted(self._edges[col, : self._n_edges[col]], values[:, col], side="right")
            bins = bins.T
        bins = np.minimum(bins, self._n_edges)  # +inf pads the edges; an infinite value stays in the last bin
        missing = np.isnan(values)
        return np.where(missing, self._n_edges + 1, bins) if missing.any() else bins

    def histogram(self, flat_bins: np.ndarray) -> np.ndarray:
        """The flat histogram (every feature's bins, in order) of binned rows."""
        return np.bincount(flat_bins.ravel(), minlength=self.total_bins)

    def split(self, histogram: np.ndarray) -> list[np.ndarray]:
        """A flat histogram as one count vector per feature."""
        return np.split(histogram, self.offsets[1:])
