"""Drift statistics of a window's histogram against the reference profile's, on the same bins.

Every function takes two count vectors over the same bins (the reference's and the window's) and
returns None when the data defines no value (an empty side, fewer than two bins with data). Bins that
are empty on both sides take no part. With p the reference proportions and q the window's:

* population stability index: ``PSI = sum_b (q_b - p_b) ln(q_b / p_b)``, an empty bin on one side
  counting as a proportion of `PSI_EPSILON` (evidently's convention while every proportion that is not
  zero exceeds it). Rules of thumb: < 0.1 stable, 0.1 to 0.2 moderate, > 0.2 a significant shift.
* Jensen–Shannon distance: the square root of the JS divergence, base 2, so in [0, 1]
  (``scipy.spatial.distance.jensenshannon(p, q, base=2)``).
* Wasserstein distance (binned, in the feature's unit): the earth mover's distance between the two
  histograms with each value bin placed at its `position` (the reference mean within it), the missing
  bin left out (``scipy.stats.wasserstein_distance(positions, positions, p, q)``).
* χ² test p-value (categorical features): Pearson's χ² test of homogeneity on the 2 × bins table of
  counts, without continuity correction (``scipy.stats.chi2_contingency(..., correction=False)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.special import chdtrc

from otel_rai import semconv
from otel_rai.errors import InputError

#: The proportion an empty bin counts as in the PSI (otherwise the logarithm is infinite).
PSI_EPSILON = 1e-4


def _pair(reference: Sequence[float], current: Sequence[float]) -> tuple[np.ndarray, np.ndarray] | None:
    """Both count vectors over the bins that hold data on either side; None if a side is empty."""
    ref = np.asarray(reference, np.float64)
    cur = np.asarray(current, np.float64)
    if ref.shape != cur.shape:
        raise InputError(f"histograms of {len(ref)} and {len(cur)} bins cannot be compared")
    used = (ref > 0) | (cur > 0)
    ref, cur = ref[used], cur[used]
    if ref.sum() <= 0 or cur.sum() <= 0:
        return None
    return ref, cur


def psi(reference: Sequence[float], current: Sequence[float]) -> float | None:
    """Population stability index of the window (`current`) against the reference."""
    pair = _pair(reference, current)
    if pair is None:
        return None
    p, q = (np.where(c > 0, c / c.sum(), PSI_EPSILON) for c in pair)
    return float(((q - p) * np.log(q / p)).sum())


def js_distance(reference: Sequence[float], current: Sequence[float]) -> float | None:
    """Jensen–Shannon distance, base 2."""
    pair = _pair(reference, current)
    if pair is None:
        return None
    p, q = (c / c.sum() for c in pair)
    m = (p + q) / 2
    divergence = 0.5 * (_kl(p, m) + _kl(q, m))
    return float(np.sqrt(max(divergence, 0.0) / np.log(2)))


def _kl(a: np.ndarray, b: np.ndarray) -> float:
    nonzero = a > 0
    return float((a[nonzero] * np.log(a[nonzero] / b[nonzero])).sum())


def wasserstein(positions: Sequence[float], reference: Sequence[float], current: Sequence[float]) -> float | None:
    """Binned Wasserstein-1 distance: value bin i at `positions[i]` (ascending); counts beyond the
    positions (the missing bin) take no part."""
    x = np.asarray(positions, np.float64)
    m = len(x)
    ref = np.asarray(reference, np.float64)[:m]
    cur = np.asarray(current, np.float64)[:m]
    if ref.sum() <= 0 or cur.sum() <= 0:
        return None
    order = np.argsort(x, kind="stable")
    x, ref, cur = x[order], ref[order], cur[order]
    gap = np.cumsum(ref / ref.sum() - cur / cur.sum())[:-1]
    return float(np.abs(gap) @ np.diff(x))


def chi2_pvalue(reference: Sequence[float], current: Sequence[float]) -> float | None:
    """P-value of Pearson's χ² test that both samples come from one distribution over the bins."""
    pair = _pair(reference, current)
    if pair is None or len(pair[0]) < 2:
        return None
    table = np.vstack(pair)
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    statistic = float(((table - expected) ** 2 / expected).sum())
    return float(chdtrc(table.shape[1] - 1, statistic))


@dataclass(frozen=True)
class Drift:
    """The drift figures of one feature (None where not defined for its kind or data)."""

    feature: str
    kind: str
    psi: float | None
    js_distance: float | None
    wasserstein: float | None
    chi2_pvalue: float | None
    missing_rate_reference: float | None
    missing_rate_current: float | None
    rows: int


def _missing_rate(counts: np.ndarray) -> float | None:
    total = counts.sum()
    return float(counts[-1] / total) if total else None


def figures(feature: str, kind: str, reference: Sequence[int], current: Sequence[int],
            positions: Sequence[float] = ()) -> Drift:
    """Every statistic of one feature: `reference` and `current` count its bins, the last one being
    the missing bin; `positions` place the value bins of a numeric feature."""
    ref = np.asarray(reference, np.float64)
    cur = np.asarray(current, np.float64)
    numeric = kind == semconv.DRIFT_KIND_NUMERIC
    return Drift(
        feature=feature,
        kind=kind,
        psi=psi(ref, cur),
        js_distance=js_distance(ref, cur),
        wasserstein=wasserstein(positions, ref, cur) if numeric and len(positions) else None,
        chi2_pvalue=None if numeric else chi2_pvalue(ref, cur),
        missing_rate_reference=_missing_rate(ref),
        missing_rate_current=_missing_rate(cur),
        rows=int(cur.sum()),
    )
