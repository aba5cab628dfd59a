"""CBPE: on a calibrated model the estimate tracks the realised accuracy and ROC AUC, and equals NannyML's."""

from __future__ import annotations

import json
import math
import subprocess

import numpy as np
import pytest
from conftest import need, venv_python
from sklearn import metrics as skm
from sklearn.linear_model import LogisticRegression

from otel_rai.monitoring import estimate

CHUNK = 2000
#: Shifts of the inputs' mean: P(y | x) stays, so a calibrated model stays calibrated while its
#: accuracy changes (the case CBPE is for).
SHIFTS = (0.0, 0.0, 0.5, 1.0, 1.5, -1.0)


def draw(rng: np.random.Generator, n: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
    X = rng.normal(shift, 1.0, (n, 3))
    logit = 1.2 * X[:, 0] - 0.8 * X[:, 1] + 0.3 * X[:, 2] * X[:, 0]
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return X, y


@pytest.fixture(scope="module")
def stream() -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """A model fitted on plenty of reference data, and chunks of probabilities and labels."""
    rng = np.random.default_rng(7)
    X, y = draw(rng, 40_000, 0.0)
    features = lambda X: np.column_stack([X, X[:, 0] * X[:, 2]])  # noqa: E731  the true logit is linear in these
    model = LogisticRegression(C=100).fit(features(X), y)
    chunks = []
    for shift in SHIFTS:
        Xc, yc = draw(rng, CHUNK, shift)
        chunks.append((model.predict_proba(features(Xc)), yc))
    Xr, yr = draw(rng, 10_000, 0.0)
    return (model.predict_proba(features(Xr)), yr), chunks


def estimated(proba: np.ndarray) -> tuple[float, float]:
    e = estimate.EstimateCounts(2)
    e.add(proba.argmax(axis=1), proba)
    return estimate.accuracy(e), estimate.roc_auc(e, positive=1)


def test_the_estimate_tracks_the_realised_figures(stream):
    _, chunks = stream
    realised_accuracy = []
    for proba, y in chunks:
        accuracy, auc = estimated(proba)
        real = skm.accuracy_score(y, proba.argmax(axis=1))
        realised_accuracy.append(real)
        # Labels are draws: the realised accuracy of n decisions has a standard error of sqrt(a(1-a)/n).
        assert abs(accuracy - real) <= 4 * math.sqrt(real * (1 - real) / CHUNK), (accuracy, real)
        assert abs(auc - skm.roc_auc_score(y, proba[:, 1])) <= 0.03
    # The shifts move the accuracy by far more than the estimate's error: the estimate follows them.
    assert max(realised_accuracy) - min(realised_accuracy) > 0.05


def test_an_uncalibrated_model_misleads_the_estimate(stream):
    """The estimate is as good as the calibration: squash the probabilities and it is off."""
    _, chunks = stream
    proba, y = chunks[0]
    squashed = np.column_stack([1 - proba[:, 1] ** 3, proba[:, 1] ** 3])
    accuracy, _ = estimated(squashed)
    assert abs(accuracy - skm.accuracy_score(y, squashed.argmax(axis=1))) > 0.05


def test_rows_leaving_the_window_are_subtracted(stream):
    _, chunks = stream
    (a, _), (b, _) = chunks[0], chunks[3]
    e = estimate.EstimateCounts(2)
    e.add(a.argmax(axis=1), a)
    e.add(b.argmax(axis=1), b)
    e.add(a.argmax(axis=1), a, sign=-1)
    assert estimate.accuracy(e) == pytest.approx(estimated(b)[0], rel=1e-12)
    assert estimate.roc_auc(e, 1) == pytest.approx(estimated(b)[1], abs=1e-12)


def test_multiclass_estimate():
    rng = np.random.default_rng(3)
    proba = rng.dirichlet([1, 1, 1], 5000)
    y = np.array([rng.choice(3, p=p) for p in proba])
    e = estimate.EstimateCounts(3)
    e.add(proba.argmax(axis=1), proba)
    assert estimate.accuracy(e) == pytest.approx(skm.accuracy_score(y, proba.argmax(axis=1)), abs=0.03)
    assert estimate.roc_auc(e) == pytest.approx(skm.roc_auc_score(y, proba, multi_class="ovr"), abs=0.03)


_NANNYML = """
import json, sys, warnings
warnings.simplefilter("ignore")
import pandas as pd, nannyml as nml
data = json.load(sys.stdin)
frame = lambda rows: pd.DataFrame(rows, columns=["proba", "pred", "y"])
est = nml.CBPE(y_pred_proba="proba", y_pred="pred", y_true="y", metrics=["roc_auc", "accuracy"],
               chunk_size=data["chunk"], problem_type="classification_binary")
est.fit(frame(data["reference"]))
out = est.estimate(frame(data["analysis"])).filter(period="analysis").to_df()
print(json.dumps({"accuracy": out[("accuracy", "value")].tolist(), "roc_auc": out[("roc_auc", "value")].tolist()}))
"""


def test_the_estimate_equals_nannyml(stream):
    """NannyML 0.13 (it pins xgboost and lightgbm older than ours: its own virtualenv) on the same
    probabilities, chunk for chunk. NannyML first fits a calibrator on the reference; on a calibrated
    model it changes little, and ours bins the AUC: agreement to 0.01."""
    python = venv_python("nannyml")
    need("the nannyml virtualenv", python is not None)
    (ref_proba, ref_y), chunks = stream
    rows = lambda proba, y: [[float(p), int(p >= 0.5), int(t)] for p, t in zip(proba[:, 1], y)]  # noqa: E731
    payload = {"chunk": CHUNK, "reference": rows(ref_proba, ref_y),
               "analysis": [r for proba, y in chunks for r in rows(proba, y)]}
    run = subprocess.run([python, "-c", _NANNYML], input=json.dumps(payload), capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    theirs = json.loads(run.stdout)
    ours = [estimated(proba) for proba, _ in chunks]
    assert [a for a, _ in ours] == pytest.approx(theirs["accuracy"], abs=0.01)
    assert [u for _, u in ours] == pytest.approx(theirs["roc_auc"], abs=0.01)
