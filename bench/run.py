"""otel-rai benchmark: instrumented vs bare, in one process, on the same data.

    python bench/run.py            # full run (about 10 minutes on 2 cores)
    python bench/run.py --quick    # shorter runs, same scenarios
    python bench/run.py --only single,batch       # of: single, batch, sustained, explain, memory, store

Prints a table and writes JSON (default bench/results/latest.json). Each scenario alternates bare and
instrumented blocks and reports the median ratio with its interquartile range. Two views of cost:

* latency: wall time of the caller's call, what a user measures around ``predict``;
* cpu: process CPU time per decision including the audit worker's background work (the block is
  followed by ``flush`` inside the measurement), the honest total.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from sklearn.compose import ColumnTransformer
from sklearn.datasets import make_classification
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import otel_rai

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_explain, bench_store
from servers import free_port, rotel_binary, wait_for_port  # noqa: E402

KEY = "bench-key-0123456789abcdef01234567"


@dataclass
class Row:
    scenario: str
    case: str
    metric: str
    value: float
    spread: str = ""
    target: str = ""
    passed: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _quartiles(values: list[float]) -> str:
    q = statistics.quantiles(values, n=4) if len(values) >= 4 else [min(values), 0, max(values)]
    return f"IQR {q[0]:.3f}–{q[2]:.3f}"


# --- sinks ------------------------------------------------------------------------------------------


@contextmanager
def memory_sink(**options: Any) -> Iterator[Callable[[], None]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ALWAYS_ON)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    otel_rai.instrument(tracer_provider=provider, hash_key=KEY, **options)
    try:
        yield exporter.clear
    finally:
        otel_rai.uninstrument()


@contextmanager
def rotel_sink(**options: Any) -> Iterator[Callable[[], None]]:
    """A real local OTLP receiver: rotel over gRPC, exporting to its blackhole."""
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="otel-rai-bench-"))
    process = subprocess.Popen(
        [str(rotel_binary()), "start", "--otlp-grpc-endpoint", f"127.0.0.1:{port}",
         "--otlp-http-endpoint", f"127.0.0.1:{free_port()}", "--exporter", "blackhole",
         "--pid-file", str(workdir / "rotel.pid"), "--log-file", str(workdir / "rotel.log")],
        stdout=open(workdir / "out.log", "wb"), stderr=subprocess.STDOUT,
    )
    wait_for_port(port, process=process)
    otel_rai.instrument(endpoint=f"http://127.0.0.1:{port}", hash_key=KEY, **options)
    try:
        yield lambda: None
    finally:
        otel_rai.uninstrument()
        process.terminate()
        process.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


SINKS = {"memory": memory_sink, "rotel": rotel_sink}


# --- models -----------------------------------------------------------------------------------------


def _models() -> dict[str, tuple[Any, Any]]:
    X, y = make_classification(5000, 20, random_state=0)
    lr = LogisticRegression(max_iter=500).fit(X, y)
    hgb = HistGradientBoostingClassifier(max_iter=100, early_stopping=False).fit(X, y)
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(X[:, :6], columns=[f"n{i}" for i in range(6)])
    frame["region"] = rng.choice(["north", "south", "east", "west"], len(frame))
    frame["home"] = rng.choice(["rent", "own"], len(frame))
    pipe = make_pipeline(
        ColumnTransformer([("num", StandardScaler(), [f"n{i}" for i in range(6)]),
                           ("cat", OneHotEncoder(handle_unknown="ignore"), ["region", "home"])]),
        LogisticRegression(max_iter=500),
    ).fit(frame, y)
    # A background for the explanations that need one (linear models, also inside the pipeline).
    otel_rai.register_model(lr, background=X[:1000])
    otel_rai.register_model(pipe, background=frame.head(1000))
    return {"lr": (lr, X[:1].copy()), "hgb": (hgb, X[:1].copy()), "pipeline": (pipe, frame.head(1).copy())}


def _block(call: Callable[[], Any], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        call()
    return (time.perf_counter() - start) / n


def _bare(call: Callable[[], Any]) -> Callable[[], Any]:
    def run() -> Any:
        with suppress_instrumentation():
            return call()

    return run


# --- scenario 1: single-row predict_proba -----------------------------------------------------------


def single_row(quick: bool) -> list[Row]:
    rows = []
    rounds, n = (15, 100) if quick else (41, 200)
    models = _models()
    for sink_name, sink in SINKS.items():
        for explain in (False, True):
            for model_name, (model, x) in models.items():
                with sink(explain=explain) as clear:
                    rows.append(_single_case(model_name, sink_name, explain, model, x, rounds, n, clear))
    return rows


def _single_case(model_name, sink_name, explain, model, x, rounds, n, clear) -> Row:
    instrumented = lambda: model.predict_proba(x)  # noqa: E731
    bare = _bare(instrumented)
    for _ in range(20):  # warm-up, including the explainer's one-time build on the audit worker
        bare(), instrumented()
    otel_rai.flush(120)
    ratios, cpu_ratios, bare_us = [], [], []
    for r in range(rounds):
        otel_rai.flush(60)
        clear()
        order = [("bare", bare), ("inst", instrumented)] if r % 2 else [("inst", instrumented), ("bare", bare)]
        timing, cpu = {}, {}
        for label, call in order:
            c0 = time.process_time()
            timing[label] = _block(call, n)
            if label == "inst":
                otel_rai.flush(60)
            cpu[label] = time.process_time() - c0
        ratios.append(timing["inst"] / timing["bare"])
        cpu_ratios.append(cpu["inst"] / cpu["bare"])
        bare_us.append(timing["bare"] * 1e6)
    target = 1.35 if explain else 1.25
    ratio = statistics.median(ratios)
    gate = model_name == "lr" and sink_name == "memory"
    return Row(
        "single", f"{model_name}/{sink_name}/explain={'on' if explain else 'off'}", "latency ratio", ratio,
        _quartiles(ratios), f"≤ {target}×" if gate else "", (ratio <= target) if gate else None,
        {"cpu_ratio": statistics.median(cpu_ratios), "bare_us": statistics.median(bare_us)},
    )


# --- scenario 2: batches ----------------------------------------------------------------------------


def batch(quick: bool) -> list[Row]:
    rows = []
    X, y = make_classification(20_000, 20, random_state=0)
    model = LogisticRegression(max_iter=500).fit(X, y)
    sizes = (1_000, 100_000) if quick else (1_000, 100_000, 1_000_000)
    with memory_sink(explain=False) as clear:
        for size in sizes:
            data = np.tile(X, (size // len(X) + 1, 1))[:size]
            instrumented = lambda data=data: model.predict_proba(data)  # noqa: E731
            bare = _bare(instrumented)
            reps = 7 if size <= 100_000 else 3
            over, total, bare_cpu = [], [], []
            for _ in range(reps):
                clear()
                otel_rai.flush(600)
                c0, t0 = time.process_time(), time.perf_counter()
                bare()
                bare_wall, bare_c = time.perf_counter() - t0, time.process_time() - c0
                c0, t0 = time.process_time(), time.perf_counter()
                instrumented()
                inst_wall = time.perf_counter() - t0
                otel_rai.flush(600)
                inst_c = time.process_time() - c0
                over.append((inst_wall - bare_wall) / size * 1e6)
                total.append((inst_c - bare_c) / size * 1e6)
                bare_cpu.append(bare_c)
            caller = statistics.median(over)
            cpu = statistics.median(total)
            rows.append(Row("batch", f"{size:,} rows", "caller overhead µs/row", caller, _quartiles(over),
                            "≤ 1 µs/row", caller <= 1.0,
                            {"cpu_overhead_us_per_row": cpu,
                             "decisions_per_cpu_second": size / (statistics.median(bare_cpu) + cpu * size / 1e6)}))
    return rows


# --- scenario 3: sustained threads -------------------------------------------------------------------


def sustained(quick: bool) -> list[Row]:
    rows = []
    seconds = 5.0 if quick else 30.0
    X, y = make_classification(2000, 20, random_state=0)
    model = LogisticRegression(max_iter=500).fit(X, y)
    x = X[:1].copy()
    # The default durable spool first; then, for one thread, the in-memory export queue (spool=False),
    # which spends no CPU on the write-ahead log but keeps what waits for the backend in memory only.
    for threads, spool in ((1, None), (4, None), (8, None), (1, False)):
        bare = _run_threads(_bare(lambda: model.predict_proba(x)), threads, seconds / 3)
        with rotel_sink(explain=False, spool=spool):
            inst = _run_threads(lambda: model.predict_proba(x), threads, seconds)
            # What is still queued when the callers stop must be exported too: the rate counts the
            # time that takes, so an export that falls behind cannot pass for a fast one.
            start = time.perf_counter()
            result = otel_rai.flush(300)
            drain = time.perf_counter() - start
        added = [np.percentile(inst["latencies"], p) - np.percentile(bare["latencies"], p) for p in (50, 99)]
        rate = result.decisions / (seconds + drain)
        rows.append(Row(
            "sustained", f"{threads} thread(s), {seconds:.0f} s, rotel, {'spool=False' if spool is False else 'spool'}",
            "exported decisions/s", rate, "",
            "≥ 5000/s, 0 dropped" if threads == 1 else "0 dropped",
            (rate >= 5000 if threads == 1 else True) and result.complete and result.pending == 0
            and result.decisions == inst["count"],
            {"decided_per_s": inst["count"] / seconds, "drain_s": drain,
             "added_p50_us": added[0] * 1e6, "added_p99_us": added[1] * 1e6, "spans_exported": result.exported,
             "decisions": result.decisions, "dropped": inst["count"] - result.decisions,
             "bare_decisions_per_s": bare["count"] / (seconds / 3)},
        ))
    return rows


def _run_threads(call: Callable[[], Any], threads: int, seconds: float) -> dict[str, Any]:
    stop = time.perf_counter() + seconds
    latencies: list[list[float]] = [[] for _ in range(threads)]

    def loop(out: list[float]) -> None:
        while (now := time.perf_counter()) < stop:
            call()
            out.append(time.perf_counter() - now)

    workers = [threading.Thread(target=loop, args=(lat,)) for lat in latencies]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    flat = [v for lat in latencies for v in lat]
    return {"count": len(flat), "latencies": np.array(flat)}


# --- scenario 5: memory -----------------------------------------------------------------------------


def memory(quick: bool) -> list[Row]:
    X, y = make_classification(2000, 20, random_state=0)
    model = LogisticRegression(max_iter=500).fit(X, y)
    total = 200_000 if quick else 1_000_000
    batch_rows = 1000
    data = np.tile(X, (1, 1))[:batch_rows]
    with memory_sink(explain=False) as clear:
        model.predict_proba(data)
        otel_rai.flush(60)
        clear()
        gc.collect()
        before = _rss_mb()
        for i in range(total // batch_rows):
            model.predict_proba(data)
            if i % 50 == 49:
                otel_rai.flush(60)
                clear()  # the in-memory sink is the test harness, not otel-rai: empty it
        otel_rai.flush(60)
        clear()
        gc.collect()
        growth = _rss_mb() - before
    return [Row("memory", f"{total:,} decisions in 1000-row calls", "RSS growth MB", growth, "",
                "≤ 100 MB", growth <= 100)]


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


# --- scenario 4: explanations next to SHAP (bench_explain.py) ---------------------------------------


def explanations(quick: bool) -> list[Row]:
    import bench_explain

    repeat = 2 if quick else 5
    results = [*bench_explain.linear_single_row(repeat), *bench_explain.tree_scenarios(repeat),
               *bench_explain.boosting_libraries(repeat)]
    rows = []
    for r in results:
        shap_us = r["shap"].get("median_us")
        extra = {"method": r["method"], "shap_us_per_row": shap_us, "speedup_vs_shap": r["speedup_vs_shap"],
                 "max_abs_diff_vs_shap": r["max_abs_diff"]}
        rows.append(Row("explain", r["scenario"], "µs/row", r["ours"]["median_us"],
                        f"{r['ours']['min_us']:.1f}–{r['ours']['max_us']:.1f}", r.get("target") or "",
                        r.get("meets_target"), {k: v for k, v in extra.items() if v is not None}))
    return rows


# --- scenario 6: the local store (bench_store.py) ---------------------------------------------------


def store(quick: bool) -> list[Row]:
    import bench_store

    decisions = 200_000 if quick else 1_000_000
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        for name, value in bench_store.insert_rate(tmp).items():
            rows.append(Row("store", name, "bytes/decision" if "bytes" in name else "µs/decision", value))
        now = time.time_ns()
        sample = bench_store.build(tmp / "store.db", decisions, now)
        for name, (median, worst) in bench_store.query_times(tmp / "store.db", now, sample).items():
            gate = name.startswith("first page")
            rows.append(Row("store", f"{name}, {decisions:,} decisions", "ms", median, f"max {worst:.2f}",
                            "< 200 ms" if gate else "", (worst < 200) if gate else None))
    return rows


# --- driver -----------------------------------------------------------------------------------------

SCENARIOS: dict[str, Callable[[bool], list[Row]]] = {
    "single": single_row,
    "batch": batch,
    "sustained": sustained,
    "explain": explanations,
    "memory": memory,
    "store": store,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default=",".join(SCENARIOS))
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "latest.json"))
    args = parser.parse_args(argv)
    os.environ.setdefault("OTEL_RAI_HOME", tempfile.mkdtemp(prefix="otel-rai-bench-home-"))
    rows: list[Row] = []
    for name in args.only.split(","):
        print(f"running {name} ...", file=sys.stderr, flush=True)
        rows += SCENARIOS[name](args.quick)
    print(f"\n{'scenario':<10} {'metric':<24} {'value':>10}  {'spread':<22} {'target':<20} pass  case")
    for r in rows:
        verdict = "" if r.passed is None else ("PASS" if r.passed else "FAIL")
        print(f"{r.scenario:<10} {r.metric:<24} {r.value:>10.3f}  {r.spread:<22} {r.target:<20} {verdict:<5} {r.case}")
        for k, v in r.extra.items():
            print(f"{'':<13}{k} = {v:.3f}" if isinstance(v, float) else f"{'':<13}{k} = {v}")
    machine = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
               "processor": _cpu_model(), "quick": args.quick,
               "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine, "rows": [asdict(r) for r in rows]}, indent=2, default=float))
    print(f"\nwrote {out}", file=sys.stderr)
    return 0 if all(r.passed is not False for r in rows) else 1


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    sys.exit(main())
