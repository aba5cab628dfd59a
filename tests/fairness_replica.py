"""One replica of an instrumented service, for the Prometheus scrape test (run as a subprocess).

    python fairness_replica.py PORT PART PARTS OUT.json

Makes the decisions of rows PART::PARTS of a fixed data set, records their outcomes, serves its
metrics on 127.0.0.1:PORT through the OpenTelemetry Prometheus exporter, writes its predictions to
OUT.json, prints "ready", and serves until its stdin closes.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import CollectorRegistry, start_http_server
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

import otel_rai

N = 1200


def data() -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(11)
    X = pd.DataFrame({"income": rng.normal(0, 1, N), "sex": rng.choice(["f", "m"], N)})
    y = (X.income + 0.9 * (X.sex == "m") + rng.normal(0, 0.8, N) > 0.4).astype(int).to_numpy()
    return X, y


def main() -> None:
    port, part, parts, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    registry = CollectorRegistry()
    provider = MeterProvider(metric_readers=[PrometheusMetricReader(registry=registry)])
    server, _ = start_http_server(port, addr="127.0.0.1", registry=registry)
    otel_rai.instrument(hash_key="replica-test-key", service_name=f"replica-{part}",
                        sensitive_features=["sex"], meter_provider=provider)
    X, y = data()
    model = make_pipeline(ColumnTransformer([("n", "passthrough", ["income"])]), LogisticRegression()).fit(X, y)
    otel_rai.register_model(model, name="credit", version="3.1")
    rows = np.arange(N)[part::parts]
    predictions = []
    for chunk in np.array_split(rows, 12):
        with otel_rai.decisions() as d:
            predictions.extend(model.predict(X.iloc[chunk]).tolist())
        for decision_id, truth in zip(d.ids, y[chunk]):
            otel_rai.record_outcome(decision_id, int(truth))
    assert otel_rai.flush(30).complete
    with open(out, "w") as f:
        json.dump({"rows": rows.tolist(), "y_pred": predictions}, f)
    print("ready", flush=True)
    sys.stdin.read()
    server.shutdown()


if __name__ == "__main__":
    main()
