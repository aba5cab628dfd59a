"""Objects that own threads or connections re-initialise themselves in a forked child.

A child of ``fork`` (gunicorn and uvicorn workers, multiprocessing) inherits no threads and may inherit
locks held mid-operation, so each registered object gets a fresh ``_reset()``. Registration is weak:
objects of an uninstrumented session are not kept alive by it. Fork also waits for an OTLP request in
flight to end (`quiet`).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import weakref
from typing import Protocol

_log = logging.getLogger(__name__)

#: How long fork waits for an export request in flight (`quiet`) before going ahead without it.
QUIET_WAIT_S = 15.0


class Resettable(Protocol):
    """An object that can start afresh in a forked child (`reset_in_child`)."""

    def _reset(self) -> None: ...


_registered: weakref.WeakSet = weakref.WeakSet()


def reset_in_child(obj: Resettable) -> None:
    """Call ``obj._reset()`` in every child forked from now on, while `obj` lives."""
    _registered.add(obj)


class _Quiet:
    """A lock that an export thread holds while it is inside an OTLP exporter, and fork takes first.

    gRPC's own fork handlers only work when no RPC is in flight: otherwise they are skipped, the child's
    gRPC cannot send anything, and the parent's request may fail after arriving (and is then resent).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held_by_fork = False

    def __enter__(self) -> None:
        self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()

    def _before(self) -> None:
        # Bounded: a hanging backend keeps a request in flight until its own timeout.
        self._held_by_fork = self._lock.acquire(timeout=QUIET_WAIT_S)
        if not self._held_by_fork:
            _log.warning("otel-rai: forking while an OTLP export is still in flight; over gRPC, the child may "
                         "be unable to export (spooled decisions wait for another process)")

    def _after(self) -> None:
        if self._held_by_fork:
            self._held_by_fork = False
            self._lock.release()


#: Hold while calling into an OTLP exporter (see `_Quiet`).
quiet = _Quiet()


def block_sigterm() -> None:
    """Called first in each thread otel-rai starts: the kernel then never hands SIGTERM to it, but to a
    thread that can act on it (Python runs signal handlers on the main thread only, and a main thread
    waiting on a lock is woken only by a signal sent to it). Threads it starts (gRPC's) inherit the mask."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})


def _after_fork_in_child() -> None:
    quiet._after()
    for obj in list(_registered):
        obj._reset()


os.register_at_fork(before=quiet._before, after_in_parent=quiet._after, after_in_child=_after_fork_in_child)
