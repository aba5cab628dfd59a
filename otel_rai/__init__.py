"""otel-rai: an OpenTelemetry audit span for every scikit-learn-style decision.

    import otel_rai
    otel_rai.instrument(service_name="credit-scoring")
    model = otel_rai.register_model(pipe, name="credit", version="1.4.2")
    model.predict(X)      # unchanged predictions, plus one audit span

The data path, one module each: `instrumentor` → `patching` → `capture` → `worker` → `hashing`,
`outputs` → `spans` → `export`; `explain` attributes each decision. Attribute names live in `semconv`.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Mapping, Sequence

from opentelemetry import metrics, trace

from otel_rai import config
from otel_rai.alerts import FairnessAlert
from otel_rai.capture import DecisionScope, decisions
from otel_rai.explanations import Explanation, explain
from otel_rai.hashing import HashKey, hash_input
from otel_rai.instrumentor import FlushResult, RaiInstrumentor, flush, record_outcome
from otel_rai.monitor import FairnessConfig
from otel_rai.models import register_model
from otel_rai.reliability import AuditUnavailableError
from otel_rai.version import __version__

__all__ = [
    "AuditUnavailableError",
    "DecisionScope",
    "Explanation",
    "FairnessAlert",
    "FairnessConfig",
    "FlushResult",
    "HashKey",
    "RaiInstrumentor",
    "__version__",
    "decisions",
    "explain",
    "flush",
    "hash_input",
    "instrument",
    "record_outcome",
    "register_model",
    "uninstrument",
]


def instrument(
    *,
    service_name: str | None = None,
    model_version: str | None = None,
    hash_key: str | bytes | HashKey | None = None,
    capture_features: Iterable[str] | None = None,
    tracer_provider: trace.TracerProvider | None = None,
    endpoint: str | None = None,
    protocol: str | None = None,
    headers: Mapping[str, str] | str | None = None,
    max_rows_per_span: int = 1000,
    max_pending_calls: int = 10_000,
    explain: bool = True,
    explain_top_k: int = config.DEFAULT_EXPLAIN_TOP_K,
    explain_budget_us: float = config.DEFAULT_EXPLAIN_BUDGET_US,
    explain_max_evals: int = config.DEFAULT_EXPLAIN_MAX_EVALS,
    sensitive_features: Iterable[str | Sequence[str]] | None = None,
    meter_provider: metrics.MeterProvider | None = None,
    fairness: FairnessConfig | None = None,
    store: str | os.PathLike[str] | bool | None = None,
    spool: str | os.PathLike[str] | bool | None = None,
    on_audit_failure: str = "log",
    checkpoint_key: Any = None,
    **options: Any,
) -> None:
    """Patch every scikit-learn-style estimator so that each outermost predict call is audited.

    service_name: ``service.name`` of the audit spans (default ``OTEL_SERVICE_NAME``).
    model_version: the version of models that neither `register_model` nor a ``model_version``
        attribute names (default ``OTEL_RAI_MODEL_VERSION``; else the fingerprint).
    hash_key: key of the input hashes (default ``OTEL_RAI_HASH_KEY``; else a generated key file).
    capture_features: feature names whose raw values may go on spans (default none, or
        ``OTEL_RAI_CAPTURE_FEATURES``, comma-separated).
    tracer_provider: send decision spans through this provider instead of the always-on audit
        provider (its sampler then decides what is kept).
    endpoint, protocol, headers: OTLP export (default from ``OTEL_EXPORTER_OTLP_*``).
    max_rows_per_span: rows per span before a call is split into chunk spans.
    max_pending_calls: calls queued for the audit worker before callers wait.
    explain: False turns off the per-decision explanations (docs/explanations.md).
    explain_top_k: attributions per row on the span.
    explain_budget_us: estimated per-row cost above which tree ensembles get Saabas attribution
        instead of exact TreeSHAP.
    explain_max_evals: model evaluations per row of the model-agnostic method.
    sensitive_features: input columns whose groups the fairness metrics compare, e.g.
        ``["sex", "age_band", ("sex", "race")]`` (a tuple is an intersection; default
        ``OTEL_RAI_SENSITIVE_FEATURES``, comma-separated, ``sex&race`` for an intersection).
    meter_provider: where the fairness metrics go (default the global meter provider).
    fairness: windows, positive label, alert thresholds and callback (see `FairnessConfig`).
    store: the local audit store (an SQLite file; see ``docs/store.md``): a path, True for the
        default (``OTEL_RAI_STORE``, else ``audit.db`` in the otel-rai data directory), or False for
        none. By default it is used when no OTLP endpoint is configured. With an endpoint as well, it
        is the write-ahead log of the export: decisions are written locally first and sent from there.
    spool: with an endpoint and no store, decisions are written to a spool file first and sent from
        there, so that an outage, a burst or a restart loses none (``docs/audit-trail.md``): a path,
        or None/True for ``OTEL_RAI_SPOOL``, else a file in the otel-rai data directory. False keeps
        them in memory instead (``max_export_backlog`` spans, default 100k), then blocks callers.
    on_audit_failure: ``"log"`` (default): a failure of the audit is logged and counted, and the
        prediction returns. ``"raise"`` (fail-closed): each call waits until its record is committed
        to the local store or spool, and raises `AuditUnavailableError` instead of returning if not.
    checkpoint_key: signs the periodic checkpoints of the tamper-evident chain: a secret (str or
        bytes, HMAC-SHA256) or an Ed25519 private key of ``cryptography`` (default
        ``OTEL_RAI_CHECKPOINT_KEY``; else checkpoints are unsigned). Also ``checkpoint_interval``
        (seconds, default 60) and ``max_pending_rows`` (rows of multi-row calls queued before callers
        wait, default 1M) may be given.
    """
    RaiInstrumentor().instrument(
        service_name=service_name,
        model_version=model_version,
        hash_key=hash_key,
        capture_features=capture_features,
        tracer_provider=tracer_provider,
        endpoint=endpoint,
        protocol=protocol,
        headers=headers,
        max_rows_per_span=max_rows_per_span,
        max_pending_calls=max_pending_calls,
        explain=explain,
        explain_top_k=explain_top_k,
        explain_budget_us=explain_budget_us,
        explain_max_evals=explain_max_evals,
        sensitive_features=sensitive_features,
        meter_provider=meter_provider,
        fairness=fairness,
        store=store,
        spool=spool,
        on_audit_failure=on_audit_failure,
        checkpoint_key=checkpoint_key,
        **options,
    )


def uninstrument() -> None:
    """Drain pending audit records and restore every original estimator method."""
    RaiInstrumentor().uninstrument()
