"""Quality before the labels arrive: confidence-based performance estimation (CBPE, as in NannyML).

If the model's probabilities are calibrated, a decision whose predicted class has probability p is
right with probability p. So, over the decisions of a window that have probabilities:

* estimated accuracy = mean over decisions of p(predicted class);
* estimated ROC AUC (binary): the AUC of the expected ROC curve, on which a decision with positive-class
  probability p counts as p of a positive and 1 - p of a negative. From a histogram of `AUC_BINS` bins
  of p holding the count and the sum of p per bin, it is `auc_from_histograms(sum_p, count - sum_p)`,
  with the same tie bound as the realised AUC. Multi-class: one-vs-rest per class, macro average.

Both are as good as the calibration: ``tests/test_monitoring_estimate.py`` shows that on a calibrated
model they track the realised figures once labels arrive, and compares them with NannyML's CBPE.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from otel_rai.monitoring.quality import AUC_BINS, auc_from_histograms, probability_bins


@dataclass
class EstimateCounts:
    """What the estimates derive from, over the scored decisions of a window (labelled or not)."""

    n_classes: int
    rows: int = 0
    expected_correct: float = 0.0
    histogram: np.ndarray = field(init=False)  # [class, bin of its probability]: decisions
    probability: np.ndarray = field(init=False)  # [class, bin]: the sum of those probabilities

    def __post_init__(self) -> None:
        self.histogram = np.zeros((self.n_classes, AUC_BINS), np.int64)
        self.probability = np.zeros((self.n_classes, AUC_BINS))

    def add(self, predicted: np.ndarray, proba: np.ndarray, sign: int = 1) -> None:
        """Count decisions by their predicted class index and probabilities (a row per decision)."""
        proba = np.asarray(proba, np.float64)
        n, k = proba.shape
        if not n:
            return
        self.rows += sign * n
        self.expected_correct += sign * float(proba[np.arange(n), np.asarray(predicted, np.int64)].sum())
        flat = (np.arange(k)[None, :] * AUC_BINS + probability_bins(proba)).ravel()
        size = k * AUC_BINS
        self.histogram += sign * np.bincount(flat, minlength=size).reshape(k, AUC_BINS)
        self.probability += sign * np.bincount(flat, weights=proba.ravel(), minlength=size).reshape(k, AUC_BINS)
        if self.rows == 0:
            self.expected_correct = 0.0
            self.probability[:] = 0.0


def accuracy(e: EstimateCounts) -> float | None:
    """Estimated accuracy: the mean probability of the predicted class."""
    return e.expected_correct / e.rows if e.rows else None


def roc_auc(e: EstimateCounts, positive: int | None = None) -> float | None:
    """Estimated ROC AUC: of the positive class (binary), else one-vs-rest macro."""
    if not e.rows:
        return None
    classes = [1 if positive is None else positive] if e.n_classes == 2 else range(e.n_classes)
    values = []
    for k in classes:
        expected_positive = np.maximum(e.probability[k], 0.0)  # no negative residue of subtractions
        auc = auc_from_histograms(expected_positive, np.maximum(e.histogram[k] - expected_positive, 0.0))
        if auc is None:
            return None
        values.append(auc[0])
    return float(np.mean(values))
