"""What quality and drift monitoring add per decision on the audit worker, and the memory they hold.

    PYTHONPATH=. python bench/monitoring_overhead.py [--quick]

1. Worker side, per decision: `QualityDriftMonitor.observe` on captured calls and one `end_cycle` per
   cycle (256 single-row calls, the worker's wake-up batch, or one 1,000-row call), against a real SDK
   MeterProvider with a Prometheus reader. Drift is on (a reference profile from the fit data: 20
   numeric and 2 categorical inputs, plus the prediction and the score), quality is on (a sensitive
   attribute, so every row also counts for its group), publication at its real rate (once a second).
   Reported without labels, and with a label recorded for every decision. Inputs as a DataFrame (the
   usual serving case) and as a NumPy array.
2. Publication alone: recomputing every gauge of one model version (forced), per publication.
3. Memory: the profile, the window at the default size and at 100,000 decisions, and the label book.
4. The whole audit path, instrumented end to end (spans to an in-memory exporter, explanations off), with
   monitoring on and off, interleaved: process CPU per decision including the flush.
Times are CPU time of the process (all threads), best of 5 runs: the machine is shared, and CPU time with
the minimum of several runs is the least disturbed by other work.
"""

from __future__ import annotations

import argparse
import logging
import time
import tracemalloc
from typing import Any

import numpy as np
import pandas as pd
from opentelemetry import context, trace
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import CollectorRegistry
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from otel_rai.capture.models import model_info, register_model
from otel_rai.capture.recorder import DecisionCall, snapshot
from otel_rai.capture.scope import new_ids
from otel_rai.fairness import groups
from otel_rai.monitoring.monitor import _ENTRY, QualityDriftMonitor
from otel_rai.settings import FairnessConfig, MonitoringConfig

NUMERIC = [f"x{i}" for i in range(20)]


def data(n: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({c: rng.normal(size=n) for c in NUMERIC})
    X["region"] = rng.choice(["north", "south", "east", "west"], n)
    X["sex"] = rng.choice(["f", "m"], n)
    y = (X.x0 + X.x1 + rng.normal(size=n) > 0).astype(int).to_numpy()
    return X, y


def frame_model(X: pd.DataFrame, y: np.ndarray) -> Any:
    prep = ColumnTransformer([("n", "passthrough", NUMERIC), ("c", OneHotEncoder(), ["region"])])
    return register_model(make_pipeline(prep, LogisticRegression()).fit(X, y), name="bench", version="frame",
                          reference=X.iloc[:5000])


def array_model(X: np.ndarray, y: np.ndarray) -> Any:
    return register_model(LogisticRegression().fit(X, y), name="bench", version="array", reference=X[:5000])


def calls(model: Any, X: Any, rows: int, n_calls: int, sex: np.ndarray) -> list[DecisionCall]:
    info = model_info(model, None)
    out = []
    for i in range(n_calls):
        start = (i * rows) % (len(X) - rows)
        chunk = X.iloc[start : start + rows] if hasattr(X, "iloc") else X[start : start + rows]
        groups_given = None if hasattr(X, "iloc") else {"sex": tuple(sex[start : start + rows])}
        out.append(DecisionCall(model=model, info=info, operation="predict_proba", X=snapshot(chunk), n_rows=rows,
                                ids=new_ids(rows), attributes={}, parent=context.get_current(), start_ns=0,
                                end_ns=time.time_ns(), output=model.predict_proba(chunk), groups=groups_given))
    return out


def monitor(window: int = 1000) -> QualityDriftMonitor:
    provider = MeterProvider(metric_readers=[PrometheusMetricReader(registry=CollectorRegistry())])
    return QualityDriftMonitor(MonitoringConfig(window=window), FairnessConfig(), groups.parse(["sex"]), provider,
                               trace.NoOpTracer(), lambda stage, exc: print("failed", stage, repr(exc)))


def worker_cost(batch: list[DecisionCall], per_cycle: int, labels: bool, runs: int) -> float:
    """Seconds per decision of observe + end_cycle (and the label tasks), best of `runs`."""
    best = float("inf")
    rows = sum(len(c.ids) for c in batch)
    for _ in range(runs):
        mon = monitor()
        warm = batch[:per_cycle]  # the first decision of a version builds its profile: not per-row work
        for call in warm:
            mon.observe([call])
        mon.end_cycle()
        tasks = [[mon.label_task(i, 1, time.time_ns()) for i in c.ids] for c in batch] if labels else None
        start = time.process_time()
        for i, call in enumerate(batch):
            mon.observe([call])
            if tasks is not None:
                for task in tasks[i]:
                    task()
            if i % per_cycle == per_cycle - 1:
                mon.end_cycle()
        mon.end_cycle()
        best = min(best, (time.process_time() - start) / rows)
        mon.close()
    return best


def publication_cost(batch: list[DecisionCall], runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        mon = monitor()
        for call in batch:
            mon.observe([call])
            for i in call.ids:
                mon.label_task(i, 1, time.time_ns())()
        mon.end_cycle(force=True)
        (track,) = mon._tracks.values()
        start = time.process_time()
        mon._publish(track)
        best = min(best, time.process_time() - start)
        mon.close()
    return best


def memory(model: Any, X: pd.DataFrame, sex: np.ndarray) -> dict[str, int]:
    out = {}
    for window in (1000, 100_000):
        mon = monitor(window)
        batch = calls(model, X, 1000, window // 1000 + 1, sex)
        for call in batch:
            mon.observe([call])
        mon.end_cycle(force=True)
        (track,) = mon._tracks.values()
        out[f"window {window:,} (rows, counts, histograms)"] = track.nbytes() - track.profile.nbytes()
        if window == 1000:
            out["profile (22 inputs, prediction, score)"] = track.profile.nbytes()
    ids = new_ids(100_000)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    book = dict(zip(ids, [_ENTRY.pack(0, i, i, 0) for i in range(len(ids))]))  # as the monitor packs them
    out["label book, 100,000 decisions (max_remembered)"] = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    del book
    return out


def session_cost(X: pd.DataFrame, y: np.ndarray, enabled: bool, frame: bool, single: int,
                 batches: int) -> tuple[float, float]:
    """CPU seconds per decision that the audit adds to the model's own (instrumented minus bare, in the same
    session), (1-row calls, 1000-row calls), with monitoring `enabled` or not."""
    from opentelemetry.instrumentation.utils import suppress_instrumentation
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON

    import otel_rai

    provider = TracerProvider(sampler=ALWAYS_ON)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    meters = MeterProvider(metric_readers=[PrometheusMetricReader(registry=CollectorRegistry())])
    otel_rai.instrument(hash_key="bench-key-0123456789abcdef", tracer_provider=provider, meter_provider=meters,
                        explain=False, sensitive_features=["sex"], monitoring=MonitoringConfig(enabled=enabled))
    if frame:
        prep = ColumnTransformer([("n", "passthrough", NUMERIC), ("c", OneHotEncoder(), ["region"])])
        model, data = make_pipeline(prep, LogisticRegression()).fit(X.iloc[:5000], y[:5000]), X
        groups = None
    else:
        data = X[NUMERIC].to_numpy()
        model = LogisticRegression().fit(data[:5000], y[:5000])
        groups = {"sex": "f"}
    rows = [data[i : i + 1] if not frame else data.iloc[[i]] for i in range(single)]

    def cpu(calls: list, per: int) -> float:
        otel_rai.flush()
        start = time.process_time()
        with otel_rai.decisions(groups=groups):
            for rows_ in calls:
                model.predict_proba(rows_)
        otel_rai.flush()
        return (time.process_time() - start) / (len(calls) * per)

    def bare(calls: list, per: int) -> float:
        start = time.process_time()
        with suppress_instrumentation():
            for rows_ in calls:
                model.predict_proba(rows_)
        return (time.process_time() - start) / (len(calls) * per)

    chunks = [data[i * 1000 : (i + 1) * 1000] if not frame else data.iloc[i * 1000 : (i + 1) * 1000]
              for i in range(batches)]
    cpu(rows[:50], 1)  # warm: the first decision builds the profile
    one = cpu(rows, 1) - bare(rows, 1)
    many = cpu(chunks, 1000) - bare(chunks, 1000)
    otel_rai.uninstrument()
    exporter.clear()
    return one, many


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer calls and runs")
    quick = parser.parse_args().quick
    logging.getLogger("otel_rai.alerts").setLevel(logging.ERROR)
    runs = 2 if quick else 5
    X, y = data(40_000)
    sex = X.sex.to_numpy()
    fm = frame_model(X, y)
    Xa = X[NUMERIC].to_numpy()
    am = array_model(Xa, y)
    single_calls = 1024 if quick else 4096
    print("worker thread, quality + drift per decision (best of %d):" % runs)
    for name, model, inputs in (("DataFrame", fm, X), ("ndarray", am, Xa)):
        single = calls(model, inputs, 1, single_calls, sex)
        big = calls(model, inputs, 1000, 8 if quick else 20, sex)
        for labels in (False, True):
            what = "with a label each" if labels else "no labels"
            one = worker_cost(single, 256, labels, runs)
            many = worker_cost(big, 1, labels, runs)
            print(f"  {name:9s} {what:18s} 1-row calls {one * 1e6:6.2f} µs/decision   "
                  f"1000-row calls {many * 1e6:6.2f} µs/decision")
    big = calls(fm, X, 1000, 2, sex)
    print(f"publication of one version's gauges (22 inputs, 2 groups, forced): "
          f"{publication_cost(big, runs) * 1e3:.2f} ms (at most once a second per version)")
    print("the whole audit path: CPU per decision added to the model's (instrumented - bare, flush included, "
          "best of %d):" % runs)
    for frame in (True, False):
        best: dict[bool, list[float]] = {True: [float("inf")] * 2, False: [float("inf")] * 2}
        for _ in range(runs):  # interleaved, so that other load affects both alike
            for enabled in (False, True):
                costs = session_cost(X, y, enabled, frame, 500 if quick else 2000, 5 if quick else 20)
                best[enabled] = [min(a, b) for a, b in zip(best[enabled], costs)]
        for enabled in (False, True):
            one, many = best[enabled]
            what = "Pipeline, DataFrame" if frame else "LR, ndarray"
            print(f"  {what:20s} monitoring {'on ' if enabled else 'off'}  "
                  f"1-row calls {one * 1e6:7.1f} µs   1000-row calls {many * 1e6:6.2f} µs")
    print("memory:")
    for what, n in memory(fm, X, sex).items():
        print(f"  {what:52s} {n / 1024:10.1f} KiB")


if __name__ == "__main__":
    main()
