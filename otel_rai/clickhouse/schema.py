"""The ClickHouse schema: the exporter's ``otel_traces`` table, and otel-rai's tables next to it.

``otel_traces`` is the table the collector's ClickHouse exporter creates (its ``sqltemplates``: columns,
codecs, skip indexes, day partitions, key ``(ServiceName, SpanName, toDateTime(Timestamp))``), with the
retention otel-rai needs. otel-rai adds, each filled by a materialized view as the exporter inserts:

* ``otel_rai_spans``: one row per audit span, by model version and time in day partitions (a page of
  version V on day D reads one partition and the granules of V), with a projection by chain stream and
  sequence number (``verify-chain`` walks a stream in order);
* ``otel_rai_decisions``: decision id -> its span (trace, span, time, service, span name), model, version,
  output and whether the call failed; the report's counts come from here;
* ``otel_rai_inputs``: input hash -> the same;

and two tables that only ``otel-rai export --to clickhouse --include ...`` fills (the collector never sees
them): ``otel_rai_groups`` (the group of each decision per sensitive attribute, with the decision's model,
version, time and output) and ``otel_rai_outcomes`` (ground truth; the first recorded wins).

`statements` renders it all for one server; with `Layout.cluster`, for a cluster: replicated ``*_local``
tables on every node and ``Distributed`` tables with the plain names over them. ``collector/clickhouse/``
holds both renderings (``python -m otel_rai.clickhouse.schema collector/clickhouse`` writes them; a test
checks that they are current).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from otel_rai import semconv

TRACES = "otel_traces"
SPANS = "otel_rai_spans"
DECISIONS = "otel_rai_decisions"
INPUTS = "otel_rai_inputs"
GROUPS = "otel_rai_groups"
OUTCOMES = "otel_rai_outcomes"
DRIFT = "otel_rai_drift_snapshots"
MODEL_RECORDS = "otel_rai_model_records"
#: The EU AI Act's "at least six months" as days, with the longest six calendar months (184) covered.
RETENTION_DAYS = 185
#: Rows per granule: ClickHouse's default, and the exporter's.
GRANULARITY = 8192
DATABASE = "otel"
#: How the exporter writes an error status (pdata's StatusCode.String(); older exporters wrote the proto name).
ERROR_STATUSES = ("Error", "STATUS_CODE_ERROR")


@dataclass(frozen=True)
class Layout:
    """Where the tables go and how long they keep rows. `cluster`: render for a cluster of that name."""

    database: str = DATABASE
    retention_days: int = RETENTION_DAYS
    granularity: int = GRANULARITY
    cluster: str | None = None

    def table(self, name: str) -> str:
        """The qualified name of the table that holds `name`'s rows (the local one in a cluster)."""
        return f"{self.database}.{name}_local" if self.cluster else f"{self.database}.{name}"

    def on_cluster(self) -> str:
        """`` ON CLUSTER name`` in a cluster, else nothing."""
        return f" ON CLUSTER {self.cluster}" if self.cluster else ""

    def engine(self, name: str, engine: str = "MergeTree", args: str = "") -> str:
        """The table engine of `name`: `engine` on one server, its replicated form in a cluster."""
        if not self.cluster:
            return f"{engine}({args})" if args else engine
        path = f"'/clickhouse/tables/{{shard}}/{self.database}/{name}_local', '{{replica}}'"
        return f"Replicated{engine}({path}{', ' + args if args else ''})"

    def ttl(self, column: str) -> str:
        """The TTL clause: rows go `retention_days` after `column`."""
        return f"TTL toDateTime({column}) + toIntervalDay({self.retention_days})"

    def settings(self) -> str:
        """The table settings: the granule size, and whole parts dropped by the TTL (no rewrites)."""
        return f"SETTINGS index_granularity = {self.granularity}, ttl_only_drop_parts = 1"


def _create(layout: Layout, name: str, body: str, engine: str, tail: str, sharding: str) -> list[str]:
    """CREATE TABLE `name` (and, in a cluster, the Distributed table over it)."""
    out = [f"CREATE TABLE IF NOT EXISTS {layout.table(name)}{layout.on_cluster()} (\n{body}\n)\n"
           f"ENGINE = {engine}\n{tail}"]
    if layout.cluster:
        out.append(f"CREATE TABLE IF NOT EXISTS {layout.database}.{name}{layout.on_cluster()}\n"
                   f"AS {layout.table(name)}\n"
                   f"ENGINE = Distributed({layout.cluster}, {layout.database}, {name}_local, {sharding})")
    return out


def exporter_tables(layout: Layout) -> list[str]:
    """``otel_traces`` and its trace-id lookup, as the exporter creates them (with `layout`'s retention)."""
    traces = _create(layout, TRACES, """\
    Timestamp DateTime64(9) CODEC(Delta(8), ZSTD(1)),
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    ParentSpanId String CODEC(ZSTD(1)),
    TraceState String CODEC(ZSTD(1)),
    SpanName LowCardinality(String) CODEC(ZSTD(1)),
    SpanKind LowCardinality(String) CODEC(ZSTD(1)),
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    ResourceAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ScopeName String CODEC(ZSTD(1)),
    ScopeVersion String CODEC(ZSTD(1)),
    SpanAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    Duration UInt64 CODEC(T64, ZSTD(1)),
    StatusCode LowCardinality(String) CODEC(ZSTD(1)),
    StatusMessage String CODEC(ZSTD(1)),
    Events Nested (
        Timestamp DateTime64(9),
        Name LowCardinality(String),
        Attributes Map(LowCardinality(String), String)
    ) CODEC(ZSTD(1)),
    Links Nested (
        TraceId String,
        SpanId String,
        TraceState String,
        Attributes Map(LowCardinality(String), String)
    ) CODEC(ZSTD(1)),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_res_attr_key mapKeys(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_res_attr_value mapValues(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_span_attr_key mapKeys(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_span_attr_value mapValues(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_duration Duration TYPE minmax GRANULARITY 1,
    INDEX idx_lower_span_name lower(SpanName) TYPE tokenbf_v1(32768, 3, 0) GRANULARITY 8""",
        layout.engine(TRACES), f"""\
PARTITION BY toDate(Timestamp)
PRIMARY KEY (ServiceName, SpanName, toDateTime(Timestamp))
ORDER BY (ServiceName, SpanName, toDateTime(Timestamp), Timestamp)
{layout.ttl("Timestamp")}
{layout.settings()}""", "cityHash64(TraceId)")
    trace_ids = _create(layout, f"{TRACES}_trace_id_ts", """\
    TraceId String CODEC(ZSTD(1)),
    Start DateTime CODEC(Delta(4), ZSTD(1)),
    End DateTime CODEC(Delta(4), ZSTD(1)),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.01) GRANULARITY 1""",
        layout.engine(f"{TRACES}_trace_id_ts"), f"""\
PARTITION BY toDate(Start)
ORDER BY (TraceId, Start)
{layout.ttl("Start")}
{layout.settings()}""", "cityHash64(TraceId)")
    view = (f"CREATE MATERIALIZED VIEW IF NOT EXISTS {layout.database}.{TRACES}_trace_id_ts_mv{layout.on_cluster()}\n"
            f"TO {layout.table(TRACES + '_trace_id_ts')}\n"
            f"AS SELECT TraceId, min(Timestamp) AS Start, max(Timestamp) AS End\n"
            f"FROM {layout.table(TRACES)}\nWHERE TraceId != ''\nGROUP BY TraceId")
    return [*traces, *trace_ids, view]


def _attribute(name: str) -> str:
    return f"SpanAttributes['{name}']"


#: Spans of the audit trail: the otel_rai scope, or any span with an ``ml.*`` attribute (which
#: ``verify-chain`` reports as foreign when it carries no chain attributes).
_AUDIT_SPANS = (f"ScopeName = '{semconv.SCOPE}' OR arrayExists(k -> startsWith(k, 'ml.'), mapKeys(SpanAttributes))")
_FAILED = "StatusCode IN (" + ", ".join(f"'{s}'" for s in ERROR_STATUSES) + ")"


def _lookup(layout: Layout, name: str, key: str, key_doc: str, values: str, value: str) -> list[str]:
    """A table from `key` (decision id or input hash) to its decision, and the view that fills it."""
    table = _create(layout, name, f"""\
    {key} String CODEC(ZSTD(1)),  -- {key_doc}
    Timestamp DateTime64(9) CODEC(ZSTD(1)),  -- the start of the call
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    SpanName LowCardinality(String) CODEC(ZSTD(1)),
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    ModelName LowCardinality(String) CODEC(ZSTD(1)),
    ModelVersion LowCardinality(String) CODEC(ZSTD(1)),
    Row UInt32 CODEC(ZSTD(1)),  -- the entry of the span's arrays
    Output String CODEC(ZSTD(1)),  -- that entry of {semconv.OUTPUTS}, as JSON
    Failed Bool CODEC(ZSTD(1))  -- the call failed (status Error): its outputs are no decisions""",
        layout.engine(name, "ReplacingMergeTree"), f"""\
PARTITION BY toYYYYMM(Timestamp)
ORDER BY ({key}, TraceId, SpanId, Row)
{layout.ttl("Timestamp")}
{layout.settings()}""", "cityHash64(TraceId)")
    view = f"""\
CREATE MATERIALIZED VIEW IF NOT EXISTS {layout.database}.{name}_mv{layout.on_cluster()}
TO {layout.table(name)}
AS WITH {values}
SELECT {value} AS {key}, Timestamp, ServiceName, SpanName, TraceId, SpanId,
    {_attribute(semconv.MODEL_NAME)} AS ModelName, {_attribute(semconv.MODEL_VERSION)} AS ModelVersion,
    toUInt32(i - 1) AS Row, if(length(outputs) = length(ids), outputs[i], '') AS Output, {_FAILED} AS Failed
FROM {layout.table(TRACES)}
ARRAY JOIN arrayEnumerate(ids) AS i
WHERE mapContains(SpanAttributes, '{semconv.DECISION_IDS}') AND {key} != ''"""
    return [*table, view]


def otel_rai_tables(layout: Layout) -> list[str]:
    """otel-rai's tables and the materialized views that fill them from ``otel_traces``."""
    spans = _create(layout, SPANS, """\
    Timestamp DateTime64(9) CODEC(Delta(8), ZSTD(1)),
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    SpanName LowCardinality(String) CODEC(ZSTD(1)),
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    ModelName LowCardinality(String) CODEC(ZSTD(1)),
    ModelVersion LowCardinality(String) CODEC(ZSTD(1)),
    ModelFingerprint LowCardinality(String) CODEC(ZSTD(1)),
    BatchOffset Int64 CODEC(ZSTD(1)),  -- a chunk's first row in its call; -1 when not a chunk
    Decisions UInt32 CODEC(ZSTD(1)),
    AuditStream String CODEC(ZSTD(1)),  -- '' when the span carries no chain attributes
    AuditSeq UInt64 CODEC(ZSTD(1)),
    PROJECTION by_stream (SELECT * ORDER BY AuditStream, AuditSeq)""",
        layout.engine(SPANS), f"""\
PARTITION BY toDate(Timestamp)
ORDER BY (ModelVersion, Timestamp)
{layout.ttl("Timestamp")}
{layout.settings()}""", "cityHash64(TraceId)")
    spans_view = f"""\
CREATE MATERIALIZED VIEW IF NOT EXISTS {layout.database}.{SPANS}_mv{layout.on_cluster()}
TO {layout.table(SPANS)}
AS SELECT Timestamp, ServiceName, SpanName, TraceId, SpanId,
    {_attribute(semconv.MODEL_NAME)} AS ModelName, {_attribute(semconv.MODEL_VERSION)} AS ModelVersion,
    {_attribute(semconv.MODEL_FINGERPRINT)} AS ModelFingerprint,
    toInt64OrDefault({_attribute(semconv.BATCH_OFFSET)}, toInt64(-1)) AS BatchOffset,
    toUInt32(JSONLength({_attribute(semconv.DECISION_IDS)})) AS Decisions,
    {_attribute(semconv.AUDIT_STREAM)} AS AuditStream,
    toUInt64OrZero({_attribute(semconv.AUDIT_SEQ)}) AS AuditSeq
FROM {layout.table(TRACES)}
WHERE {_AUDIT_SPANS}"""
    arrays = (f"JSONExtract({_attribute(semconv.DECISION_IDS)}, 'Array(String)') AS ids, "
              f"JSONExtractArrayRaw({_attribute(semconv.OUTPUTS)}) AS outputs")
    decisions = _lookup(layout, DECISIONS, "DecisionId", "one decision", arrays, "ids[i]")
    inputs = _lookup(layout, INPUTS, "InputHash", f"the keyed hash of the input ({semconv.INPUT_HASHES})",
                     f"{arrays}, JSONExtract({_attribute(semconv.INPUT_HASHES)}, 'Array(String)') AS hashes",
                     "if(length(hashes) = length(ids), hashes[i], '')")
    groups = _create(layout, GROUPS, """\
    DecisionId String CODEC(ZSTD(1)),
    Attribute LowCardinality(String) CODEC(ZSTD(1)),  -- a sensitive attribute (sex, or sex&race)
    Group String CODEC(ZSTD(1)),  -- the decision's group in it
    Timestamp DateTime64(9) CODEC(ZSTD(1)),
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    ModelName LowCardinality(String) CODEC(ZSTD(1)),
    ModelVersion LowCardinality(String) CODEC(ZSTD(1)),
    Output String CODEC(ZSTD(1)),  -- as in otel_rai_decisions
    Failed Bool CODEC(ZSTD(1))""", layout.engine(GROUPS, "ReplacingMergeTree"), f"""\
PARTITION BY toYYYYMM(Timestamp)
ORDER BY (ModelName, ModelVersion, Attribute, DecisionId)
{layout.ttl("Timestamp")}
{layout.settings()}""", "cityHash64(DecisionId)")
    outcomes = _create(layout, OUTCOMES, """\
    DecisionId String CODEC(ZSTD(1)),
    YTrue String CODEC(ZSTD(1)),  -- the ground truth, as JSON
    Label String CODEC(ZSTD(1)),  -- the same as text (1, 1.0 and true are all '1'), what the report compares
    Time DateTime64(9) CODEC(ZSTD(1)),  -- when it was recorded
    -- The row kept of several for one decision: the earliest, as in the local store.
    Precedence UInt64 MATERIALIZED 18446744073709551615 - toUInt64(toUnixTimestamp64Nano(Time))""",
        layout.engine(OUTCOMES, "ReplacingMergeTree", "Precedence"), f"""\
PARTITION BY toYYYYMM(Time)
ORDER BY DecisionId
{layout.ttl("Time")}
{layout.settings()}""", "cityHash64(DecisionId)")
    drift = _create(layout, DRIFT, """\
    ModelName LowCardinality(String) CODEC(ZSTD(1)),
    ModelVersion LowCardinality(String) CODEC(ZSTD(1)),
    Time DateTime64(9) CODEC(ZSTD(1)),  -- when the drift monitor took it
    Histograms String CODEC(ZSTD(1))  -- its histograms, as JSON (docs/monitoring.md)""",
        layout.engine(DRIFT, "ReplacingMergeTree"), f"""\
PARTITION BY toYYYYMM(Time)
ORDER BY (ModelName, ModelVersion, Time)
{layout.ttl("Time")}
{layout.settings()}""", "cityHash64(ModelVersion)")
    return [*spans, spans_view, *decisions, *inputs, *groups, *outcomes, *drift, *model_records(layout)]


def model_records(layout: Layout) -> list[str]:
    """``otel_rai_model_records``: every model record span, copied as ``otel_traces`` holds it, WITHOUT a
    TTL. A record is written once per fitted model and process, so a model that serves for months has its
    record in a partition that the traces' TTL drops while its decisions are still kept: this copy keeps
    it for ``otel-rai model`` and ``reproduce`` (a few kilobytes per fitted model)."""
    columns = ",\n".join(f"    {line}" for line in _RECORD_COLUMNS)
    table = _create(layout, MODEL_RECORDS, f"""\
{columns},
    ModelName LowCardinality(String) MATERIALIZED {_attribute(semconv.MODEL_NAME)},
    ModelVersion LowCardinality(String) MATERIALIZED {_attribute(semconv.MODEL_VERSION)},
    ModelFingerprint String MATERIALIZED {_attribute(semconv.MODEL_FINGERPRINT)}""",
        layout.engine(MODEL_RECORDS, "ReplacingMergeTree"), """\
PARTITION BY toYYYYMM(Timestamp)
ORDER BY (ModelName, ModelVersion, ModelFingerprint, Timestamp, TraceId, SpanId)""", "cityHash64(TraceId)")
    view = (f"CREATE MATERIALIZED VIEW IF NOT EXISTS {layout.database}.{MODEL_RECORDS}_mv{layout.on_cluster()}\n"
            f"TO {layout.table(MODEL_RECORDS)}\n"
            f"AS SELECT *\nFROM {layout.table(TRACES)}\n"
            f"WHERE SpanName = '{semconv.MODEL_RECORD_SPAN}'")
    return [*table, view]


#: The columns of ``otel_traces`` that a span's record needs (its indexes and codecs aside).
_RECORD_COLUMNS = (
    "Timestamp DateTime64(9)", "TraceId String", "SpanId String", "ParentSpanId String", "TraceState String",
    "SpanName LowCardinality(String)", "SpanKind LowCardinality(String)", "ServiceName LowCardinality(String)",
    "ResourceAttributes Map(LowCardinality(String), String)", "ScopeName String", "ScopeVersion String",
    "SpanAttributes Map(LowCardinality(String), String)", "Duration UInt64", "StatusCode LowCardinality(String)",
    "StatusMessage String",
    "Events Nested (Timestamp DateTime64(9), Name LowCardinality(String), "
    "Attributes Map(LowCardinality(String), String))",
    "Links Nested (TraceId String, SpanId String, TraceState String, Attributes Map(LowCardinality(String), String))",
)


def statements(layout: Layout = Layout()) -> list[str]:
    """Every statement, in order: the database, the exporter's tables, otel-rai's."""
    database = f"CREATE DATABASE IF NOT EXISTS {layout.database}{layout.on_cluster()}"
    return [database, *exporter_tables(layout), *otel_rai_tables(layout)]


#: The files of collector/clickhouse/ and what each holds.
FILES = {
    "otel_traces.sql": (exporter_tables, None),
    "otel_rai.sql": (otel_rai_tables, None),
    "cluster/otel_traces.sql": (exporter_tables, "otel"),
    "cluster/otel_rai.sql": (otel_rai_tables, "otel"),
}
_HEADER = """\
-- Generated by `python -m otel_rai.clickhouse.schema collector/clickhouse` from otel_rai/clickhouse/schema.py;
-- edit that, not this file. See collector/clickhouse/README.md.
"""


def files() -> dict[str, str]:
    """The text of each file of collector/clickhouse/ (cluster files: a cluster named ``otel``)."""
    out = {}
    for name, (render, cluster) in FILES.items():
        layout = Layout(cluster=cluster)
        body = [f"CREATE DATABASE IF NOT EXISTS {layout.database}{layout.on_cluster()}"] + render(layout)
        out[name] = _HEADER + "\n" + "".join(statement + ";\n\n" for statement in body).rstrip("\n") + "\n"
    return out


def main(argv: list[str]) -> int:
    """Write the files of collector/clickhouse/ into the directory `argv[0]`."""
    if len(argv) != 1:
        print("usage: python -m otel_rai.clickhouse.schema DIRECTORY", file=sys.stderr)
        return 2
    for name, text in files().items():
        path = Path(argv[0]) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
