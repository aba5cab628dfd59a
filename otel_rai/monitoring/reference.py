"""Where a model version's reference comes from, and how its profile is built.

In order of preference:

1. ``register_model(model, reference=X, reference_labels=y)``: data the user chose (a validation set);
   with labels, its quality is also the baseline of the quality alerts;
2. the data of the model's outermost fit under ``instrument()`` (`MonitoringConfig.capture_at_fit`): the
   fit observer keeps a sample of at most ``max_reference_rows`` rows, tied to the estimator (dropped
   with it), until its first decision turns it into a profile (kept instead). The training labels are
   not used as a baseline: a model scores better on its own training data than it ever will live;
3. ``register_model(model, background=X)``, the explainers' reference rows.

The profile is built on the audit worker at the model version's first decision: quantiles over the
sample, and the model's outputs on it (run with recording off), costing about a predict of the sample.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from otel_rai import semconv
from otel_rai.audit.outputs import SCORED
from otel_rai.capture.models import ModelInfo
from otel_rai.capture.recorder import run_quietly
from otel_rai.monitoring import profile as profiles
from otel_rai.monitoring.profile import FeatureProfile, Profile
from otel_rai.monitoring.quality import Classes
from otel_rai.settings import MonitoringConfig

_log = logging.getLogger(__name__)

#: Seed of the reference sample: the same data gives the same profile.
_SAMPLE_SEED = 0


@dataclass(frozen=True)
class Outputs:
    """A call's outputs as the monitor counts them: class indices (classifiers) or values (regressors),
    and per-class probabilities when the call returned them."""

    predicted: np.ndarray | None  # class index per row (-1: not a class), or None
    values: np.ndarray | None  # a regressor's prediction per row
    proba: np.ndarray | None  # rows × classes


def output_kind(operation: str, output: Any, classes: Classes | None, regressor: bool, rows: int) -> str | None:
    """The operation whose output `decode` reads, when this call's output has the shape it expects for
    `rows` decisions; None for outputs the monitor does not count (multi-output, ``score_samples``, a
    model that is neither classifier nor regressor, a length that does not match)."""
    shape = getattr(output, "shape", None)
    if shape is None or not shape or shape[0] != rows:
        return None
    if classes is not None:
        k = len(classes)
        if operation in ("predict_proba", "predict_log_proba", "decision_function") and shape[1:] == (k,):
            return operation
        if operation == "decision_function" and len(shape) == 1 and k == 2:
            return operation
        return operation if operation == "predict" and len(shape) == 1 else None
    if regressor and operation == "predict" and len(shape) == 1 and output.dtype.kind in "biuf":
        return operation
    return None


def decode(operation: str, output: Any, classes: Classes | None, regressor: bool) -> Outputs | None:
    """What a call's output says about its decisions; None for outputs the monitor does not count
    (multi-output, ``score_samples``, a model that is neither classifier nor regressor)."""
    if isinstance(output, list) and output and isinstance(output[0], np.ndarray):
        return None
    out = np.asarray(output)
    if classes is not None:
        k = len(classes)
        if operation in ("predict_proba", "predict_log_proba") and out.ndim == 2 and out.shape[1] == k:
            proba = np.exp(out) if operation == "predict_log_proba" else out.astype(np.float64, copy=False)
            return Outputs(proba.argmax(axis=1), None, proba)
        if operation == "decision_function" and out.ndim == 1 and k == 2:
            return Outputs((out > 0).astype(np.int64), None, None)
        if operation == "decision_function" and out.ndim == 2 and out.shape[1] == k:
            return Outputs(out.argmax(axis=1), None, None)
        if operation == "predict" and out.ndim == 1:
            return Outputs(classes.indices(out), None, None)
        return None
    if regressor and operation == "predict" and out.ndim == 1 and out.dtype.kind in "biuf":
        return Outputs(None, out.astype(np.float64), None)
    return None


def score_of(proba: np.ndarray, positive: int | None) -> np.ndarray:
    """The score the profile tracks: the positive class's probability (binary), else the highest."""
    if proba.shape[1] == 2:
        return proba[:, 1 if positive is None else positive]
    return proba.max(axis=1)


def sample(X: Any, max_rows: int) -> Any:
    """At most `max_rows` rows of `X` (a seeded random choice, in their order), as a copy."""
    n = _rows(X)
    if n is None:
        return None
    if n <= max_rows:
        return X.copy() if hasattr(X, "copy") else np.array(X, dtype=object)
    rows = np.sort(np.random.default_rng(_SAMPLE_SEED).choice(n, max_rows, replace=False))
    if hasattr(X, "iloc"):
        return X.iloc[rows].copy()
    return np.asarray(X)[rows].copy() if hasattr(X, "shape") else np.array(X, dtype=object)[rows]


def _rows(X: Any) -> int | None:
    shape = getattr(X, "shape", None)
    if shape is not None:
        return int(shape[0]) if len(shape) == 2 else None
    try:
        return len(X)
    except TypeError:
        return None


class FitSamples:
    """The sample of each estimator's latest outermost fit, held weakly by estimator."""

    def __init__(self, config: MonitoringConfig) -> None:
        self._config = config
        self._samples: dict[int, tuple[weakref.ref, Any]] = {}

    def observe(self, estimator: Any, method: str, args: tuple, kwargs: dict, elapsed_ns: int) -> None:
        """A fit observer (`otel_rai.capture.patching.FitObserver`): keep a sample of the training X."""
        if not self._config.capture_at_fit or not hasattr(estimator, "predict"):
            return
        X = args[0] if args else kwargs.get("X")
        if X is None or hasattr(X, "tocsr"):  # sparse inputs are not profiled
            return
        kept = sample(X, self._config.max_reference_rows)
        if kept is None:
            return
        key = id(estimator)
        samples = self._samples
        try:
            ref = weakref.ref(estimator, lambda _, key=key: samples.pop(key, None))
        except TypeError:
            return
        samples[key] = (ref, kept)

    def take(self, estimator: Any) -> Any:
        """The sample of `estimator`'s latest fit (or, once built, its `Profile`), or None."""
        entry = self._samples.get(id(estimator))
        return entry[1] if entry is not None and entry[0]() is estimator else None

    def built(self, estimator: Any, sample: Any, profile: Profile) -> None:
        """Keep the profile built from `sample` instead of the sample (kilobytes instead of megabytes),
        unless a later fit has replaced the sample meanwhile."""
        entry = self._samples.get(id(estimator))
        if entry is not None and entry[0]() is estimator and entry[1] is sample:
            self._samples[id(estimator)] = (entry[0], profile)

    def nbytes(self) -> int:
        """Approximate memory of the samples and profiles held."""
        return sum(s.nbytes() if isinstance(s, Profile) else int(getattr(s, "nbytes", 0) or 0)
                   for _, s in self._samples.values())


@dataclass(frozen=True)
class Layout:
    """Where a profile's features sit in one input layout."""

    numeric_at: tuple[int, ...]
    categorical_at: tuple[int, ...]


def layout(profile: Profile, names: Sequence[str] | None) -> Layout | None:
    """The input positions of the profile's features in an input with columns `names`; None when one
    of them is not there."""
    if names is None:
        return None
    position = {n: j for j, n in enumerate(names)}
    numeric, categorical = [], []
    for f in profile.features:
        j = position.get(f.name)
        if j is None:
            return None
        (numeric if f.kind == profiles.NUMERIC else categorical).append(j)
    return Layout(tuple(numeric), tuple(categorical))


def build(model: Any, info: ModelInfo, X: Any, source: str, config: MonitoringConfig,
          classes: Classes | None, regressor: bool, positive: int | None) -> tuple[Profile, Outputs | None]:
    """The profile of reference rows `X` for a model version, and the model's outputs on them."""
    X = sample(X, config.max_reference_rows)
    names = profiles.feature_names(X, info.feature_names) or []
    kinds = profiles.kinds(X, names)[: config.max_features]
    names = names[: config.max_features]
    numeric_at = [j for j, k in enumerate(kinds) if k == profiles.NUMERIC]
    categorical_at = [j for j, k in enumerate(kinds) if k == profiles.CATEGORICAL]
    num, cat = profiles.matrices(X, numeric_at, categorical_at)
    built: dict[int, FeatureProfile] = {}
    for i, j in enumerate(numeric_at):
        built[j] = profiles.numeric(names[j], num[:, i], config.numeric_bins, config.edge_digits)
    for i, j in enumerate(categorical_at):
        built[j] = profiles.categorical(names[j], cat[:, i], config.top_k)
    outputs = _reference_outputs(model, X, classes, regressor)
    prediction = score = None
    if outputs is not None and outputs.predicted is not None and classes is not None:
        counts = np.bincount(outputs.predicted[outputs.predicted >= 0], minlength=len(classes))
        prediction = FeatureProfile(semconv.DRIFT_PREDICTION, profiles.CATEGORICAL,
                                    (*(int(c) for c in counts), 0, 0), categories=tuple(map(str, classes.labels)))
    elif outputs is not None and outputs.values is not None:
        prediction = profiles.numeric(semconv.DRIFT_PREDICTION, outputs.values, config.numeric_bins,
                                      config.edge_digits)
    if outputs is not None and outputs.proba is not None:
        score = profiles.numeric(semconv.DRIFT_SCORE, score_of(outputs.proba, positive),
                                 config.numeric_bins, config.edge_digits)
    features = tuple(built[j] for j in range(len(names)))
    return Profile(features, prediction, score, rows=len(num) if len(numeric_at) else len(cat), source=source), outputs


def _reference_outputs(model: Any, X: Any, classes: Classes | None, regressor: bool) -> Outputs | None:
    """The model's outputs on the reference rows, with decisions not recorded; None if it fails."""
    operation = "predict_proba" if classes is not None and hasattr(model, "predict_proba") else "predict"
    try:
        output = run_quietly(getattr(model, operation), X)
    except Exception as exc:  # the reference still profiles the inputs
        _log.warning("otel-rai: the model's %s on its reference rows failed (%s); no prediction drift",
                     operation, type(exc).__name__)
        return None
    return decode(operation if operation in SCORED else "predict", output, classes, regressor)
