"""What the report shows, computed from decision records in one pass: counts, per-group fairness
figures with the same definitions as the live metrics (`otel_rai.fairness.metrics`) over the whole
period, and the most attributed features."""

from __future__ import annotations

import collections
import dataclasses
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable, Mapping

from otel_rai.errors import InputError
from otel_rai.fairness import metrics as fairness
from otel_rai.fairness.metrics import printed

#: Features the report ranks by mean absolute attribution.
TOP_FEATURES = 10


@dataclass(frozen=True)
class DecisionRecord:
    """One decision as a backend stores it.

    output: the predicted label (``ml.outputs``). groups: {sensitive attribute: group}, when known.
    outcome: the ground truth, when recorded. attributions: {feature: attribution} of the decision's
    explanation (``ml.explanation.*``), when there is one. timestamp: Unix seconds.
    """

    decision_id: str
    model: str
    version: str
    timestamp: float
    output: Any
    groups: Mapping[str, str] = field(default_factory=dict)
    outcome: Any = None
    attributions: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DecisionRecord:
        """A record from a JSON object with the same keys; `timestamp` may be ISO 8601."""
        try:
            stamp = data["timestamp"]
            if isinstance(stamp, str):
                stamp = datetime.fromisoformat(stamp).timestamp()
            return cls(
                decision_id=str(data["decision_id"]),
                model=str(data["model"]),
                version=str(data["version"]),
                timestamp=float(stamp),
                output=data["output"],
                groups={str(k): str(v) for k, v in (data.get("groups") or {}).items()},
                outcome=data.get("outcome"),
                attributions={str(k): float(v) for k, v in (data.get("attributions") or {}).items()},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"bad decision record {dict(data)!r:.200}: {type(exc).__name__}: {exc}") from None


@dataclass(frozen=True)
class AttributeFigures:
    """The figures of one sensitive attribute: the counts of each group, and their fairness summary."""

    attribute: str
    counts: dict[str, fairness.GroupCounts]
    summary: fairness.Summary


@dataclass(frozen=True)
class Figures:
    """Everything the report shows of one model version: decisions, selections, labelled outcomes, the
    time span, each attribute's figures, and the mean absolute attribution of the top features."""

    model: str
    version: str
    decisions: int
    selected: int
    labelled: int
    first: float
    last: float
    attributes: list[AttributeFigures]
    top_features: list[tuple[str, float]]
    explained: int


def _is_positive(value: Any, positive_label: Any) -> bool:
    return printed(value) == printed(positive_label)


def figures(records: Iterable[DecisionRecord], positive_label: Any, min_group_size: int) -> Figures:
    """Everything the report shows, computed in one pass over the records."""
    counts: dict[str, dict[str, fairness.GroupCounts]] = collections.defaultdict(
        lambda: collections.defaultdict(fairness.GroupCounts)
    )
    attribution_sums: collections.Counter[str] = collections.Counter()
    models, n, selected, labelled, explained = set(), 0, 0, 0, 0
    first, last = math.inf, -math.inf
    version = ""
    for record in records:
        models.add(record.model)
        version = record.version
        n += 1
        first, last = min(first, record.timestamp), max(last, record.timestamp)
        positive = _is_positive(record.output, positive_label)
        selected += positive
        actual = None if record.outcome is None else _is_positive(record.outcome, positive_label)
        labelled += actual is not None
        for attribute, group in record.groups.items():
            c = counts[attribute][group]
            c.decisions += 1
            c.selected += positive
            if actual is not None:
                c.add_outcome(positive, actual)
        if record.attributions:
            explained += 1
            for feature, value in record.attributions.items():
                attribution_sums[feature] += abs(value)
    top = [(f, total / explained) for f, total in attribution_sums.most_common(TOP_FEATURES)] if explained else []
    result = counted(", ".join(sorted(models)), version, n, selected, labelled, first, last, counts, min_group_size)
    return dataclasses.replace(result, top_features=top, explained=explained)


def counted(model: str, version: str, decisions: int, selected: int, labelled: int, first: float, last: float,
            groups: Mapping[str, Mapping[str, fairness.GroupCounts]], min_group_size: int) -> Figures:
    """The figures of counts made elsewhere (a backend's SQL aggregates, `otel_rai.query.capabilities.Tally`):
    the same definitions, without attributions. Times are Unix seconds."""
    if decisions == 0:
        raise InputError("no decisions to report")
    return Figures(
        model=model,
        version=version,
        decisions=decisions,
        selected=selected,
        labelled=labelled,
        first=first,
        last=last,
        attributes=[
            AttributeFigures(a, dict(g), fairness.summarize(g, min_group_size)) for a, g in sorted(groups.items())
        ],
        top_features=[],
        explained=0,
    )
