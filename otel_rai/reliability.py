"""Delivery guarantees of the audit trail: fail-closed decisions, the ``ml.audit.*`` metrics, and
flushing when the process ends (SIGTERM, multiprocessing children).

* **Fail-closed** (``instrument(on_audit_failure="raise")``): each decision call waits until its record
  is committed to the local store or spool, and raises `AuditUnavailableError` instead of returning
  when that fails. The wait is a group commit: concurrent callers share one transaction.
* **Metrics**: ``ml.audit.pending`` (gauge), ``ml.audit.exported`` and ``ml.audit.dropped`` (counters),
  in audit records (spans, and calls not yet turned into spans). ``dropped`` counts records that will
  never be delivered; it stays 0 unless a record could not be built or a store write was given up.
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
import weakref
from typing import TYPE_CHECKING, Any, Callable, Iterable

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from otel_rai import semconv
from otel_rai.version import __version__

if TYPE_CHECKING:
    from otel_rai.capture import DecisionCall

FAILURE_MODES = ("log", "raise")
#: How long a fail-closed call waits for its record to be committed.
DURABLE_TIMEOUT_S = 30.0


class AuditUnavailableError(RuntimeError):
    """The audit record of a decision could not be written durably, so (in fail-closed mode,
    ``instrument(on_audit_failure="raise")``) the decision is not returned."""


# --- fail-closed -----------------------------------------------------------------------------------


class Receipt:
    """Settled by the audit worker once the call's record was committed (or could not be)."""

    __slots__ = ("_done", "ok")

    def __init__(self) -> None:
        self._done = threading.Event()
        self.ok = False

    def settle(self, ok: bool) -> None:
        """The first settlement counts (a call whose span failed stays failed)."""
        if not self._done.is_set():
            self.ok = ok
            self._done.set()

    def wait(self, timeout: float) -> str | None:
        """None once the record is durable; else why not."""
        if not self._done.wait(timeout):
            return f"not committed within {timeout:g} s"
        return None if self.ok else "the write to the local store failed"


def unavailable(why: str) -> AuditUnavailableError:
    return AuditUnavailableError(f"otel-rai: the audit record could not be written durably ({why}); "
                                 "the decision was withheld (on_audit_failure='raise')")


class FailClosed:
    """Hands a call to the audit worker and waits until its record is durable."""

    def __init__(self, submit: Callable[[DecisionCall], None], wake: Callable[[], None],
                 timeout: float = DURABLE_TIMEOUT_S) -> None:
        self._submit = submit
        self._wake = wake
        self._timeout = timeout

    def __call__(self, call: DecisionCall) -> None:
        call.receipt = receipt = Receipt()
        try:
            self._submit(call)
        except Exception as exc:
            raise unavailable(type(exc).__name__) from None
        self._wake()
        failure = receipt.wait(self._timeout)
        if failure is not None:
            raise unavailable(failure)


# --- metrics ---------------------------------------------------------------------------------------


class _Instruments:
    """The ``ml.audit.*`` instruments of one meter provider; the current session is their `source`."""

    def __init__(self, meter: metrics.Meter) -> None:
        self.source: Callable[[], tuple[int, int, int]] | None = None
        meter.create_observable_gauge(
            semconv.METRIC_AUDIT_PENDING, callbacks=[self._observe(0)], unit="{record}",
            description="Audit records of this process not yet delivered (queued calls, unexported spans)")
        meter.create_observable_counter(
            semconv.METRIC_AUDIT_EXPORTED, callbacks=[self._observe(1)], unit="{span}",
            description="Audit spans this process delivered to the OTLP backend")
        meter.create_observable_counter(
            semconv.METRIC_AUDIT_DROPPED, callbacks=[self._observe(2)], unit="{record}",
            description="Audit records that will never be delivered")

    def _observe(self, index: int) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            source = self.source
            return [Observation(source()[index])] if source is not None else []

        return observe


_instruments: weakref.WeakKeyDictionary[Any, _Instruments] = weakref.WeakKeyDictionary()


def publish(provider: metrics.MeterProvider, source: Callable[[], tuple[int, int, int]]) -> Callable[[], None]:
    """Publish (pending, exported, dropped) from `source` as the ``ml.audit.*`` metrics of `provider`.
    Returns the function that stops publishing."""
    instruments = _instruments.get(provider)
    if instruments is None:
        instruments = _instruments[provider] = _Instruments(provider.get_meter(semconv.SCOPE, __version__))
    instruments.source = source

    def stop() -> None:
        if instruments.source is source:
            instruments.source = None

    return stop


# --- the end of the process ------------------------------------------------------------------------


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
