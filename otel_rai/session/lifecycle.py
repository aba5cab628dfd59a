"""The end of an instrumented process: flushing on SIGTERM, at a child's exit, and before a child
hands a result back.

* **SIGTERM** (`SigtermFlush`): the default action kills the process without running ``atexit``
  handlers. When the application has no SIGTERM handler, one is installed that closes the session
  (flush, final checkpoint) and then dies of SIGTERM as before. A SIGTERM that arrives while the
  session is already closing waits for the close to finish instead of killing it half-way. An
  application's own handler is left alone: exiting from it with ``sys.exit`` runs the ``atexit`` flush.
  Not in multiprocessing children: ``Pool.terminate()`` expects SIGTERM to end them at once, and a Python
  handler can hang one for ever (Python runs handlers on the main thread only, and when the kernel hands
  the signal to another thread while the main thread waits on a semaphore a dead sibling holds, the main
  thread never wakes to run it: seen once in about twenty ``with Pool()`` blocks). That includes a
  spawned child, which instruments as it imports the main module, before multiprocessing tells it that
  it is a child. There, the decisions are made durable before each result is sent instead (below). The
  threads otel-rai starts block SIGTERM (`otel_rai._fork.block_sigterm`), so that the kernel hands it to
  a thread that can act on it.
* **multiprocessing children end with** ``os._exit``, which skips ``atexit``: a multiprocessing
  finalizer flushes their decisions instead (`flush_multiprocessing_children`).
* **A child's result is a returned decision** (`durable_before_sending`): in a multiprocessing child,
  every message sent to another process (a Pool or ProcessPoolExecutor result, a Queue item) waits
  until the decisions made so far are committed to the local store or spool. So a decision whose
  result reached the parent survives whatever happens to the child next (``terminate()``, a recycled
  worker, a kill).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from typing import Any, Callable, Iterator

from otel_rai import _fork

_log = logging.getLogger(__name__)

#: How long a child waits, before sending a message, for its decisions to be committed.
DURABLE_BEFORE_SENDING_S = 10.0
#: Threads of otel-rai's own (the audit worker, exporters): they never wait for themselves.
_OWN_THREADS = "otel-rai"


class SigtermFlush:
    """Closes the session on SIGTERM, then dies of SIGTERM (see the module docstring)."""

    def __init__(self, close: Callable[[], Any]) -> None:
        self._close = close
        self._installed = False
        self._reset()
        _fork.reset_in_child(self)
        if threading.current_thread() is not threading.main_thread() or _multiprocessing_child():
            return
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return
        signal.signal(signal.SIGTERM, self._on_sigterm)
        self._installed = True

    def _reset(self) -> None:
        """Not closing; a forked child inherits the handler (and needs its own state)."""
        self._closing = False
        self._deferred = False

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        if self._closing:  # the close under way finishes first; then the process dies as asked
            self._deferred = True
            return
        try:
            self._close()
        finally:
            _die()

    @contextlib.contextmanager
    def closing(self) -> Iterator[None]:
        """Around the session's close: a SIGTERM meanwhile is held until it is done; then the handler
        is removed (if it is still ours), and a held SIGTERM is delivered."""
        self._closing = True
        try:
            yield
        finally:
            self._closing = False
            self.remove()
            if self._deferred:
                _die()

    def remove(self) -> None:
        if not self._installed or threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) == self._on_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        self._installed = False


def _multiprocessing_child() -> bool:
    """Whether this process is a multiprocessing child. A spawned child imports the parent's main module
    (which may instrument) before multiprocessing tells it its parent, and with the parent's ``sys.argv``:
    its interpreter's own command line says it (the flag `multiprocessing.spawn` starts it with)."""
    from multiprocessing import parent_process

    return parent_process() is not None or sys.orig_argv[-1:] == ["--multiprocessing-fork"]


def _die() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def flush_multiprocessing_children(owner: Any, close: Callable[[], Any], sigterm: SigtermFlush) -> None:
    """In each multiprocessing child forked while `owner` lives, run `close` when the child's target
    returns (multiprocessing ends its children with ``os._exit``, which skips ``atexit``), and give
    SIGTERM its default action back (see `SigtermFlush`)."""
    from multiprocessing import util

    def in_child(_: Any) -> None:
        sigterm.remove()
        util.Finalize(None, close, exitpriority=100)

    util.register_after_fork(owner, in_child)
    if _multiprocessing_child():  # a spawned child, instrumented as it imports: no fork to come
        in_child(owner)


def durable_before_sending(durable: Callable[[float], bool]) -> Callable[[], None]:
    """In multiprocessing children, call ``durable(timeout)`` before every message a connection sends
    (`multiprocessing.connection.Connection.send_bytes`, under every Pool, ProcessPoolExecutor and Queue).
    Active in children only, also in children forked later; returns the function that removes it."""
    from multiprocessing import connection, parent_process

    cls = connection.Connection
    original = cls.send_bytes
    inherited = "send_bytes" not in vars(cls)
    state = threading.local()

    def send_bytes(self: Any, *args: Any, **kwargs: Any) -> Any:
        if (parent_process() is not None and not getattr(state, "busy", False)
                and not threading.current_thread().name.startswith(_OWN_THREADS)):
            state.busy = True
            try:
                if not durable(DURABLE_BEFORE_SENDING_S):
                    _log.warning("otel-rai: this child's decisions were not all committed before it sent "
                                 "a result; they stay pending")
            except Exception as exc:  # never fail the message
                _log.warning("otel-rai: could not commit this child's decisions (%s)", type(exc).__name__)
            finally:
                state.busy = False
        return original(self, *args, **kwargs)

    send_bytes.__wrapped__ = original  # type: ignore[attr-defined]
    cls.send_bytes = send_bytes  # type: ignore[method-assign]

    def remove() -> None:
        if vars(cls).get("send_bytes") is send_bytes:
            if inherited:
                del cls.send_bytes
            else:
                cls.send_bytes = original  # type: ignore[method-assign]

    return remove
