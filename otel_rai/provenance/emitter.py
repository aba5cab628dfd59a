"""`ModelRecords`: one model record span per fitted model (fingerprint) and process, and its artifact.

A fitted model registered under several names or versions (the same fingerprint promoted from one
version to another) gets a record for each, since the record carries its registration; the artifact is
saved once per fingerprint.

The audit worker calls `observe` with every decision call, after the call's span (a set lookup when the
model was seen). At the first call of a model it builds the record's attributes there, on the
worker, never on the caller's thread. With an artifact store, a saver thread then saves the model (see
`artifacts`) and hands the record back to the worker with the artifact's digest; without one, the worker
ends the record at once. Either way the record is a span of the audit tracer, ended on the worker
thread, so it is sealed into the chain and committed and exported like the decisions.

A model refitted (or reconfigured with ``set_params``) in place right after deciding must not lose its
record: the record and the artifact are built from the live model, after the decisions, on other
threads. So `before_change` (a before-change hook of the patcher) holds an outermost fit or
``set_params`` of a model whose last fingerprint has no record yet until the worker and the saver have
captured it (`MAX_FIT_WAIT_S` at most); other models' fits never wait.

A forked child forgets what it saw: its stream is new, and gets its own records.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any, Callable

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from otel_rai import _fork, semconv
from otel_rai.capture import models
from otel_rai.capture.fingerprint import fingerprint
from otel_rai.capture.recorder import DecisionCall
from otel_rai.provenance import build
from otel_rai.provenance.artifacts import ArtifactStore
from otel_rai.provenance.training import TrainingLog
from otel_rai.settings import Settings

_log = logging.getLogger(__name__)

#: Queues a task for the audit worker thread (`AuditWorker.submit`).
Submit = Callable[[Callable[[], None]], None]
#: Waits until the audit worker has processed every call so far (`AuditWorker.flush`).
Drain = Callable[[float], bool]
#: The longest a refit waits for the record of the model's last fingerprint.
MAX_FIT_WAIT_S = 30.0
#: Threads that must never wait for themselves: the audit worker's and the saver's.
_OWN_THREADS = ("otel-rai-audit", "otel-rai-artifacts")
FailureHook = Callable[[str, BaseException], None]


class ModelRecords:
    """The model records of one session. `training.observe` is its fit observer, `observe` its call hook."""

    def __init__(self, tracer: trace.Tracer, settings: Settings, artifacts: ArtifactStore | None, submit: Submit,
                 on_failure: FailureHook, drain: Drain | None = None) -> None:
        self._tracer = tracer
        self._settings = settings
        self.artifacts = artifacts
        self._submit = submit
        self._drain = drain
        self._fail = on_failure
        # Not models.model_info: its cache would then say the model decided, and a refit would wait (before_change).
        self.training = TrainingLog(settings.hash_key, fingerprint)
        self._reset()
        _fork.reset_in_child(self)
        if artifacts is not None:
            self._start()  # now: it imports skops (about a second) while the application starts, not later

    def _reset(self) -> None:
        self._seen: set[tuple[str, str, str]] = set()
        self._saved: dict[str, Any] = {}  # fingerprint -> its `Saved`, for a second registration of it
        self._captured: set[tuple[str, str, str]] = set()  # models whose record and artifact no longer need them
        self._jobs: collections.deque[tuple[DecisionCall, dict[str, Any]]] = collections.deque()
        self._cond = threading.Condition()
        self._busy = False
        self._closed = False
        self._thread: threading.Thread | None = None

    def observe(self, call: DecisionCall) -> None:
        """The call hook (audit worker): the first call of a fingerprint starts its record."""
        info = call.info
        seen = (info.fingerprint, info.name, info.version)
        if seen in self._seen:
            return
        self._seen.add(seen)
        fp = info.fingerprint
        if not _unchanged(call):  # refitted since: its parameters now are another model's
            self._captured.add(seen)
            attributes = build.model_attributes(call)
            attributes[semconv.AUDIT_ERROR] = "record: ModelChanged"
            self._end(attributes, call.start_ns)
            return
        attributes = build.attributes(call, self._settings, self.training.get(fp), self._fail)
        if self.artifacts is None:
            self._captured.add(seen)
            self._end(attributes, call.start_ns)
            return
        self._start()
        with self._cond:
            self._jobs.append((call, attributes))
            self._cond.notify_all()

    def _end(self, attributes: dict[str, Any], start_ns: int) -> None:
        """End the record span (on the audit worker thread)."""
        span = self._tracer.start_span(semconv.MODEL_RECORD_SPAN, context=otel_context.Context(),
                                       kind=SpanKind.INTERNAL, attributes=attributes, start_time=start_ns)
        span.end(end_time=max(time.time_ns(), start_ns))

    def _start(self) -> None:
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="otel-rai-artifacts", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        _fork.block_sigterm()
        _warm()
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._jobs or self._closed)
                if not self._jobs:
                    return
                call, attributes = self._jobs.popleft()
                self._busy = True
            try:
                self._save(call, attributes)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _save(self, call: DecisionCall, attributes: dict[str, Any]) -> None:
        """Save the model (saver thread), then have the worker end its record with the artifact's digest."""
        assert self.artifacts is not None
        try:
            saved = self._saved.get(call.info.fingerprint)
            if saved is None:
                saved = self.artifacts.save(call.info.fingerprint, call.model, fingerprint,
                                            call.info.registration.background)
                self._saved[call.info.fingerprint] = saved
            attributes[semconv.ARTIFACT_SHA256] = saved.sha256
            attributes[semconv.ARTIFACT_FORMAT] = saved.format
            attributes[semconv.ARTIFACT_URI] = saved.uri
            if saved.background_sha256 is not None:
                attributes[semconv.ARTIFACT_BACKGROUND_SHA256] = saved.background_sha256
        except Exception as exc:  # the type only: a message could quote a value
            attributes[semconv.ARTIFACT_ERROR] = type(exc).__name__
            self._fail("artifact", exc)
        self._captured.add((call.info.fingerprint, call.info.name, call.info.version))
        start = call.start_ns
        try:
            self._submit(lambda: self._end(attributes, start))
        except Exception as exc:
            self._fail("record", exc)

    def before_change(self, model: Any, method: str) -> None:
        """The before-change hook: let the last decisions' model be recorded and saved before a fit or
        ``set_params`` changes it."""
        info = models.last_info(model)
        if info is None or (info.fingerprint, info.name, info.version) in self._captured:
            return
        if self._drain is None or threading.current_thread().name in _OWN_THREADS:
            return
        deadline = time.monotonic() + MAX_FIT_WAIT_S
        if not (self._drain(MAX_FIT_WAIT_S) and self.flush(max(0.0, deadline - time.monotonic()))):
            _log.warning("otel-rai: a model was refitted before its record was written; the record may say "
                         "ModelChanged")

    def pending(self) -> int:
        """Artifacts being saved or waiting to be."""
        return len(self._jobs) + (1 if self._busy else 0)

    def flush(self, timeout: float) -> bool:
        """Wait until every artifact so far is saved and its record handed to the worker."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._jobs and not self._busy, timeout)

    def close(self, timeout: float) -> bool:
        """Finish the artifacts queued (within `timeout`), then stop the saver thread."""
        done = self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        return done


def _warm() -> None:
    """Import the serializers on the saver thread before the first model needs them: skops lists every
    scikit-learn estimator when imported, which takes about a second. A fork waits for it
    (`_fork.importing`)."""
    with _fork.importing:
        try:
            import skops.io  # noqa: F401
        except ImportError:  # joblib then
            pass


def _unchanged(call: DecisionCall) -> bool:
    """Whether `call`'s model still is the fit that decided (hashed again only after a fit somewhere)."""
    if models.current_info(call.model) is call.info:
        return True
    return fingerprint(call.model) == call.info.fingerprint
