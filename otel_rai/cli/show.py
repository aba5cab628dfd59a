"""``otel-rai show``: everything recorded about one decision, with its model record and ranked reasons."""

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


def _model_record(record: Any) -> str:
    """The model record section: which record the decision links to, and the model's key parameters."""
    if record is None:
        return "Model record: none found for this fingerprint (see docs/model-records.md)"
    lines = [f"Model record: {record.qualified_class}, recorded {record.timestamp} "
             f"(stream {record.stream} seq {record.seq})"]
    parameters = record.key_parameters()
    if parameters:
        lines.append("  key parameters: " + ", ".join(f"{k}={formats.dumps(v)}" for k, v in parameters.items()))
    if record.training:
        lines.append(f"  trained on {record.training.get('rows')} rows (training hash {record.training.get('hash')})")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Print one decision."""
    from otel_rai.provenance import lookup

    q, backend = query_of(args, decision_ids=frozenset([args.decision_id])), backend_of(args)
    found = list(query.decisions(q, backend))
    if not found:
        absent = absent_model(args, q, backend)
        raise CliError(f"no decision {args.decision_id!r} in {where(args)}" + (f"; {absent}" if absent else ""))
    records = [lookup.record_of(d, backend, q.start_ns) for d in found]
    if args.format == "json":
        for d, record in zip(found, records):
            linked = None if record is None else {
                "fingerprint": record.fingerprint, "class": record.qualified_class, "time": record.timestamp,
                "stream": record.stream, "seq": record.seq, "key_parameters": record.key_parameters()}
            sys.stdout.write(formats.dumps({**d.to_dict(full=True), "model_record": linked}) + "\n")
        return OK
    for i, (d, record) in enumerate(zip(found, records)):
        sections = [_model_record(record)] + [s for s in (make(d) for make in SECTIONS) if s]
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
