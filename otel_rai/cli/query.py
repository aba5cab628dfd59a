"""``otel-rai query``: find decisions, oldest first."""

from __future__ import annotations

import argparse
import itertools
import sys
from typing import Any, Iterator

from otel_rai import query
from otel_rai.cli import formats
from otel_rai.cli._common import (
    OK,
    add_filter_options,
    add_source_options,
    backend_of,
    count,
    note,
    nothing_found,
    query_of,
)
from otel_rai.query import Decision

#: Decisions ``query`` prints unless ``--limit`` says otherwise.
DEFAULT_LIMIT = 1000


def _first(items: Iterator[Decision], limit: int, more: list[bool]) -> Iterator[Decision]:
    """The first `limit` items (all if 0); sets more[0] when there were others."""
    if not limit:
        yield from items
        return
    yield from itertools.islice(items, limit)
    more[0] = next(items, None) is not None


def run(args: argparse.Namespace) -> int:
    """Print the decisions the options select."""
    q, backend = query_of(args), backend_of(args)  # arguments are checked before any I/O
    more = [False]
    found = _first(query.decisions(q, backend), args.limit, more)
    if args.format == "table":
        written = formats.write_table(found, sys.stdout)
    elif args.format == "json":
        written = sum(formats.write_json_lines(found, sys.stdout))
    else:
        written = sum(formats.write_csv(found, sys.stdout))
    if written == 0:
        note(nothing_found(args, q, backend))
    if more[0]:
        note(f"showing the first {args.limit} decisions; give --limit N for more, or --limit 0 for all")
    return OK


def add_parser(sub: Any) -> None:
    """Register ``query``."""
    p = sub.add_parser("query", help="find decisions", description="Find decisions, oldest first.")
    add_filter_options(p)
    add_source_options(p)
    p.add_argument("--limit", type=count, default=DEFAULT_LIMIT,
                   help=f"at most N decisions (default {DEFAULT_LIMIT}; 0: all)")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table",
                   help="json: one decision per line")
    p.set_defaults(func=run)
