"""A process that decides in children, in one of the common lifecycles, for tests/test_lifecycles.py and
bench/bench_lifecycles.py. Configured by the environment (OTEL_RAI_STORE or an OTLP endpoint, the hash
key); instruments at import, so that spawned children (which import this module) are instrumented too.

    python lifecycle_app.py LIFECYCLE START_METHOD N_DECISIONS

Prints one JSON line: the decision ids whose results came back to the parent ("returned"), and, for
lifecycles cut short, the ids each child decided (from files the children write as they decide).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import multiprocessing
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

import otel_rai
from otel_rai.store import connection as store_connection
from otel_rai.store import store as store_module

X = np.random.RandomState(0).randn(64, 4)
MODEL = LogisticRegression().fit(X, (X[:, 0] > 0).astype(int))
#: Seconds each store transaction of the export thread lasts at least: the Pool then forks its children
#: while the parent holds the store's write lock (its export thread's first transaction checks the schema).
SLOW_EXPORT_WRITES = float(os.environ.get("LIFECYCLE_SLOW_EXPORT_WRITES", "0"))
if SLOW_EXPORT_WRITES:
    _writing = store_connection.writing

    @contextlib.contextmanager
    def _slow_writing(conn):
        with _writing(conn):
            if threading.current_thread().name == "otel-rai-export":
                time.sleep(SLOW_EXPORT_WRITES)
            yield

    store_connection.writing = store_module.writing = _slow_writing
otel_rai.instrument(explain=False)
#: Where the children note each decision they made (for lifecycles whose results do not all return).
NOTES = os.environ.get("LIFECYCLE_NOTES")
CHUNK = 8


def decide(i: int) -> str:
    """One decision, named by its task number."""
    decision_id = f"d-{i}"
    with otel_rai.decisions(ids=[decision_id]):
        MODEL.predict(X[i % 64 : i % 64 + 1])
    if NOTES:
        with open(Path(NOTES) / f"{os.getpid()}.txt", "a") as f:
            f.write(decision_id + "\n")
    return decision_id


def slow_decide(i: int) -> str:
    """A decision, then a while before the task returns (so that terminate() finds tasks running)."""
    decision_id = decide(i)
    time.sleep(0.02)
    return decision_id


def run(lifecycle: str, method: str, n: int) -> list[str]:
    ctx = multiprocessing.get_context(method)
    tasks = range(n)
    if lifecycle == "pool-with":  # the idiom of the Python docs: its exit calls terminate()
        with ctx.Pool(4) as pool:
            return pool.map(decide, tasks, chunksize=CHUNK)
    if lifecycle == "pool-close-join":
        pool = ctx.Pool(4)
        returned = pool.map(decide, tasks, chunksize=CHUNK)
        pool.close()
        pool.join()
        return returned
    if lifecycle == "pool-terminate":
        pool = ctx.Pool(4)
        returned = pool.map(decide, tasks, chunksize=CHUNK)
        pool.terminate()
        pool.join()
        return returned
    if lifecycle == "pool-maxtasksperchild":
        with ctx.Pool(4, maxtasksperchild=3) as pool:
            return pool.map(decide, tasks, chunksize=CHUNK)
    if lifecycle == "pool-imap-unordered":
        with ctx.Pool(4) as pool:
            return list(pool.imap_unordered(decide, tasks))
    if lifecycle == "pool-terminate-mid-flight":  # terminate() while tasks still run: only some return
        returned = []
        with ctx.Pool(4) as pool:
            for decision_id in pool.imap_unordered(slow_decide, tasks):
                returned.append(decision_id)
                if len(returned) >= n // 2:
                    break
        return returned
    if lifecycle == "executor":
        with concurrent.futures.ProcessPoolExecutor(4, mp_context=ctx) as executor:
            return list(executor.map(decide, tasks, chunksize=CHUNK))
    if lifecycle == "process-per-task":
        returned = []
        queue = ctx.SimpleQueue()
        for start in range(0, n, CHUNK):
            process = ctx.Process(target=_decide_into, args=(queue, range(start, min(n, start + CHUNK))))
            process.start()
            returned += queue.get()
            process.join()
        return returned
    raise SystemExit(f"unknown lifecycle {lifecycle}")


def _decide_into(queue, tasks) -> None:
    queue.put([decide(i) for i in tasks])


def _noted() -> list[str]:
    if not NOTES:
        return []
    return [line.strip() for p in Path(NOTES).glob("*.txt") for line in p.read_text().splitlines() if line.strip()]


if __name__ == "__main__":
    lifecycle, method, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    started = time.perf_counter()
    returned = run(lifecycle, method, n)
    elapsed = time.perf_counter() - started
    result = otel_rai.flush(60)
    otel_rai.uninstrument()
    print(json.dumps({"returned": returned, "decided": _noted(), "seconds": elapsed, "complete": result.complete}),
          flush=True)
