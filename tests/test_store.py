"""The local audit store: where it is, what it holds, that it is ours, and concurrent writers."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import KEY
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from recorded import data, record
from sklearn.linear_model import LogisticRegression

import otel_rai
from otel_rai import semconv, store
from otel_rai.codec.records import SpanRecord
from otel_rai.codec.sdk import ReadableSpans
from otel_rai.query import find_decisions, local, trail
from otel_rai.sinks import local as local_sink
from otel_rai.store import connection as store_connection

HERE = Path(__file__).parent


def rows(path: Path, sql: str, *args) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql, args).fetchall()


# --- where the store is --------------------------------------------------------------------------


def test_without_endpoint_decisions_go_to_the_default_store(tmp_path):
    X, y = data()
    otel_rai.instrument(hash_key=KEY, service_name="credit-scoring")
    model = otel_rai.register_model(LogisticRegression().fit(X, y), name="credit", version="2.0")
    proba = model.predict_proba(X[:7])
    assert otel_rai.flush(30).complete
    path = Path(os.environ["OTEL_RAI_HOME"]) / "audit.db"
    assert store.default_path() == path
    found = list(find_decisions(model_version="2.0"))
    assert [d.output for d in found] == model.classes_[proba.argmax(1)].tolist()
    assert [d.input_hash for d in found] == [otel_rai.hash_input(r, KEY) for r in X[:7]]
    assert [d.scores["1"] for d in found] == proba[:, 1].tolist()
    assert {d.service for d in found} == {"credit-scoring"}


def test_store_argument_then_environment_then_default(tmp_path, monkeypatch):
    assert store.location(tmp_path / "a.db", default=False) == tmp_path / "a.db"
    assert store.location(None, default=False) is None
    assert store.location(None, default=True) == Path(os.environ["OTEL_RAI_HOME"]) / "audit.db"
    assert store.location(False, default=True) is None
    monkeypatch.setenv("OTEL_RAI_STORE", str(tmp_path / "env.db"))
    assert store.location(None, default=False) == tmp_path / "env.db"  # asking by environment is asking
    assert store.location(True, default=False) == tmp_path / "env.db"
    assert store.location(tmp_path / "a.db", default=True) == tmp_path / "a.db"


def test_store_false_writes_no_file():
    otel_rai.instrument(hash_key=KEY, store=False)
    X, y = data()
    LogisticRegression().fit(X, y).predict(X[:2])
    assert otel_rai.flush(10).complete
    assert not store.default_path().exists()


def test_files_are_owner_only(tmp_path):
    path = tmp_path / "new" / "dir" / "audit.db"
    record(path, {"1": 3})
    s = store.Store(path)  # a reader keeps -wal and -shm in place
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    for name in ("audit.db", "audit.db-wal", "audit.db-shm"):
        assert stat.S_IMODE((path.parent / name).stat().st_mode) == 0o600, name
    s.close()


# --- what it holds -------------------------------------------------------------------------------


def test_one_row_per_decision_with_the_issue_columns(tmp_path):
    rec = record(tmp_path / "audit.db", {"1.4.1": 500, "1.4.2": 3})
    got = rows(
        rec.path,
        "SELECT decision_id, time_ns, service, model_name, model_version, model_fingerprint, operation,"
        " input_hash, output, trace_id, span_id, idx FROM decision_rows ORDER BY span, idx",
    )
    assert [r[0] for r in got] == rec.ids["1.4.1"] + rec.ids["1.4.2"]
    for decision_id, _, service, name, version, fingerprint, operation, input_hash, output, trace, span, _ in got:
        expected = ("credit-scoring", "credit", decision_id.split("-")[0], "predict_proba")
        assert (service, name, version, operation) == expected
        assert input_hash == otel_rai.hash_input(rec.inputs[decision_id], KEY)
        assert output == rec.outputs[decision_id]
        assert len(fingerprint) == 32 and len(trace) == 32 and len(span) == 16
    # two decision spans, the model record of each version, and the checkpoint closing the session's chain
    assert rows(rec.path, "SELECT count(*), sum(n_decisions) FROM spans") == [(5, 503)]


def test_chunked_call_rows_keep_their_call_row(tmp_path):
    rec = record(tmp_path / "audit.db", {"9": 2500}, max_rows_per_span=1000)
    found = list(find_decisions(url=str(rec.path)))
    assert [d.decision_id for d in found] == rec.ids["9"]
    assert [d.row for d in found] == list(range(2500))
    # The parent span of the chunks is stored too (it is part of the trace), holding no decisions.
    assert rows(rec.path, "SELECT n_decisions FROM spans WHERE name NOT IN (?, ?) ORDER BY seq",
                semconv.CHECKPOINT_SPAN, semconv.MODEL_RECORD_SPAN) == [(1000,), (1000,), (500,), (0,)]


def test_a_failed_call_is_a_decision_with_its_error(tmp_path):
    X, y = data()
    otel_rai.instrument(store=tmp_path / "audit.db", hash_key=KEY)
    model = LogisticRegression().fit(X, y)
    with pytest.raises(ValueError), otel_rai.decisions(ids=["bad-1"]):
        model.predict(np.ones((1, 3)))
    assert otel_rai.flush(10).complete
    (d,) = find_decisions(url=str(tmp_path / "audit.db"))
    assert d.decision_id == "bad-1" and d.output is None
    assert d.error.startswith("ValueError: X has … features")  # the numbers are literals: docs/semantic-conventions.md


def test_a_decision_whose_audit_record_is_incomplete_is_stored_whole(tmp_path, monkeypatch):
    from otel_rai.audit import spans

    def broken(*_args, **_kwargs):
        raise RuntimeError("hash exploded")

    monkeypatch.setattr(spans, "hash_rows", broken)  # a fault that real input cannot provoke
    monkeypatch.setattr(spans, "hash_rows_many", broken)
    rec = record(tmp_path / "audit.db", {"1": 7})
    found = list(find_decisions(url=str(rec.path)))
    assert [d.decision_id for d in found] == rec.ids["1"]
    assert all(d.input_hash is None and d.attributes[semconv.AUDIT_ERROR] == "hash: RuntimeError" for d in found)
    assert [d.output for d in found] == [rec.outputs[i] for i in rec.ids["1"]]
    assert rows(rec.path, "SELECT decision_id, input_hash, input_key FROM decisions ORDER BY idx") == [
        (i, None, None) for i in rec.ids["1"]]
    assert [d.row for d in find_decisions(decision_id=rec.ids["1"][-1], url=str(rec.path))] == [6]


def test_records_rebuild_the_exact_otlp_of_the_original_spans(tmp_path):
    """The store keeps enough to send a span again: its OTLP equals the SDK's encoding of the original."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ALWAYS_ON)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    otel_rai.instrument(tracer_provider=provider, store=tmp_path / "audit.db", hash_key=KEY,
                        capture_features=["f1"], max_rows_per_span=4)
    X, y = data()
    import pandas as pd

    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(6)])
    model = LogisticRegression().fit(frame, y)
    with otel_rai.decisions(attributes={"app.region": "eu", "app.flags": [1, 2]}):
        model.predict_proba(frame.head(10))
    with pytest.raises(ValueError):
        model.predict(frame.iloc[:2, :3])
    otel_rai.uninstrument()
    originals = [s for s in exporter.get_finished_spans() if s.instrumentation_scope.name == semconv.SCOPE]
    rebuild = ReadableSpans()
    stored = [rebuild(r) for r in store.Store(tmp_path / "audit.db").spans()]
    by_id = {s.context.span_id: s for s in stored}
    # 3 chunks + their parent + the failed call + the model record + a checkpoint
    assert len(stored) == len(originals) == 7
    for original in originals:
        assert encode_spans([original]) == encode_spans([by_id[original.context.span_id]])


# --- whose file it is ----------------------------------------------------------------------------


def test_a_file_that_is_not_a_store_is_refused_clearly(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n" * 10)
    with pytest.raises(store.StoreError, match="not an otel-rai audit store \\(not an SQLite database\\)"):
        store.Store(text)
    with pytest.raises(store.StoreError, match="not an SQLite database"):
        otel_rai.instrument(store=text, hash_key=KEY)
    assert text.read_text() == "not a database\n" * 10


def test_another_applications_database_is_refused_and_left_untouched(tmp_path):
    foreign = tmp_path / "app.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE users (name TEXT)")
    before = foreign.read_bytes()
    for create in (False, True):
        with pytest.raises(store.StoreError, match="SQLite database of another application"):
            store.Store(foreign, create=create)
    assert foreign.read_bytes() == before
    assert rows(foreign, "PRAGMA journal_mode") == [("delete",)]


def test_empty_file_and_missing_file_and_newer_schema(tmp_path):
    empty = tmp_path / "empty.db"
    empty.touch()
    with pytest.raises(store.StoreError, match="an empty file"):
        store.Store(empty)
    with pytest.raises(store.StoreError, match="no audit store at"):
        store.Store(tmp_path / "missing.db")
    assert not (tmp_path / "missing.db").exists()
    newer = tmp_path / "newer.db"
    store.Store(newer, create=True).close()
    with sqlite3.connect(newer) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(store.StoreError, match="newer otel-rai \\(store schema 99"):
        store.Store(newer)


# --- indexes -------------------------------------------------------------------------------------


def _plan(path: Path, **query) -> str:
    return store.Store(path).query_plan(**query)


def test_query_plans_use_the_indexes(tmp_path):
    rec = record(tmp_path / "audit.db", {"1": 3})
    plan = _plan(rec.path, model_version="1", start_ns=0, end_ns=1 << 62)
    assert "USING INDEX spans_by_version (model_version=? AND start_ns>? AND start_ns<?)" in plan
    assert "TEMP B-TREE" not in plan  # the index order is the result order: the first page is immediate
    assert "USING INDEX spans_by_time" in _plan(rec.path, start_ns=0, end_ns=1 << 62)
    assert "decisions_by_id" in _plan(rec.path, decision_ids={"1-0"})
    assert "input_index" in _plan(rec.path, input_hashes={"ab" * 16})


def _span(seq: int, hashes: list[str]) -> SpanRecord:
    return SpanRecord(
        trace_id=f"{seq:032x}", span_id=f"{seq:016x}", name="predict m", start_ns=seq, end_ns=seq + 1,
        attributes={semconv.DECISION_IDS: [f"d{seq}-{i}" for i in range(len(hashes))], semconv.INPUT_HASHES: hashes},
    )


def test_input_hash_lookup_before_and_after_the_bulk_index(tmp_path):
    s = store.Store(tmp_path / "audit.db", create=True)
    same_prefix = ["0123456789abcdef" + "0" * 16, "0123456789abcdef" + "f" * 16]  # one input_index key
    s.append([_span(1, [same_prefix[0], "aa" * 16]), _span(2, [same_prefix[1]])])

    def found(h: str) -> list[str]:
        return [d.decision_id for d in find_decisions(input_hash=h, url=str(s.path))]

    assert found(same_prefix[0]) == ["d1-0"] and found(same_prefix[1]) == ["d2-0"]  # from the tail
    assert s.index_inputs() == 3
    assert rows(s.path, "SELECT count(*) FROM input_index") == [(3,)]
    assert found(same_prefix[0]) == ["d1-0"] and found(same_prefix[1]) == ["d2-0"]  # from the index
    s.append([_span(3, ["aa" * 16])])  # past the watermark again
    assert found("aa" * 16) == ["d1-1", "d3-0"]
    assert s.index_inputs() == 1 and s.index_inputs() == 0


def test_the_sink_fills_the_input_index_in_bulk(tmp_path, monkeypatch):
    monkeypatch.setattr(local_sink, "INDEX_EVERY", 100)
    rec = record(tmp_path / "audit.db", {"a": 60, "b": 60, "c": 10})
    # After 120 rows the sink indexed them; closing the store indexed the rest.
    assert rows(rec.path, "SELECT count(*) FROM input_index") == [(130,)]
    # three decision spans, the model record of each version, the checkpoint
    assert rows(rec.path, "SELECT value FROM meta WHERE key = 'input_index_through'") == [("7",)]


# --- concurrent writers --------------------------------------------------------------------------


def test_four_processes_of_eight_threads_lose_and_duplicate_nothing(tmp_path):
    path = tmp_path / "shared.db"
    threads, calls = 8, 100
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    procs = [
        subprocess.Popen([sys.executable, str(HERE / "store_writer.py"), str(path), f"p{p}", str(threads), str(calls)],
                         env=env, stderr=subprocess.PIPE, text=True)
        for p in range(4)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    expected = {f"p{p}-{t}-{i}" for p in range(4) for t in range(threads) for i in range(calls)}
    got = [r[0] for r in rows(path, "SELECT decision_id FROM decisions")]
    assert len(got) == len(expected) and set(got) == expected
    assert rows(path, "SELECT count(*) FROM spans WHERE name NOT IN (?, ?)", semconv.CHECKPOINT_SPAN,
                semconv.MODEL_RECORD_SPAN) == [(len(expected),)]
    assert rows(path, "PRAGMA integrity_check") == [("ok",)]
    assert rows(path, "PRAGMA journal_mode") == [("wal",)]
    report = trail.verify(local.connect(str(path)))  # each process its own intact chain
    assert report.ok and sorted(s.decisions for s in report.streams.values()) == [threads * calls] * 4


def test_switching_a_new_store_to_the_write_ahead_log_waits_for_a_writer(tmp_path):
    """Processes creating one store together: while one writes the new file (still in rollback mode),
    SQLite refuses another's switch to WAL at once, without its busy handler. The switch must wait."""
    path = tmp_path / "new.db"
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("CREATE TABLE t (x)")
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO t VALUES (1)")
    modes: list[str] = []
    switcher = threading.Thread(target=lambda: modes.append(store_connection.journal_mode_wal(sqlite3.connect(path))))
    switcher.start()
    switcher.join(0.5)
    assert switcher.is_alive() and not modes  # waiting for the writer, not failing
    writer.execute("COMMIT")
    switcher.join(30)
    assert modes == ["wal"]
    assert rows(path, "SELECT x FROM t") == [(1,)]


def _child_predicts(path: str) -> None:
    X, y = data()
    with otel_rai.decisions(ids=["child-0", "child-1"]):
        LogisticRegression().fit(X, y).predict(X[:2])
    os._exit(0 if otel_rai.flush(30).complete else 1)


def test_a_forked_child_writes_its_own_decisions(tmp_path):
    path = tmp_path / "audit.db"
    otel_rai.instrument(store=path, hash_key=KEY)
    X, y = data()
    model = LogisticRegression().fit(X, y)
    with otel_rai.decisions(ids=["parent-0"]):
        model.predict(X[:1])
    child = multiprocessing.get_context("fork").Process(target=_child_predicts, args=(str(path),))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    with otel_rai.decisions(ids=["parent-1"]):
        model.predict(X[:1])
    otel_rai.uninstrument()
    assert sorted(r[0] for r in rows(path, "SELECT decision_id FROM decisions")) == [
        "child-0", "child-1", "parent-0", "parent-1"]


def test_a_child_forked_while_another_thread_writes_can_write(tmp_path, monkeypatch):
    """SQLite keeps what a process's connections hold of a file's locks in the process's memory, which
    a forked child inherits without the locks themselves: forked while another thread held the write
    lock, the child found it held for ever, and each of its writes failed after the busy timeout (seen
    under load: a Pool child forked while the parent's export thread opened its connection never wrote
    a decision, and terminate() lost them). Fork waits for the transaction to end."""
    monkeypatch.setattr(store_connection, "BUSY_TIMEOUT_S", 3.0)  # the child's writes fail soon, not in 60 s
    path = tmp_path / "audit.db"
    parent = store.Store(path, create=True)
    inside = threading.Event()

    @store_connection.apart_from_fork  # as the store's own writes are
    def write_slowly() -> None:
        with store_connection.writing(parent._connection()):
            inside.set()
            time.sleep(0.5)

    writer = threading.Thread(target=write_slowly)
    writer.start()
    assert inside.wait(10)
    pid = os.fork()
    if pid == 0:  # a new connection of the child's own, as a forked child's threads open them
        code = 1
        try:
            child = store.Store(path, create=True)
            with store_connection.writing(child._connection()):
                child._connection().execute("INSERT INTO meta (key, value) VALUES ('child', 'wrote')")
            code = 0
        finally:
            os._exit(code)
    writer.join()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert rows(path, "SELECT value FROM meta WHERE key = 'child'") == [("wrote",)]


def test_a_fork_from_a_signal_handler_on_a_thread_entering_a_store_call_goes_ahead():
    """Python runs a signal handler between two bytecodes of the main thread, which may be entering or
    leaving a store call and so hold the lock that fork takes: a handler that forks (a pre-fork server
    respawning a worker) must not wait for its own thread for ever."""
    code = (
        "import os\n"
        "from otel_rai import _fork\n"
        "with _fork.store_calls._cond:  # where a thread entering a call holds it\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        os._exit(0)\n"
        "os.waitpid(pid, 0)\n"
        "print('forked')\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.strip() == "forked", run.stderr[-2000:]


def test_odd_paths_work_and_an_impossible_one_is_a_clear_error(tmp_path):
    odd = tmp_path / "audit 2026?#%.db"
    record(odd, {"1": 2})
    assert [d.decision_id for d in find_decisions(url=str(odd))] == ["1-0", "1-1"]
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(store.StoreError, match="cannot create the audit store"):
        otel_rai.instrument(store=blocked / "audit.db", hash_key=KEY)


def test_opening_a_store_again_keeps_the_locks_of_this_process_s_open_connections(tmp_path):
    """POSIX drops all of a process's locks on a file when any descriptor of it is closed. Opening a
    second connection must not do that: another process, seeing no lock, would take the database for
    unused, checkpoint and delete its write-ahead log, and this process's next connection would fail."""
    path = tmp_path / "audit.db"
    first = store.Store(path, create=True)
    first.append([])  # the connection is open (in WAL mode it holds a shared lock)
    second = store.Store(path, create=True)  # e.g. the export thread's connection, or a query
    second.outbox_pending()
    # Another process opens and closes the store: its close checkpoints and deletes the write-ahead
    # log only if it can lock the file exclusively, i.e. if no connection here still holds its lock.
    subprocess.run([sys.executable, "-c", "import sqlite3, sys; sqlite3.connect(sys.argv[1]).execute("
                    "'SELECT count(*) FROM spans').fetchone()", str(path)], check=True, timeout=60)
    assert path.with_name(path.name + "-wal").exists()
    assert first.outbox_pending() == second.outbox_pending() == 0


CLOSE_UNDER_USE = """
import sys, threading, time
from otel_rai.store import Store
store = Store(sys.argv[1], create=True)
statement = sys.argv[2]
stop = threading.Event()

def use():
    while not stop.is_set():
        store._connection().execute(statement).fetchall()

threads = [threading.Thread(target=use) for _ in range(2)]
for t in threads:
    t.start()
end = time.monotonic() + 1.5
while time.monotonic() < end:
    store.close()
    time.sleep(0.0005)
stop.set()
for t in threads:
    t.join()
store.close()
"""


@pytest.mark.parametrize("statement", [
    "SELECT * FROM meta",
    "SELECT name FROM sqlite_master",
    "PRAGMA wal_checkpoint(PASSIVE)",
    "SELECT max(seq) FROM spans",
])
def test_closing_a_store_never_closes_a_connection_another_thread_is_using(tmp_path, statement):
    """A session's close with a short timeout can leave its audit worker retrying a commit: closing that
    thread's connection under a running statement crashed the interpreter (SIGSEGV, 3 of 3 runs of this
    script before the fix). Other threads' connections stay open until those threads end."""
    run = subprocess.run([sys.executable, "-c", CLOSE_UNDER_USE, str(tmp_path / "audit.db"), statement],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, (run.returncode, run.stderr[-2000:])


@pytest.mark.parametrize("seed", range(5))
def test_group_rows_of_one_write_keep_the_last_given_of_each_key(tmp_path, seed):
    """A write's ``decision_groups`` rows go in in key order; of two rows of one (decision, attribute) in
    one write, the later one is kept, as written one by one (INSERT OR REPLACE)."""
    rng = np.random.default_rng(seed)
    ids = [f"{int(v):032x}" for v in rng.integers(0, 2**62, 300)]
    rows = [(ids[int(i)], str(rng.choice(["sex", "race"])), f"g{int(rng.integers(100))}")
            for i in rng.integers(0, len(ids), 1000)]
    expected: dict = {}
    for decision_id, attribute, group in rows:
        expected.setdefault(decision_id, {})[attribute] = group
    written = store.Store(tmp_path / "audit.db", create=True)
    try:
        written.append(groups=rows)
        assert written.groups(ids) == expected
    finally:
        written.close()


@pytest.mark.parametrize("limit", [None, 999])
def test_an_insert_of_any_size_writes_every_row_once_in_order_and_in_few_statements(tmp_path, limit):
    """Sizes from 0 to 1,100 rows, each up to 130 (wide rows against SQLite's smallest limit on bound values too):
    the rows in order, each once; a few rows in one statement, since each ``execute`` lets the interpreter
    lock go five times (bench/RESULTS.md); more in one statement per power of two beyond the last few."""
    conn = store_connection.connect(tmp_path / "s.db", create=True)
    if limit is not None:
        conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, limit)
    conn.execute("CREATE TABLE wide (n INTEGER, i INTEGER" + "".join(f", c{k}" for k in range(16)) + ")")
    executed: list[str] = []
    conn.set_trace_callback(executed.append)
    cap = store_connection._MAX_ROWS_PER_INSERT
    while limit is not None and cap * 18 > limit:
        cap //= 2
    for n in [*range(130), *range(130, 1101, 7)]:
        executed.clear()
        store_connection.insert(conn, "INSERT INTO wide", 18, [(n, i, *range(16)) for i in range(n)])
        statements = len(executed)
        assert [i for (i,) in conn.execute("SELECT i FROM wide WHERE n = ? ORDER BY rowid", (n,))] == list(range(n))
        # Whole statements of `cap` rows, then the rest's binary digits down to `exact`, then what is left.
        exact, (whole, rest) = min(store_connection._EXACT_ROWS, cap), divmod(n, cap)
        assert statements == whole + bin(rest // exact).count("1") + (rest % exact > 0), n
        if n <= exact:
            assert statements == (n > 0)
    conn.close()
