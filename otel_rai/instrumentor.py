"""`RaiInstrumentor`: the `BaseInstrumentor` behind `otel_rai.instrument()` and ``opentelemetry-instrument``.

While instrumented, one `_Session` owns everything: the settings, the audit tracer, the worker, the
sinks and the class patches. `uninstrument()` drains the worker and restores every original method.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Collection, Iterable, Mapping, Sequence

from opentelemetry import metrics, trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.sdk.trace.sampling import ALWAYS_ON

from otel_rai import chain, config, export, groups, models, reliability, semconv
from otel_rai.capture import Recorder
from otel_rai.config import Settings
from otel_rai.hashing import HashKey, resolve_key
from otel_rai.monitor import FairnessConfig, FairnessMonitor
from otel_rai.outcomes import store_lookup
from otel_rai.patching import Patcher
from otel_rai.store import StoreSink
from otel_rai.tracer import AuditTracer
from otel_rai.version import __version__
from otel_rai.worker import AuditWorker, Counters

_log = logging.getLogger(__name__)

#: How long interpreter exit waits for the audit worker and the exporters.
EXIT_TIMEOUT_S = 10.0


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

    def __bool__(self) -> bool:
        return self.complete


class _Session:
    def __init__(
        self,
        *,
        service_name: str | None = None,
        model_version: str | None = None,
        hash_key: str | bytes | HashKey | None = None,
        capture_features: Iterable[str] | None = None,
        tracer_provider: trace.TracerProvider | None = None,
        endpoint: str | None = None,
        protocol: str | None = None,
        headers: Mapping[str, str] | str | None = None,
        max_rows_per_span: int = config.DEFAULT_MAX_ROWS_PER_SPAN,
        max_pending_calls: int = config.DEFAULT_MAX_PENDING_CALLS,
        explain: bool = True,
        explain_top_k: int = config.DEFAULT_EXPLAIN_TOP_K,
        explain_budget_us: float = config.DEFAULT_EXPLAIN_BUDGET_US,
        explain_max_evals: int = config.DEFAULT_EXPLAIN_MAX_EVALS,
        sensitive_features: Iterable[str | Sequence[str]] | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        fairness: FairnessConfig | None = None,
        store: str | os.PathLike[str] | bool | None = None,
        spool: str | os.PathLike[str] | bool | None = None,
        max_export_backlog: int = export.DEFAULT_MAX_BACKLOG,
        max_pending_rows: int = config.DEFAULT_MAX_PENDING_ROWS,
        on_audit_failure: str = "log",
        checkpoint_key: Any = None,
        checkpoint_interval: float = chain.DEFAULT_CHECKPOINT_INTERVAL_S,
    ) -> None:
        if min(max_rows_per_span, max_pending_calls, max_pending_rows, max_export_backlog) < 1:
            raise ValueError("otel-rai: max_rows_per_span, max_pending_calls, max_pending_rows and "
                             "max_export_backlog must be at least 1")
        if on_audit_failure not in reliability.FAILURE_MODES:
            raise ValueError(f"otel-rai: on_audit_failure must be one of {reliability.FAILURE_MODES}")
        if checkpoint_interval <= 0:
            raise ValueError("otel-rai: checkpoint_interval must be positive")
        if explain_top_k < 1 or explain_max_evals < 1 or not explain_budget_us >= 0:
            raise ValueError("otel-rai: explain_top_k and explain_max_evals must be at least 1, "
                             "explain_budget_us not negative")
        features = config.env_list("OTEL_RAI_CAPTURE_FEATURES") if capture_features is None else capture_features
        self.settings = Settings(
            hash_key=resolve_key(hash_key),
            model_version=model_version or os.environ.get("OTEL_RAI_MODEL_VERSION") or None,
            capture_features=frozenset(str(f) for f in features),
            max_rows_per_span=max_rows_per_span,
            max_pending_calls=max_pending_calls,
            explain=bool(explain),
            explain_top_k=explain_top_k,
            explain_budget_us=float(explain_budget_us),
            explain_max_evals=explain_max_evals,
        )
        self.own_provider = tracer_provider is None
        self.sinks = export.sinks(
            endpoint=endpoint, protocol=protocol, headers=headers, store=store, own_provider=self.own_provider,
            spool=spool, max_backlog=max_export_backlog,
        )
        fail_closed = on_audit_failure == "raise"
        if fail_closed and not any(isinstance(s, StoreSink) for s in self.sinks):
            raise ValueError("otel-rai: on_audit_failure='raise' needs a local store or spool to write "
                             "decisions to (store=..., or an endpoint without spool=False)")
        if tracer_provider is None:
            tracer_provider = export.audit_provider(service_name, self.sinks)
        else:
            _warn_if_sampled(tracer_provider)
            for sink in self.sinks:
                tracer_provider.add_span_processor(sink)
        self.provider = tracer_provider
        self.counters = Counters()
        key = chain.signer(checkpoint_key if checkpoint_key is not None else os.environ.get(chain.KEY_ENV) or None)
        audit_tracer = (
            AuditTracer(tracer_provider, self.sinks, InstrumentationScope(semconv.SCOPE, __version__))
            if self.own_provider
            else tracer_provider.get_tracer(semconv.SCOPE, __version__)
        )
        tracer = chain.ChainedTracer(audit_tracer, chain.Chain(key, checkpoint_interval))
        self.tracer = tracer
        sensitive = config.env_list("OTEL_RAI_SENSITIVE_FEATURES") if sensitive_features is None else sensitive_features
        local = next((s for s in self.sinks if isinstance(s, StoreSink) and s.keep), None)  # not a spool
        self.monitor = FairnessMonitor(
            fairness or FairnessConfig(),
            groups.parse(sensitive),
            meter_provider or metrics.get_meter_provider(),
            tracer,
            self.counters.fail,
            lookup=None if local is None else store_lookup(local.store),
            journal=local,
        )
        self.worker = AuditWorker(
            tracer,
            self.settings,
            self.counters,
            [self.monitor.end_cycle, tracer.checkpoint],  # alert and checkpoint spans commit in the same cycle
            [self.monitor.observe],
            commits=[s.commit for s in self.sinks],
            max_pending_rows=max_pending_rows,
        )
        durable = reliability.FailClosed(self.worker.submit, self.worker.wake) if fail_closed else None
        recorder = Recorder(self.settings.model_version, self.worker.submit, self.counters.fail, durable)
        self.patcher = Patcher(recorder.wrapper_factory)
        models.clear_cache()
        self.patcher.install()
        self._closed: FlushResult | None = None
        self._stop_metrics = reliability.publish(meter_provider or metrics.get_meter_provider(), self._numbers)
        # Registered now, so that it runs before the atexit shutdown of any provider created earlier.
        atexit.register(self._at_exit)
        self._remove_sigterm = reliability.flush_on_sigterm(self._at_exit)
        reliability.flush_multiprocessing_children(self, self._at_exit)

    def _numbers(self) -> tuple[int, int, int]:
        """(pending, exported, dropped) audit records: the ``ml.audit.*`` metrics."""
        pending = self.worker.pending() + sum(s.pending() for s in self.sinks)
        return (pending, sum(s.exported() for s in self.sinks),
                self.counters.dropped + sum(s.dropped() for s in self.sinks))

    def flush(self, timeout: float) -> FlushResult:
        deadline = time.monotonic() + timeout
        drained = self.worker.flush(timeout)
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
        atexit.unregister(self._at_exit)
        self._remove_sigterm()
        self.patcher.remove()
        self.worker.submit(lambda: self.tracer.checkpoint(force=True))
        result = self._closed = self.flush(timeout)
        self._stop_metrics()  # before the sinks close: a metric reader must not read a closed store
        self.worker.shutdown(0)
        self.monitor.close()
        # Within what is left of `timeout`: a provider's shutdown would give each sink 30 s more.
        # In an application's provider, our sinks are inert from here on.
        for sink in self.sinks:
            sink.close(max(0.0, deadline - time.monotonic()))
        if self.own_provider and isinstance(self.provider, TracerProvider):
            self.provider.shutdown()
        models.clear_cache()
        return result


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


class RaiInstrumentor(BaseInstrumentor):
    """Instruments every scikit-learn-style estimator class. Options: see `otel_rai.instrument`."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("scikit-learn >= 1.3",)

    def _instrument(self, **kwargs: Any) -> None:
        global _session
        with _lock:
            _session = _Session(**kwargs)

    def _uninstrument(self, **kwargs: Any) -> None:
        global _session
        with _lock:
            session, _session = _session, None
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
    """Record the ground truth of a decision, for the TPR/FPR and equalized-odds metrics.

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
    return True


def flush(timeout: float = 30.0) -> FlushResult:
    """Wait until every decision so far has its span ended and exported, or `timeout` seconds pass."""
    session = _session
    if session is None:
        return FlushResult(complete=True, pending=0, decisions=0, spans=0)
    return session.flush(timeout)
