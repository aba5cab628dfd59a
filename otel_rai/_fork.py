"""Objects that own threads or connections re-initialise themselves in a forked child.

A child of ``fork`` (gunicorn and uvicorn workers, multiprocessing) inherits no threads and may inherit
locks held mid-operation, so each registered object gets a fresh ``_reset()``. Registration is weak:
objects of an uninstrumented session are not kept alive by it. Fork also waits for an OTLP request in
flight to end (`quiet`), for the store calls in progress (`store_calls`), and for an import by one of
its threads (`importing`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import weakref
from typing import Iterator, Protocol

_log = logging.getLogger(__name__)

#: How long fork waits for an export request in flight (`quiet`) before going ahead without it.
QUIET_WAIT_S = 15.0
#: How long fork waits for the store calls in progress (`store_calls`): a writer waits at most the store's
#: busy timeout (60 s) for the write lock, then its transaction fails.
STORE_CALLS_WAIT_S = 60.0


class Resettable(Protocol):
    """An object that can start afresh in a forked child (`reset_in_child`)."""

    def _reset(self) -> None: ...


_registered: weakref.WeakSet = weakref.WeakSet()


def reset_in_child(obj: Resettable) -> None:
    """Call ``obj._reset()`` in every child forked from now on, while `obj` lives."""
    _registered.add(obj)


class _Quiet:
    """A lock that one of otel-rai's threads holds while it must not be split by a fork, and fork takes
    first (for at most `QUIET_WAIT_S`; then it forks anyway and logs `warning`)."""

    def __init__(self, warning: str) -> None:
        self._lock = threading.Lock()
        self._held_by_fork = False
        self._warning = warning

    def __enter__(self) -> None:
        self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()

    def _before(self) -> None:
        # Bounded: what the holder waits for (a backend, an import) may hang.
        self._held_by_fork = self._lock.acquire(timeout=QUIET_WAIT_S)
        if not self._held_by_fork:
            _log.warning("%s", self._warning)

    def _after(self) -> None:
        if self._held_by_fork:
            self._held_by_fork = False
            self._lock.release()


#: Hold while calling into an OTLP exporter. gRPC's own fork handlers only work when no RPC is in flight:
#: otherwise they are skipped, the child's gRPC cannot send anything, and the parent's request may fail
#: after arriving (and is then resent).
quiet = _Quiet("otel-rai: forking while an OTLP export is still in flight; over gRPC, the child may be unable "
               "to export (spooled decisions wait for another process)")
#: Hold while importing modules off the main thread (the model-record thread warms skops, about a second,
#: as the application starts). A child forked mid-import inherits the import locks of the modules then
#: being imported, held by a thread it does not have: each of its own imports of them waits for ever (its
#: model-record thread did, in every Pool forked right after ``instrument()``, and so did its exit flush).
importing = _Quiet("otel-rai: forking while otel-rai imports a module; the child may hang importing it")


class _StoreCalls:
    """The calls of this process's threads into SQLite on audit stores, which fork waits for.

    SQLite keeps its mutexes, and what a process holds of each file's locks, in the memory of the
    process (one record per file, shared by all its connections); a forked child inherits that memory
    but neither the threads that were in SQLite nor the POSIX locks themselves. A child forked while
    another thread held a store's write lock (a commit, the export deleting what it sent, a new
    connection checking the schema) found it "held by another connection of this process" for ever:
    each ``BEGIN IMMEDIATE`` of its own connections waited out the busy timeout and failed, so nothing
    the child decided was ever written (and a Pool's ``terminate()`` then lost it). One forked while a
    thread was inside SQLite at all (reading the outbox, freeing a statement) can inherit one of SQLite's
    mutexes held, and hang at its first SQLite call. So fork waits until no thread here is in a store
    call, and new calls wait for the fork.
    """

    def __init__(self) -> None:
        # Reentrant: a signal handler that forks can run on a thread that holds it for a moment, entering or
        # leaving a call.
        self._cond = threading.Condition(threading.RLock())
        self._open = 0  # calls in progress, outermost ones only
        self._forking = False
        self._local = threading.local()

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        """Around a call into SQLite (from before it opens a connection, asks for a lock or runs a statement
        until it is done with the statement's results)."""
        depth = getattr(self._local, "depth", 0)
        if not depth:
            with self._cond:
                self._cond.wait_for(lambda: not self._forking)
                self._open += 1
        self._local.depth = depth + 1
        try:
            yield
        finally:
            self._local.depth = depth
            if not depth:
                with self._cond:
                    self._open -= 1
                    self._cond.notify_all()

    def _before(self) -> None:
        # The forking thread's own call (if any) cannot end first: it is not waited for.
        mine = 1 if getattr(self._local, "depth", 0) else 0
        self._cond.acquire()  # held through the fork: no call starts or ends meanwhile
        self._forking = True
        if not self._cond.wait_for(lambda: self._open <= mine, STORE_CALLS_WAIT_S):
            _log.warning("otel-rai: forking while another thread uses an audit store; the child may be "
                         "unable to write to it (its decisions stay pending)")

    def _after_in_parent(self) -> None:
        self._forking = False
        self._cond.notify_all()
        self._cond.release()

    def _after_in_child(self) -> None:
        # The other threads, and their calls, are not in the child.
        self._open = 1 if getattr(self._local, "depth", 0) else 0
        self._forking = False
        self._cond.release()


#: Hold around each call into SQLite on an audit store (see `_StoreCalls`).
store_calls = _StoreCalls()


def block_sigterm() -> None:
    """Called first in each thread otel-rai starts: the kernel then never hands SIGTERM to it, but to a
    thread that can act on it (Python runs signal handlers on the main thread only, and a main thread
    waiting on a lock is woken only by a signal sent to it). Threads it starts (gRPC's) inherit the mask."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})


def _before_fork() -> None:
    importing._before()
    quiet._before()
    store_calls._before()


def _after_fork_in_parent() -> None:
    store_calls._after_in_parent()
    quiet._after()
    importing._after()


def _after_fork_in_child() -> None:
    store_calls._after_in_child()
    quiet._after()
    importing._after()
    for obj in list(_registered):
        obj._reset()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child)
