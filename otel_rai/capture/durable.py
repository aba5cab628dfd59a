"""Fail-closed decisions (``instrument(on_audit_failure="raise")``): the caller waits for its record.

Each decision call hands its record to the audit worker and waits until the worker settles its
`Receipt`, which happens once the record is committed to the local store or spool; if that fails, the
call raises `AuditUnavailableError` instead of returning. The wait is a group commit: concurrent callers
share one transaction. Imports only the foundation modules.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from otel_rai.errors import AuditUnavailableError

#: How long a fail-closed call waits for its record to be committed.
DURABLE_TIMEOUT_S = 30.0


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
    """The error a fail-closed call raises instead of returning its decision."""
    return AuditUnavailableError(f"the audit record could not be written durably ({why}); "
                                 "the decision was withheld (on_audit_failure='raise')")


class FailClosed:
    """Hands a call to the audit worker and waits until its record is durable."""

    def __init__(self, submit: Callable[[Any], None], wake: Callable[[], None],
                 timeout: float = DURABLE_TIMEOUT_S) -> None:
        self._submit = submit
        self._wake = wake
        self._timeout = timeout

    def __call__(self, call: Any) -> None:
        call.receipt = receipt = Receipt()
        try:
            self._submit(call)
        except Exception as exc:
            raise unavailable(type(exc).__name__) from None
        self._wake()
        failure = receipt.wait(self._timeout)
        if failure is not None:
            raise unavailable(failure)
