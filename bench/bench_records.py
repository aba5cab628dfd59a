"""Benchmark of model records, artifacts and reproduction. Prints a table and writes
bench/results/bench_records.json.

    python bench/bench_records.py [--repeat 5]

Per estimator kind (the kinds of tests/test_reproduce.py):

* record size: the record span's attributes as JSON, and as OTLP protobuf (what the spool keeps);
* record cost: the audit worker's CPU time to build the record's attributes (thread CPU, median);
* artifact save: serialising, loading the copy back and checking its fingerprint, writing (thread CPU
  and wall time, median), the serializer and the bytes on disk;
* reproduce: `otel_rai.reproduce` of one single-row decision from the local store, wall time (median).

And the training-data hash per row, for numeric arrays and for a DataFrame of mixed columns, and the fit
observer's whole cost (the hash, and the fingerprint it files it under) on a 100-tree forest.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import otel_rai  # noqa: E402
from otel_rai import semconv  # noqa: E402
from otel_rai.audit.hashing import HashKey  # noqa: E402
from otel_rai.capture import models  # noqa: E402
from otel_rai.capture.fingerprint import fingerprint  # noqa: E402
from otel_rai.capture.recorder import DecisionCall  # noqa: E402
from otel_rai.codec import otlpproto  # noqa: E402
from otel_rai.codec.sdk import ReadableSpans  # noqa: E402
from otel_rai.provenance import build  # noqa: E402
from otel_rai.provenance.artifacts import ArtifactStore  # noqa: E402
from otel_rai.provenance.reproduce import reproduce  # noqa: E402
from otel_rai.provenance.training import TrainingLog, hash_training  # noqa: E402
from otel_rai.settings import Settings  # noqa: E402
from otel_rai.store import Store  # noqa: E402

KEY = "bench-key-0123456789abcdef01234567"


def _kinds() -> dict:
    from test_reproduce import _kinds as kinds

    return kinds()


def _median_cpu(func, repeat: int) -> tuple[float, float]:
    """(thread CPU ms, wall ms), medians of `repeat` runs of `func` on this thread."""
    cpu, wall = [], []
    for _ in range(repeat):
        c, w = time.thread_time(), time.perf_counter()
        func()
        cpu.append((time.thread_time() - c) * 1e3)
        wall.append((time.perf_counter() - w) * 1e3)
    return statistics.median(cpu), statistics.median(wall)


def _one_kind(kind: str, model, data, operation: str, background, root: Path, repeat: int) -> dict:
    """Record size and cost, and artifact save cost, of one fitted model."""
    settings = Settings(hash_key=HashKey.from_material(KEY))
    fp = fingerprint(model)
    call = DecisionCall(model, models.model_info(model, None), operation, data[:1], 1, ["a"], {}, None,
                        time.time_ns())
    record_cpu, _ = _median_cpu(lambda: build.attributes(call, settings, None, lambda *a: None), repeat)
    attributes = build.attributes(call, settings, None, lambda *a: None)
    save_cpu, save_wall = _median_cpu(
        lambda: ArtifactStore(root / f"a-{kind}-{time.perf_counter_ns()}").save(fp, model, fingerprint, background),
        repeat)
    saved = ArtifactStore(root / f"final-{kind}").save(fp, model, fingerprint, background)
    size = sum(p.stat().st_size for p in (root / f"final-{kind}" / fp).glob("model.*"))
    return {"kind": kind, "record_json_bytes": len(json.dumps(attributes)), "record_cpu_ms": record_cpu,
            "artifact_format": saved.format, "artifact_bytes": size, "save_cpu_ms": save_cpu,
            "save_wall_ms": save_wall}


def per_kind(repeat: int) -> list[dict]:
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for kind, (make, data, operation, background) in _kinds().items():
            out.append(_one_kind(kind, make(), data, operation, background, root, repeat))
        # reproduce, end to end from a store written by an instrumented session
        path = root / "audit.db"
        otel_rai.instrument(store=path, hash_key=KEY, artifacts=root / "artifacts")
        inputs = {}
        for kind, (make, data, operation, background) in _kinds().items():
            model = otel_rai.register_model(make(), name=kind, version="1", background=background)
            with otel_rai.decisions(ids=[kind]):
                getattr(model, operation)(data[:1])
            inputs[kind] = data.iloc[0].to_dict() if isinstance(data, pd.DataFrame) else list(map(float, data[0]))
        assert otel_rai.flush(120).complete
        otel_rai.uninstrument()
        otlp = {}
        to_span = ReadableSpans()
        for record in Store(path).spans():
            if record.name == semconv.MODEL_RECORD_SPAN:
                otlp[record.attributes[semconv.MODEL_NAME]] = len(otlpproto.encode_span(to_span(record)))
        for row in out:
            kind = row["kind"]
            inputs_kind = {k: (v.item() if hasattr(v, "item") else v) for k, v in inputs[kind].items()} \
                if isinstance(inputs[kind], dict) else inputs[kind]
            walls = []
            for _ in range(repeat):
                started = time.perf_counter()
                result = reproduce(kind, inputs_kind, url=str(path), key=KEY)
                walls.append((time.perf_counter() - started) * 1e3)
            assert result.reproduced, (kind, result.comparisons)
            row["record_otlp_bytes"] = otlp[kind]
            row["reproduce_ms"] = statistics.median(walls)
    return out


def training(repeat: int) -> list[dict]:
    rng = np.random.default_rng(0)
    n = 200_000
    numeric = rng.normal(size=(n, 20))
    target = rng.integers(0, 2, n)
    frame = pd.DataFrame({"income": rng.normal(5e4, 9e3, n), "age": rng.integers(18, 90, n),
                          "region": rng.choice(["north", "south", "east", "west"], n),
                          "segment": pd.Categorical(rng.choice(["a", "b", "c"], n)),
                          "score": rng.random(n).astype(np.float32)})
    rows = []
    for name, X in (("numpy float64, 20 columns", numeric), ("DataFrame, 5 mixed columns", frame)):
        cpu, wall = _median_cpu(lambda X=X: hash_training(X, target, key=KEY), repeat)
        rows.append({"case": name, "rows": n, "cpu_ms": cpu, "us_per_row": cpu * 1e3 / n})
    from sklearn.ensemble import RandomForestClassifier

    X, y = numeric[:20_000], target[:20_000]
    forest = RandomForestClassifier(100, random_state=0, n_jobs=1).fit(X, y)
    log = TrainingLog(HashKey.from_material(KEY), fingerprint)
    cpu, _ = _median_cpu(lambda: log.observe(forest, "fit", (X, y), {}, 1), repeat)
    fit_cpu, _ = _median_cpu(lambda: RandomForestClassifier(100, random_state=0, n_jobs=1).fit(X, y), 1)
    rows.append({"case": "fit observer on a 100-tree forest, 20,000 rows (hash + fingerprint)", "rows": 20_000,
                 "cpu_ms": cpu, "us_per_row": cpu * 1e3 / 20_000, "fit_cpu_ms": fit_cpu})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "bench_records.json"))
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    kinds = per_kind(args.repeat)
    print(f"{'kind':<10} {'record JSON':>11} {'OTLP':>7} {'record CPU':>11} {'artifact':>22} {'save CPU':>9} "
          f"{'save wall':>10} {'reproduce':>10}")
    for r in kinds:
        print(f"{r['kind']:<10} {r['record_json_bytes']:>9} B {r['record_otlp_bytes']:>5} B "
              f"{r['record_cpu_ms']:>8.2f} ms {r['artifact_format'][:12]:>12} {r['artifact_bytes'] / 1e3:>7.0f} kB "
              f"{r['save_cpu_ms']:>6.1f} ms {r['save_wall_ms']:>7.1f} ms {r['reproduce_ms']:>7.1f} ms")
    hashing = training(args.repeat)
    for r in hashing:
        print(f"training hash: {r['case']}: {r['us_per_row']:.3f} µs/row ({r['cpu_ms']:.0f} ms for {r['rows']:,} rows)"
              + (f"; the fit itself: {r['fit_cpu_ms']:.0f} ms" if "fit_cpu_ms" in r else ""))
    Path(args.out).parent.mkdir(exist_ok=True)
    Path(args.out).write_text(json.dumps({"python": platform.python_version(), "kinds": kinds, "training": hashing},
                                         indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
