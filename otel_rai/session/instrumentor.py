"""`RaiInstrumentor`: the `BaseInstrumentor` behind `otel_rai.instrument()` and ``opentelemetry-instrument``.

While instrumented, one `_Session` owns everything: the settings, the audit tracer, the worker, the
sinks and the class patches. `uninstrument()` drains the worker and restores every original method.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Collection, Mapping

from opentelemetry import metrics, trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from otel_rai import semconv, settings
from otel_rai.audit.hashing import check_strength, material_bytes, resolve_key
from otel_rai.audit.local_rows import local_key
from otel_rai.audit.tracer import AuditTracer
from otel_rai.audit.worker import AuditWorker, Counters, per_call
from otel_rai.capture import models
from otel_rai.capture.durable import FailClosed
from otel_rai.capture.patching import Patcher
from otel_rai.capture.recorder import Recorder, refusing_factory
from otel_rai.chain.keys import signer
from otel_rai.chain.seal import Chain, ChainedTracer
from otel_rai.codec.text import safe, text_of
from otel_rai.fairness import groups
from otel_rai.fairness.monitor import FairnessMonitor
from otel_rai.fairness.outcomes import KnownDecision, OutcomeLookup
from otel_rai.monitoring.monitor import QualityDriftMonitor
from otel_rai.provenance import artifacts
from otel_rai.provenance.emitter import ModelRecords
from otel_rai.query import Query, decisions
from otel_rai.query.local import Local
from otel_rai.registry import hooks as registry_hooks
from otel_rai.session import lifecycle
from otel_rai.session import metrics as audit_metrics
from otel_rai.settings import Settings
from otel_rai.sinks import mlflow as mlflow_destination
from otel_rai.sinks import provider
from otel_rai.sinks.local import StoreSink
from otel_rai.store import Store
from otel_rai.version import __version__

_log = logging.getLogger(__name__)

#: How long interpreter exit waits for the audit worker and the exporters.
EXIT_TIMEOUT_S = 10.0
#: How long `flush` waits unless told otherwise.
FLUSH_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class FlushResult:
    """What `flush()` achieved. True when everything recorded so far has been delivered."""

    complete: bool
    pending: int
    decisions: int
    spans: int
    failures: Mapping[str, int] = field(default_factory=dict)
    #: Spans delivered to the OTLP backend by this process, and audit records given up (see ``ml.audit.*``).
    exported: int = 0
    dropped: int = 0
    #: Why nothing is audited: instrumenting failed (an unusable store, a bad setting); then `failures`
    #: has ``instrument`` and `complete` is False.
    error: str | None = None

    def __bool__(self) -> bool:
        return self.complete


class _Session:
    """Everything one instrumented process owns: settings, audit tracer, worker, sinks, patches."""

    def __init__(self, config: Settings) -> None:
        config = replace(config, hash_key=resolve_key(config.hash_key, recording=True))
        if isinstance(config.checkpoint_key, (str, bytes)):
            check_strength(material_bytes(config.checkpoint_key), "checkpoint key")
        config = mlflow_destination.routed(config)
        self.own_provider = config.tracer_provider is None
        if config.trace_ui is None:  # the UI view goes where a UI may read the spans: out of the process
            leaves = not self.own_provider or settings.otlp_endpoint_configured(config.endpoint)
            config = replace(config, trace_ui=leaves)
        self.settings = config
        self.sinks = provider.choose(config, own_provider=self.own_provider)
        fail_closed = config.on_audit_failure == "raise"
        if fail_closed and not any(isinstance(s, StoreSink) for s in self.sinks):
            raise ValueError("otel-rai: on_audit_failure='raise' needs a local store or spool to write "
                             "decisions to (store=..., or an endpoint without spool=False)")
        tracer_provider = config.tracer_provider
        if tracer_provider is None:
            tracer_provider = provider.audit_provider(config.service_name, self.sinks)
        else:
            _warn_if_sampled(tracer_provider)
            for sink in self.sinks:
                tracer_provider.add_span_processor(sink)
        self.provider = tracer_provider
        self.counters = Counters()
        audit_tracer = (
            AuditTracer(tracer_provider, self.sinks, InstrumentationScope(semconv.SCOPE, __version__))
            if self.own_provider
            else tracer_provider.get_tracer(semconv.SCOPE, __version__)
        )
        service = tracer_provider.resource.attributes.get(semconv.SERVICE_NAME) \
            if isinstance(tracer_provider, TracerProvider) else None
        tracer = ChainedTracer(audit_tracer, Chain(signer(config.checkpoint_key), config.checkpoint_interval,
                                                   service=None if service is None else text_of(service)))
        self.tracer = tracer
        local = next((s for s in self.sinks if isinstance(s, StoreSink) and s.keep), None)  # not a spool
        meter_provider = config.meter_provider or metrics.get_meter_provider()
        self.monitor = FairnessMonitor(
            config.fairness,
            groups.parse(config.sensitive_features),
            meter_provider,
            tracer,
            self.counters.fail,
            lookup=None if local is None else store_lookup(local.store),
            journal=local,
            outcome_key=local_key(config.hash_key),
        )
        self.quality = QualityDriftMonitor(config.monitoring, config.fairness, groups.parse(config.sensitive_features),
                                           meter_provider, tracer, self.counters.fail,
                                           allowlist=config.capture_features, journal=local)
        self.records = None
        if config.model_records:
            store_path = next((s.store.path for s in self.sinks if isinstance(s, StoreSink)), None)
            self.records = ModelRecords(tracer, config, artifacts.resolve(config.artifacts, store_path),
                                        lambda task: self.worker.submit(task), self.counters.fail,
                                        lambda timeout: self.worker.flush(timeout))
        self.worker = AuditWorker(
            tracer,
            config,
            self.counters,
            # alert, snapshot and checkpoint spans commit in the same cycle
            [self.monitor.end_cycle, lambda: self.quality.end_cycle(flushing=self.worker.flushing()),
             tracer.checkpoint],
            [self.monitor.observe, self.quality.observe]
            + ([per_call(self.records.observe, self.counters.fail, "observe")] if self.records else []),
            commits=[s.commit for s in self.sinks],
            max_pending_rows=config.max_pending_rows,
            prepare_hooks=[self.monitor.prepare],
        )
        durable = FailClosed(self.worker.submit, self.worker.wake) if fail_closed else None
        recorder = self.recorder = Recorder(config.model_version, self.worker.submit, self.counters.fail, durable)
        records = self.records
        observers = [self.quality.fit_observer] + ([records.training.observe] if records else [])
        self.patcher = Patcher(recorder.wrapper_factory, fit_observers=observers,
                               before_change=[records.before_change] if records else [])
        models.observe(config.model_version)
        self.patcher.install()
        registry_hooks.install()
        self._closed: FlushResult | None = None
        self._stop_metrics = audit_metrics.publish(meter_provider, self._numbers)
        # Registered now, so that it runs before the atexit shutdown of any provider created earlier.
        atexit.register(self._at_exit)
        self._sigterm = lifecycle.SigtermFlush(self._at_exit)
        lifecycle.flush_multiprocessing_children(self, self._at_exit, self._sigterm)
        self._stop_sending_hook = lifecycle.durable_before_sending(self.durable)

    def _numbers(self) -> tuple[int, int, int]:
        """(pending, exported, dropped) audit records: the ``ml.audit.*`` metrics."""
        pending = self.worker.pending() + sum(s.pending() for s in self.sinks)
        pending += self.records.pending() if self.records is not None else 0
        return (pending, sum(s.exported() for s in self.sinks),
                self.counters.dropped + sum(s.dropped() for s in self.sinks))

    def durable(self, timeout: float) -> bool:
        """Wait until every decision so far is committed where it outlives this process: the local
        store or spool, else (no spool) the backend or the application's provider. Cheap when nothing
        waits."""
        deadline = time.monotonic() + timeout
        if not self.worker.flush(timeout):
            return False
        if not self.own_provider:
            return bool(self.provider.force_flush(int(max(0.0, deadline - time.monotonic()) * 1000)))
        return all(sink.durable(max(0.0, deadline - time.monotonic())) for sink in self.sinks)

    def flush(self, timeout: float) -> FlushResult:
        deadline = time.monotonic() + timeout
        drained = self.worker.flush(timeout)
        if self.records is not None:  # its saved artifacts hand their records back to the worker
            drained = (self.records.flush(max(0.0, deadline - time.monotonic()))
                       and self.worker.flush(max(0.0, deadline - time.monotonic())) and drained)
        remaining_ms = int(max(0.0, deadline - time.monotonic()) * 1000)
        flush_provider = getattr(self.provider, "force_flush", None)
        delivered = bool(flush_provider(remaining_ms)) if flush_provider is not None else True
        pending, exported, dropped = self._numbers()
        return FlushResult(
            complete=drained and delivered,
            pending=pending,
            decisions=self.counters.decisions,
            spans=self.counters.spans,
            failures=dict(self.counters.failures),
            exported=exported,
            dropped=dropped,
        )

    def _at_exit(self) -> None:
        result = self.close(EXIT_TIMEOUT_S)
        if not result.complete:
            _log.error("otel-rai: %d audit records were still pending at exit", result.pending)

    def close(self, timeout: float) -> FlushResult:
        """Flush (with a last checkpoint of the stream), then stop. Runs once; later calls (atexit after
        uninstrument, SIGTERM, a multiprocessing finalizer) return the first result."""
        if self._closed is not None:
            return self._closed
        deadline = time.monotonic() + timeout
        # A SIGTERM meanwhile (multiprocessing's terminate()) waits for this to finish, then kills.
        with self._sigterm.closing():
            atexit.unregister(self._at_exit)
            self._stop_sending_hook()
            self.patcher.remove()
            registry_hooks.uninstall()
            self.worker.submit(self.quality.final)
            if self.records is not None:  # the records join the stream before its last checkpoint
                self.worker.flush(timeout)
                self.records.close(max(0.0, deadline - time.monotonic()))  # hands the last records to the worker
            self.worker.submit(lambda: self.tracer.checkpoint(force=True))
            result = self._closed = self.flush(max(0.0, deadline - time.monotonic()))
            self._stop_metrics()  # before the sinks close: a metric reader must not read a closed store
            self.worker.shutdown(max(0.0, deadline - time.monotonic()))  # a cycle in progress ends first
            self.monitor.close()
            self.quality.close()
            # Within what is left of `timeout`: a provider's shutdown would give each sink 30 s more.
            # In an application's provider, our sinks are inert from here on.
            for sink in self.sinks:
                sink.close(max(0.0, deadline - time.monotonic()))
            if self.own_provider and isinstance(self.provider, TracerProvider):
                self.provider.shutdown()
            models.stop_observing()
        return result


def store_lookup(store: Store) -> OutcomeLookup:
    """Decisions found in the local audit store, e.g. made by another process that shares it."""
    backend = Local.of(store)

    def lookup(decision_id: str) -> KnownDecision | None:
        found = next(decisions(Query(decision_ids=frozenset([decision_id])), backend, 1), None)
        if found is None or found.model_name is None or found.model_version is None:
            return None
        return KnownDecision(
            model=found.model_name,
            version=found.model_version,
            prediction=found.output,
            classes=found.attributes.get(semconv.OUTPUT_CLASSES),
            groups=store.groups([decision_id]).get(decision_id, {}),
        )

    return lookup


def _warn_if_sampled(provider: trace.TracerProvider) -> None:
    sampler = getattr(provider, "sampler", None)
    if sampler is not None and sampler.get_description() != ALWAYS_ON.get_description():
        _log.warning(
            "otel-rai: the tracer_provider given samples with %s; decisions it drops are not audited. "
            "Leave tracer_provider unset to use the always-on audit provider.",
            sampler.get_description(),
        )


_session: _Session | None = None
_lock = threading.Lock()
#: Passed by `instrument()`: a failure to instrument is raised to its caller. Without it (the
#: ``opentelemetry-instrument`` path, whose loader would stop at the first error) it is recorded instead.
_EXPLICIT = "_otel_rai_explicit"


@dataclass
class _Failed:
    """Why instrumenting failed, and (fail-closed) the patches that refuse every decision."""

    error: str
    refusing: Patcher | None


_failed: _Failed | None = None


def _fail_closed(kwargs: Mapping[str, Any]) -> bool:
    """Whether fail-closed was asked for, read without the settings (which may be what failed)."""
    given = kwargs.get("on_audit_failure") or settings.env("OTEL_RAI_ON_AUDIT_FAILURE") or ""
    return str(given).strip().lower() == "raise"


def _instrumentation_failed(exc: Exception, kwargs: Mapping[str, Any]) -> _Failed:
    """Make a failure to instrument loud: an error log, ``ml.audit.instrumentation_failures``, `flush()`;
    fail-closed, every decision is refused from now on."""
    error = safe(f"{type(exc).__name__}: {exc}")
    refusing = None
    if _fail_closed(kwargs):
        refusing = Patcher(refusing_factory(f"instrumentation failed: {type(exc).__name__}"))
        refusing.install()
    _log.error("otel-rai: instrumentation failed (%s); %s", error,
               "every decision is refused (on_audit_failure=raise)" if refusing else
               "decisions are NOT audited (on_audit_failure=log)")
    try:
        audit_metrics.instrumentation_failed(kwargs.get("meter_provider") or metrics.get_meter_provider(),
                                             type(exc).__name__)
    except Exception as metric_error:  # the log above says it already
        _log.warning("otel-rai: could not count the failure (%s)", type(metric_error).__name__)
    return _Failed(error, refusing)


class RaiInstrumentor(BaseInstrumentor):
    """Instruments every scikit-learn-style estimator class. Options: `otel_rai.settings.Settings` (see
    `otel_rai.instrument`); ``opentelemetry-instrument`` gives none, so they come from the environment."""

    def instrumentation_dependencies(self) -> Collection[str]:
        """The scikit-learn versions this instrumentation supports."""
        return ("scikit-learn >= 1.3",)

    def _instrument(self, **kwargs: Any) -> None:
        global _session, _failed
        explicit = kwargs.pop(_EXPLICIT, False)
        with _lock:
            try:
                _session = _Session(Settings.resolve(**kwargs))
            except Exception as exc:
                if explicit:
                    raise
                _failed = _instrumentation_failed(exc, kwargs)

    def _uninstrument(self, **kwargs: Any) -> None:
        global _session, _failed
        with _lock:
            session, _session = _session, None
            failed, _failed = _failed, None
        if failed is not None and failed.refusing is not None:
            failed.refusing.remove()
        if session is not None:
            session.close(kwargs.get("timeout", EXIT_TIMEOUT_S))


def record_outcome(
    decision_id: Any,
    y_true: Any,
    *,
    group: Mapping[str, Any] | None = None,
    prediction: Any = None,
    model: str | None = None,
    version: str | None = None,
) -> bool:
    """Record the ground truth of a decision, for the TPR/FPR and equalized-odds metrics and the quality
    metrics (docs/monitoring.md).

    The decision is looked up by id among the recent decisions of this process (then in the local
    audit store). For a decision made elsewhere, pass what it was: `group` ({attribute: value}),
    `prediction` (the predicted label, or the score when ``score_threshold`` is set), `model` and
    `version`; explicit arguments override what was remembered. Counting happens on the audit worker
    thread; an id that cannot be resolved is counted in ``flush().failures["outcome"]``.
    Returns False (and logs) when otel-rai is not instrumented.
    """
    session = _session
    if session is None:
        _log.warning("otel-rai: record_outcome called while not instrumented; the outcome is not counted")
        return False
    given = {"group": group, "prediction": prediction, "model": model, "version": version}
    session.worker.submit(session.monitor.outcome_task(decision_id, y_true, given))
    session.worker.submit(session.quality.label_task(decision_id, y_true, time.time_ns()))
    return True


def current_settings() -> Settings | None:
    """The resolved settings of the instrumented session, or None when not instrumented."""
    session = _session
    return None if session is None else session.settings


def record_rejected(model: Any, operation: str, error: BaseException, start_ns: int | None = None) -> bool:
    """Audit a call of `model` that was refused before it reached the model (the MLflow server could not
    parse the request): an ERROR decision span without rows. Returns False when not instrumented."""
    session = _session
    if session is None:
        return False
    session.recorder.rejected(model, operation, error, start_ns)
    return True


def flush(timeout: float = FLUSH_TIMEOUT_S) -> FlushResult:
    """Wait until every decision so far has its span ended and exported, or `timeout` seconds pass."""
    session = _session
    if session is None:
        failed = _failed
        if failed is not None:
            return FlushResult(complete=False, pending=0, decisions=0, spans=0, failures={"instrument": 1},
                               error=failed.error)
        return FlushResult(complete=True, pending=0, decisions=0, spans=0)
    return session.flush(timeout)


def instrument(**options: Any) -> None:
    """Patch every scikit-learn-style estimator so that each outermost predict call is audited.

    Every option is keyword-only; one not given comes from its environment variable, else its default
    (``docs/settings.md``):

    """
    RaiInstrumentor().instrument(**options, **{_EXPLICIT: True})


instrument.__signature__ = settings.signature()  # type: ignore[attr-defined]
instrument.__doc__ = (instrument.__doc__ or "") + "\n".join(
    "    " + line for line in settings.option_docs().splitlines())


def uninstrument() -> None:
    """Drain pending audit records and restore every original estimator method."""
    RaiInstrumentor().uninstrument()
