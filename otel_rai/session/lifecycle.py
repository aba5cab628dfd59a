"""The end of an instrumented process: flushing on SIGTERM and in multiprocessing children.

* **SIGTERM**: the default action kills the process without running ``atexit`` handlers. When the
  application has no SIGTERM handler, one is installed that closes the session (flush, final
  checkpoint) and then dies of SIGTERM as before. An application's own handler is left alone: exiting
  from it with ``sys.exit`` runs the ``atexit`` flush.
* **multiprocessing**: its forked children end with ``os._exit``, which skips ``atexit``; a
  multiprocessing finalizer flushes their decisions instead.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any, Callable


def flush_on_sigterm(close: Callable[[], Any]) -> Callable[[], None]:
    """Run `close` on SIGTERM, then die of SIGTERM as the default action would, when the application
    has no SIGTERM handler (and this is the main thread). Returns the function that removes it."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return lambda: None

    def on_sigterm(signum: int, frame: Any) -> None:
        try:
            close()
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_sigterm)

    def remove() -> None:
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is on_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)

    return remove


def flush_multiprocessing_children(owner: Any, close: Callable[[], Any]) -> None:
    """In each multiprocessing child forked while `owner` lives, run `close` when the child's target
    returns (multiprocessing ends its children with ``os._exit``, which skips ``atexit``)."""
    from multiprocessing import util

    def in_child(_: Any) -> None:
        util.Finalize(None, close, exitpriority=100)

    util.register_after_fork(owner, in_child)
