"""Decision records for the report: from a query backend (with the groups and outcomes of the local store,
or of a backend that keeps them too: `KeepsRows`, ClickHouse), or from a JSON-lines file."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Sequence

from otel_rai import semconv
from otel_rai.codec.reasons import parse_top
from otel_rai.errors import PREFIX, InputError
from otel_rai.fairness.alerts import FairnessAlert
from otel_rai.monitoring.alerts import MonitoringAlert
from otel_rai.query import Backend, Decision, Query, decisions, find_spans
from otel_rai.query.capabilities import KeepsRows, NamedSpans
from otel_rai.query.local import Local
from otel_rai.report.figures import DecisionRecord, printed

#: Decisions read at a time: a page's groups and outcomes are looked up together, and its decisions (each
#: holding its span's attributes) are let go once their records are made.
_PAGE = 4096


def read_records(path: Path) -> list[DecisionRecord]:
    """Decision records from a JSON-lines file (the keys of `DecisionRecord`)."""
    try:
        lines = path.read_bytes().decode("utf-8-sig").splitlines()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path} is not UTF-8 text (byte {exc.start} cannot be decoded)") from None
    if not any(line.strip() for line in lines):
        raise InputError(f"{path} is empty: no decision records")
    records = []
    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                records.append(DecisionRecord.from_dict(json.loads(line)))
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{number}: not JSON ({exc.msg})") from None
            except InputError as exc:
                raise InputError(f"{path}:{number}: {str(exc).removeprefix(PREFIX)}") from None
    return records


def load(backend: Backend, q: Query, sensitive: Sequence[str]) -> tuple[list[DecisionRecord], list[FairnessAlert]]:
    """The decisions and alerts that `q` finds in `backend`.

    From the local store, groups and outcomes come from its local-only tables. A remote backend holds
    groups only as allowlisted raw values (``capture_features``) of the `sensitive` columns, and no
    outcomes.
    """
    local = backend.store if isinstance(backend, Local) else backend if isinstance(backend, KeepsRows) else None
    records: list[DecisionRecord] = []
    found = decisions(q, backend)
    while page := list(itertools.islice(found, _PAGE)):
        ids = [d.decision_id for d in page]
        stored_groups = local.groups(ids) if local is not None else {}
        outcomes = local.outcomes(ids) if local is not None else {}
        records += [
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
                attributions=_attributions(d),
                explained_output=_explained_output(d) if semconv.EXPLANATION_TOP in d.values else None,
            )
            for d in page
            if d.error is None
        ]
    return records, alerts_of(backend, q)


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
    or a backend that keeps them too (ClickHouse, when loaded with ``--include drift``; trace backends have
    none: they are never exported), and the quality and drift alerts `q` finds."""
    snapshots = []
    keeper = backend.store if isinstance(backend, Local) else backend if isinstance(backend, KeepsRows) else None
    if keeper is not None and q.model_version is not None:
        snapshots = [(time_ns, histograms) for time_ns, name, histograms in keeper.drift_snapshots(
            q.model_version, q.model_name, q.start_ns, q.end_ns)]
    names = (semconv.DRIFT_ALERT_SPAN, semconv.QUALITY_ALERT_SPAN)
    spans = ([s for name in names for s in backend.named_spans(q, name)] if isinstance(backend, NamedSpans)
             else [s for s in find_spans(q, backend) if s.name in names])
    alerts = [MonitoringAlert.from_span(span.name, dict(span.attributes), span.start_ns)
              for span in sorted(spans, key=lambda s: s.start_ns)]
    return snapshots, alerts


def alerts_of(backend: Backend, q: Query) -> list[FairnessAlert]:
    """The fairness alerts raised within `q` (read by name where the backend can)."""
    spans = (backend.named_spans(q, semconv.ALERT_SPAN) if isinstance(backend, NamedSpans)
             else (s for s in find_spans(q, backend) if s.name == semconv.ALERT_SPAN))
    return [FairnessAlert.from_span(s.attributes, s.start_ns) for s in spans]


def _attributions(d: Decision) -> dict[str, float]:
    """The decision's largest attributions (``ml.explanation.top``), by feature."""
    top = d.values.get(semconv.EXPLANATION_TOP)
    return dict(parse_top(top)) if isinstance(top, str) else {}


def _explained_output(d: Decision) -> str | None:
    """What the decision's attributions add up to, e.g. ``log-odds of class 1``."""
    output = d.attributes.get(semconv.EXPLANATION_OUTPUT)
    label = d.attributes.get(semconv.EXPLANATION_CLASS)
    if output is None:
        return None
    return f"{output} of class {label}" if label is not None else str(output)
