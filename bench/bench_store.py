"""Benchmark of the local audit store. Prints a table and writes bench/results/bench_store.json.

    python bench/bench_store.py [--decisions 1000000] [--keep DIR]

1. Insert rate: `Store.append` of 1000-row spans (the batch path) and of single-row spans committed
   256 at a time (the online path), per decision; and the file size per decision.
2. First page of a query by model version and one day on a store of `--decisions` decisions (half in
   single-decision spans, half in 1000-row spans, 4 versions over 30 days), through the Python API,
   each query on a fresh connection. Target: < 200 ms. Also: decision id and input hash lookups.
3. The batch path end to end: a 100k-row predict_proba, instrumented with the store vs bare. The
   caller's overhead per row (target ≤ 1 µs), and the audit worker's time per row to hash, build the
   spans and write them (asynchronous: it does not hold up the caller).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import otel_rai  # noqa: E402
from otel_rai import semconv, store  # noqa: E402
from otel_rai.codec.records import SpanRecord  # noqa: E402
from otel_rai.query import find_decisions  # noqa: E402

DAY = 86_400 * 10**9
#: One resource dict shared by every span, as in a real process (see `records.from_readable`).
RESOURCE = {"service.name": "credit-scoring", "telemetry.sdk.language": "python"}
VERSIONS = ("1.4.0", "1.4.1", "1.4.2", "1.5.0")
KEY = "bench-key-0123456789abcdef0123456789"


def span(seq: int, start_ns: int, version: str, rows: int, rng: random.Random) -> SpanRecord:
    """A decision span like the ones `instrument()` writes (ids, hashes, outputs, two score arrays)."""
    stamp = f"{start_ns // 1_000_000:012x}"
    p = [rng.random() for _ in range(rows)]
    return SpanRecord(
        trace_id=f"{rng.getrandbits(128):032x}", span_id=f"{rng.getrandbits(64):016x}",
        name="predict_proba credit", start_ns=start_ns, end_ns=start_ns + 150_000,
        attributes={
            semconv.MODEL_NAME: "credit", semconv.MODEL_CLASS: "sklearn.pipeline.Pipeline",
            semconv.MODEL_VERSION: version, semconv.MODEL_FINGERPRINT: f"{hash(version) & (2**128 - 1):032x}",
            semconv.OPERATION: "predict_proba", semconv.BATCH_SIZE: rows, semconv.BATCH_OFFSET: 0,
            semconv.INPUT_HASH_KEY_ID: "0123456789abcdef", semconv.INPUT_HASH_SCHEME: "blake2b-128/v1",
            semconv.INPUT_FEATURES: ["income", "debt_ratio", "years_employed", "region", "home"],
            semconv.OUTPUT_CLASSES: [0, 1],
            semconv.DECISION_IDS: [stamp + f"{rng.getrandbits(80):020x}" for _ in range(rows)],
            semconv.INPUT_HASHES: [f"{rng.getrandbits(128):032x}" for _ in range(rows)],
            semconv.OUTPUTS: [int(x > 0.5) for x in p],
            semconv.OUTPUT_SCORES_PREFIX + "0": [1 - x for x in p],
            semconv.OUTPUT_SCORES_PREFIX + "1": p,
        },
        resource=RESOURCE,
        scope_name=semconv.SCOPE, scope_version="0.1.0",
    )


def insert_rate(tmp: Path) -> dict[str, float]:
    rng = random.Random(1)
    out = {}
    for label, rows, per_commit, commits in (("batch: 1000-row spans", 1000, 100, 3),
                                              ("online: 1-row spans, 256 a commit", 1, 256, 200)):
        s = store.Store(tmp / f"insert-{rows}.db", create=True)
        batches = [[span(0, time.time_ns(), "1.4.2", rows, rng) for _ in range(per_commit)] for _ in range(commits)]
        t = time.perf_counter()
        for b in batches:
            s.append(b)
        elapsed = time.perf_counter() - t
        t = time.perf_counter()
        indexed = s.index_inputs(1 << 30)
        out[label] = elapsed / (rows * per_commit * commits) * 1e6
        out[label + ", bulk input index"] = (time.perf_counter() - t) / indexed * 1e6
        s._connection().execute("PRAGMA wal_checkpoint(TRUNCATE)")
        out[label + ", bytes per decision on disk"] = s.path.stat().st_size / (rows * per_commit * commits)
        s.close()
    return out


def build(path: Path, decisions: int, now: int) -> dict[str, object]:
    """`decisions` decisions over 30 days: half in single-decision spans, half in 1000-row spans."""
    rng = random.Random(7)
    s = store.Store(path, create=True)
    start = now - 30 * DAY
    singles, batches = decisions // 2, decisions // 2 // 1000
    times = sorted(rng.randrange(start, now) for _ in range(singles + batches))
    kinds = [1] * singles + [1000] * batches
    rng.shuffle(kinds)
    sample: dict[str, object] = {}
    chunk: list[SpanRecord] = []
    rows_in_chunk = 0
    t = time.perf_counter()
    for i, (when, rows) in enumerate(zip(times, kinds)):
        record = span(i, when, VERSIONS[rng.randrange(len(VERSIONS))], rows, rng)
        if i == len(times) // 2:
            sample = {"decision_id": record.attributes[semconv.DECISION_IDS][0],
                      "input_hash": record.attributes[semconv.INPUT_HASHES][0]}
        chunk.append(record)
        rows_in_chunk += rows
        if rows_in_chunk >= 50_000:
            s.append(chunk)
            chunk, rows_in_chunk = [], 0
    s.append(chunk)
    while s.index_inputs():
        pass
    s.close()
    sample["build_s"] = time.perf_counter() - t
    return sample


def timed(fn, repeat: int) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times), max(times)


def query_times(path: Path, now: int, sample: dict[str, object]) -> dict[str, tuple[float, float]]:
    rng = random.Random(3)
    days = [now - rng.randrange(2, 29) * DAY for _ in range(20)]
    it = iter(days)

    def first_page() -> None:
        day = next(it)
        page = list(find_decisions(model_version="1.4.2", start=day, end=day + DAY, limit=50, url=str(path)))
        assert len(page) == 50

    def by_id() -> None:
        assert len(list(find_decisions(decision_id=sample["decision_id"], url=str(path)))) == 1

    def by_hash() -> None:
        assert len(list(find_decisions(input_hash=sample["input_hash"], url=str(path)))) == 1

    return {
        "first page (50), model version + one day": timed(first_page, 20),
        "decision id lookup": timed(by_id, 20),
        "input hash lookup": timed(by_hash, 20),
    }


def batch_path(tmp: Path) -> dict[str, float]:
    from opentelemetry.instrumentation.utils import suppress_instrumentation
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = rng.normal(size=(100_000, 20))
    model = LogisticRegression().fit(X[:5000], (X[:5000, 0] > 0).astype(int))
    otel_rai.instrument(store=tmp / "batch.db", hash_key=KEY)
    bare, audited, drained = [], [], []
    for _ in range(5):
        with suppress_instrumentation():
            t = time.perf_counter()
            model.predict_proba(X)
            bare.append(time.perf_counter() - t)
        t = time.perf_counter()
        model.predict_proba(X)
        audited.append(time.perf_counter() - t)
        t = time.perf_counter()
        assert otel_rai.flush(120).complete
        drained.append(time.perf_counter() - t)
    otel_rai.uninstrument()
    n = len(X)
    return {
        "bare predict_proba, µs/row": statistics.median(bare) / n * 1e6,
        "caller overhead with the store, µs/row": (statistics.median(audited) - statistics.median(bare)) / n * 1e6,
        "audit worker after the call (hash, spans, store), µs/row": statistics.median(drained) / n * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--decisions", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, help="build the store here and keep it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.keep or Path(scratch)
        tmp.mkdir(parents=True, exist_ok=True)
        os.environ["OTEL_RAI_HOME"] = str(tmp / "home")
        results: dict[str, object] = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                                      f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}"}
        results["writing: µs and bytes per decision"] = insert_rate(tmp)
        now = time.time_ns()
        path = tmp / "million.db"
        if path.exists():
            path.unlink()
        sample = build(path, args.decisions, now)
        results["store"] = {"decisions": args.decisions, "build s": sample.pop("build_s"),
                            "bytes per decision": path.stat().st_size / args.decisions}
        results["query ms (median, max of 20, fresh connection each)"] = query_times(path, now, sample)
        results["batch path, 100k rows"] = batch_path(tmp)

    print(results["machine"])
    for section, values in results.items():
        if not isinstance(values, dict):
            continue
        print(f"\n{section}")
        for name, value in values.items():
            shown = f"{value[0]:8.2f}  (max {value[1]:.2f})" if isinstance(value, tuple) else f"{value:8.2f}"
            name = name if len(name) <= 58 else name[:57] + "…"
            print(f"  {name:<58} {shown}")
    target = ROOT / "bench" / "results" / "bench_store.json"
    target.parent.mkdir(exist_ok=True)
    target.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(f"\nwritten to {target.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
