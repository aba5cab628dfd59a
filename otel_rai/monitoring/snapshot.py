"""Drift snapshots: the reference and window histograms of a model version, written down.

The live monitor writes one per model version every ``snapshot_interval`` seconds in which its window
changed, and when the session closes, to the local audit store's ``drift_snapshots`` table (local only,
like the ground truths: never a span, never exported). ``otel-rai monitor`` and the report recompute the
drift table from them with the live monitor's functions (`otel_rai.monitoring.drift`). A snapshot holds
bin counts, and the edges and positions of numeric features (aggregates of the reference data, see
`otel_rai.monitoring.profile`); no category names and no rows. It is a JSON object whose keys are the
``ml.drift.*`` names of `otel_rai.semconv`; the per-feature arrays are concatenated in the order of
``ml.drift.features``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from otel_rai import semconv
from otel_rai.errors import InputError
from otel_rai.monitoring import drift
from otel_rai.monitoring.profile import NUMERIC, FeatureProfile


@dataclass(frozen=True)
class Histogram:
    """One feature of a snapshot: its bins, with the reference's and the window's counts."""

    feature: str
    kind: str
    reference: tuple[int, ...]
    current: tuple[int, ...]
    edges: tuple[float, ...] = ()
    positions: tuple[float, ...] = ()

    def drift(self) -> drift.Drift:
        return drift.figures(self.feature, self.kind, self.reference, self.current, self.positions)


def record(model: str, version: str, source: str, subjects: Sequence[FeatureProfile],
           current: Sequence[np.ndarray]) -> dict[str, Any]:
    """The snapshot of `subjects` (the profile) with the window's `current` counts."""
    numeric = [s for s in subjects if s.kind == NUMERIC]
    return {
        semconv.MODEL_NAME: model,
        semconv.MODEL_VERSION: version,
        semconv.DRIFT_REFERENCE_SOURCE: source,
        semconv.DRIFT_FEATURES: [s.name for s in subjects],
        semconv.DRIFT_KINDS: [s.kind for s in subjects],
        semconv.DRIFT_BINS: [s.bins for s in subjects],
        semconv.DRIFT_EDGES: [e for s in numeric for e in s.edges],
        semconv.DRIFT_POSITIONS: [p for s in numeric for p in s.positions],
        semconv.DRIFT_REFERENCE_COUNTS: [c for s in subjects for c in s.counts],
        semconv.DRIFT_CURRENT_COUNTS: [int(c) for counts in current for c in counts],
    }


def read(a: Mapping[str, Any]) -> list[Histogram]:
    """The histograms a snapshot holds; `InputError` if they do not add up."""
    names = list(a[semconv.DRIFT_FEATURES])
    kinds = list(a[semconv.DRIFT_KINDS])
    bins = [int(b) for b in a[semconv.DRIFT_BINS]]
    reference = [int(c) for c in a[semconv.DRIFT_REFERENCE_COUNTS]]
    current = [int(c) for c in a[semconv.DRIFT_CURRENT_COUNTS]]
    edges = [float(e) for e in a.get(semconv.DRIFT_EDGES) or ()]
    positions = [float(p) for p in a.get(semconv.DRIFT_POSITIONS) or ()]
    if not (len(names) == len(kinds) == len(bins)) or len(reference) != sum(bins) or len(current) != sum(bins):
        raise InputError("a drift snapshot's arrays do not add up")
    out, at, e_at, p_at = [], 0, 0, 0
    for name, kind, n in zip(names, kinds, bins):
        ref, cur = tuple(reference[at : at + n]), tuple(current[at : at + n])
        at += n
        if kind == NUMERIC:
            values = n - 1  # the value bins; edges between them
            out.append(Histogram(name, kind, ref, cur, tuple(edges[e_at : e_at + values - 1]),
                                 tuple(positions[p_at : p_at + values])))
            e_at += values - 1
            p_at += values
        else:
            out.append(Histogram(name, kind, ref, cur))
    if e_at != len(edges) or p_at != len(positions):
        raise InputError("a drift snapshot's edges do not match its bins")
    return out
