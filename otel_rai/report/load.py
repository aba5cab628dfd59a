"""Decision records for the report: from a query backend (with the local store's groups and outcomes),
or from a JSON-lines file; or, from a backend that counts for itself (`Tallying`: ClickHouse), the counts
without the records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from otel_rai import semconv
from otel_rai.errors import InputError
from otel_rai.fairness.alerts import FairnessAlert
from otel_rai.query import Backend, Query, decisions, find_spans
from otel_rai.query.capabilities import NamedSpans, Tally, Tallying
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
        )
        for d in found
        if d.error is None
    ]
    return records, alerts


def alerts_of(backend: Backend, q: Query) -> list[FairnessAlert]:
    """The fairness alerts raised within `q` (read by name where the backend can)."""
    spans = (backend.named_spans(q, semconv.ALERT_SPAN) if isinstance(backend, NamedSpans)
             else (s for s in find_spans(q, backend) if s.name == semconv.ALERT_SPAN))
    return [FairnessAlert.from_span(s.attributes, s.start_ns) for s in spans]


def tallied(backend: Tallying, q: Query, sensitive: Sequence[str],
            positive_label: Any) -> tuple[Tally, list[FairnessAlert]]:
    """The counts and alerts of `q`, from a backend that counts where the decisions are."""
    return backend.tally(q, positive_label, sensitive), alerts_of(backend, q)
