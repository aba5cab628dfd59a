"""Every decision that returned survives the common process lifecycles: multiprocessing Pools (with-block,
close/join, terminate, maxtasksperchild, imap), ProcessPoolExecutor, a process per task, under the fork,
spawn and forkserver start methods, and gunicorn sync workers recycled by ``max_requests``. Each runs for
real in a subprocess, against a real store and a real OTLP receiver, in fail-open and fail-closed mode.
The numbers over many runs: ``bench/bench_lifecycles.py`` (docs/audit-trail.md).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import KEY, need
from servers import OtlpReceiverProcess, attributes, free_port, wait_for_port

from otel_rai import semconv
from otel_rai.query import local, trail

HERE = Path(__file__).parent
FORK_LIFECYCLES = ["pool-with", "pool-close-join", "pool-terminate", "pool-maxtasksperchild", "pool-imap-unordered",
                   "executor", "process-per-task"]
#: ProcessPoolExecutor(max_tasks_per_child=...) is left out: it refuses fork, and under spawn and forkserver
#: CPython 3.11's executor hangs with it, bare, without otel-rai (it runs a few tasks, then waits for ever).
N = 200


def _app(tmp_path: Path, lifecycle: str, method: str, n: int = N, **env: str) -> dict:
    environment = {**os.environ, "OTEL_RAI_HASH_KEY": KEY, "PYTHONPATH": os.pathsep.join(
        [str(HERE.parent), os.environ.get("PYTHONPATH", "")]), **env}
    run = subprocess.run([sys.executable, str(HERE / "lifecycle_app.py"), lifecycle, method, str(n)], env=environment,
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    return {**json.loads(run.stdout.strip().splitlines()[-1]), "stderr": run.stderr[-3000:]}


def _stored(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [r[0] for r in conn.execute("SELECT decision_id FROM decisions")]


def _check_store(path: Path, returned: list[str]) -> None:
    stored = _stored(path)
    assert len(returned) == len(set(returned))
    missing = set(returned) - set(stored)
    assert not missing, f"{len(missing)} of {len(returned)} returned decisions are not in the store"
    assert len(stored) == len(set(stored))  # each once
    report = trail.verify(local.connect(str(path)))
    assert not {"edited", "reordered", "foreign"} & set(report.counts()), report.counts()


@pytest.mark.parametrize("lifecycle", FORK_LIFECYCLES)
def test_fork_lifecycles_keep_every_returned_decision_in_the_store(tmp_path, lifecycle):
    store = tmp_path / "audit.db"
    result = _app(tmp_path, lifecycle, "fork", OTEL_RAI_STORE=str(store))
    assert len(result["returned"]) == N
    _check_store(store, result["returned"])


@pytest.mark.parametrize("lifecycle,method", [("pool-with", "spawn"), ("pool-with", "forkserver"),
                                              ("executor", "forkserver")])
def test_spawn_and_forkserver_keep_every_returned_decision(tmp_path, lifecycle, method):
    """Each child imports this module and instruments itself (a spawned child is a new interpreter)."""
    store = tmp_path / "audit.db"
    result = _app(tmp_path, lifecycle, method, OTEL_RAI_STORE=str(store))
    _check_store(store, result["returned"])


@pytest.mark.slow
@pytest.mark.parametrize("method", ["spawn", "forkserver"])
@pytest.mark.parametrize("lifecycle", FORK_LIFECYCLES)
def test_every_lifecycle_under_spawn_and_forkserver(tmp_path, lifecycle, method):
    store = tmp_path / "audit.db"
    result = _app(tmp_path, lifecycle, method, OTEL_RAI_STORE=str(store))
    _check_store(store, result["returned"])


#: A child's view of how SIGTERM ends it: its disposition and the SIGTERM bit of each of its threads'
#: blocked mask (from /proc), and, in a child process that sends nothing back, one decision made.
CHILD_APP = """
import json, multiprocessing as mp, os, signal, sys, threading
import numpy as np, otel_rai
from sklearn.linear_model import LogisticRegression
otel_rai.instrument()  # at import: a spawned child runs this too, before multiprocessing says it is a child
MODEL = LogisticRegression().fit(np.eye(4), [0, 1, 0, 1])

def view(_=None):
    MODEL.predict(np.eye(4)[:1])  # the session's threads are running
    blocked = {}
    for t in threading.enumerate():
        status = open(f"/proc/self/task/{t.native_id}/status").read()
        mask = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigBlk")), 16)
        blocked[t.name] = bool(mask >> (signal.SIGTERM - 1) & 1)
    handler = signal.getsignal(signal.SIGTERM)
    return {"handler": "default" if handler == signal.SIG_DFL else str(handler), "blocked": blocked}

def decide_quietly(i):
    with otel_rai.decisions(ids=[f"quiet-{i}"]):
        MODEL.predict(np.eye(4)[:1])

if __name__ == "__main__":
    ctx = mp.get_context(sys.argv[1])
    with ctx.Pool(2) as pool:
        views = pool.map(view, range(4))
    process = ctx.Process(target=decide_quietly, args=(1,))
    process.start()
    process.join()
    print(json.dumps({"main": view(), "workers": views, "exitcode": process.exitcode}))
"""


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_children_die_of_sigterm_at_once_and_flush_at_exit(tmp_path, method):
    """In a multiprocessing child, SIGTERM keeps its default action (`Pool.terminate` relies on it) and
    no thread of otel-rai's takes it; a child that sends nothing back still flushes at its exit. Under
    spawn, a child instruments as it imports the main module, before multiprocessing tells it that it
    is a child: it kept the flushing handler, and 1 of 60 runs of a `with Pool()` block hung for ever."""
    (tmp_path / "child_app.py").write_text(CHILD_APP)
    store = tmp_path / "audit.db"
    run = subprocess.run([sys.executable, "child_app.py", method], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path, env={**os.environ, "OTEL_RAI_HASH_KEY": KEY, "OTEL_RAI_STORE": str(store)})
    assert run.returncode == 0, run.stderr[-3000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert seen["main"]["handler"] != "default"  # the parent flushes on SIGTERM
    for worker in seen["workers"]:
        assert worker["handler"] == "default", worker
        assert all(blocked for name, blocked in worker["blocked"].items() if name.startswith("otel-rai")), worker
        assert not worker["blocked"]["MainThread"], worker
    assert all(blocked for name, blocked in seen["main"]["blocked"].items() if name.startswith("otel-rai"))
    assert seen["exitcode"] == 0 and "quiet-1" in _stored(store)


@pytest.fixture
def receiver_apart(tmp_path):
    server = OtlpReceiverProcess(tmp_path).start()  # not in the forking process (see servers.py)
    yield server
    server.stop()


def _received_ids(receiver: OtlpReceiverProcess) -> list[str]:
    return [i for _, span in receiver.spans() for i in attributes(span).get(semconv.DECISION_IDS, ())]


def _exporting_app(tmp_path: Path, receiver: OtlpReceiverProcess, lifecycle: str, method: str, **env: str) -> dict:
    """`_app` exporting to `receiver` through its spool: its flush completes, and every decision whose
    result returned reached the receiver."""
    result = _app(tmp_path, lifecycle, method, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
                  OTEL_RAI_HOME=str(tmp_path / "home"), **env)
    assert result["complete"]
    missing = set(result["returned"]) - set(_received_ids(receiver))
    assert not missing, (f"{len(missing)} of {len(result['returned'])} returned decisions never reached the receiver "
                         f"(the app ran {result['seconds']:.1f} s); its log:\n{result['stderr']}")
    return result


@pytest.mark.parametrize("lifecycle,method", [("pool-with", "fork"), ("pool-terminate", "fork"),
                                              ("executor", "fork"), ("pool-with", "spawn")])
def test_every_returned_decision_reaches_a_real_receiver(tmp_path, receiver_apart, lifecycle, method):
    _exporting_app(tmp_path, receiver_apart, lifecycle, method)


@pytest.mark.parametrize("lifecycle", ["pool-terminate", "executor"])
def test_children_forked_while_the_parent_writes_to_the_store_keep_every_decision(tmp_path, receiver_apart,
                                                                                  lifecycle):
    """The parent's export thread holds the spool's write lock for 0.3 s a transaction, so the Pool forks
    its children inside one. Before fork waited for it, such a child could never write (SQLite's record
    of the lock is copied by fork, the lock is not): all 200 decisions were lost, after 250 s."""
    result = _exporting_app(tmp_path, receiver_apart, lifecycle, "fork", LIFECYCLE_SLOW_EXPORT_WRITES="0.3")
    assert len(result["returned"]) == N
    assert "not all committed" not in result["stderr"]


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_fail_closed_keeps_every_decision_made_even_when_terminate_cuts_tasks_short(tmp_path, method):
    """terminate() while tasks run: their results never return, but each decision that returned inside
    the child (noted by the child as it returned) is in the store, because fail-closed committed it first."""
    store, notes = tmp_path / "audit.db", tmp_path / "notes"
    notes.mkdir()
    result = _app(tmp_path, "pool-terminate-mid-flight", method, n=400, OTEL_RAI_STORE=str(store),
                  OTEL_RAI_ON_AUDIT_FAILURE="raise", LIFECYCLE_NOTES=str(notes))
    decided = result["decided"]
    assert len(decided) >= len(result["returned"]) > 0
    missing = set(decided) - set(_stored(store))
    assert not missing, f"{len(missing)} of {len(decided)} decisions made are not in the store"


def test_fail_open_keeps_every_returned_decision_when_terminate_cuts_tasks_short(tmp_path):
    store = tmp_path / "audit.db"
    result = _app(tmp_path, "pool-terminate-mid-flight", "fork", n=400, OTEL_RAI_STORE=str(store))
    _check_store(store, result["returned"])


# --- gunicorn ---------------------------------------------------------------------------------------

WSGI_APP = """
import numpy as np
from sklearn.linear_model import LogisticRegression
import otel_rai

X = np.random.RandomState(0).randn(64, 4)
MODEL = LogisticRegression().fit(X, (X[:, 0] > 0).astype(int))
otel_rai.instrument(explain=False)


def app(environ, start_response):
    decision_id = environ["QUERY_STRING"]
    with otel_rai.decisions(ids=[decision_id]):
        label = MODEL.predict(X[:1])[0]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"{decision_id} {label}".encode()]
"""


REQUESTS = 150


@pytest.mark.parametrize("preload", [False, True])
def test_gunicorn_workers_recycled_by_max_requests_keep_every_answered_decision(tmp_path, preload):
    gunicorn = Path(sys.executable).with_name("gunicorn")
    need("gunicorn", gunicorn.exists())
    (tmp_path / "wsgi_app.py").write_text(WSGI_APP)
    store, port = tmp_path / "audit.db", free_port()
    env = {**os.environ, "OTEL_RAI_HASH_KEY": KEY, "OTEL_RAI_STORE": str(store),
           "PYTHONPATH": os.pathsep.join([str(tmp_path), str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    argv = [str(gunicorn), "--workers", "2", "--worker-class", "sync", "--max-requests", "10",
            "--max-requests-jitter", "4", "--bind", f"127.0.0.1:{port}", "--graceful-timeout", "20",
            *(["--preload"] if preload else []), "wsgi_app:app"]
    server = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_port(port, process=server)
        answered = []
        for i in range(REQUESTS):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/?g-{i}", timeout=30) as response:
                answered.append(response.read().decode().split()[0])
    finally:
        server.send_signal(signal.SIGTERM)
        log = server.communicate(timeout=60)[0]
    assert answered == [f"g-{i}" for i in range(REQUESTS)]
    assert log.count("Autorestarting worker") >= 8, log[-2000:]  # the workers were recycled, many times
    deadline = time.monotonic() + 30
    while set(answered) - set(_stored(store)) and time.monotonic() < deadline:
        time.sleep(0.1)  # nothing should be missing; a failure shows what is
    _check_store(store, answered)
