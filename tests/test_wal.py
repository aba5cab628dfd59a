"""Export over OTLP, and the store as its write-ahead log: outage, restart after SIGKILL, shared store.

Every test sends to a real OTLP/gRPC receiver (tests/servers.py)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from sklearn.linear_model import LogisticRegression

import otel_rai
from otel_rai import semconv, store
from otel_rai.records import from_readable

from conftest import KEY
from recorded import data
from servers import OtlpReceiver, attributes, free_port

HERE = Path(__file__).parent


@pytest.fixture(autouse=True)
def _short_export_timeout(monkeypatch):
    # The SDK exporter retries a refused connection until its timeout: keep outages short.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")


def received_ids(receiver: OtlpReceiver) -> list[str]:
    return [i for _, span in receiver.spans() for i in attributes(span).get(semconv.DECISION_IDS, ())]


def outbox(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT count(*) FROM outbox").fetchone()[0]


def predict(ids: list[str]) -> None:
    X, y = data()
    model = LogisticRegression().fit(X, y)
    for decision_id in ids:
        with otel_rai.decisions(ids=[decision_id]):
            model.predict(X[:1])


def test_endpoint_only_exports_and_keeps_no_store(receiver):
    otel_rai.instrument(endpoint=receiver.endpoint, hash_key=KEY)
    predict(["a", "b", "c"])
    assert otel_rai.flush(30).complete
    assert received_ids(receiver) == ["a", "b", "c"]
    assert not store.default_path().exists()
    otel_rai.uninstrument()  # while the backend is up, so that the closing checkpoint is delivered


def test_endpoint_and_store_write_locally_first_then_export(receiver, tmp_path):
    path = tmp_path / "audit.db"
    otel_rai.instrument(endpoint=receiver.endpoint, store=path, hash_key=KEY)
    predict([f"d{i}" for i in range(30)])
    assert otel_rai.flush(30).complete
    assert received_ids(receiver) == [f"d{i}" for i in range(30)]
    assert outbox(path) == 0
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM decisions").fetchone()[0] == 30
    otel_rai.uninstrument()  # while the backend is up, so that the closing checkpoint is delivered


def test_an_outage_spools_decisions_and_delivers_them_in_order_afterwards(tmp_path):
    path = tmp_path / "audit.db"
    receiver = OtlpReceiver(free_port())  # not started yet: connection refused
    otel_rai.instrument(endpoint=receiver.endpoint, store=path, hash_key=KEY)
    ids = [f"d{i}" for i in range(40)]
    predict(ids)
    during = otel_rai.flush(1.5)
    assert not during.complete and during.pending == 40
    assert outbox(path) == 40  # durable on disk while the backend is down
    receiver.start()
    try:
        assert otel_rai.flush(60).complete
        assert received_ids(receiver) == ids
        assert outbox(path) == 0
    finally:
        otel_rai.uninstrument()
        receiver.stop()


SPOOLER = """
import sys, time, numpy as np, otel_rai
from sklearn.linear_model import LogisticRegression
X = np.random.default_rng(0).normal(size=(20, 3)); model = LogisticRegression().fit(X, X[:, 0] > 0)
otel_rai.instrument(store=sys.argv[1], endpoint=sys.argv[2], hash_key="spooler-key-0123456789abcdef")
for i in range(25):
    with otel_rai.decisions(ids=[f"killed-{i}"]):
        model.predict(X[i % 20:i % 20 + 1])
otel_rai.flush(0.5)  # written to the store; the endpoint is down, so not exported
print("spooled", flush=True)
time.sleep(600)
"""


def test_spans_spooled_by_a_sigkilled_process_are_exported_by_the_next_one(tmp_path, receiver):
    path = tmp_path / "audit.db"
    dead = f"http://127.0.0.1:{free_port()}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", SPOOLER, str(path), dead], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout.readline().strip() == "spooled"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert outbox(path) == 25
    otel_rai.instrument(endpoint=receiver.endpoint, store=path, hash_key=KEY)  # the next process
    assert otel_rai.flush(30).complete
    assert received_ids(receiver) == [f"killed-{i}" for i in range(25)]
    assert outbox(path) == 0


def test_processes_sharing_a_store_export_every_decision_once(tmp_path, receiver):
    path = tmp_path / "shared.db"
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
           "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, str(HERE / "store_writer.py"), str(path), f"p{p}", "4", "50"],
                              env=env, stderr=subprocess.PIPE, text=True) for p in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    got = received_ids(receiver)
    expected = {f"p{p}-{t}-{i}" for p in range(2) for t in range(4) for i in range(50)}
    assert len(got) == len(expected) and set(got) == expected  # one exporter at a time: no duplicates
    assert outbox(path) == 0


def ended_spans(n: int) -> list:
    """`n` ended SDK spans ``s0``, ``s1``, ... with one decision each."""
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON

    ended = []

    class Keep(SpanProcessor):
        def on_end(self, span):
            ended.append(span)

    provider = TracerProvider(sampler=ALWAYS_ON)
    provider.add_span_processor(Keep())
    for i in range(n):
        provider.get_tracer(semconv.SCOPE).start_span(f"s{i}", attributes={semconv.DECISION_IDS: [f"d{i}"]}).end()
    return ended


def test_the_outbox_exports_held_spans_from_memory_and_the_rest_from_the_file_in_order(tmp_path):
    """Spans this process wrote are exported from memory; spans another process (or an earlier one)
    wrote are read back; either way in the outbox's order, and the held ones equal what the file says."""
    ended = ended_spans(6)
    path = tmp_path / "audit.db"
    other = store.Store(path, create=True)  # another process's writes: in the file only
    other.append([from_readable(s) for s in ended[:2]], outbox=True)
    mine = store.Store(path)
    queue = store.StoreOutbox(mine)
    last, _ = mine.append([from_readable(s) for s in ended[2:5]], outbox=True)
    queue.written(last, ended[2:5])
    other.append([from_readable(ended[5])], outbox=True)  # after mine: the file again

    taken = []
    while batch := queue.take(max_spans=2, max_rows=100):
        taken.append(batch)
        queue.done()
    assert [[s.name for s in batch] for batch in taken] == [["s0", "s1"], ["s2", "s3"], ["s4"], ["s5"]]
    from_memory = [s for batch in taken for s in batch if any(s is e for e in ended)]
    assert [s.name for s in from_memory] == ["s2", "s3", "s4"]  # the others were read back from the file
    for batch in taken:
        for span in batch:
            rebuilt = from_readable(span)
            assert rebuilt.attributes == from_readable(ended[int(span.name[1:])]).attributes
    # Delivered spans leave the file a batch of batches later (see `StoreOutbox.done`), and never
    # come out again meanwhile; releasing the export lock deletes them for the next exporter.
    assert mine.outbox_pending() == 6 and queue.take(max_spans=10, max_rows=100) == []
    queue.release()
    assert mine.outbox_pending() == 0


def test_a_full_outbox_memory_keeps_the_head_and_the_rest_is_read_back_in_order(tmp_path, monkeypatch):
    """When the export falls behind, the oldest spans (the next to go) stay in memory."""
    monkeypatch.setattr(store, "_RECENT_SPANS", 2)
    ended = ended_spans(5)
    mine = store.Store(tmp_path / "audit.db", create=True)
    queue = store.StoreOutbox(mine)
    last, _ = mine.append([from_readable(s) for s in ended[:3]], outbox=True)
    queue.written(last, ended[:3])
    first = queue.take(max_spans=10, max_rows=100)
    assert [s.name for s in first] == ["s0", "s1"] and all(a is b for a, b in zip(first, ended))
    queue.done()
    last, _ = mine.append([from_readable(s) for s in ended[3:]], outbox=True)
    queue.written(last, ended[3:])  # room again: s3 and s4 are held, s2 is in the file only
    taken = []
    while batch := queue.take(max_spans=10, max_rows=100):
        taken.append([(s.name, any(s is e for e in ended)) for s in batch])
        queue.done()
    assert taken == [[("s2", False)], [("s3", True), ("s4", True)]]
    queue.release()


def test_spans_another_exporter_delivered_are_not_sent_again_from_memory(tmp_path):
    """A process's spans can go out through another process that held the export lock first: once
    this process takes over, it must start from the outbox, not from what it still holds."""
    ended = ended_spans(5)
    path = tmp_path / "audit.db"
    mine = store.Store(path, create=True)
    queue = store.StoreOutbox(mine)
    last, _ = mine.append([from_readable(s) for s in ended[:3]], outbox=True)
    queue.written(last, ended[:3])
    other = store.StoreOutbox(store.Store(path))  # the other process: it holds the lock first
    assert other.take(max_spans=10, max_rows=100) and queue.take(max_spans=10, max_rows=100) == []
    other.done()
    other.release()  # exits: s0-s2 delivered and deleted
    last, _ = mine.append([from_readable(s) for s in ended[3:]], outbox=True)
    queue.written(last, ended[3:])
    taken = []
    while batch := queue.take(max_spans=2, max_rows=100):
        taken.append([s.name for s in batch])
        queue.done()
    assert taken == [["s3", "s4"]]
    queue.release()
    assert mine.outbox_pending() == 0
