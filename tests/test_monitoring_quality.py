"""Quality from counts against sklearn.metrics on the same decisions, over many generated cases."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

from otel_rai.monitoring import quality
from otel_rai.monitoring.quality import AUC_BINS, ECE_BINS, ClassificationCounts, RegressionCounts

#: Count-based figures (accuracy, precision, recall, F1) are ratios of the same integers: equal to the
#: last bit, up to the division. Sums of per-decision terms (log loss, Brier, ECE, MAE, ...) differ only
#: by summation order.
EXACT = 1e-12
SUMS = 1e-9


def case(seed: int) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """(classes, true, predicted, proba): probabilities from a Dirichlet, labels drawn from them (so the
    model is calibrated and better than chance), predictions mostly the argmax."""
    rng = np.random.default_rng(seed)
    k = int(rng.choice([2, 2, 3, 5]))
    n = int(rng.integers(20, 600))
    proba = rng.dirichlet(np.full(k, rng.uniform(0.3, 3.0)), size=n)
    true = np.array([rng.choice(k, p=p) for p in proba])
    predicted = proba.argmax(axis=1)
    if rng.random() < 0.3:  # sometimes a rule other than the argmax (a threshold), or a rare class
        flip = rng.random(n) < 0.2
        predicted = np.where(flip, rng.integers(0, k, n), predicted)
    if rng.random() < 0.2:
        proba = np.round(proba, 1)  # ties and exact bin edges
        proba = proba / proba.sum(axis=1, keepdims=True)
    return k, true, predicted, proba


def counted(k: int, true, predicted, proba) -> ClassificationCounts:
    c = ClassificationCounts(k)
    c.add(true, predicted, proba)
    return c


@pytest.mark.parametrize("seed", range(60))
def test_classification_equals_sklearn(seed):
    k, true, predicted, proba = case(seed)
    positive = 1 if k == 2 else None
    q = quality.classification(counted(k, true, predicted, proba), positive)
    labels = np.arange(k)
    assert q.labelled == len(true)
    assert q.accuracy == pytest.approx(skm.accuracy_score(true, predicted), abs=EXACT)
    for name, func in (("precision", skm.precision_score), ("recall", skm.recall_score), ("f1", skm.f1_score)):
        macro = func(true, predicted, average="macro", zero_division=0)
        assert getattr(q, name + "_macro") == pytest.approx(macro, abs=EXACT), name
        if k == 2:
            ours = getattr(q, name)
            binary = func(true, predicted, pos_label=1, average="binary", zero_division=0)
            assert (ours if ours is not None else 0.0) == pytest.approx(binary, abs=EXACT), name
    assert q.log_loss == pytest.approx(skm.log_loss(true, proba, labels=labels), rel=SUMS, abs=SUMS)
    if k == 2:
        brier = skm.brier_score_loss(true, proba[:, 1], pos_label=1)
    else:
        brier = skm.brier_score_loss(true, proba, labels=labels)
    assert q.brier_score == pytest.approx(brier, rel=SUMS, abs=SUMS)
    assert q.calibration_error == pytest.approx(expected_calibration_error(true, proba), rel=SUMS, abs=SUMS)
    if len(np.unique(true)) == k:
        auc = skm.roc_auc_score(true, proba[:, 1]) if k == 2 else skm.roc_auc_score(true, proba, multi_class="ovr")
        assert abs(q.roc_auc - auc) <= q.roc_auc_bound + EXACT
        if len(np.unique(proba)) > len(true):  # continuous scores: with 1000 bins the tie bound is small
            assert q.roc_auc_bound < 0.01
    else:
        assert q.roc_auc is None  # sklearn raises: a class with no positives has no AUC


def expected_calibration_error(true: np.ndarray, proba: np.ndarray) -> float:
    """Top-label ECE from sklearn's calibration_curve of (correct, confidence) in 10 uniform bins."""
    confidence, correct = proba.max(axis=1), (proba.argmax(axis=1) == true).astype(int)
    prob_true, prob_pred = calibration_curve(correct, confidence, n_bins=ECE_BINS, strategy="uniform")
    counts = np.bincount(np.searchsorted(np.linspace(0, 1, ECE_BINS + 1)[1:-1], confidence), minlength=ECE_BINS)
    weights = counts[counts > 0] / len(true)
    return float(np.sum(weights * np.abs(prob_true - prob_pred)))


@pytest.mark.parametrize("seed", range(20))
def test_auc_is_exact_when_each_bin_holds_one_score(seed):
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(50, 2000))
    score = (rng.integers(0, AUC_BINS, n) + 0.5) / AUC_BINS  # bin centres: ties only between equal scores
    true = (rng.random(n) < score).astype(int)
    if len(np.unique(true)) < 2:
        pytest.skip("one class only")
    proba = np.column_stack([1 - score, score])
    q = quality.classification(counted(2, true, (score > 0.5).astype(int), proba), 1)
    assert q.roc_auc == pytest.approx(skm.roc_auc_score(true, score), abs=EXACT)


@pytest.mark.parametrize("seed", range(20))
def test_a_sliding_window_equals_its_decisions(seed):
    """Adding every decision and subtracting those that left gives the counts of those that stayed."""
    k, true, predicted, proba = case(200 + seed)
    c = ClassificationCounts(k)
    c.add(true, predicted, proba)
    rng = np.random.default_rng(seed)
    left = rng.random(len(true)) < 0.4
    scored = rng.random(len(true)) < 0.7  # some decisions came from predict(): no probabilities
    c2 = ClassificationCounts(k)
    c2.add(true[scored], predicted[scored], proba[scored])
    c2.add(true[~scored], predicted[~scored])
    c2.add(true[left & scored], predicted[left & scored], proba[left & scored], sign=-1)
    c2.add(true[left & ~scored], predicted[left & ~scored], sign=-1)
    stay = ~left
    kept = counted(k, true[stay & scored], predicted[stay & scored], proba[stay & scored])
    kept.add(true[stay & ~scored], predicted[stay & ~scored])
    assert np.array_equal(c2.confusion, kept.confusion) and np.array_equal(c2.auc, kept.auc)
    assert c2.scored == kept.scored and np.array_equal(c2.ece_count, kept.ece_count)
    assert c2.log_loss_sum == pytest.approx(kept.log_loss_sum, rel=SUMS, abs=SUMS)
    assert c2.brier_sum == pytest.approx(kept.brier_sum, rel=SUMS, abs=SUMS)
    q = quality.classification(c2, 1 if k == 2 else None)
    # The score-based figures cover the scored decisions that stayed.
    s = stay & scored
    if s.any():
        assert q.log_loss == pytest.approx(skm.log_loss(true[s], proba[s], labels=np.arange(k)), rel=SUMS)


def test_undefined_binary_figures_have_no_value():
    c = counted(2, np.array([0, 0, 1]), np.array([0, 0, 0]), None)
    q = quality.classification(c, positive=1)
    assert q.precision is None  # no positive predictions: sklearn says 0 (zero_division)
    assert q.recall == 0.0 and q.accuracy == pytest.approx(2 / 3)
    assert q.roc_auc is None and q.log_loss is None  # no probabilities
    assert quality.classification(ClassificationCounts(2)).accuracy is None


@pytest.mark.parametrize("seed", range(30))
def test_regression_equals_sklearn(seed):
    rng = np.random.default_rng(300 + seed)
    n = int(rng.integers(2, 800))
    offset = rng.choice([0.0, 1e3, 1e6])  # a large mean must not cost R² its precision
    y = offset + rng.normal(0, rng.uniform(0.1, 10), n)
    pred = y + rng.normal(0, rng.uniform(0.01, 5), n)
    c = RegressionCounts()
    half = n // 2
    c.add(y[:half], pred[:half])
    c.add(y[half:], pred[half:])
    q = quality.regression(c)
    assert q.mae == pytest.approx(skm.mean_absolute_error(y, pred), rel=SUMS)
    assert q.rmse == pytest.approx(skm.root_mean_squared_error(y, pred), rel=SUMS)
    assert q.r2 == pytest.approx(skm.r2_score(y, pred), rel=1e-7, abs=1e-9)
    # sliding: take the first half out again
    c.add(y[:half], pred[:half], sign=-1)
    if n - half > 1:
        assert quality.regression(c).r2 == pytest.approx(skm.r2_score(y[half:], pred[half:]), rel=1e-7, abs=1e-9)


def test_regression_edge_cases():
    c = RegressionCounts()
    c.add(np.array([2.0, 2.0]), np.array([1.0, 3.0]))
    q = quality.regression(c)
    assert q.r2 is None and q.mae == 1.0  # constant truth: sklearn's R² is 0.0 by convention
    c.add(np.array([2.0, 2.0]), np.array([1.0, 3.0]), sign=-1)
    assert c.n == 0 and c.sq_error == 0.0 and quality.regression(c).mae is None
