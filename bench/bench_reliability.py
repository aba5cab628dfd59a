"""Benchmark of the audit trail's delivery guarantees. Prints a table and writes
bench/results/bench_reliability.json.

    python bench/bench_reliability.py [--decisions 100000] [--outage 60]

Every scenario sends single-row decisions (the worst case per decision) to a real OTLP/gRPC receiver
on 127.0.0.1 (tests/servers.py) and counts the decision ids that arrive:

1. Lost decisions (must be 0) in: a backend outage (connection refused, then a hanging TCP listener)
   of `--outage` seconds during `--decisions` decisions; a process SIGKILLed with spooled decisions
   and the next process draining them; a burst faster than a slow backend, spooled and (``spool=False``)
   held in memory with back-pressure.
2. Throughput: decisions per second the application makes bare, with a live endpoint, and while
   spooling during the outage (the caller's rate); and the rate at which the audit worker writes them
   to the spool.
3. Spool disk use per 1M decisions (single-row calls and 1000-row calls), at the end of the outage.
4. Time to drain the spooled decisions once the backend is back.
5. Fail-closed (``on_audit_failure="raise"``): the time a decision waits for its durable write.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from servers import HangingListener, OtlpReceiver, attributes, free_port  # noqa: E402

import otel_rai  # noqa: E402
from otel_rai import semconv  # noqa: E402
from otel_rai.session import instrumentor  # noqa: E402

KEY = "bench-key-0123456789abcdef0123456789"
X = np.random.default_rng(0).normal(size=(256, 8))
MODEL = LogisticRegression().fit(X, (X[:, 0] > 0).astype(int))


def decide(n: int, tag: str) -> float:
    """`n` single-row predict calls with ids ``tag-i``; returns the caller's decisions per second."""
    start = time.perf_counter()
    for i in range(n):
        with otel_rai.decisions(ids=[f"{tag}-{i}"]):
            MODEL.predict(X[i % 256 : i % 256 + 1])
    return n / (time.perf_counter() - start)


def bare_rate(n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        MODEL.predict(X[i % 256 : i % 256 + 1])
    return n / (time.perf_counter() - start)


def lost(receiver: OtlpReceiver, expected: list[str]) -> dict[str, int]:
    got = [i for _, span in receiver.spans() for i in attributes(span).get(semconv.DECISION_IDS, ())]
    return {"lost": len(set(expected) - set(got)), "delivered more than once": len(got) - len(set(got))}


def spool_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if not p.name.endswith("lock"))


def outage(tmp: Path, n: int, seconds: float, failure: str) -> dict[str, object]:
    port = free_port()
    hung = HangingListener(port) if failure == "hanging" else None
    spool = tmp / f"spool-{failure}.db"
    began = time.monotonic()
    otel_rai.instrument(endpoint=f"http://127.0.0.1:{port}", hash_key=KEY, spool=spool)
    caller = decide(n, failure)
    instrumentor._session.worker.flush(600)  # every decision is in the spool now
    written = n / (time.monotonic() - began)
    size = spool_bytes(spool)
    time.sleep(max(0.0, seconds - (time.monotonic() - began)))
    if hung is not None:
        hung.stop()
    receiver = OtlpReceiver(port).start()
    back = time.monotonic()
    complete = otel_rai.flush(900).complete
    drain = time.monotonic() - back
    otel_rai.uninstrument()
    result = {**lost(receiver, [f"{failure}-{i}" for i in range(n)]), "complete": complete,
              "caller decisions/s while spooling": round(caller), "spooled decisions/s (audit worker)": round(written),
              "spool MB per 1M decisions": round(size / n * 1e6 / 2**20), "drain s": round(drain, 1),
              "outage s": round(back - began, 1)}
    receiver.stop()
    return result


KILLED = """
import sys, numpy as np, otel_rai, time
from sklearn.linear_model import LogisticRegression
from otel_rai.session import instrumentor
X = np.random.default_rng(0).normal(size=(256, 8)); model = LogisticRegression().fit(X, X[:, 0] > 0)
otel_rai.instrument(spool=sys.argv[1], endpoint=sys.argv[2], hash_key="k" * 32)
for i in range(int(sys.argv[3])):
    with otel_rai.decisions(ids=[f"killed-{i}"]):
        model.predict(X[i % 256:i % 256 + 1])
instrumentor._session.worker.flush(600)
print("spooled", flush=True)
time.sleep(600)
"""


def sigkill(tmp: Path, n: int) -> dict[str, object]:
    spool = tmp / "spool-killed.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    dead = f"http://127.0.0.1:{free_port()}"
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(KILLED), str(spool), dead, str(n)], env=env,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "spooled"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    receiver = OtlpReceiver().start()
    began = time.monotonic()
    otel_rai.instrument(spool=spool, endpoint=receiver.endpoint, hash_key=KEY)
    complete = otel_rai.flush(600).complete
    drain = time.monotonic() - began
    otel_rai.uninstrument()
    result = {**lost(receiver, [f"killed-{i}" for i in range(n)]), "complete": complete, "drain s": round(drain, 1)}
    receiver.stop()
    return result


def burst(tmp: Path, n: int, spooled: bool) -> dict[str, object]:
    slow = OtlpReceiver(delay=0.05).start()  # each request takes 50 ms more
    otel_rai.instrument(endpoint=slow.endpoint, hash_key=KEY, spool=tmp / "spool-burst.db" if spooled else False)
    caller = decide(n, "burst")
    complete = otel_rai.flush(600).complete
    otel_rai.uninstrument()
    result = {**lost(slow, [f"burst-{i}" for i in range(n)]), "complete": complete,
              "caller decisions/s": round(caller)}
    slow.stop()
    return result


def live(tmp: Path, n: int) -> float:
    receiver = OtlpReceiver().start()
    otel_rai.instrument(endpoint=receiver.endpoint, hash_key=KEY, spool=tmp / "spool-live.db")
    rate = decide(n, "live")
    otel_rai.uninstrument()
    receiver.stop()
    return rate


def batch_spool(tmp: Path, calls: int) -> int:
    """MB of spool per 1M decisions made in 1000-row calls, the backend down."""
    spool = tmp / "spool-batch.db"
    otel_rai.instrument(endpoint=f"http://127.0.0.1:{free_port()}", hash_key=KEY, spool=spool)
    big = np.tile(X, (4, 1))[:1000]
    for _ in range(calls):
        MODEL.predict_proba(big)
    instrumentor._session.worker.flush(600)
    size = spool_bytes(spool)
    instrumentor.RaiInstrumentor().uninstrument(timeout=0.1)
    return round(size / (calls * 1000) * 1e6 / 2**20)


def fail_closed(tmp: Path, n: int) -> dict[str, float]:
    otel_rai.instrument(store=tmp / "closed.db", hash_key=KEY, on_audit_failure="raise")
    waits = []
    for i in range(n):
        start = time.perf_counter()
        MODEL.predict(X[i % 256 : i % 256 + 1])
        waits.append(time.perf_counter() - start)
    otel_rai.uninstrument()
    bare = []
    for i in range(n):
        start = time.perf_counter()
        MODEL.predict(X[i % 256 : i % 256 + 1])
        bare.append(time.perf_counter() - start)
    return {"median ms per decision": round(statistics.median(waits) * 1e3, 2),
            "p99 ms": round(sorted(waits)[int(0.99 * n)] * 1e3, 2),
            "bare median ms": round(statistics.median(bare) * 1e3, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--decisions", type=int, default=100_000)
    parser.add_argument("--outage", type=float, default=60.0, help="seconds the backend is down")
    args = parser.parse_args()
    n = args.decisions
    results: dict[str, object] = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                                  f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}"}
    os.environ["OTEL_RAI_HOME"] = tempfile.mkdtemp(prefix="otel-rai-bench-home-")
    with tempfile.TemporaryDirectory(prefix="otel-rai-bench-") as tmp_name:
        tmp = Path(tmp_name)
        results["decisions/s, single-row calls"] = {
            "bare": round(bare_rate(n // 5)), "endpoint up (spool)": round(live(tmp, n // 5))}
        results[f"outage {args.outage:g} s, refused, {n} decisions"] = outage(tmp, n, args.outage, "refused")
        results[f"outage {args.outage:g} s, hanging, {n} decisions"] = outage(tmp, n, args.outage, "hanging")
        results[f"SIGKILL, {n // 5} spooled, next process drains"] = sigkill(tmp, n // 5)
        results[f"burst of {n // 5} into a slow backend, spooled"] = burst(tmp, n // 5, True)
        results[f"burst of {n // 5} into a slow backend, spool=False (blocks)"] = burst(tmp, n // 5, False)
        results["spool MB per 1M decisions, 1000-row calls"] = batch_spool(tmp, 100)
        results["fail-closed, 2000 single-row decisions"] = fail_closed(tmp, 2000)
    print(results["machine"])
    for section, values in results.items():
        if section == "machine":
            continue
        print(f"\n{section}")
        for key, value in (values.items() if isinstance(values, dict) else [("", values)]):
            print(f"  {key:<40} {value}")
    target = ROOT / "bench" / "results" / "bench_reliability.json"
    target.parent.mkdir(exist_ok=True)
    target.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
