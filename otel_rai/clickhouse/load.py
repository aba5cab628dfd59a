"""Loading spans into ClickHouse as the collector's exporter would write them, and, when asked, the local
groups and outcomes beside them (``otel-rai export --to clickhouse``).

Spans go into ``otel_traces`` (`rows.row`: the exporter's columns and value texts), so the materialized
views fill the lookup tables exactly as for spans the collector delivers. Groups (raw values of sensitive
features: as sensitive as the local store that kept them) go to ``otel_rai_groups`` with their decision's
model, version, time and output; outcomes to ``otel_rai_outcomes``. Loading twice is harmless for the
queries: copies of a span are read once, and the group and outcome tables keep one row per key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from otel_rai import semconv
from otel_rai.audit.local_rows import outcome_json
from otel_rai.clickhouse import rows, schema, values
from otel_rai.clickhouse.client import Connection
from otel_rai.codec.records import ERROR, SpanRecord

#: Spans per INSERT: ClickHouse wants few large inserts (each makes a part on disk), and a batch of
#: 1000-decision spans must still fit in memory.
SPANS_PER_INSERT = 2_000
#: ... and decisions per INSERT, so that a batch of large spans stays about 50 MB.
DECISIONS_PER_INSERT = 100_000

GROUP_COLUMNS = ("DecisionId", "Attribute", "Group", "Timestamp", "ServiceName", "ModelName", "ModelVersion",
                 "Output", "Failed")
OUTCOME_COLUMNS = ("DecisionId", "YTrue", "Time")
DRIFT_COLUMNS = ("ModelName", "ModelVersion", "Time", "Histograms")
#: {decision id: {sensitive attribute: group}} of the decisions given.
GroupsOf = Callable[[Sequence[str]], Mapping[str, Mapping[str, str]]]
#: {decision id: (ground truth, time recorded in Unix ns)} of the decisions given.
OutcomesOf = Callable[[Sequence[str]], Mapping[str, tuple[Any, int]]]


@dataclass
class Loaded:
    """What a load wrote."""

    spans: int = 0
    decisions: int = 0
    groups: int = 0
    outcomes: int = 0
    drift_snapshots: int = 0


def batches(records: Iterable[SpanRecord]) -> Iterator[list[SpanRecord]]:
    """`records` in lists of at most `SPANS_PER_INSERT` spans and about `DECISIONS_PER_INSERT` decisions."""
    batch: list[SpanRecord] = []
    decisions = 0
    for r in records:
        batch.append(r)
        decisions += len(_ids(r))
        if len(batch) >= SPANS_PER_INSERT or decisions >= DECISIONS_PER_INSERT:
            yield batch
            batch, decisions = [], 0
    if batch:
        yield batch


def _ids(r: SpanRecord) -> Sequence[Any]:
    ids = r.attributes.get(semconv.DECISION_IDS)
    return ids if isinstance(ids, (list, tuple)) else ()


def group_rows(records: Iterable[SpanRecord], groups: Mapping[str, Mapping[str, str]]) -> list[list[Any]]:
    """``otel_rai_groups`` rows: one per decision of `records` and sensitive attribute in `groups`."""
    out = []
    texts: dict[tuple[type, Any], str] = {}  # outputs repeat (labels): each written once
    for r in records:
        ids = _ids(r)
        outputs = r.attributes.get(semconv.OUTPUTS)
        if not isinstance(outputs, (list, tuple)) or len(outputs) != len(ids) or not values.as_string(outputs):
            outputs = None  # as the views see it: no outputs, or an array the exporter emptied (a NaN)
        a = r.attributes
        common = (r.start_ns, str(r.service or ""), str(a.get(semconv.MODEL_NAME) or ""),
                  str(a.get(semconv.MODEL_VERSION) or ""))
        for i, decision_id in enumerate(ids):
            found = groups.get(str(decision_id))
            if not found:
                continue
            output = ""
            if outputs is not None:
                value = outputs[i]
                key = (type(value), value if isinstance(value, (str, int, float, bool)) else repr(value))
                output = texts.get(key) or texts.setdefault(key, values.element(value))
            for attribute, group in found.items():
                out.append([str(decision_id), attribute, group, *common, output, r.status_code == ERROR])
    return out


def outcome_rows(outcomes: Mapping[str, tuple[Any, int]]) -> list[list[Any]]:
    """``otel_rai_outcomes`` rows: the ground truth as the local store keeps it (JSON)."""
    # The text the local store keeps (and its outcome span's keyed digest covers), byte for byte.
    return [[decision_id, outcome_json(y_true), time_ns]
            for decision_id, (y_true, time_ns) in outcomes.items()]


def load(connection: Connection, records: Iterable[SpanRecord], *, groups_of: GroupsOf | None = None,
         outcomes_of: OutcomesOf | None = None, drift: Iterable[tuple[str, str, int, Mapping[str, Any]]] = (),
         progress: Callable[[int], None] = lambda n: None) -> Loaded:
    """Insert `records` into ``otel_traces``, creating the schema first if it is missing; with `groups_of`
    or `outcomes_of`, the groups and outcomes of their decisions too; `drift`: drift snapshots (model name,
    version, time in Unix ns, histograms). `progress` hears of each batch's decisions."""
    if not connection.has_schema():
        connection.create_schema()
    done = Loaded()
    for batch in batches(records):
        connection.insert(schema.TRACES, [rows.row(r) for r in batch], rows.COLUMNS)
        ids = [str(i) for r in batch for i in _ids(r)]
        done.spans += len(batch)
        done.decisions += len(ids)
        if groups_of is not None and ids:
            found = group_rows(batch, groups_of(ids))
            connection.insert(schema.GROUPS, found, GROUP_COLUMNS)
            done.groups += len(found)
        if outcomes_of is not None and ids:
            found = outcome_rows(outcomes_of(ids))
            connection.insert(schema.OUTCOMES, found, OUTCOME_COLUMNS)
            done.outcomes += len(found)
        progress(len(ids))
    snapshots = [[name, version, time_ns, json.dumps(histograms, separators=(",", ":"))]
                 for name, version, time_ns, histograms in drift]
    if snapshots:
        connection.insert(schema.DRIFT, snapshots, DRIFT_COLUMNS)
        done.drift_snapshots = len(snapshots)
    return done
