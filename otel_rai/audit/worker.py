"""The audit worker: a background thread that turns captured calls into spans.

Callers append to a deque (no lock on the hot path) and wake the worker only when a batch has built up;
otherwise it wakes on its own every ``_INTERVAL`` seconds, and calls that arrive during a cycle wait for
the next one (`_drain`). Each cycle builds the spans of up to ``_BATCH`` calls and then lets the sinks
commit (one store transaction, one export hand-off). When more than ``max_pending_calls`` calls, or
calls of more than ``max_pending_rows`` rows in all, wait, callers block until there is room:
back-pressure, never a drop. (Single-row calls are bounded by the call count alone, which keeps their
path free of locks; a call larger than the row bound still goes in alone.) A task (a plain callable,
e.g. a recorded outcome) queued with `submit` runs in order with the calls.
"""

from __future__ import annotations

import collections
import functools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence, Union

from opentelemetry import trace

from otel_rai import _fork
from otel_rai.audit import spans
from otel_rai.capture.recorder import DecisionCall
from otel_rai.capture.scope import draw_ids
from otel_rai.explanations import record as explanations
from otel_rai.settings import Settings

_log = logging.getLogger(__name__)

#: The worker wakes on its own this often (seconds): about the longest a call waits for its cycle while fewer
#: than `_WAKE_AT` calls are queued. A cycle has about 1–2 ms of fixed work (a commit, the monitors'
#: update), which a longer interval shares among more decisions at a moderate rate (bench/RESULTS.md).
_INTERVAL = 0.1
#: An idle worker still runs a cycle this often (for timed checkpoints), and after a failed commit
#: this often (to retry it).
_IDLE_CYCLE_S = 1.0
_RETRY_S = 0.1
#: A caller wakes the worker once this many calls wait; below that, callers never touch the event.
_WAKE_AT = 256
#: Calls (and tasks) per cycle, at most: each cycle is one store transaction and one export hand-off.
_BATCH = 1024
#: Failures of one stage that are each logged; after them only every `_LOG_EVERY`-th is.
_LOGGED_PER_STAGE = 5
_LOG_EVERY = 1000

#: What the worker runs: a captured call, or a task to run on the audit thread after the calls before it.
Work = Union[DecisionCall, Callable[[], None]]
#: A hook of the worker's calls: given a cycle's consecutive calls at once, it keeps a failure of one call
#: to that call (`per_call` makes one of a hook of one call).
CallsHook = Callable[[Sequence[DecisionCall]], None]


def per_call(hook: Callable[[DecisionCall], None], on_failure: Callable[[str, BaseException], None],
             stage: str) -> CallsHook:
    """A `CallsHook` that runs `hook` on each call; a failure is counted as `stage` and skips that call only."""

    @functools.wraps(hook)
    def each(calls: Sequence[DecisionCall]) -> None:
        for call in calls:
            try:
                hook(call)
            except Exception as exc:
                on_failure(stage, exc)

    return each


@dataclass(eq=False)
class Counters:
    """What the audit path did, for `otel_rai.flush()` and the ``ml.audit.*`` metrics."""

    decisions: int = 0
    spans: int = 0
    #: Audit records that will never be delivered (a call whose span could not be built).
    dropped: int = 0
    failures: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _fork.reset_in_child(self)

    def _reset(self) -> None:
        """A forked child counts its own work: what it inherited was the parent's."""
        self.decisions = self.spans = self.dropped = 0
        self.failures = {}

    def fail(self, stage: str, exc: BaseException) -> None:
        """Count a failure of `stage`; log its exception type (never its message) the first few times, then
        every thousandth."""
        n = self.failures[stage] = self.failures.get(stage, 0) + 1
        if n <= _LOGGED_PER_STAGE or n % _LOG_EVERY == 0:
            # The type only: a message could quote a raw input value.
            _log.warning("otel-rai: %s failed (%s), failure %d; the prediction was not affected",
                         stage, type(exc).__name__, n)


class AuditWorker:
    """The background thread of the audit path: builds the spans of captured calls in batches, runs the
    hooks and queued tasks, and commits the sinks once per cycle (see the module docstring)."""

    def __init__(
        self,
        tracer: trace.Tracer,
        settings: Settings,
        counters: Counters,
        cycle_hooks: Sequence[Callable[[], None]] = (),
        call_hooks: Sequence[CallsHook] = (),
        commits: Sequence[Callable[[], set[str] | None]] = (),
        max_pending_rows: int | None = None,
        prepare_hooks: Sequence[CallsHook] = (),
    ) -> None:
        self._tracer = tracer
        self._settings = settings
        self._counters = counters
        self._cycle_hooks = list(cycle_hooks)
        self._call_hooks = list(call_hooks)
        self._prepare_hooks = list(prepare_hooks)  # the calls, before their spans are built
        # After the cycle hooks; a failure fails the cycle's receipts, and each returns the decision ids
        # whose record it set aside (which fails those calls' receipts).
        self._commits = list(commits)
        self._max_pending_rows = max_pending_rows
        self._reset()
        _fork.reset_in_child(self)

    def _reset(self) -> None:
        """Fresh state; also in a forked child, whose parent still owns the calls queued before fork."""
        self._pending: collections.deque[Work] = collections.deque()
        self._wake = threading.Event()
        # Two conditions on one lock: callers waiting for room wake as each batch is taken, a flush only
        # once the queue is empty. A flush woken at every batch would then wait for the interpreter while
        # the worker runs, and each of the worker's releases of it (at every SQLite statement) wakes that
        # thread again: about 0.3 ms of the caller's CPU a flush, for nothing.
        lock = threading.Lock()
        self._room = threading.Condition(lock)
        self._idle = threading.Condition(lock)
        self._busy = False
        self._flushes = 0  # flushes waiting, under the conditions' lock
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._pending_rows = 0  # rows of the multi-row calls queued, under the conditions' lock
        self._last_cycle = time.monotonic()
        self._commit_failed = False

    def submit(self, call: Work) -> None:
        """Queue a captured call or a task; blocks while the queue is full (back-pressure, never a drop)."""
        if self._thread is None:
            self._start()
        pending = self._pending
        if len(pending) >= self._settings.max_pending_calls:
            self._wait_for_room()
        rows = getattr(call, "n_rows", None) or 0
        if rows > 1 and self._max_pending_rows is not None:
            self._admit_rows(rows)
        pending.append(call)
        if len(pending) >= _WAKE_AT or self._flushes:  # a waiting flush needs this call's cycle too
            self._wake.set()

    def _admit_rows(self, rows: int) -> None:
        limit = self._max_pending_rows
        with self._room:
            if self._pending_rows and self._pending_rows + rows > limit:
                self._wake.set()
                self._room.wait_for(lambda: not self._pending_rows or self._pending_rows + rows <= limit)
            self._pending_rows += rows

    def wake(self) -> None:
        """Have the worker start a cycle now (a caller is waiting for its record)."""
        self._wake.set()

    def _start(self) -> None:
        with self._room:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="otel-rai-audit", daemon=True)
                self._thread.start()

    def _wait_for_room(self) -> None:
        self._wake.set()
        with self._room:
            self._room.wait_for(lambda: len(self._pending) < self._settings.max_pending_calls)

    def _run(self) -> None:
        _fork.block_sigterm()
        while not self._stopping:
            self._wake.wait(_INTERVAL)
            self._wake.clear()
            idle = time.monotonic() - self._last_cycle
            if not self._drain() and idle >= (_RETRY_S if self._commit_failed else _IDLE_CYCLE_S):
                self._process([])
        self._drain()

    def _drain(self) -> bool:
        """Process what is queued; False if nothing was. After the first batch, another only while a
        wake-up's worth of calls waits, a flush waits or the worker is stopping: calls that trickle in
        during a cycle wait for the next wake-up (a caller waiting for room or for its record wakes the
        worker, which then starts it at once). Otherwise, at a moderate rate, every few calls would pay a
        whole cycle's fixed work (a commit, the monitors' update): about 2 ms a cycle, which at 1,000
        decisions a second kept the worker busy most of the time."""
        drained = False
        while True:
            with self._room:
                if not self._pending or (drained and len(self._pending) < _WAKE_AT and not self._flushes
                                         and not self._stopping):
                    return drained
                drained = True
                self._busy = True
                batch = [self._pending.popleft() for _ in range(min(_BATCH, len(self._pending)))]
                if self._max_pending_rows is not None:
                    self._pending_rows -= sum(r for r in (getattr(c, "n_rows", None) or 0 for c in batch) if r > 1)
                # Room now, not once the batch is done: callers waiting for it then run while this
                # thread waits on the disk, instead of leaving the interpreter idle.
                self._room.notify_all()
            try:
                self._process(batch)
            except Exception as exc:
                # A bug of the cycle itself (its stages catch their own failures): counted, and the thread
                # goes on. Ended, it would leave every later caller blocked on a full queue.
                self._counters.fail("worker", exc)
                self._settle(batch, lambda call: False)  # fail-closed callers raise now, not at their timeout
            finally:
                with self._idle:
                    self._busy = False
                    if not self._pending:
                        self._idle.notify_all()

    def _process(self, batch: list[Work]) -> None:
        counters = self._counters
        draw_ids()  # the callers' next decision ids, drawn here rather than in their calls
        try:
            explanations.attach(batch, self._settings, counters.fail)
        except Exception as exc:
            counters.fail("explain", exc)
        calls = [work for work in batch if isinstance(work, DecisionCall)]
        try:  # work shared across the cycle's calls: without it, each span does its own
            spans.hash_inputs(calls, self._settings)
            spans.encode_outputs(calls)
            spans.encode_explanations(calls, self._settings)
        except Exception as exc:
            counters.fail("encode", exc)
        run: list[DecisionCall] = []  # consecutive calls: a task runs after the calls before it
        for work in batch:
            if isinstance(work, DecisionCall):
                run.append(work)
                continue
            self._record(run)
            run = []
            try:
                work()
            except Exception as exc:
                counters.fail("task", exc)
        self._record(run)
        for hook in self._cycle_hooks:
            try:
                hook()
            except Exception as exc:
                counters.fail("cycle", exc)
        committed = True
        rejected: set[str] = set()  # decisions whose record a sink set aside (it could not hold it)
        for commit in self._commits:
            try:
                rejected |= commit() or set()
            except Exception as exc:
                counters.fail("commit", exc)
                committed = False
        if rejected:
            counters.failures["record"] = counters.failures.get("record", 0) + len(rejected)
        self._commit_failed = not committed
        self._last_cycle = time.monotonic()
        self._settle(batch, lambda call: committed and not (rejected and rejected.intersection(call.ids)))

    @staticmethod
    def _settle(batch: list[Work], ok: Callable[[DecisionCall], bool]) -> None:
        """Settle the receipts of the batch's fail-closed calls (a receipt keeps its first settlement)."""
        for call in batch:
            receipt = getattr(call, "receipt", None)
            if receipt is not None:
                receipt.settle(ok(call))

    def _record(self, calls: list[DecisionCall]) -> None:
        """The spans and hooks of consecutive calls, one stage at a time over all of them rather than one
        call at a time: each stage's code and data stay warm in the CPU's caches, which takes about a
        sixth off the worker's CPU per decision (bench/RESULTS.md)."""
        counters = self._counters
        self._each(self._prepare_hooks, calls, "prepare")
        spans.digest_groups(calls, self._settings)
        for call in calls:
            try:
                counters.spans += spans.emit(call, self._tracer, self._settings, counters.fail)
                counters.decisions += len(call.ids)
            except Exception as exc:
                counters.fail("span", exc)
                counters.dropped += 1
                if call.receipt is not None:
                    call.receipt.settle(False)
        self._each(self._call_hooks, calls, "observe")

    def _each(self, hooks: list[CallsHook], calls: list[DecisionCall], stage: str) -> None:
        """Each hook on the calls, hook by hook; a failure that escapes a hook is counted as `stage`."""
        for hook in hooks:
            try:
                hook(calls)
            except Exception as exc:
                self._counters.fail(stage, exc)

    def flushing(self) -> bool:
        """Whether a flush is waiting for the worker (a cycle hook may then finish work it defers)."""
        return self._flushes > 0

    def pending(self) -> int:
        """Calls and tasks queued or in the cycle now running (the cycle counts as one)."""
        return len(self._pending) + (1 if self._busy else 0)

    def flush(self, timeout: float) -> bool:
        """Wait until every call submitted so far has its spans ended; False on timeout."""
        if self._thread is None:
            return not self._pending
        deadline = time.monotonic() + timeout
        with self._idle:
            self._flushes += 1  # counted before the wake: a call queued from now on wakes the worker itself
            self._wake.set()
            try:
                return self._idle.wait_for(
                    lambda: not self._pending and not self._busy, max(0.0, deadline - time.monotonic())
                )
            finally:
                self._flushes -= 1

    def shutdown(self, timeout: float) -> bool:
        """Flush within `timeout` seconds, then stop the thread; False if calls were still waiting."""
        drained = self.flush(timeout)
        self._stopping = True
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        return drained
