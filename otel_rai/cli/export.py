"""``otel-rai export``: write decisions to an audit file, or load a local store (or a spool) into ClickHouse
(``--to clickhouse``) as the collector's exporter would write it."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Iterator

from otel_rai import query, store
from otel_rai.cli import formats
from otel_rai.cli._common import (
    OK,
    UsageError,
    absent_model,
    add_filter_options,
    add_source_options,
    backend_of,
    note,
    output,
    query_of,
    where,
)
from otel_rai.codec.records import SpanRecord
from otel_rai.query import Countable, Query

#: What ``--include`` may copy beside the spans: the local-only tables.
_INCLUDE = ("groups", "outcomes", "drift")
#: Spans read from a spool's outbox at a time.
_SPOOL_BATCH = 1024


class _Spool:
    """A spool as a query backend: the spans waiting in its outbox (a spool keeps nothing else of them)."""

    def __init__(self, source: store.Store) -> None:
        self.source = source

    def spans(self, q: Query) -> Iterator[SpanRecord]:
        """Every span waiting in the outbox, in write order (`query.find_spans` applies `q`)."""
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        from otel_rai.codec import otlpproto, sdk

        after = 0
        while batch := self.source.outbox_batch(_SPOOL_BATCH, _SPOOL_BATCH * _SPOOL_BATCH, after):
            for seq, origin, encoded in batch:
                resource, schema_url, scope_name, scope_version = self.source.origin_of(origin)
                yield sdk.from_readable(otlpproto.decode_span(encoded, sdk.to_resource(resource, schema_url),
                                                              InstrumentationScope(scope_name, scope_version)))
                after = seq


def _drift(source: store.Store) -> Iterator[tuple[str, str, int, Any]]:
    """Every drift snapshot of the store: (model name, version, time in Unix ns, histograms)."""
    for version in sorted({row[1] for row in source.model_versions() if row[1] is not None}):
        for time_ns, name, histograms in source.drift_snapshots(version):
            yield name, version, time_ns, histograms


def _load(args: argparse.Namespace) -> int:
    """Load the local store (or spool) the options name into ClickHouse."""
    from otel_rai.clickhouse import client, load
    from otel_rai.query.local import Local

    if args.backend != "local":
        raise UsageError("export --to clickhouse reads a local store or spool (--store); --url names the ClickHouse")
    if args.format != "jsonl" or args.output:
        raise UsageError("export --to clickhouse writes no file: leave out --format and --output")
    q = query_of(args)
    connection = client.connect(args.url)
    path = store.default_path() if args.store is None else args.store
    source = store.Store(path)
    local = Local.of(source)
    spool = source.count_decisions() == 0 and source.outbox_pending() > 0
    records = query.find_spans(q, _Spool(source) if spool else local)
    include = set(args.include or ())
    enabled = args.progress if args.progress is not None else sys.stderr.isatty()
    progress = formats.Progress(None if spool or q.by_row else local.count(q), enabled=enabled,
                                after=0.0 if args.progress else 1.0, verb="loading")
    try:
        done = load.load(connection, records, progress=progress.advance,
                         groups_of=source.groups if "groups" in include else None,
                         outcomes_of=source.outcome_records if "outcomes" in include else None,
                         drift=_drift(source) if "drift" in include else ())
    finally:
        progress.close()
    extra = ((f", {done.groups:,} group values" if "groups" in include else "")
             + (f", {done.outcomes:,} outcomes" if "outcomes" in include else "")
             + (f", {done.drift_snapshots:,} drift snapshots" if "drift" in include else ""))
    note(f"loaded {done.spans:,} spans ({done.decisions:,} decisions{extra}) from {'spool ' if spool else ''}{path} "
         f"into clickhouse at {connection.where.shown}"
         + ("" if include == set(_INCLUDE) else "; groups, outcomes and drift snapshots stay local unless --include "
            "names them")
         )
    return OK


def run(args: argparse.Namespace) -> int:
    """Write the selected decisions (or their spans) to the output, or load them into ClickHouse."""
    if args.to is not None:
        return _load(args)
    q, backend = query_of(args), backend_of(args)  # arguments are checked before any I/O
    total = backend.count(q) if isinstance(backend, Countable) and not q.by_row else None
    enabled = args.progress if args.progress is not None else sys.stderr.isatty()
    progress = formats.Progress(total, enabled=enabled, after=0.0 if args.progress else 1.0)
    with output(args.output) as out:
        if args.format == "otlp-json":
            written = formats.write_otlp_json(query.find_spans(q, backend), out)
        elif args.format == "csv":
            written = formats.write_csv(query.decisions(q, backend), out)
        else:
            written = formats.write_json_lines(query.decisions(q, backend), out, full=True)
        for n in written:
            progress.advance(n)
    progress.close()
    absent = absent_model(args, q, backend) if progress.done == 0 else None
    note(f"exported {progress.done:,} decisions from {where(args)}" + (f"; {absent}" if absent else ""))
    return OK


def add_parser(sub: Any) -> None:
    """Register ``export``."""
    p = sub.add_parser("export", help="write decisions to an audit file")
    add_filter_options(p)
    add_source_options(p)
    p.add_argument("--format", choices=("csv", "jsonl", "otlp-json"), default="jsonl",
                   help="otlp-json: the OTel Collector file exporter's format, which otel-rai replay reads")
    p.add_argument("--output", "-o", metavar="FILE", help="default: stdout")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="a progress bar on stderr (default: when stderr is a terminal)")
    g = p.add_argument_group("loading into a store (instead of writing a file)")
    g.add_argument("--to", choices=("clickhouse",),
                   help="load the local store or spool (--store) into the ClickHouse at --url, into the collector "
                        "exporter's otel_traces table as the exporter writes it (docs/scale.md)")
    g.add_argument("--include", action="append", choices=_INCLUDE,
                   help="with --to: also copy the local groups (raw values of sensitive features: copy them only "
                        "to a store protected as well as this one), outcomes of the decisions or drift snapshots; "
                        "repeatable")
    p.set_defaults(func=run)
