"""ClickHouse as a query backend: the collector exporter's ``otel_traces`` and otel-rai's lookup tables
(`otel_rai.clickhouse.schema`), over HTTP(S) or in-process chDB (``--url chdb:///dir``).

Work is pushed down to SQL. A search reads ``otel_rai_spans`` (by model version and time, day partitions)
a page at a time and fetches each page's spans from ``otel_traces`` by its primary key; a decision id or
an input hash goes through ``otel_rai_decisions`` / ``otel_rai_inputs`` (keyed by it), so neither scans
the table. The report's counts are SQL aggregates (`tally`), and ``verify-chain`` reads each stream in
sequence order a page at a time (`chained`). Copies of a span (at-least-once delivery) are read once,
except by `chained`, whose verification counts them. Unlike the other remote backends there is no default
time window: like the local store, no window means everything.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from typing import Any, Iterable, Iterator, Sequence

from otel_rai import semconv
from otel_rai.clickhouse import client, rows, schema
from otel_rai.codec.records import SpanRecord
from otel_rai.fairness.metrics import GroupCounts, printed
from otel_rai.query import Query
from otel_rai.query._remote import time_order
from otel_rai.query.capabilities import ALL_DECISIONS, Tally

DEFAULT_URL = client.DEFAULT_URL
#: Spans in the first page of a search (a page of `query --limit 50` comes back at once); pages double up
#: to `MAX_PAGE`.
FIRST_PAGE, MAX_PAGE = 64, 4096
#: Sequence numbers of one stream read at a time by `chained`: its memory is about this many spans.
CHAIN_PAGE = 2048
#: Decision ids looked up in one query (groups, outcomes).
IDS_PER_QUERY = 10_000
#: Keys of spans fetched from ``otel_traces`` in one query.
FETCH = 4096
#: Bytes a report's join of decisions with outcomes may hold before ClickHouse sorts it on disk: the join is a
#: sort-merge join of the two tables (both keyed by decision id), so its memory stays flat at any size.
SORT_SPILL_BYTES = 1 << 30
_JOIN = {"join_use_nulls": 1, "join_algorithm": "full_sorting_merge",
         "max_bytes_before_external_sort": SORT_SPILL_BYTES}
#: Decisions in the first fetch of a search (a span may hold a thousand), doubling up to `MAX_FETCH_DECISIONS`:
#: the first page of a query decodes a span or two, not sixty-four of them.
FIRST_FETCH_DECISIONS, MAX_FETCH_DECISIONS = 256, 65_536

_STATUS_ERROR = "(" + ", ".join(f"'{s}'" for s in schema.ERROR_STATUSES) + ")"
_KEY_COLUMNS = "ServiceName, SpanName, toUnixTimestamp64Nano(Timestamp), TraceId, SpanId"
#: A span's key in the index: (service, span name, start ns, trace id, span id).
Key = tuple[str, str, int, str, str]


def _label_key(expr: str) -> str:
    """SQL: a JSON value (an entry of ``ml.outputs``, a ground truth) as a label key: ``s`` + the label
    as `printed` writes it, or ``n`` + a number that is not an integer (Python prints those itself)."""
    return (f"multiIf(startsWith({expr}, '\"'), concat('s', JSONExtractString({expr})), {expr} = 'true', 's1', "
            f"{expr} = 'false', 's0', {expr} IN ('null', ''), 'sNone', match({expr}, '^-?[0-9]+$'), "
            f"concat('s', {expr}), concat('n', {expr}))")


def _positive(key: str) -> str:
    """SQL: whether label key `key` is the positive label (parameters ``pos_s`` and ``pos_n``)."""
    return (f"({key} = {{pos_s:String}} OR (startsWith({key}, 'n') "
            f"AND toFloat64OrNull(substring({key}, 2)) = {{pos_n:Nullable(Float64)}}))")


def _label(key: str) -> str:
    """The label a label key stands for (see `_label_key`)."""
    if key.startswith("n"):
        try:
            return printed(float(key[1:]))
        except ValueError:
            return key[1:]
    return key[1:]


def _positive_parameters(positive_label: Any) -> dict[str, Any]:
    text = printed(positive_label)
    try:
        number = float(text)
    except ValueError:
        number = None
    # A number token equals the label when it prints as the label (see `printed`).
    exact = number is not None and math.isfinite(number) and printed(number) == text
    return {"pos_s": "s" + text, "pos_n": number if exact else None}


class ClickHouse:
    """One ClickHouse database holding ``otel_traces`` and otel-rai's tables."""

    def __init__(self, connection: client.Connection) -> None:
        self.db = connection
        self.last_summary: dict[str, Any] = {}  # the rows read by the last lookup, for tests and curious operators

    def _t(self, name: str) -> str:
        return self.db.table(name)

    @staticmethod
    def _filters(query: Query, *, model: bool = True) -> tuple[list[str], dict[str, Any]]:
        """WHERE clauses on an otel-rai table (all have these columns) for `query`'s filters."""
        clauses, params = [], {}
        for column, name, value in (("ModelVersion", "version", query.model_version if model else None),
                                    ("ModelName", "model", query.model_name if model else None),
                                    ("ServiceName", "service", query.service)):
            if value is not None:
                clauses.append(f"{column} = {{{name}:String}}")
                params[name] = value
        if query.start_ns is not None:
            clauses.append("Timestamp >= fromUnixTimestamp64Nano({start:Int64})")
            params["start"] = query.start_ns
        if query.end_ns is not None:
            clauses.append("Timestamp < fromUnixTimestamp64Nano({end:Int64})")
            params["end"] = query.end_ns
        return clauses, params

    @staticmethod
    def _where(clauses: Sequence[str]) -> str:
        return (" WHERE " + " AND ".join(clauses)) if clauses else ""

    # --- spans ---

    def fetch(self, keys: Sequence[Key]) -> list[SpanRecord]:
        """The spans of `keys` from ``otel_traces``, every stored copy, read by primary key."""
        found: list[SpanRecord] = []
        for start in range(0, len(keys), FETCH):
            part = keys[start:start + FETCH]
            wanted = {(k[3], k[4]) for k in part}
            result = self.db.query(
                f"SELECT {rows.SELECT} FROM {self._t(schema.TRACES)}"
                " WHERE (ServiceName, SpanName, toDateTime(Timestamp)) IN (SELECT tupleElement(k, 1),"
                " tupleElement(k, 2), toDateTime(fromUnixTimestamp64Nano(tupleElement(k, 3)))"
                " FROM (SELECT arrayJoin({keys:Array(Tuple(String, String, Int64))}) AS k))"
                " AND Timestamp >= fromUnixTimestamp64Nano({lo:Int64})"
                " AND Timestamp <= fromUnixTimestamp64Nano({hi:Int64}) AND TraceId IN {traces:Array(String)}",
                {"keys": sorted({k[:3] for k in part}), "lo": min(k[2] for k in part), "hi": max(k[2] for k in part),
                 "traces": sorted({k[3] for k in part})})
            self.last_summary = dict(result.summary or {})
            found += [rows.record(r) for r in result.result_rows if (r[1], r[2]) in wanted]
        return found

    def _once(self, records: Iterable[SpanRecord]) -> list[SpanRecord]:
        """One of each span (copies delivered twice share trace and span id), in time order."""
        seen: dict[tuple[str, str], SpanRecord] = {}
        for r in records:
            seen.setdefault((r.trace_id, r.span_id), r)
        return sorted(seen.values(), key=time_order)

    def _by_row(self, query: Query) -> Iterator[SpanRecord]:
        """The spans holding the decisions `query` names, through the decision id or input hash lookup."""
        table, column, wanted = ((schema.DECISIONS, "DecisionId", query.decision_ids) if query.decision_ids is not None
                                 else (schema.INPUTS, "InputHash", query.input_hashes))
        clauses, params = self._filters(query)
        clauses.insert(0, f"{column} IN {{wanted:Array(String)}}")
        params["wanted"] = sorted(wanted or ())
        if not params["wanted"]:
            return
        result = self.db.query(f"SELECT DISTINCT {_KEY_COLUMNS} FROM {self._t(table)}{self._where(clauses)}", params)
        lookup = dict(result.summary or {})
        spans = self._once(self.fetch([tuple(k) for k in result.result_rows]))
        self.last_summary = {"lookup": lookup, "spans": self.last_summary}
        yield from spans

    def _pages(self, query: Query, span_name: str | None = None) -> Iterator[list[tuple[Any, ...]]]:
        """The index keys of the spans `query` selects (with their number of decisions), in time order, a
        page at a time, one per copy."""
        clauses, params = self._filters(query)
        if span_name is not None:
            clauses.append("SpanName = {name:String}")
            params["name"] = span_name
        after: tuple[int, str, int, str] | None = None
        page = FIRST_PAGE
        while True:
            more = list(clauses)
            if after is not None:
                more += ["Timestamp >= fromUnixTimestamp64Nano({at:Int64})",
                         "(toUnixTimestamp64Nano(Timestamp), TraceId, BatchOffset, SpanId)"
                         " > ({at:Int64}, {trace:String}, {offset:Int64}, {span:String})"]
                params.update(at=after[0], trace=after[1], offset=after[2], span=after[3])
            found = self.db.rows(
                f"SELECT {_KEY_COLUMNS}, BatchOffset, Decisions FROM {self._t(schema.SPANS)}{self._where(more)}"
                f" ORDER BY Timestamp, TraceId, BatchOffset, SpanId LIMIT {page}", params)
            keys, last = [], None
            for service, name, ns, trace, span, offset, decisions in found:
                if (ns, trace, offset, span) != last:  # a copy sorts next to its original
                    keys.append((service, name, ns, trace, span, decisions))
                last = (ns, trace, offset, span)
            if keys:
                yield keys
            if len(found) < page:
                return
            after = last
            page = min(page * 2, MAX_PAGE)

    def _paged(self, query: Query, span_name: str | None = None) -> Iterator[SpanRecord]:
        budget = FIRST_FETCH_DECISIONS
        for page in self._pages(query, span_name):
            while page:  # fetch as many spans as hold about `budget` decisions (at least one span)
                count, n = 0, 0
                while n < len(page) and (n == 0 or count + page[n][5] <= budget):
                    count, n = count + page[n][5], n + 1
                yield from self._once(self.fetch([k[:5] for k in page[:n]]))
                page = page[n:]
                budget = min(budget * 2, MAX_FETCH_DECISIONS)

    def spans(self, query: Query) -> Iterator[SpanRecord]:
        """Spans that may hold decisions matching `query`, in time order."""
        if query.by_row:
            return self._by_row(query)
        return self._paged(query)

    def named_spans(self, query: Query, name: str) -> Iterator[SpanRecord]:
        """The spans called `name` (the fairness alerts, say) within `query`'s filters, in time order."""
        return self._paged(query, name)

    def count(self, query: Query) -> int:
        """The decisions in the spans `spans(query)` yields (an upper bound)."""
        clauses, params = self._filters(query)
        return int(self.db.rows(f"SELECT sum(Decisions) FROM {self._t(schema.SPANS)}{self._where(clauses)}",
                                params)[0][0] or 0)

    # --- the chain ---

    def chained(self, query: Query) -> Iterator[SpanRecord]:
        """Every audit record in `query`'s service of each stream's stretch that started in its window
        (`otel_rai.chain.verify.in_view`), stream by stream in sequence order."""
        clauses, params = self._filters(query, model=False)
        # Streams in the order of their first record, as the local store's write order meets them.
        streams = self.db.rows(
            f"SELECT AuditStream, min(AuditSeq), max(AuditSeq) FROM {self._t(schema.SPANS)}{self._where(clauses)}"
            " GROUP BY AuditStream ORDER BY min(Timestamp), AuditStream", params)
        # Within a stretch, whenever they started: one sealed among records of the window is in view. A record
        # without a place in its stream (AuditSeq 0) is in view if it started in the window.
        unbounded, _ = self._filters(replace(query, start_ns=None, end_ns=None), model=False)
        timed = [clause for clause in clauses if clause not in unbounded]
        in_stream = [*unbounded, "AuditStream = {stream:String}", "AuditSeq >= {lo:UInt64}",
                     *([f"(AuditSeq > 0 OR {' AND '.join(timed)})"] if timed else [])]
        for stream, first, last in streams:
            seq = first
            while seq <= last:
                found = self.db.rows(
                    f"SELECT {_KEY_COLUMNS}, AuditSeq FROM {self._t(schema.SPANS)}"
                    f"{self._where([*in_stream, 'AuditSeq < {hi:UInt64}'])}",
                    {**params, "stream": stream, "lo": seq, "hi": min(seq + CHAIN_PAGE, last + 1)})
                if found:
                    records = self.fetch(sorted({tuple(k[:5]) for k in found}))
                    records.sort(key=lambda r: (_seq(r), r.start_ns, r.trace_id, r.span_id))
                    yield from records
                    seq += CHAIN_PAGE
                else:  # a gap: jump to the next record of the stream
                    (nxt,) = self.db.rows(f"SELECT min(AuditSeq) FROM {self._t(schema.SPANS)}{self._where(in_stream)}",
                                          {**params, "stream": stream, "lo": seq})[0]
                    seq = max(int(nxt), seq + CHAIN_PAGE)

    # --- the report ---

    def tally(self, query: Query, positive_label: Any, sensitive: Sequence[str] = ()) -> Tally:
        """The report's counts, as SQL aggregates (see `otel_rai.query.capabilities.Tallying`)."""
        clauses, params = self._filters(query)
        params.update(_positive_parameters(positive_label))
        outcomes = (f"(SELECT DecisionId, YTrue FROM {self._t(schema.OUTCOMES)} FINAL"
                    " WHERE YTrue != 'null')")
        decisions = (f"SELECT DecisionId, Output, Timestamp, ModelName FROM {self._t(schema.DECISIONS)} FINAL"
                     f"{self._where([*clauses, 'NOT Failed'])}")
        (n, selected, labelled, first, last, models), = self.db.rows(
            f"SELECT count(), countIf({_positive(_label_key('d.Output'))}), countIf(o.DecisionId IS NOT NULL),"
            " min(toUnixTimestamp64Nano(d.Timestamp)), max(toUnixTimestamp64Nano(d.Timestamp)),"
            f" groupUniqArray(d.ModelName) FROM ({decisions}) AS d GLOBAL LEFT JOIN {outcomes} AS o"
            " ON d.DecisionId = o.DecisionId", params, settings=_JOIN)
        tally = Tally(int(n), int(selected), int(labelled), int(first) if n else None, int(last) if n else None,
                      set(models))
        for source in self._group_sources(query, clauses, params, sensitive):
            self._add_groups(tally, source, params, outcomes)
        return tally

    def _group_sources(self, query: Query, clauses: list[str], params: dict[str, Any],
                       sensitive: Sequence[str]) -> list[str]:
        """SQL sources of (DecisionId, Attribute, GroupKey, Output, Timestamp) of the decisions of `clauses`:
        the stored groups, then the allowlisted raw values of the `sensitive` features where none is stored."""
        sources = [f"SELECT DecisionId, Attribute, concat('s', Group) AS GroupKey, Output, Timestamp FROM"
                   f" {self._t(schema.GROUPS)} FINAL{self._where([*clauses, 'NOT Failed'])}"]
        for i, name in enumerate(sensitive):
            spans = self._feature_spans(query, name, i, params)
            # The bloom filter on the attribute names makes this probe cheap; without it, the query below
            # would still build the set of decisions with stored groups.
            if self.db.rows(f"SELECT 1 FROM {self._t(schema.TRACES)}{self._where(spans)} LIMIT 1", params):
                sources.append(self._feature_source(spans, clauses, i))
        return sources

    def buckets(self, query: Query, positive_label: Any, sensitive: Sequence[str], attribute: str | None,
                start: float, width: float, n: int) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
        """Decisions and positive decisions per time bucket and group, as SQL aggregates (see
        `otel_rai.query.capabilities.Tallying.buckets`)."""
        clauses, params = self._filters(query)
        params.update(_positive_parameters(positive_label), b_start=start, b_width=width, b_last=n - 1)
        # As `otel_rai.report.figures.bucket_of` computes it from the decision's time in float seconds: floor of
        # the quotient, where Python's `//` is exact, so a time within rounding of a bucket's edge may count in
        # the neighbouring bucket here (the generated trails of the tests give equal charts).
        bucket = ("least(toInt64(floor((toUnixTimestamp64Nano(Timestamp) / 1e9 - {b_start:Float64})"
                  " / {b_width:Float64})), {b_last:Int64})")
        if attribute is None:
            sources = [f"SELECT DecisionId, '' AS Attribute, 's{ALL_DECISIONS}' AS GroupKey, Output, Timestamp"
                       f" FROM {self._t(schema.DECISIONS)} FINAL{self._where([*clauses, 'NOT Failed'])}"]
        else:
            sources = self._group_sources(query, clauses, params, sensitive)
            params["b_attribute"] = attribute
        decided: dict[str, list[int]] = {}
        selected: dict[str, list[int]] = {}
        for source in sources:
            keep = "" if attribute is None else " WHERE Attribute = {b_attribute:String}"
            for key, i, count, positive in self.db.rows(
                    f"SELECT GroupKey, {bucket} AS b, count(), countIf({_positive(_label_key('Output'))})"
                    f" FROM ({source}){keep} GROUP BY GroupKey, b", params):
                group = _label(key)
                decided.setdefault(group, [0] * n)[int(i)] += int(count)
                selected.setdefault(group, [0] * n)[int(i)] += int(positive)
        return dict(sorted(decided.items())), dict(sorted(selected.items()))

    @staticmethod
    def _feature_spans(query: Query, name: str, i: int, params: dict[str, Any]) -> list[str]:
        """WHERE clauses on ``otel_traces``: the spans of `query` that carry the allowlisted raw value `name`."""
        params[f"feature{i}"], params[f"attribute{i}"] = name, semconv.INPUT_VALUE_PREFIX + name
        span_clauses = [f"mapContains(SpanAttributes, {{attribute{i}:String}})", f"StatusCode NOT IN {_STATUS_ERROR}"]
        for key, param in ((semconv.MODEL_VERSION, "version"), (semconv.MODEL_NAME, "model")):
            if param in params:
                span_clauses.append(f"SpanAttributes['{key}'] = {{{param}:String}}")
        if query.service is not None:
            span_clauses.append("ServiceName = {service:String}")
        if query.start_ns is not None:
            span_clauses.append("Timestamp >= fromUnixTimestamp64Nano({start:Int64})")
        if query.end_ns is not None:
            span_clauses.append("Timestamp < fromUnixTimestamp64Nano({end:Int64})")
        return span_clauses

    def _feature_source(self, span_clauses: list[str], clauses: list[str], i: int) -> str:
        """SQL: (decision, attribute, group key, output) from the spans' allowlisted raw values, for the
        decisions of `clauses` without stored groups."""
        grouped = f"SELECT DecisionId FROM {self._t(schema.GROUPS)}{self._where(clauses)}"
        return (
            f"SELECT ids[i] AS DecisionId, {{feature{i}:String}} AS Attribute,"
            f" {_label_key('if(length(vals) = length(ids), vals[i], ' + repr('null') + ')')} AS GroupKey,"
            " if(length(outputs) = length(ids), outputs[i], '') AS Output, Timestamp"
            " FROM (SELECT Timestamp, JSONExtract(SpanAttributes['" + semconv.DECISION_IDS + "'], 'Array(String)')"
            " AS ids,"
            " JSONExtractArrayRaw(SpanAttributes['" + semconv.OUTPUTS + "']) AS outputs,"
            f" JSONExtractArrayRaw(SpanAttributes[{{attribute{i}:String}}]) AS vals"
            f" FROM {self._t(schema.TRACES)}{self._where(span_clauses)} LIMIT 1 BY TraceId, SpanId)"
            f" ARRAY JOIN arrayEnumerate(ids) AS i WHERE DecisionId GLOBAL NOT IN ({grouped})")

    def _add_groups(self, tally: Tally, source: str, params: dict[str, Any], outcomes: str) -> None:
        selected, actual = _positive(_label_key("s.Output")), _positive(_label_key("o.YTrue"))
        found = self.db.rows(
            f"SELECT Attribute, GroupKey, count(), countIf(sel), countIf(sel AND lab AND act),"
            f" countIf(sel AND lab AND NOT act), countIf(NOT sel AND lab AND act), countIf(NOT sel AND lab AND NOT act)"
            f" FROM (SELECT s.Attribute AS Attribute, s.GroupKey AS GroupKey, {selected} AS sel,"
            f" o.YTrue IS NOT NULL AS lab, ifNull({actual}, false) AS act"
            f" FROM ({source}) AS s GLOBAL LEFT JOIN {outcomes} AS o ON s.DecisionId = o.DecisionId)"
            " GROUP BY Attribute, GroupKey", params, settings=_JOIN)
        for attribute, key, n, sel, tp, fp, fn, tn in found:
            counts = tally.groups.setdefault(attribute, {}).setdefault(_label(key), GroupCounts())
            counts.decisions += int(n)
            counts.selected += int(sel)
            counts.tp, counts.fp, counts.fn, counts.tn = (counts.tp + int(tp), counts.fp + int(fp),
                                                          counts.fn + int(fn), counts.tn + int(tn))

    # --- what the local store keeps beside the spans (`KeepsRows`), copied with export --include ---

    def _by_ids(self, sql: str, decision_ids: Sequence[str]) -> Iterator[tuple[Any, ...]]:
        ids = sorted(set(map(str, decision_ids)))
        for start in range(0, len(ids), IDS_PER_QUERY):
            yield from self.db.rows(sql, {"ids": ids[start:start + IDS_PER_QUERY]})

    def groups(self, decision_ids: Sequence[str]) -> dict[str, dict[str, str]]:
        """{decision id: {sensitive attribute: group}} from ``otel_rai_groups``."""
        out: dict[str, dict[str, str]] = {}
        for decision_id, attribute, group in self._by_ids(
                f"SELECT DecisionId, Attribute, Group FROM {self._t(schema.GROUPS)} FINAL"
                " WHERE DecisionId IN {ids:Array(String)}", decision_ids):
            out.setdefault(decision_id, {})[attribute] = group
        return out

    def outcomes(self, decision_ids: Sequence[str]) -> dict[str, Any]:
        """{decision id: ground truth} from ``otel_rai_outcomes`` (the first recorded, as locally)."""
        return {decision_id: json.loads(y_true) for decision_id, y_true in self._by_ids(
            f"SELECT DecisionId, YTrue FROM {self._t(schema.OUTCOMES)} FINAL WHERE DecisionId IN {{ids:Array(String)}}",
            decision_ids)}

    def outcome_rows(self, decision_ids: Sequence[str]) -> dict[str, tuple[str, int]]:
        """{decision id: (ground truth as the JSON text the local store kept, time recorded in Unix ns)}."""
        return {decision_id: (y_true, int(ns)) for decision_id, y_true, ns in self._by_ids(
            f"SELECT DecisionId, YTrue, toUnixTimestamp64Nano(Time) FROM {self._t(schema.OUTCOMES)} FINAL"
            " WHERE DecisionId IN {ids:Array(String)}", decision_ids)}

    def holds(self, table: str) -> bool:
        """Whether the copy of a local-only table (``groups``, ``outcomes``, ``drift``) holds any row."""
        name = {"groups": schema.GROUPS, "outcomes": schema.OUTCOMES, "drift": schema.DRIFT}[table]
        return bool(self.db.rows(f"SELECT 1 FROM {self._t(name)} LIMIT 1"))

    def drift_snapshots(self, model_version: str, model_name: str | None = None, start_ns: int | None = None,
                        end_ns: int | None = None) -> list[tuple[int, str, dict[str, Any]]]:
        """(time, model name, histograms) of a version's drift snapshots in [start, end), oldest first."""
        clauses, params = ["ModelVersion = {version:String}"], {"version": model_version}
        for clause, name, value in (("ModelName = {model:String}", "model", model_name),
                                    ("Time >= fromUnixTimestamp64Nano({start:Int64})", "start", start_ns),
                                    ("Time < fromUnixTimestamp64Nano({end:Int64})", "end", end_ns)):
            if value is not None:
                clauses.append(clause)
                params[name] = value
        return [(int(ns), name, json.loads(histograms)) for ns, name, histograms in self.db.rows(
            f"SELECT toUnixTimestamp64Nano(Time), ModelName, Histograms FROM {self._t(schema.DRIFT)} FINAL"
            f"{self._where(clauses)} ORDER BY Time", params)]

    # --- which model versions there are (`otel_rai.query.catalog`) ---

    def model_versions(self, query: Query) -> list[tuple[Any, ...]]:
        """(model name, version, decisions, first and last start ns, input features or None) of each model
        version with decisions in `query`'s filters, oldest first: SQL over ``otel_rai_spans``, then each
        version's newest span (by start time; the local store takes the last written) for the features it recorded."""
        clauses, params = self._filters(query)
        found = self.db.rows(
            "SELECT ModelName, ModelVersion, sum(Decisions), min(ns), max(ns),"
            " argMax((ServiceName, SpanName, ns, TraceId, SpanId), ns)"
            f" FROM (SELECT *, toUnixTimestamp64Nano(Timestamp) AS ns FROM {self._t(schema.SPANS)}"
            f"{self._where([*clauses, 'Decisions > 0'])} LIMIT 1 BY TraceId, SpanId, BatchOffset)"
            " GROUP BY ModelName, ModelVersion ORDER BY min(ns), ModelName, ModelVersion", params)
        newest = {(r.trace_id, r.span_id): r for r in self.fetch([tuple(row[5]) for row in found])}
        out = []
        for name, version, decisions, first, last, key in found:
            span = newest.get((key[3], key[4]))
            features = span.attributes.get(semconv.INPUT_FEATURES) if span is not None else None
            out.append((name or None, version or None, int(decisions), int(first), int(last),
                        list(map(str, features)) if isinstance(features, (list, tuple)) and features else None))
        return out

    # --- model records (`otel_rai.provenance.lookup`) ---

    def model_records(self, query: Query, fingerprint: str | None = None) -> list[SpanRecord]:
        """The model record spans of `query`'s model, version, service and window, oldest first, from
        ``otel_rai_model_records`` (kept past the traces' TTL)."""
        clauses, params = self._filters(query)
        if fingerprint is not None:
            clauses.append("ModelFingerprint = {fingerprint:String}")
            params["fingerprint"] = fingerprint
        found = self.db.query(f"SELECT {rows.SELECT} FROM {self._t(schema.MODEL_RECORDS)} FINAL"
                              f"{self._where(clauses)}", params).result_rows
        return self._once(rows.record(r) for r in found)

    def model_summaries(self, query: Query, record_span: str) -> list[tuple[Any, ...]]:
        """(name, version, fingerprint, first and last decision ns, decisions, records) per fitted model, as
        SQL aggregates over ``otel_rai_spans`` and the kept records."""
        clauses, params = self._filters(query)
        params["record"] = record_span
        spans = self.db.rows(
            "SELECT ModelName, ModelVersion, ModelFingerprint,"
            " minIf(toUnixTimestamp64Nano(Timestamp), Decisions > 0), maxIf(toUnixTimestamp64Nano(Timestamp),"
            " Decisions > 0), sum(Decisions), countIf(Decisions > 0), min(Timestamp)"
            f" FROM (SELECT * FROM {self._t(schema.SPANS)}{self._where([*clauses, 'notEmpty(ModelFingerprint)'])}"
            " LIMIT 1 BY TraceId, SpanId, BatchOffset) GROUP BY ModelName, ModelVersion, ModelFingerprint", params)
        kept = {(n, v, fp): (int(count), first) for n, v, fp, count, first in self.db.rows(
            "SELECT ModelName, ModelVersion, ModelFingerprint, count(), min(Timestamp) FROM (SELECT ModelName,"
            " ModelVersion, ModelFingerprint, Timestamp, TraceId, SpanId FROM"
            f" {self._t(schema.MODEL_RECORDS)} FINAL{self._where(clauses)} LIMIT 1 BY TraceId, SpanId)"
            " GROUP BY ModelName, ModelVersion, ModelFingerprint", params)}
        out = []
        for name, version, fp, first, last, decisions, with_decisions, seen in spans:
            records, record_first = kept.pop((name, version, fp), (0, seen))
            out.append((min(seen, record_first), name or None, version or None, fp,
                        int(first) if with_decisions else None, int(last) if with_decisions else None,
                        int(decisions), records))
        out += [(first, name or None, version or None, fp, None, None, 0, count)
                for (name, version, fp), (count, first) in kept.items()]
        return [row[1:] for row in sorted(out, key=lambda row: row[0])]

    # --- for tests and operators ---

    def explain(self, sql: str, parameters: dict[str, Any] | None = None) -> str:
        """ClickHouse's ``EXPLAIN indexes = 1`` of `sql`: the parts and granules each index leaves."""
        return "\n".join(r[0] for r in self.db.rows("EXPLAIN indexes = 1 " + sql, parameters))


def _seq(record: SpanRecord) -> int:
    value = record.attributes.get(semconv.AUDIT_SEQ)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def connect(url: str | None) -> ClickHouse:
    """The ClickHouse at `url` (``http(s)://host:port[/database]`` or ``chdb:///directory``)."""
    return ClickHouse(client.connect(url or DEFAULT_URL))
