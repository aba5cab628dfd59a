"""One replica of a monitored service, for the Prometheus scrape test (run as a subprocess).

    python monitoring_replica.py PORT PART PARTS OUT.json

Fits a model under instrument() (its training data is the drift reference), decides rows PART::PARTS of a
fixed stream whose second half has `age` shifted by one standard deviation and, for group m, 20% of its
labels flipped; records every label; serves its metrics on 127.0.0.1:PORT through the OpenTelemetry
Prometheus exporter; writes what it decided to OUT.json; prints "ready"; serves until stdin closes.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import pandas as pd
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import CollectorRegistry, start_http_server
from sklearn.linear_model import LogisticRegression

import otel_rai
from otel_rai.settings import MonitoringConfig

N = 2400
WINDOW = 600
AGE_SD = 12.0


def data(n: int, seed: int, age_shift: float = 0.0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"income": rng.normal(0, 1, n), "debt": rng.normal(0, 1, n),
                      "age": rng.normal(45 + age_shift * AGE_SD, AGE_SD, n), "sex": rng.choice(["f", "m"], n)})
    y = (rng.random(n) < 1 / (1 + np.exp(-(2 * X.income - X.debt)))).astype(int).to_numpy()
    return X, y


def stream() -> tuple[pd.DataFrame, np.ndarray]:
    """The decisions of all replicas: the second half shifted in age, with 20% of m's labels flipped."""
    first, y1 = data(N // 2, 1)
    second, y2 = data(N // 2, 2, age_shift=1.0)
    flip = (second.sex.to_numpy() == "m") & (np.random.default_rng(3).random(N // 2) < 0.2)
    y2 = np.where(flip, 1 - y2, y2)
    return pd.concat([first, second], ignore_index=True), np.concatenate([y1, y2])


def labelled(registry: CollectorRegistry) -> float | None:
    """The labelled decisions in the window, as the exporter shows them."""
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == "ml_quality_decisions" and sample.labels.get("ml_quality_labelled") == "true":
                return sample.value
    return None


def main() -> None:
    port, part, parts, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    registry = CollectorRegistry()
    provider = MeterProvider(metric_readers=[PrometheusMetricReader(registry=registry)])
    server, _ = start_http_server(port, addr="127.0.0.1", registry=registry)
    otel_rai.instrument(hash_key="replica-test-key", service_name=f"replica-{part}", sensitive_features=["sex"],
                        meter_provider=provider, monitoring=MonitoringConfig(window=WINDOW, min_rows=100))
    X_train, y_train = data(4000, 0)
    features = ["income", "debt", "age"]
    model = LogisticRegression().fit(X_train[features], y_train)  # under instrument(): the reference
    otel_rai.register_model(model, name="credit", version="4.0")
    X, y = stream()
    rows = np.arange(N)[part::parts]
    probabilities = []
    for chunk in np.array_split(rows, 40):
        with otel_rai.decisions(groups={"sex": X.sex.iloc[chunk].tolist()}) as d:
            probabilities.extend(model.predict_proba(X[features].iloc[chunk])[:, 1].tolist())
        for decision_id, truth in zip(d.ids, y[chunk]):
            otel_rai.record_outcome(decision_id, int(truth))
    assert otel_rai.flush(30).complete
    deadline = time.monotonic() + 30
    while labelled(registry) != WINDOW:  # until the monitor has published the last window
        assert time.monotonic() < deadline, "the monitor did not publish"
        time.sleep(0.1)
    with open(out, "w") as f:
        json.dump({"rows": rows.tolist(), "proba": probabilities}, f)
    print("ready", flush=True)
    sys.stdin.read()
    server.shutdown()


if __name__ == "__main__":
    main()
