"""What a backend may offer beyond ``spans(query)``: work pushed down to the store, used when offered.

* `Tallying`: the counts behind the fairness report, computed where the decisions are (ClickHouse: SQL
  aggregates), instead of every decision read into Python (`otel_rai.report.load` falls back to that).
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
        """Every audit record within `query`'s service and window: each stream's records together, in
        sequence order (copies and records claiming one place side by side), the streams one after the
        other; records without chain attributes anywhere."""
        ...
