"""What a backend may offer beyond ``spans(query)``: work pushed down to the store, used when offered.

* `Tallying`: the counts behind the fairness report, computed where the decisions are (ClickHouse: SQL
  aggregates), instead of every decision read into Python (`otel_rai.report.load` falls back to that).
* `KeepsRows`: groups, outcomes and drift snapshots kept beside the spans, as the local store keeps
  them (ClickHouse, when ``export --to clickhouse --include ...`` copied them).
* `NamedSpans`: the spans of one name (the fairness alerts of a version) without reading the others.
* `Chained`: the trail in chain order (stream, then sequence number), so that ``verify-chain`` walks it
  with bounded memory (`otel_rai.chain.verify.check_ordered`) instead of holding it all.

A backend is checked with ``isinstance(backend, Tallying)``; each is a `typing.Protocol`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Protocol, Sequence, runtime_checkable

from otel_rai.codec.records import SpanRecord
from otel_rai.fairness.metrics import GroupCounts
from otel_rai.query import Query

#: The one group of the time buckets of all decisions (the report's ``figures.ALL``).
ALL_DECISIONS = "all decisions"


@dataclass
class Tally:
    """What the report counts over the decisions of a query (failed calls left out).

    `selected`: decisions whose output is the positive label; `labelled`: those with a recorded
    outcome; `groups`: {sensitive attribute: {group: counts}}, groups and labels as text
    (`otel_rai.fairness.metrics.printed`); times in Unix nanoseconds (None without decisions).
    """

    decisions: int = 0
    selected: int = 0
    labelled: int = 0
    first_ns: int | None = None
    last_ns: int | None = None
    models: set[str] = field(default_factory=set)
    groups: dict[str, dict[str, GroupCounts]] = field(default_factory=dict)


@runtime_checkable
class Tallying(Protocol):
    """A backend that computes the report's counts itself."""

    def tally(self, query: Query, positive_label: Any, sensitive: Sequence[str] = ()) -> Tally:
        """The `Tally` of the decisions `query` selects. Groups come from the groups the store holds for a
        decision; a decision with none takes, for each of the `sensitive` features, its allowlisted raw
        value (``ml.input.value.<name>``) when its span has one."""
        ...

    def buckets(self, query: Query, positive_label: Any, sensitive: Sequence[str], attribute: str | None,
                start: float, width: float, n: int) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
        """({group: decisions per bucket}, {group: positive decisions per bucket}) of the decisions `query`
        selects, in `n` buckets of `width` seconds from `start` (Unix seconds; later ones in the last), by
        group of `attribute` (groups as in `tally`), or in the one group ``all decisions`` when None."""
        ...


@runtime_checkable
class KeepsRows(Protocol):
    """A backend that keeps, beside the spans, what the local store keeps in its local-only tables."""

    def groups(self, decision_ids: Sequence[str]) -> dict[str, dict[str, str]]:
        """{decision id: {sensitive attribute: group}} of the decisions with stored groups."""
        ...

    def outcomes(self, decision_ids: Sequence[str]) -> dict[str, Any]:
        """{decision id: ground truth} of the decisions with a recorded outcome (the first recorded)."""
        ...

    def drift_snapshots(self, model_version: str, model_name: str | None = None, start_ns: int | None = None,
                        end_ns: int | None = None) -> list[tuple[int, str, dict[str, Any]]]:
        """(time, model name, histograms) of the drift snapshots of a model version, oldest first."""
        ...


@runtime_checkable
class NamedSpans(Protocol):
    """A backend that finds spans by name without reading the others."""

    def named_spans(self, query: Query, name: str) -> Iterator[SpanRecord]:
        """The spans called `name` within `query`'s model, service and window, in time order."""
        ...


@runtime_checkable
class Chained(Protocol):
    """A backend that reads its trail in chain order."""

    def chained(self, query: Query) -> Iterator[SpanRecord]:
        """Every audit record within `query`'s service that its window puts in view (each stream's stretch,
        `otel_rai.chain.verify.in_view`): each stream's records together, in sequence order (copies and
        records claiming one place side by side), the streams one after the other; records without chain
        attributes anywhere."""
        ...
