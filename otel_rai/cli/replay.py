"""``otel-rai replay``: send an otlp-json export (or an audit store) to an OTLP endpoint."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Iterator

from otel_rai import settings
from otel_rai.cli import formats
from otel_rai.cli._common import OK, CliError, UsageError, note
from otel_rai.codec import otlpjson
from otel_rai.codec.records import SpanRecord
from otel_rai.errors import PREFIX
from otel_rai.store import Store


def _records(path: str) -> Iterator[SpanRecord]:
    """The spans of an OTLP JSON lines file, or of an audit store."""
    try:
        with open(path, "rb") as f:
            header = f.read(16)
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
    if header == b"SQLite format 3\x00":
        yield from Store(path).spans()
        return
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield from otlpjson.decode(json.loads(line))
            except ValueError as exc:
                reason = str(exc).removeprefix(PREFIX)
                raise CliError(f"{path}, line {number}: not OTLP JSON trace data ({reason})") from None


def run(args: argparse.Namespace) -> int:
    """Send every span of the file, in batches, and fail on the first batch the endpoint refuses."""
    from opentelemetry.sdk.trace.export import SpanExportResult

    from otel_rai.codec.sdk import ReadableSpans
    from otel_rai.sinks import base, otlp

    try:
        exporter = otlp.otlp_exporter_factory(args.endpoint, args.protocol, args.headers)()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    to_span = ReadableSpans()
    sent = 0
    progress = formats.Progress(None, enabled=sys.stderr.isatty(), verb="replaying", noun="spans")
    try:
        spans = (to_span(r) for r in _records(args.file))
        for batch in base.batches(spans, otlp.MAX_BATCH_SPANS, otlp.MAX_BATCH_ROWS):
            if exporter.export(batch) != SpanExportResult.SUCCESS:
                raise CliError(
                    f"{args.endpoint} did not take the spans (unreachable?); {sent} spans were replayed"
                )
            sent += len(batch)
            progress.advance(len(batch))
    finally:
        progress.close()
        exporter.shutdown()
    note(f"replayed {sent:,} spans to {args.endpoint}")
    return OK


def add_parser(sub: Any) -> None:
    """Register ``replay``."""
    p = sub.add_parser("replay", help="send an otlp-json export (or an audit store) to an OTLP endpoint")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--endpoint", required=True, metavar="URL", help="e.g. http://localhost:4317")
    p.add_argument("--protocol", choices=settings.PROTOCOLS,
                   help="default: $OTEL_EXPORTER_OTLP_PROTOCOL, else grpc")
    p.add_argument("--headers", metavar="K=V,...", help="default: $OTEL_EXPORTER_OTLP_HEADERS")
    p.set_defaults(func=run)
