"""How finely a model's attributions may be published: the grid of ``ml.explanation.top``.

A reader who knows a linear model recovers ``x_j = mean_j + φ_j / coef_j`` from an exact attribution
``φ_j``. So by default the published values lie on a grid: each is the exact one rounded away from zero
to a multiple of the model's step ``q`` (`codec.reasons.encode_top`), which keeps every sign and the
top-k order (ties aside), and never turns a reason into a zero. ``q`` is the largest spread (max − min)
of any one feature's attributions over reference rows, divided by `GRID_STEPS`: for a linear model,
``q / |coef_j|`` is at least 1/`GRID_STEPS` of feature j's range in those rows, so a published value
places ``x_j`` only within 2 % of its reference range (an estimate is off by up to 1 %), however much the
reader knows about the model.

Reference rows: the model's registered background (up to `REFERENCE_ROWS` of them, evenly spaced;
`AGNOSTIC_REFERENCE_ROWS` for the model-agnostic methods, whose rows cost thousands of model calls).
A tree ensemble without background gets a bound that needs no data: in one tree, a TreeSHAP value lies
within ± the tree's leaf range, a Saabas value within that times the feature's splits on a path; the
spread of feature j is at most twice the sum over the trees that split on j. Without either, there is
no step (`None`): the entries carry ranks and signs only.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np

from otel_rai.explanations import saabas, trees
from otel_rai.explanations.sampling import AgnosticExplainer

#: Grid steps across the widest attribution spread: 50, so that a value is known to 2 % of its range.
GRID_STEPS = 50
REFERENCE_ROWS = 256
AGNOSTIC_REFERENCE_ROWS = 16

_steps: weakref.WeakKeyDictionary[Any, float | None] = weakref.WeakKeyDictionary()


def step(explainer: Any, background: Any) -> float | None:
    """The grid step of `explainer`'s published attributions (see the module docstring); cached."""
    try:
        return _steps[explainer]
    except (KeyError, TypeError):
        pass
    found = _from_reference(explainer, background) if background is not None else _tree_bound(explainer)
    try:
        _steps[explainer] = found
    except TypeError:  # not weak-referenceable: computed again next time
        pass
    return found


def _sample(background: Any, n: int) -> Any:
    rows = len(background)
    if rows <= n:
        return background
    at = np.linspace(0, rows - 1, n).round().astype(np.int64)
    return background.iloc[at] if hasattr(background, "iloc") else np.asarray(background)[at]


def _from_reference(explainer: Any, background: Any) -> float | None:
    n = AGNOSTIC_REFERENCE_ROWS if isinstance(explainer, AgnosticExplainer) else REFERENCE_ROWS
    values = np.asarray(explainer.explain(_sample(background, n)).values, np.float64)
    if values.size == 0:
        return None
    spread = float(np.nanmax(values.max(axis=0) - values.min(axis=0)))
    return spread / GRID_STEPS if spread > 0 and np.isfinite(spread) else None


def _tree_bound(explainer: Any) -> float | None:
    """Twice the largest per-feature sum of leaf ranges, over the trees that split on the feature
    (times the most splits on it along one path, for Saabas), divided by `GRID_STEPS`."""
    if not isinstance(explainer, trees.TreeExplainer):
        return None
    forest = explainer.forest
    sizes = np.diff(np.append(forest.roots, len(forest.left)))
    tree_of = np.repeat(np.arange(len(sizes)), sizes)
    leaf = forest.left < 0
    high = np.full(len(sizes), -np.inf)
    low = np.full(len(sizes), np.inf)
    np.maximum.at(high, tree_of[leaf], forest.value[leaf].max(axis=1))
    np.minimum.at(low, tree_of[leaf], forest.value[leaf].min(axis=1))
    leaf_range = np.where(high >= low, high - low, 0.0)
    n_features = int(max(forest.n_features, forest.feature.max() + 1))
    if explainer.method == saabas.METHOD:
        tree, feature, count = _path_counts(forest, n_features)
    else:  # TreeSHAP: once per tree that splits on the feature
        pairs = np.unique(tree_of[~leaf] * n_features + forest.feature[~leaf])
        tree, feature, count = pairs // n_features, pairs % n_features, np.ones(len(pairs))
    bound = np.zeros(n_features)
    np.add.at(bound, feature, 2 * leaf_range[tree] * count)
    largest = float(bound.max()) if bound.size else 0.0
    return largest / GRID_STEPS if largest > 0 else None


def _path_counts(forest: Any, n_features: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tree, feature, most splits on the feature along one root-to-leaf path of the tree)."""
    most: dict[tuple[int, int], int] = {}
    left, right, feature = forest.left.tolist(), forest.right.tolist(), forest.feature.tolist()
    for tree, root in enumerate(forest.roots.tolist()):
        stack: list[tuple[int, dict[int, int]]] = [(root, {})]
        while stack:
            node, on_path = stack.pop()
            if left[node] < 0:
                for f, count in on_path.items():
                    if most.get((tree, f), 0) < count:
                        most[(tree, f)] = count
                continue
            below = {**on_path, feature[node]: on_path.get(feature[node], 0) + 1}
            stack += [(left[node], below), (right[node], below)]
    keys = np.array(list(most), dtype=np.int64).reshape(-1, 2)
    return keys[:, 0], keys[:, 1], np.array(list(most.values()), np.float64)
