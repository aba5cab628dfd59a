"""Quality and drift in a real Prometheus: two replicas scraped, the rules evaluated on what it stored."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as skm
from test_prometheus import Prometheus, Replica, needs_prometheus

from otel_rai.monitoring import drift, profile
from otel_rai.settings import MonitoringConfig


@pytest.mark.stack
@needs_prometheus
def test_prometheus_scrapes_quality_and_drift_and_raises_the_alerts(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from monitoring_replica import WINDOW, data, stream

    replicas = [Replica(part, 2, tmp_path, script="monitoring_replica.py") for part in range(2)]
    prometheus = None
    try:
        parts = [r.wait_ready() for r in replicas]
        prometheus = Prometheus([f"127.0.0.1:{r.port}" for r in replicas], tmp_path)
        X, y = stream()
        rows = np.concatenate([p["rows"] for p in parts])
        proba = np.concatenate([p["proba"] for p in parts])

        # The labels counters, summed over both replicas by the recording rules: sklearn's accuracy.
        # Until both replicas' counters are scraped, the sum covers one: wait for the value, not for a value.
        expected = skm.accuracy_score(y[rows], (proba >= 0.5).astype(int))
        result = prometheus.wait_for('ml_quality:accuracy{ml_quality_window="cumulative"}',
                                     lambda r: len(r) == 1 and abs(float(r[0]["value"][1]) - expected) <= 1e-9)
        assert float(result[0]["value"][1]) == pytest.approx(expected, abs=1e-9)

        config = MonitoringConfig()
        reference, _ = data(4000, 0)
        age = profile.numeric("age", reference.age.to_numpy(), config.numeric_bins, config.edge_digits)
        for replica, part in zip(replicas, parts):
            instance = f"127.0.0.1:{replica.port}"
            window = np.asarray(part["rows"])[-WINDOW:]
            # Each replica's gauge, as stored: the PSI of its own window against the fit data.
            current = np.bincount(profile.bin_numeric(X.age.to_numpy()[window], np.asarray(age.edges)),
                                  minlength=age.bins)
            stored = prometheus.wait_for(f'ml_drift_psi{{instance="{instance}", ml_drift_feature="age"}}',
                                         lambda r: len(r) == 1)
            assert float(stored[0]["value"][1]) == pytest.approx(drift.psi(age.counts, current), rel=1e-12)
            m = window[X.sex.to_numpy()[window] == "m"]
            accuracy = prometheus.wait_for(
                f'ml_quality_accuracy{{instance="{instance}", ml_monitoring_window="current", ml_fairness_group="m"}}',
                lambda r: len(r) == 1)
            predicted = (np.asarray(part["proba"])[-WINDOW:][X.sex.to_numpy()[window] == "m"] >= 0.5).astype(int)
            assert float(accuracy[0]["value"][1]) == pytest.approx(skm.accuracy_score(y[m], predicted), abs=1e-9)

        # The alert rules see the drifted input and the decayed group on both replicas (pending: `for: 15m`).
        drifted = prometheus.wait_for('ALERTS{alertname="ModelInputDrift"}', lambda r: len(r) == 2)
        assert {a["metric"]["ml_drift_feature"] for a in drifted} == {"age"}
        dropped = prometheus.wait_for('ALERTS{alertname="ModelAccuracyDrop", ml_fairness_group="m"}',
                                      lambda r: len(r) == 2)
        assert {a["metric"]["alertstate"] for a in dropped} == {"pending"}
        assert not prometheus.query('ALERTS{alertname="ModelAccuracyDrop", ml_fairness_group="f"}')
    finally:
        for replica in replicas:
            replica.stop()
        if prometheus is not None:
            prometheus.stop()
