"""What the report shows, computed from decision records: counts, per-group fairness figures with the
same definitions as the live metrics (`otel_rai.fairness.metrics`) over the whole period, the most
attributed features (overall and per group), and decisions and selection rates over time."""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable, Mapping, Sequence

from otel_rai.errors import InputError
from otel_rai.fairness import metrics as fairness
from otel_rai.fairness.metrics import printed
from otel_rai.query.capabilities import ALL_DECISIONS

#: Features the report ranks by mean absolute attribution.
TOP_FEATURES = 10


@dataclass(frozen=True)
class DecisionRecord:
    """One decision as a backend stores it.

    output: the predicted label (``ml.outputs``). groups: {sensitive attribute: group}, when known.
    outcome: the ground truth, when recorded. attributions: {feature: attribution} of the decision's
    explanation (``ml.explanation.*``), when there is one: the largest ones, the others count as 0.
    explained_output: what the attributions add up to, e.g. ``log-odds of class 1``. timestamp: Unix seconds.
    classes, proba: see below.
    """

    decision_id: str
    model: str
    version: str
    timestamp: float
    output: Any
    groups: Mapping[str, str] = field(default_factory=dict)
    outcome: Any = None
    attributions: Mapping[str, float] = field(default_factory=dict)
    #: For the quality section (docs/monitoring.md): the model's classes, and the decision's probability
    #: of each (from predict_proba or predict_log_proba), when known.
    classes: Sequence[Any] | None = None
    proba: Sequence[float] | None = None
    explained_output: str | None = None

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
                classes=data.get("classes"),
                proba=None if data.get("proba") is None else [float(v) for v in data["proba"]],
                explained_output=None if data.get("explained_output") is None else str(data["explained_output"]),
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
    #: What the attributions add up to (the most common, when decisions differ), e.g. ``log-odds of class 1``.
    explained_output: str | None = None
    #: {attribute: {group: {feature: mean signed attribution over the group's explained decisions}}}, for
    #: the top features.
    group_attributions: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)


def _is_positive(value: Any, positive_label: Any) -> bool:
    return printed(value) == printed(positive_label)


def figures(records: Iterable[DecisionRecord], positive_label: Any, min_group_size: int) -> Figures:
    """Everything the report shows, computed from the records."""
    records = list(records)
    counts: dict[str, dict[str, fairness.GroupCounts]] = collections.defaultdict(
        lambda: collections.defaultdict(fairness.GroupCounts)
    )
    models, n, selected, labelled = set(), 0, 0, 0
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
    if n == 0:
        raise InputError("no decisions to report")
    return counted(", ".join(sorted(models)), version, n, selected, labelled, first, last, counts, min_group_size,
                   attributions(records))


def attributions(records: Iterable[DecisionRecord]) -> Attributions:
    """The sums of the records' attributions, overall and per group."""
    absolute: collections.Counter[str] = collections.Counter()
    outputs: collections.Counter[str] = collections.Counter()
    # (attribute, group) -> [explained decisions, {feature: sum of signed attributions}]
    by_group: dict[tuple[str, str], list[Any]] = collections.defaultdict(lambda: [0, collections.Counter()])
    explained = 0
    for record in records:
        if not record.attributions:
            continue
        explained += 1
        if record.explained_output:
            outputs[record.explained_output] += 1
        for feature, value in record.attributions.items():
            absolute[feature] += abs(value)
        for attribute, group in record.groups.items():
            entry = by_group[(attribute, group)]
            entry[0] += 1
            entry[1].update(record.attributions)
    return Attributions(explained, absolute, outputs, {k: (c, dict(s)) for k, (c, s) in by_group.items()})


@dataclass
class Attributions:
    """Sums of the decisions' attributions (made here or by a backend's SQL aggregates).

    `explained`: decisions with an explanation; `absolute`: {feature: sum of |attribution|} over them;
    `outputs`: {what the attributions add up to: decisions}; `by_group`: {(attribute, group): (explained
    decisions of the group, {feature: sum of signed attributions})}.
    """

    explained: int = 0
    absolute: Mapping[str, float] = field(default_factory=dict)
    outputs: Mapping[str, int] = field(default_factory=dict)
    by_group: Mapping[tuple[str, str], tuple[int, Mapping[str, float]]] = field(default_factory=dict)


def counted(model: str, version: str, decisions: int, selected: int, labelled: int, first: float, last: float,
            groups: Mapping[str, Mapping[str, fairness.GroupCounts]], min_group_size: int,
            attributions: Attributions | None = None) -> Figures:
    """The figures of counts made in one pass here (`figures`) or elsewhere (a backend's SQL aggregates,
    `otel_rai.query.capabilities.Tally`): the same definitions either way. Times are Unix seconds."""
    if decisions == 0:
        raise InputError("no decisions to report")
    sums = attributions or Attributions()
    ranked = sorted(sums.absolute.items(), key=lambda item: -item[1])  # stable: ties keep first-seen order
    top = [(f, total / sums.explained) for f, total in ranked[:TOP_FEATURES]] if sums.explained else []
    group_attributions: dict[str, dict[str, dict[str, float]]] = collections.defaultdict(dict)
    for (attribute, group), (count, signed) in sorted(sums.by_group.items()):
        group_attributions[attribute][group] = {f: signed.get(f, 0.0) / count for f, _ in top}
    outputs = collections.Counter(sums.outputs)
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
        top_features=top,
        explained=sums.explained,
        explained_output=outputs.most_common(1)[0][0] if outputs else None,
        group_attributions=dict(group_attributions),
    )


#: Bucket widths of the time charts, in seconds: the smallest that gives at most `MAX_BUCKETS` buckets.
BUCKET_WIDTHS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21_600, 43_200,
                 86_400, 7 * 86_400, 30 * 86_400)
MAX_BUCKETS = 40
#: The one group of a timeline without a sensitive attribute.
ALL = ALL_DECISIONS


@dataclass(frozen=True)
class Timeline:
    """Decisions and positive decisions per time bucket and group of one sensitive attribute (or, for the
    attribute None, of all decisions together). Bucket i starts at ``start + i * width`` (Unix seconds)."""

    attribute: str | None
    start: float
    width: float
    decisions: dict[str, list[int]]
    selected: dict[str, list[int]]

    def starts(self) -> list[float]:
        """The start of each bucket, Unix seconds."""
        n = len(next(iter(self.decisions.values()), []))
        return [self.start + i * self.width for i in range(n)]


def bucket_width(first: float, last: float) -> float:
    """The time charts' bucket width for decisions from `first` to `last` (Unix seconds)."""
    span = max(last - first, 0.0)
    return next((w for w in BUCKET_WIDTHS if span / w < MAX_BUCKETS), BUCKET_WIDTHS[-1])


def buckets(first: float, last: float) -> tuple[float, float, int]:
    """(start, width, number) of the time buckets covering `first` to `last` (Unix seconds)."""
    width = bucket_width(first, last)
    start = math.floor(first / width) * width
    return start, width, int((last - start) // width) + 1


def bucket_of(timestamp: float, start: float, width: float, n: int) -> int:
    """The bucket of a decision at `timestamp` (see `buckets`); later ones count in the last."""
    return min(int((timestamp - start) // width), n - 1)


def timeline(records: Sequence[DecisionRecord], positive_label: Any, attribute: str | None,
             period: tuple[float, float] | None = None) -> Timeline:
    """Decisions and positive decisions per bucket (see `bucket_width`) for each group of `attribute`
    (records without that attribute left out), or for all records (group ``all decisions``) when
    `attribute` is None. The buckets cover `period` (Unix seconds, default the records' own)."""
    start, width, n = buckets(*(period or (min(r.timestamp for r in records), max(r.timestamp for r in records))))
    decisions: dict[str, list[int]] = {}
    selected: dict[str, list[int]] = {}
    for r in records:
        group = ALL if attribute is None else r.groups.get(attribute)
        if group is None:
            continue
        i = bucket_of(r.timestamp, start, width, n)
        decisions.setdefault(group, [0] * n)[i] += 1
        selected.setdefault(group, [0] * n)[i] += _is_positive(r.output, positive_label)
    return Timeline(attribute, start, width, dict(sorted(decisions.items())), dict(sorted(selected.items())))


def versions(records: Iterable[DecisionRecord]) -> dict[tuple[str, str], list[DecisionRecord]]:
    """The records of each (model, version), in the order the versions first decided."""
    out: dict[tuple[str, str], list[DecisionRecord]] = {}
    for r in sorted(records, key=lambda r: r.timestamp):
        out.setdefault((r.model, r.version), []).append(r)
    return out
