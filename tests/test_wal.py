"""Export over OTLP, and the store as its write-ahead log: outage, restart after SIGKILL, shared store.

Every test sends to a real OTLP/gRPC receiver (tests/servers.py)."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import KEY
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode_spans
from recorded import data
from servers import OtlpReceiver, attributes, free_port
from sklearn.linear_model import LogisticRegression

import otel_rai
from otel_rai import semconv, store
from otel_rai.codec.sdk import from_readable
from otel_rai.sinks import local as local_sink

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
    assert not during.complete and during.pending == 40 + 1  # and the model's record
    assert outbox(path) == 40 + 1  # durable on disk while the backend is down
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
from otel_rai.session import instrumentor
assert instrumentor._session.worker.flush(60)  # written to the store; the endpoint is down, so not exported
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


def queue(spans) -> list:
    """`spans` as `Store.append` queues them."""
    return [local_sink.queued(s) for s in spans]


def test_the_outbox_exports_what_every_process_queued_in_order_as_it_was_encoded(tmp_path):
    """Spans queued by two processes go out in the outbox's order; each request is what the SDK's
    encoder makes of the original spans, and delivered spans leave the file once the lock is released."""
    ended = ended_spans(6)
    path = tmp_path / "audit.db"
    other = store.Store(path, create=True)  # another process's writes
    other.append(queued=queue(ended[:2]))
    mine = store.Store(path)
    outbox_queue = local_sink.StoreOutbox(mine)
    last, _ = mine.append(queued=queue(ended[2:5]))
    outbox_queue.written(last)
    other.append(queued=queue(ended[5:]))

    taken = []
    while batch := outbox_queue.take(max_spans=2, max_rows=100):
        taken.append(batch)
        outbox_queue.done()
    assert [[s.name for s in batch] for batch in taken] == [["s0", "s1"], ["s2", "s3"], ["s4", "s5"]]
    for batch, originals in zip(taken, (ended[:2], ended[2:4], ended[4:])):
        assert batch.request() == sdk_encode_spans(originals).SerializeToString()
    # Delivered spans leave the file a batch of batches later (see `StoreOutbox.done`), and never
    # come out again meanwhile; releasing the export lock deletes them for the next exporter.
    assert mine.outbox_pending() == 6 and outbox_queue.take(max_spans=10, max_rows=100) == []
    outbox_queue.release()
    assert mine.outbox_pending() == 0


def test_the_spans_this_process_wrote_go_out_from_memory_exactly_as_the_file_has_them(tmp_path):
    """The export takes the spans this process just wrote from memory: on generated interleavings of
    its writes with another process's, deliveries and batch limits, every batch is the one the file
    gives at that moment (the oracle), byte for byte, or its beginning up to where another process's
    spans follow; and most came from memory."""
    import itertools
    import random

    from otel_rai.codec import otlpproto

    ended = ended_spans(40)
    rng = random.Random(5)
    from_memory = 0
    for run in range(30):
        path = tmp_path / f"audit{run}.db"
        mine, other = store.Store(path, create=True), store.Store(path)
        q = local_sink.StoreOutbox(mine)
        file_reads = []
        read = mine.outbox_batch
        mine.outbox_batch = lambda *a, _reads=file_reads, _read=read, **k: _reads.append(1) or _read(*a, **k)
        q.hold()
        for _ in range(rng.randrange(4, 12)):
            spans = [rng.choice(ended) for _ in range(rng.randrange(1, 6))]
            queued = queue(spans)
            for i in rng.sample(range(len(queued)), rng.randrange(len(queued))):
                queued[i] = (queued[i][0], rng.randrange(1, 4), queued[i][2])  # spans of several decisions
            if rng.random() < 0.25:
                other.append(queued=queued)  # another process's writes: not in this one's memory
            else:
                rows, hold = [], q.hold_before_write()
                last, _ = mine.append(queued=queued, outbox_rows=rows)
                q.written(last, rows, hold)
            for _ in range(rng.randrange(3)):
                max_spans, max_rows = rng.randrange(1, 6), rng.randrange(1, 8)
                expected = read(max_spans, max_rows, after=q._exported)
                before = len(file_reads)
                batch = q.take(max_spans, max_rows)
                if not expected:
                    assert batch == []
                    continue
                # Memory's run of this process's spans may end before the file's batch does (another
                # process wrote next): then the batch is the file's cut there, and the rest follows.
                seqs = [row[0] for row in expected]
                expected = expected[: seqs.index(q._taken) + 1]
                assert len(expected) == len(seqs) or len(file_reads) == before
                runs = itertools.groupby(expected, key=lambda row: row[1])
                oracle = otlpproto.EncodedSpans(otlpproto.grouped_runs(
                    (*q._origin(origin), [span for _, _, span in rows]) for origin, rows in runs))
                assert batch.request() == oracle.request()
                from_memory += len(file_reads) == before
                if rng.random() < 0.8:
                    q.done()
        q.release()
    assert from_memory > 30, from_memory


def test_spans_written_while_another_process_exported_are_never_sent_again_from_memory(tmp_path):
    """A process that writes while another holds the export lock keeps nothing of it in memory, even
    when it takes the lock over before it tells its outbox of the write: the other exporter may have
    sent and deleted those spans, and taking over must not send them a second time."""
    ended = ended_spans(4)
    path = tmp_path / "audit.db"
    mine = store.Store(path, create=True)
    other = local_sink.StoreOutbox(store.Store(path))
    assert other.hold()  # the other process exports
    outbox_queue = local_sink.StoreOutbox(mine)
    rows, hold = [], outbox_queue.hold_before_write()
    last, _ = mine.append(queued=queue(ended[:3]), outbox_rows=rows)
    assert [s.name for s in other.take(max_spans=10, max_rows=100)] == ["s0", "s1", "s2"]
    other.done()
    other.release()  # exits: s0-s2 delivered and deleted
    assert outbox_queue.hold()  # this process takes over between its write and telling the outbox
    outbox_queue.written(last, rows, hold)
    rows, hold = [], outbox_queue.hold_before_write()
    last, _ = mine.append(queued=queue(ended[3:]), outbox_rows=rows)
    outbox_queue.written(last, rows, hold)
    taken = []
    while batch := outbox_queue.take(max_spans=10, max_rows=100):
        taken.append([s.name for s in batch])
        outbox_queue.done()
    assert taken == [["s3"]]
    outbox_queue.release()


def test_a_batch_keeps_to_the_decision_limit_and_a_span_over_it_goes_alone(tmp_path):
    ended = ended_spans(3)
    mine = store.Store(tmp_path / "audit.db", create=True)
    queued = queue(ended)
    queued[1] = (queued[1][0], 150, queued[1][2])  # a span of 150 decisions
    mine.append(queued=queued)
    outbox_queue = local_sink.StoreOutbox(mine)
    taken = []
    while batch := outbox_queue.take(max_spans=10, max_rows=100):
        taken.append([s.name for s in batch])
        outbox_queue.done()
    assert taken == [["s0"], ["s1"], ["s2"]]
    outbox_queue.release()


@pytest.mark.parametrize("seed", range(4))
def test_the_outbox_keeps_exactly_what_was_not_delivered_and_never_gives_a_seq_twice(tmp_path, seed):
    """Generated writes and deliveries, each delivery caught up (the table emptied) or not (a range
    deleted): the outbox then holds exactly the spans after the last delivered one, in order and as
    written, and a seq is never given again, also after the table was emptied. Deletes zero what they
    can without writing more pages, on every build of SQLite."""
    rng = random.Random(seed)
    spool = store.Store(tmp_path / "spool.db", create=True)
    assert spool._connection().execute("PRAGMA secure_delete").fetchone()[0] == 2  # FAST
    origin = ({"service.name": "outbox"}, "", "otel-rai", "")
    written: dict[int, bytes] = {}
    delivered = emptied = 0
    for _ in range(150):
        if rng.random() < 0.6 or not written:
            spans = [os.urandom(rng.randint(1, 3000)) for _ in range(rng.randint(1, 40))]
            rows: list = []
            last, _ = spool.append(queued=[(origin, 1, span) for span in spans], outbox_rows=rows)
            assert [row[0] for row in rows] == list(range(last - len(spans) + 1, last + 1))
            assert rows[0][0] > max(written, default=0)
            written.update((row[0], row[3]) for row in rows)
        else:
            top = max(written)
            last = top if rng.random() < 0.5 else rng.randint(delivered, top)
            spool.outbox_done(last, forget=True)
            delivered = last
            emptied += last == top
        waiting = [(seq, span) for seq, _, span in spool.outbox_batch(10**6, 10**9)]
        assert waiting == [(seq, span) for seq, span in sorted(written.items()) if seq > delivered]
    assert emptied and spool.outbox_pending() == len([seq for seq in written if seq > delivered])


def test_spans_another_exporter_delivered_are_not_sent_again(tmp_path):
    """A process's spans can go out through another process that held the export lock first: once
    this process takes over, it starts where the outbox is."""
    ended = ended_spans(5)
    path = tmp_path / "audit.db"
    mine = store.Store(path, create=True)
    outbox_queue = local_sink.StoreOutbox(mine)
    last, _ = mine.append(queued=queue(ended[:3]))
    outbox_queue.written(last)
    other = local_sink.StoreOutbox(store.Store(path))  # the other process: it holds the lock first
    assert other.take(max_spans=10, max_rows=100) and outbox_queue.take(max_spans=10, max_rows=100) == []
    other.done()
    other.release()  # exits: s0-s2 delivered and deleted
    last, _ = mine.append(queued=queue(ended[3:]))
    outbox_queue.written(last)
    taken = []
    while batch := outbox_queue.take(max_spans=2, max_rows=100):
        taken.append([s.name for s in batch])
        outbox_queue.done()
    assert taken == [["s3", "s4"]]
    outbox_queue.release()
    assert mine.outbox_pending() == 0


def test_a_schema_1_store_sends_what_its_outbox_held_as_the_spans_it_recorded(tmp_path):
    """Schema 1 queued seqs only: opening such a file to write encodes the queued spans from their records."""
    ended = ended_spans(4)
    path = tmp_path / "audit.db"
    old = store.Store(path, create=True)
    old.append([from_readable(s) for s in ended])
    old.close()
    with sqlite3.connect(path) as conn:  # what schema 1 left: s1 and s3 not yet exported
        conn.execute("DROP TABLE outbox")
        conn.execute("CREATE TABLE outbox (seq INTEGER PRIMARY KEY)")
        conn.executemany("INSERT INTO outbox (seq) VALUES (?)", [(2,), (4,)])
        conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    assert store.Store(path).outbox_pending() == 2  # a reader changes nothing
    upgraded = store.Store(path, create=True)
    outbox_queue = local_sink.StoreOutbox(upgraded)
    batch = outbox_queue.take(max_spans=10, max_rows=100)
    assert [s.name for s in batch] == ["s1", "s3"]
    assert batch.request() == sdk_encode_spans([ended[1], ended[3]]).SerializeToString()
    outbox_queue.done()
    outbox_queue.release()
    assert upgraded.outbox_pending() == 0
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("2",)
    last, _ = upgraded.append([from_readable(ended[0])], queued=queue(ended[:1]))
    assert last == 5  # seqs go on after the old ones
