"""Decision records for the report: from a query backend (with the local store's groups and outcomes),
or from a JSON-lines file."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

from otel_rai import semconv
from otel_rai.errors import InputError
from otel_rai.fairness.alerts import FairnessAlert
from otel_rai.monitoring.alerts import MonitoringAlert
from otel_rai.query import Backend, Decision, Query, decisions, find_spans
from otel_rai.query.local import Local
from otel_rai.report.figures import DecisionRecord, printed


def read_records(path: Path) -> list[DecisionRecord]:
    """Decision records from a JSON-lines file (the keys of `DecisionRecord`)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    records = []
    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                records.append(DecisionRecord.from_dict(json.loads(line)))
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{number}: not JSON ({exc.msg})") from None
    return records


def load(backend: Backend, q: Query, sensitive: Sequence[str]) -> tuple[list[DecisionRecord], list[FairnessAlert]]:
    """The decisions and alerts that `q` finds in `backend`.

    From the local store, groups and outcomes come from its local-only tables. A remote backend holds
    groups only as allowlisted raw values (``capture_features``) of the `sensitive` columns, and no
    outcomes.
    """
    found = list(decisions(q, backend))
    alerts = [FairnessAlert.from_span(s.attributes, s.start_ns)
              for s in find_spans(q, backend) if s.name == semconv.ALERT_SPAN]
    ids = [d.decision_id for d in found]
    local = backend.store if isinstance(backend, Local) else None
    stored_groups = local.groups(ids) if local is not None else {}
    outcomes = local.outcomes(ids) if local is not None else {}
    records = [
        DecisionRecord(
            decision_id=d.decision_id,
            model=str(d.model_name),
            version=str(d.model_version),
            timestamp=d.time_ns / 1e9,
            output=d.output,
            groups=stored_groups.get(d.decision_id)
            or {name: printed(d.features[name]) for name in sensitive if name in d.features},
            outcome=outcomes.get(d.decision_id),
            classes=d.attributes.get(semconv.OUTPUT_CLASSES),
            proba=probabilities(d),
        )
        for d in found
        if d.error is None
    ]
    return records, alerts


# --- quality and drift (docs/monitoring.md) ----------------------------------------------------------


def probabilities(d: Decision) -> list[float] | None:
    """A decision's probability of each class (``ml.output.classes`` order), when its call returned them."""
    classes = d.attributes.get(semconv.OUTPUT_CLASSES)
    if d.operation not in ("predict_proba", "predict_log_proba") or not classes:
        return None
    scores = d.scores
    try:
        values = [float(scores[str(c)]) for c in classes]
    except (KeyError, TypeError, ValueError):
        return None
    return [math.exp(v) for v in values] if d.operation == "predict_log_proba" else values


def monitoring(backend: Backend, q: Query) -> tuple[list[tuple[int, dict]], list[MonitoringAlert]]:
    """The drift snapshots ((time, histograms), oldest first) of `q`'s model version, from the local store
    (a remote backend has none: they are never exported), and the quality and drift alerts `q` finds."""
    snapshots = []
    if isinstance(backend, Local) and q.model_version is not None:
        snapshots = [(time_ns, histograms) for time_ns, name, histograms in backend.store.drift_snapshots(
            q.model_version, q.model_name, q.start_ns, q.end_ns)]
    alerts = [MonitoringAlert.from_span(span.name, dict(span.attributes), span.start_ns)
              for span in find_spans(q, backend) if span.name in (semconv.DRIFT_ALERT_SPAN, semconv.QUALITY_ALERT_SPAN)]
    return snapshots, alerts
