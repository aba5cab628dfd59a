"""``otel-rai spool status|export``: the spans waiting in spool files for an OTLP endpoint.

A spool holds the decisions of an OTLP-exporting process until its endpoint takes them; the next
process exporting to the same destination sends what is left (docs/audit-trail.md). When none will
(the endpoint moved, the service is gone), status lists what is waiting and where it was going, and
export sends it, to its own endpoint or to --endpoint.

    otel-rai spool status
    otel-rai spool export --endpoint http://collector:4317
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from otel_rai import settings
from otel_rai.cli._common import FAILED, OK, CliError, UsageError, note
from otel_rai.errors import OtelRaiError
from otel_rai.store import Store

#: The file names of the spools otel-rai makes in its data directory (`sinks.destination.spool_name`).
SPOOL_PATTERN = "spool-*.db"


def _spools(args: argparse.Namespace) -> list[Path]:
    if args.files:
        return [Path(f).expanduser() for f in args.files]
    return sorted(settings.data_dir().glob(SPOOL_PATTERN))


def _describe(path: Path) -> dict[str, Any]:
    """What waits in one spool: spans, decisions, destination, and whether a process exports it now."""
    from otel_rai.sinks import destination
    from otel_rai.sinks.local import StoreOutbox

    store = Store(path)
    try:
        spans, decisions = store.outbox_totals()
        meta = store.meta()
        busy = StoreOutbox(store).exported_elsewhere()
    finally:
        store.close()
    return {"path": str(path), "spans": spans, "decisions": decisions, "bytes": os.path.getsize(path),
            "destination": meta.get(destination.META_DESTINATION),
            "endpoint": meta.get(destination.META_ENDPOINT), "exporting": busy}


def status(args: argparse.Namespace) -> int:
    """One line per spool: what waits in it and where it goes."""
    from otel_rai.cli import formats

    spools = _spools(args)
    if not spools:
        note(f"no spool files in {settings.data_dir()}")
        return OK
    failed = False
    rows = []
    for path in spools:
        try:
            rows.append(_describe(path))
        except OtelRaiError as exc:
            note(str(exc))
            failed = True
    if args.format == "json":
        for row in rows:
            sys.stdout.write(formats.dumps(row) + "\n")
    else:
        print(f"{'SPANS':>8}  {'DECISIONS':>10}  {'SIZE':>9}  {'STATE':<10}  {'ENDPOINT':<32}  FILE")
        for r in rows:
            state = "exporting" if r["exporting"] else ("waiting" if r["spans"] else "empty")
            endpoint = r["endpoint"] or "unknown (an older otel-rai)"
            print(f"{r['spans']:>8,}  {r['decisions']:>10,}  {r['bytes'] / 1e6:>7.1f}MB  {state:<10}  "
                  f"{endpoint:<32}  {r['path']}")
    return FAILED if failed else OK


def export(args: argparse.Namespace) -> int:
    """Send the spans waiting in each spool, in order; a spool another process is exporting is left to it."""
    sent_total, failures = 0, 0
    for path in _spools(args):
        try:
            sent_total += _export_one(path, args)
        except OtelRaiError as exc:
            note(str(exc))
            failures += 1
    if failures:
        return FAILED
    note(f"exported {sent_total:,} spans")
    return OK


def _export_one(path: Path, args: argparse.Namespace) -> int:
    from opentelemetry.sdk.trace.export import SpanExportResult

    from otel_rai.sinks import destination, otlp
    from otel_rai.sinks.local import StoreOutbox

    store = Store(path)
    outbox = StoreOutbox(store, forget=True)
    try:
        waiting, _ = store.outbox_totals()
        if not waiting:
            return 0
        meta = store.meta()
        endpoint = args.endpoint or meta.get(destination.META_ENDPOINT)
        if not endpoint:
            raise UsageError(f"{path} does not say where its spans go (an older otel-rai wrote it); "
                             "give --endpoint URL")
        # The protocol the spool was written for, unless told otherwise: its identity starts with it.
        protocol = args.protocol or (meta.get(destination.META_DESTINATION) or "").partition(" ")[0] or None
        if not outbox.hold():
            raise CliError(f"{path} is being exported by another process; it sends these {waiting:,} spans")
        try:
            exporter = otlp.otlp_exporter_factory(endpoint, protocol, args.headers)()
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        sent = 0
        try:
            while batch := outbox.take(otlp.MAX_BATCH_SPANS, otlp.MAX_BATCH_ROWS):
                if exporter.export(batch) != SpanExportResult.SUCCESS:
                    raise CliError(f"{endpoint} did not take the spans of {path} (unreachable?); {sent:,} of "
                                   f"{waiting:,} spans were sent, the rest stay in the spool")
                outbox.done()
                sent += len(batch)
        finally:
            exporter.shutdown()
        note(f"sent {sent:,} spans of {path} to {endpoint}")
        return sent
    finally:
        outbox.release()
        store.close()


def add_parser(sub: Any) -> None:
    """Register ``spool`` and its commands."""
    parser = sub.add_parser("spool", help="spans waiting in spool files for an OTLP endpoint: status, export",
                            description=__doc__.split("\n\n")[1].replace("\n", " "))
    commands = parser.add_subparsers(dest="spool_command", metavar="COMMAND", required=True,
                                     parser_class=type(parser))
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("files", nargs="*", metavar="FILE",
                       help=f"spool files (default: every {SPOOL_PATTERN} in the data directory, "
                            f"{settings.data_dir()})")
    shown = commands.add_parser("status", parents=[where], help="what waits in each spool, and where it goes")
    shown.add_argument("--format", choices=("table", "json"), default="table")
    shown.set_defaults(func=status)
    sent = commands.add_parser("export", parents=[where], help="send what waits, in order, and remove it")
    sent.add_argument("--endpoint", metavar="URL",
                      help="where to send (default: the endpoint the spool was written for)")
    sent.add_argument("--protocol", choices=settings.PROTOCOLS, help="default: the one the spool was written for")
    sent.add_argument("--headers", metavar="K=V,...", help="default: $OTEL_EXPORTER_OTLP_HEADERS")
    sent.set_defaults(func=export)
