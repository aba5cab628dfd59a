"""What the record design costs at the least (issue 20): each thread's CPU per single-row decision, in
drained blocks of calls as the honest scenario runs them, and the part of it spent in compiled code that
any implementation of this design would still run. Reported, not gated: it says how far a native audit
path could go.

Per decision, each kept record costs at least: its canonical body and SHA-256 (the chain), its
attributes as compact JSON (the store's ``spans`` row), its OTLP attributes when exporting, and SQLite's
work for its rows and its share of the commit. The first three are timed natively on the records the
session wrote; SQLite's part is timed around the store's statements and commit as the worker runs them
(``time.thread_time`` of the worker's thread, so including the sqlite3 module's binding of values).
"""

from __future__ import annotations

import collections
import gc
import hashlib
import os
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from opentelemetry.instrumentation.utils import suppress_instrumentation

import otel_rai
from otel_rai import semconv
from otel_rai.chain import canonical
from otel_rai.codec import native
from otel_rai.codec.records import SpanRecord
from otel_rai.codec.sdk import from_readable
from otel_rai.sinks import local
from otel_rai.store import store as store_module

#: Blocks of single-row calls, each ending with ``flush()``; and blocks run before measuring.
BLOCKS, WARM_BLOCKS = 60, 5
#: The ``otlp_attributes`` tag of a span's attributes (the OTLP ``Span.attributes`` field number).
_SPAN_ATTRIBUTES_TAG = 9


def _thread_cpu() -> dict[str, float]:
    """CPU seconds of each thread of this process, by name: Python's threads by their CPU clocks, the
    others (a gRPC core's) from Linux's ``/proc`` in clock ticks."""
    out: dict[str, float] = collections.Counter()
    python = set()
    for thread in threading.enumerate():
        name = "other Python threads" if thread.name.startswith("Thread-") else thread.name
        python.add(thread.native_id)
        try:
            out[name] += time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
        except OSError:  # it ended meanwhile
            continue
    ticks = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir("/proc/self/task"):
        if int(tid) in python:
            continue
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        out["threads not started by Python"] += (int(fields[11]) + int(fields[12])) / ticks
    return out


@contextmanager
def _sqlite_timed(spent: collections.Counter) -> Iterator[None]:
    """Time the store's INSERT statements and each write transaction's commit, on the thread that runs them."""
    insert, writing = store_module.insert, store_module.writing

    def timed_insert(conn: Any, head: str, width: int, rows: Any) -> None:
        rows = list(rows)  # built by the caller's generator: Python's work, not SQLite's
        t0 = time.thread_time()
        insert(conn, head, width, rows)
        spent["sqlite"] += time.thread_time() - t0

    @contextmanager
    def timed_writing(conn: Any) -> Iterator[None]:
        t0 = time.thread_time()
        with writing(conn):
            spent["sqlite"] += time.thread_time() - t0  # BEGIN IMMEDIATE
            yield
            t0 = time.thread_time()
        spent["sqlite"] += time.thread_time() - t0  # COMMIT

    store_module.insert, store_module.writing = timed_insert, timed_writing
    try:
        yield
    finally:
        store_module.insert, store_module.writing = insert, writing


@contextmanager
def _records_kept(kept: list) -> Iterator[None]:
    """Keep the spans that the store sink commits (the records the session wrote)."""
    commit = local.StoreSink.commit

    def keeping(self: local.StoreSink) -> set[str]:
        kept.extend(self._received)
        return commit(self)

    local.StoreSink.commit = keeping
    try:
        yield
    finally:
        local.StoreSink.commit = commit


def _native_us(records: list, keeping: bool, exporting: bool) -> dict[str, float]:
    """µs per record of the compiled calls each record needs, timed on `records`: the store's JSON if it
    keeps records (a spool does not), the OTLP attributes if it exports."""
    module = native.module
    if module is None:
        return {}
    hashed, hashed_attribute, most = canonical._HASHED, canonical.hashed_attribute, canonical._MAX_HASHED_NAMES

    def chain() -> None:
        for r in records:
            body = module.canonical_body(r.name, r.trace_id, r.span_id, r.parent_span_id or "", r.status_code,
                                         r.status_message, r.attributes, hashed, hashed_attribute, most)
            hashlib.sha256(b"%s\n%d\n%d\n%s" % (canonical.VERSION, r.start_ns, r.end_ns, body)).hexdigest()

    calls: dict[str, Callable[[], Any]] = {"canonical body and SHA-256": chain}
    if keeping:
        calls["attributes as compact JSON"] = lambda: [module.compact_json(r.attributes) for r in records]
    if exporting:
        calls["OTLP attributes"] = lambda: [module.otlp_attributes(_SPAN_ATTRIBUTES_TAG, r.attributes) for r in records]
    out = {}
    gc.disable()
    try:
        for name, call in calls.items():
            best = float("inf")
            for _ in range(5):
                t0 = time.thread_time()
                call()
                best = min(best, time.thread_time() - t0)
            out[name] = best / len(records) * 1e6
    finally:
        gc.enable()
    return out


def floor(model: Any, xs: list[Any], options: dict[str, Any]) -> dict[str, float]:
    """µs per decision: bare, in blocks alternating with the instrumented ones; each thread's CPU in
    the instrumented blocks (the caller's over bare); the
    compiled calls and SQLite's work within them; and the ratio to bare if they were all there was.
    `options` are ``instrument()``'s: an ``endpoint`` without a ``store`` writes to a spool, which keeps
    no records."""
    exporting = "endpoint" in options
    keeping = not exporting or "store" in options
    original = type(model).predict_proba
    bare = 0.0
    spent: collections.Counter = collections.Counter()
    kept: list = []
    with _records_kept(kept):  # before the session starts: its worker holds the sink's bound method
        otel_rai.instrument(**options)
        try:
            with otel_rai.decisions(groups={"sex": "f"}):
                for _ in range(WARM_BLOCKS):
                    for x in xs:
                        model.predict_proba(x)
                    otel_rai.flush(120)
                kept.clear()
                threads: dict[str, float] = collections.Counter()
                # Bare blocks alternate with the instrumented ones: the original method, unpatched, and
                # the methods it calls (patched too) suppressed; the caller's thread only.
                bare_call = getattr(type(model).predict_proba, "__otel_rai_original__", original)
                with _sqlite_timed(spent):
                    for _ in range(BLOCKS):
                        gc.collect()
                        start = time.thread_time()
                        with suppress_instrumentation():
                            for x in xs:
                                bare_call(model, x)
                        bare += time.thread_time() - start
                        gc.collect()  # as the honest scenario does before each block
                        before = _thread_cpu()
                        for x in xs:
                            model.predict_proba(x)
                        otel_rai.flush(120)
                        for name, seconds in _thread_cpu().items():
                            threads[name] += seconds - before.get(name, 0.0)
        finally:
            otel_rai.uninstrument()
    n = BLOCKS * len(xs)
    bare = bare / n * 1e6
    threads = {name: seconds / n * 1e6 for name, seconds in threads.items()}
    out = {"bare": bare, **{f"thread: {k}": v for k, v in threads.items() if v > 0}}
    out["thread: MainThread"] = threads.get("MainThread", 0.0) - bare  # the caller's, over bare
    out["all threads, over bare"] = sum(v for k, v in out.items() if k.startswith("thread: "))
    decided = [s for s in kept if s.attributes.get(semconv.DECISION_IDS)]
    # The last ten blocks' records (the audit tracer's spans reach the sink as records already).
    records = [s if isinstance(s, SpanRecord) else from_readable(s) for s in decided[-len(xs) * 10:]]
    compiled = {"SQLite (statements and commits)": spent["sqlite"] / n * 1e6,
                **_native_us(records, keeping, exporting)}
    out.update({f"compiled: {k}": v for k, v in compiled.items()})
    out["compiled, all"] = sum(compiled.values())
    out["best ratio if all else were free"] = (bare + out["compiled, all"]) / bare
    return out


def floor_batch(model: Any, data: Any, options: dict[str, Any], calls: int = 3) -> dict[str, float]:
    """µs per row of `calls` calls on `data` (one batch each, each drained): the total CPU of all threads
    over bare, and SQLite's part of it (the rows each decision gets in the store, and their commits)."""
    model.predict_proba(data)
    start = time.process_time()
    for _ in range(calls):
        model.predict_proba(data)
    bare = time.process_time() - start
    spent: collections.Counter = collections.Counter()
    otel_rai.instrument(**options)
    try:
        with otel_rai.decisions(groups={"sex": "f"}):
            model.predict_proba(data[:10])
            otel_rai.flush(600)
            gc.collect()
            start = time.process_time()
            with _sqlite_timed(spent):
                for _ in range(calls):
                    model.predict_proba(data)
                    otel_rai.flush(600)
            total = time.process_time() - start
    finally:
        otel_rai.uninstrument()
    rows = calls * len(data)
    return {"all threads, over bare": (total - bare) / rows * 1e6,
            "compiled: SQLite (statements and commits)": spent["sqlite"] / rows * 1e6}
