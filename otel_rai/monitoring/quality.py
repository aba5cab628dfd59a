"""Model quality from sufficient statistics: counts and sums that add up over decisions.

Every figure here is a function of counts (and sums of per-decision terms), so that the live windows,
the audit report, ``otel-rai monitor`` and a backend aggregating in SQL compute the same numbers, and a
window slides by adding the decisions that enter it and subtracting those that leave. The definitions
are scikit-learn's (``sklearn.metrics``, checked by ``tests/test_monitoring_quality.py``):

* accuracy, precision, recall and F1 from the confusion matrix: exact. Binary figures are those of the
  positive class; macro figures average over the classes that occur as a label or a prediction, a term
  with a zero denominator counting 0 (scikit-learn's ``zero_division=0``). Where a binary figure has a
  zero denominator there is no value (scikit-learn reports 0).
* log loss (natural log, probabilities clipped to [eps, 1 - eps] as scikit-learn does) and Brier score
  (the sum over classes of the squared error, halved for two classes: the binary Brier score): sums of
  per-decision terms, equal up to floating-point summation order.
* expected calibration error: top-label confidence (the highest probability) in ``ECE_BINS`` equal-width
  bins binned as `sklearn.calibration.calibration_curve` does, ``sum_b |correct_b - confidence_b| / n``.
* ROC AUC from a histogram of ``AUC_BINS`` equal-width bins of each class's probability: pairs in
  different bins are ranked exactly, pairs within one bin count as ties (one half). The error is at most
  ``bound = sum_b pos_b * neg_b / (2 P N)``, returned with the value; a histogram whose bins each hold a
  single score value (``bound`` then overstates it) gives the exact AUC. Multi-class: one-vs-rest, macro.
* regression: MAE, RMSE and R² from n, the sums of absolute and squared errors and of y and y², with y
  shifted by a constant (the first labels' mean) so that the sum of squares does not lose precision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

#: Equal-width confidence bins of the expected calibration error.
ECE_BINS = 10
#: Equal-width probability bins of the ROC AUC histograms (and of the CBPE estimate).
AUC_BINS = 1000
_EPS = float(np.finfo(np.float64).eps)
_ECE_INNER = np.linspace(0.0, 1.0, ECE_BINS + 1)[1:-1]


def probability_bins(p: np.ndarray) -> np.ndarray:
    """The `AUC_BINS` bin of each probability in [0, 1]: ``floor(p * AUC_BINS)``, 1 in the top bin."""
    return np.minimum((np.clip(p, 0.0, 1.0) * AUC_BINS).astype(np.int64), AUC_BINS - 1)


def auc_from_histograms(positive: np.ndarray, negative: np.ndarray) -> tuple[float, float] | None:
    """(ROC AUC, error bound) of scores binned in ascending bins: `positive` and `negative` hold the
    (possibly fractional) number of actual positives and negatives per bin. None without both."""
    pos = np.asarray(positive, dtype=np.float64)
    neg = np.asarray(negative, dtype=np.float64)
    p, n = float(pos.sum()), float(neg.sum())
    if p <= 0 or n <= 0:
        return None
    below = np.cumsum(neg) - neg  # negatives in lower bins
    tied = float(pos @ neg)
    wins = float(pos @ below) + 0.5 * tied
    return wins / (p * n), 0.5 * tied / (p * n)


class Classes:
    """A classifier's ``classes_`` as indices: predicted labels and ground truths map to positions."""

    def __init__(self, classes: np.ndarray) -> None:
        self.classes = classes
        self.labels = classes.tolist()
        self._index = {c: i for i, c in enumerate(self.labels)}
        self._printed = {_printed(c): i for i, c in enumerate(self.labels)}
        self._sorted_numbers = classes.dtype.kind in "iuf" and bool(np.all(classes[:-1] < classes[1:]))

    def __len__(self) -> int:
        return len(self.labels)

    def index(self, value: Any) -> int:
        """The index of one label (also given as text, ``1.0`` for ``1``, ...); -1 if not a class."""
        if hasattr(value, "item"):
            value = value.item()
        try:
            found = self._index.get(value)
        except TypeError:  # unhashable
            return -1
        return found if found is not None else self._printed.get(_printed(value), -1)

    def indices(self, values: np.ndarray) -> np.ndarray:
        """The index of each predicted label."""
        if self._sorted_numbers and values.dtype.kind in "iuf":
            at = np.minimum(np.searchsorted(self.classes, values), len(self.labels) - 1)
            return np.where(self.classes[at] == values, at, -1)
        return np.array([self.index(v) for v in values.tolist()], np.int64)


def _printed(value: Any) -> str:
    if isinstance(value, bool) or (isinstance(value, float) and value.is_integer()):
        value = int(value)
    return str(value)


@dataclass
class ClassificationCounts:
    """What classification quality over a set of labelled decisions derives from. Classes are indices
    0..K-1 of the model's ``classes_``; `add` with ``sign=-1`` takes decisions out again."""

    n_classes: int
    confusion: np.ndarray = field(init=False)  # [true class, predicted class]
    scored: int = 0  # labelled decisions with probabilities: the score-based figures cover these
    ece_count: np.ndarray = field(init=False)
    ece_confidence: np.ndarray = field(init=False)
    ece_correct: np.ndarray = field(init=False)
    log_loss_sum: float = 0.0
    brier_sum: float = 0.0
    #: [class k, 1 if the true class is k else 0, bin of the probability of k]
    auc: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        k = self.n_classes
        self.confusion = np.zeros((k, k), np.int64)
        self.ece_count = np.zeros(ECE_BINS, np.int64)
        self.ece_confidence = np.zeros(ECE_BINS)
        self.ece_correct = np.zeros(ECE_BINS, np.int64)
        self.auc = np.zeros((k, 2, AUC_BINS), np.int64)

    @property
    def labelled(self) -> int:
        return int(self.confusion.sum())

    def add(self, true: np.ndarray, predicted: np.ndarray, proba: np.ndarray | None = None, sign: int = 1) -> None:
        """Count decisions: their true and predicted class indices and, when scored, their probabilities
        (one row per decision, one column per class)."""
        k = self.n_classes
        true = np.asarray(true, np.int64)
        predicted = np.asarray(predicted, np.int64)
        self.confusion += sign * np.bincount(true * k + predicted, minlength=k * k).reshape(k, k)
        if proba is None or not len(true):
            return
        proba = np.asarray(proba, np.float64)
        rows = np.arange(len(true))
        self.scored += sign * len(true)
        top = proba.argmax(axis=1)
        confidence = proba[rows, top]
        b = np.searchsorted(_ECE_INNER, confidence)  # calibration_curve's binning
        self.ece_count += sign * np.bincount(b, minlength=ECE_BINS)
        self.ece_confidence += sign * np.bincount(b, weights=confidence, minlength=ECE_BINS)
        self.ece_correct += sign * np.bincount(b, weights=top == true, minlength=ECE_BINS).astype(np.int64)
        self.log_loss_sum += sign * float(-np.log(np.clip(proba[rows, true], _EPS, 1 - _EPS)).sum())
        onehot = np.zeros_like(proba)
        onehot[rows, true] = 1.0
        squared = ((proba - onehot) ** 2).sum(axis=1)
        self.brier_sum += sign * float(squared.sum() * (0.5 if k == 2 else 1.0))
        member = (np.arange(k)[None, :] == true[:, None]).astype(np.int64)  # [row, class]
        flat = (np.arange(k)[None, :] * 2 + member) * AUC_BINS + probability_bins(proba)
        self.auc += sign * np.bincount(flat.ravel(), minlength=k * 2 * AUC_BINS).reshape(k, 2, AUC_BINS)

    def copy(self) -> ClassificationCounts:
        other = ClassificationCounts(self.n_classes)
        for f in fields(self):
            value = getattr(self, f.name)
            setattr(other, f.name, value.copy() if isinstance(value, np.ndarray) else value)
        return other


@dataclass
class RegressionCounts:
    """What regression quality over a set of labelled decisions derives from."""

    n: int = 0
    abs_error: float = 0.0
    sq_error: float = 0.0
    y_sum: float = 0.0  # of y - shift
    y_sq: float = 0.0
    shift: float = 0.0

    @property
    def labelled(self) -> int:
        return self.n

    def add(self, y_true: np.ndarray, y_pred: np.ndarray, sign: int = 1) -> None:
        y_true = np.asarray(y_true, np.float64)
        error = y_true - np.asarray(y_pred, np.float64)
        if self.n == 0 and sign > 0 and len(y_true):
            self.shift = float(y_true.mean())
        y = y_true - self.shift
        self.n += sign * len(y_true)
        self.abs_error += sign * float(np.abs(error).sum())
        self.sq_error += sign * float((error**2).sum())
        self.y_sum += sign * float(y.sum())
        self.y_sq += sign * float((y**2).sum())
        if self.n == 0:  # no residue of the subtractions
            self.abs_error = self.sq_error = self.y_sum = self.y_sq = 0.0

    def copy(self) -> RegressionCounts:
        return RegressionCounts(self.n, self.abs_error, self.sq_error, self.y_sum, self.y_sq, self.shift)


@dataclass(frozen=True)
class Quality:
    """The quality figures of a set of labelled decisions; None where the data does not define one."""

    labelled: int
    accuracy: float | None = None
    precision: float | None = None  # of the positive class (binary models)
    recall: float | None = None
    f1: float | None = None
    precision_macro: float | None = None
    recall_macro: float | None = None
    f1_macro: float | None = None
    roc_auc: float | None = None
    roc_auc_bound: float | None = None
    log_loss: float | None = None
    brier_score: float | None = None
    calibration_error: float | None = None
    mae: float | None = None
    rmse: float | None = None
    r2: float | None = None


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def classification(c: ClassificationCounts, positive: int | None = None) -> Quality:
    """The figures of `c`; binary precision, recall and F1 need the index of the positive class."""
    n = c.labelled
    if n == 0:
        return Quality(0)
    cm = c.confusion
    tp = np.diag(cm).astype(np.float64)
    predicted, actual = cm.sum(axis=0), cm.sum(axis=1)
    present = (predicted + actual) > 0  # scikit-learn's unique_labels(y_true, y_pred)
    with np.errstate(divide="ignore", invalid="ignore"):
        prec = np.where(predicted > 0, tp / predicted, 0.0)
        rec = np.where(actual > 0, tp / actual, 0.0)
        f1 = np.where(predicted + actual > 0, 2 * tp / (predicted + actual), 0.0)
    binary: dict[str, float | None] = {}
    if positive is not None and c.n_classes == 2:
        t = float(tp[positive])
        binary = {"precision": _ratio(t, float(predicted[positive])), "recall": _ratio(t, float(actual[positive])),
                  "f1": _ratio(2 * t, float(predicted[positive] + actual[positive]))}
    scored: dict[str, float | None] = {}
    if c.scored:
        auc = _roc_auc(c, positive)
        scored = {
            "roc_auc": None if auc is None else auc[0],
            "roc_auc_bound": None if auc is None else auc[1],
            "log_loss": c.log_loss_sum / c.scored,
            "brier_score": c.brier_sum / c.scored,
            "calibration_error": float(np.abs(c.ece_correct - c.ece_confidence).sum()) / c.scored,
        }
    return Quality(
        labelled=n,
        accuracy=float(tp.sum()) / n,
        precision_macro=float(prec[present].mean()),
        recall_macro=float(rec[present].mean()),
        f1_macro=float(f1[present].mean()),
        **binary,
        **scored,
    )


def _roc_auc(c: ClassificationCounts, positive: int | None) -> tuple[float, float] | None:
    if c.n_classes == 2:
        k = 1 if positive is None else positive
        return auc_from_histograms(c.auc[k, 1], c.auc[k, 0])
    per_class = [auc_from_histograms(c.auc[k, 1], c.auc[k, 0]) for k in range(c.n_classes)]
    if any(a is None for a in per_class):  # scikit-learn needs every class among the labels
        return None
    return float(np.mean([a[0] for a in per_class])), float(np.mean([a[1] for a in per_class]))


def regression(c: RegressionCounts) -> Quality:
    """MAE, RMSE and R² of `c` (R² needs two labels with different values)."""
    if c.n == 0:
        return Quality(0)
    total = c.y_sq - c.y_sum * c.y_sum / c.n
    r2 = 1.0 - c.sq_error / total if c.n > 1 and total > 0 else None
    return Quality(labelled=c.n, mae=c.abs_error / c.n, rmse=math.sqrt(c.sq_error / c.n), r2=r2)


def figures(counts: ClassificationCounts | RegressionCounts, positive: int | None = None) -> Quality:
    """The quality figures of either kind of counts."""
    if isinstance(counts, RegressionCounts):
        return regression(counts)
    return classification(counts, positive)
