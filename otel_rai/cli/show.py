"""``otel-rai show``: everything recorded about one decision, with its ranked reasons."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from otel_rai import query
from otel_rai.cli import formats
from otel_rai.cli._common import (
    OK,
    CliError,
    absent_model,
    add_filter_options,
    add_source_options,
    backend_of,
    query_of,
    where,
)
from otel_rai.codec.reasons import format_reasons
from otel_rai.query import Decision


def _reasons(decision: Decision) -> str | None:
    """The explanation section: ranked reasons."""
    lines = format_reasons({**decision.attributes, **decision.values})
    return "\n".join(lines) if lines else None


#: The extra sections of a decision, in order, each text or None.
SECTIONS = (_reasons,)


def run(args: argparse.Namespace) -> int:
    """Print one decision."""
    q, backend = query_of(args, decision_ids=frozenset([args.decision_id])), backend_of(args)
    found = list(query.decisions(q, backend))
    if not found:
        absent = absent_model(args, q, backend)
        raise CliError(f"no decision {args.decision_id!r} in {where(args)}" + (f"; {absent}" if absent else ""))
    if args.format == "json":
        for _ in formats.write_json_lines(found, sys.stdout, full=True):
            pass
        return OK
    for i, d in enumerate(found):
        sections = [s for s in (make(d) for make in SECTIONS) if s]
        sys.stdout.write(("\n" if i else "") + formats.show(d, sections))
    return OK


def add_parser(sub: Any) -> None:
    """Register ``show``."""
    p = sub.add_parser("show", help="everything recorded about one decision")
    p.add_argument("decision_id", metavar="DECISION_ID")
    add_filter_options(p, rows=False)
    add_source_options(p)
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=run)
