"""What fairness monitoring adds per decision, on the audit worker thread and on the caller's thread.

    PYTHONPATH=. python bench/fairness_overhead.py

1. Worker side: `FairnessMonitor.observe` on captured calls (single-row and 100-row batches), plus one
   `end_cycle` per 256 calls (the worker's wake-up batch), against a real SDK MeterProvider with a
   Prometheus reader attached. Reported per decision.
2. Caller side: predict_proba of one row instrumented with and without sensitive_features, measured in
   the same run, interleaved; the monitor runs on the worker, so the difference should be noise.
"""

from __future__ import annotations

import logging
import statistics
import time

import numpy as np
import pandas as pd
from opentelemetry import context, trace
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import CollectorRegistry
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

import otel_rai
from otel_rai.capture.models import model_info
from otel_rai.capture.recorder import DecisionCall, snapshot
from otel_rai.capture.scope import new_ids
from otel_rai.fairness import groups, monitor


def data(n: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    X = pd.DataFrame({f"x{i}": rng.normal(size=n) for i in range(20)})
    X["sex"] = rng.choice(["f", "m"], n)
    X["race"] = rng.choice(["a", "b", "c"], n)
    y = (X.x0 + X.x1 > 0).astype(int).to_numpy()
    return X, y


def fitted(X, y):
    numeric = [f"x{i}" for i in range(20)]
    return make_pipeline(ColumnTransformer([("n", "passthrough", numeric)]), LogisticRegression()).fit(X, y)


def calls(model, X, rows: int, n_calls: int) -> list[DecisionCall]:
    info = model_info(model, None)
    out = []
    for i in range(n_calls):
        chunk = X.iloc[(i * rows) % (len(X) - rows):][:rows]
        out.append(DecisionCall(model=model, info=info, operation="predict_proba", X=snapshot(chunk),
                                n_rows=rows, ids=new_ids(rows), attributes={}, parent=context.get_current(),
                                start_ns=0, end_ns=time.time_ns(), output=model.predict_proba(chunk)))
    return out


def worker_cost(model, X, rows: int, n_calls: int) -> float:
    """Seconds per decision of observe + end_cycle, best of 5."""
    provider = MeterProvider(metric_readers=[PrometheusMetricReader(registry=CollectorRegistry())])
    mon = monitor.FairnessMonitor(monitor.FairnessConfig(), groups.parse(["sex", ("sex", "race")]), provider,
                                  trace.NoOpTracer(), lambda stage, exc: print("failed", stage, exc))
    batch = calls(model, X, rows, n_calls)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for i, call in enumerate(batch):
            mon.observe([call])
            if i % 256 == 255:
                mon.end_cycle()
        mon.end_cycle()
        best = min(best, (time.perf_counter() - start) / (rows * n_calls))
    mon.close()
    return best


def caller_cost(model, X, sensitive: bool, n: int = 2000) -> list[float]:
    provider = MeterProvider(metric_readers=[PrometheusMetricReader(registry=CollectorRegistry())])
    otel_rai.instrument(hash_key="bench-key-0123456789abcdef", meter_provider=provider,
                        sensitive_features=["sex", ("sex", "race")] if sensitive else [])
    rows = [X.iloc[[i]] for i in range(200)]
    times = []
    for i in range(n):
        start = time.perf_counter()
        model.predict_proba(rows[i % 200])
        times.append(time.perf_counter() - start)
    otel_rai.flush()
    otel_rai.uninstrument()
    return times


def main() -> None:
    logging.getLogger("otel_rai.alerts").setLevel(logging.ERROR)  # random data crosses 0.8 by chance
    X, y = data(20_000)
    model = fitted(X, y)
    single = worker_cost(model, X, rows=1, n_calls=5000)
    batched = worker_cost(model, X, rows=100, n_calls=200)
    print("worker thread, fairness per decision (2 attributes: sex and sex&race, counters + windows + book):")
    print(f"  1-row calls   {single * 1e6:7.1f} µs/decision")
    print(f"  100-row calls {batched * 1e6:7.1f} µs/decision")
    off, on = [], []
    for _ in range(3):  # interleaved, so drift affects both alike
        off += caller_cost(model, X, sensitive=False)
        on += caller_cost(model, X, sensitive=True)
    print("caller thread, instrumented predict_proba of 1 row (median):")
    print(f"  without sensitive_features {statistics.median(off) * 1e6:7.1f} µs")
    print(f"  with sensitive_features    {statistics.median(on) * 1e6:7.1f} µs"
          f"  (ratio {statistics.median(on) / statistics.median(off):.3f})")


if __name__ == "__main__":
    main()
