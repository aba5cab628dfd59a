"""``otel-rai export``: write decisions to an audit file."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from otel_rai import query
from otel_rai.cli import formats
from otel_rai.cli._common import (
    OK,
    absent_model,
    add_filter_options,
    add_source_options,
    backend_of,
    note,
    output,
    query_of,
    where,
)
from otel_rai.query import Countable


def run(args: argparse.Namespace) -> int:
    """Write the selected decisions (or their spans) to the output."""
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
    p.set_defaults(func=run)
