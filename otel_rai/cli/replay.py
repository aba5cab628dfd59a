"""``otel-rai replay``: send an otlp-json export (or an audit store) to an OTLP endpoint."""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
from typing import Any, Iterator

from otel_rai import semconv, settings
from otel_rai.audit import ui
from otel_rai.cli import formats
from otel_rai.cli._common import OK, CliError, UsageError, note
from otel_rai.codec import otlpjson
from otel_rai.codec.records import ERROR, SpanRecord
from otel_rai.errors import PREFIX
from otel_rai.store import Store

DESCRIPTION = (
    "Send the spans of FILE, in order, to an OTLP endpoint. FILE must be OTLP JSON lines (otel-rai export "
    "--format otlp-json, or what the OTel Collector's file exporter writes) or an audit store; anything else "
    "is refused, naming what was found. A file without a span, or an endpoint that does not take the spans, "
    "is a failure (exit status 1). Decision spans get the trace-UI attributes (span kind, input, output) a "
    "local store leaves out."
)
#: What replay reads, for messages.
NEEDED = "OTLP JSON lines (otel-rai export --format otlp-json) or an audit store"
#: Keys of the objects `otel-rai export --format jsonl` writes, one decision a line.
_DECISION_KEYS = frozenset({"decision_id", "model_version", "input_hash"})


def _found(line: str) -> str:
    """What a line that is not OTLP JSON looks like, for the refusal."""
    try:
        value = json.loads(line)
    except ValueError:
        if "," in line and not line.lstrip().startswith(("{", "[")):
            return "CSV (otel-rai export --format csv)"
        return "text that is not JSON"
    if isinstance(value, dict):
        if _DECISION_KEYS <= value.keys():
            return "decisions as JSON lines (otel-rai export --format jsonl, the default)"
        keys = ", ".join(sorted(map(str, value))[:5])
        return f"a JSON object without resourceSpans (keys: {keys})" if keys else "an empty JSON object"
    return f"a JSON {type(value).__name__.replace('dict', 'object').replace('list', 'array')}"


def _otlp_lines(path: str) -> Iterator[SpanRecord]:
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    data = json.loads(line)
                except ValueError:
                    data = None
                if not isinstance(data, dict) or not ({"resourceSpans", "batches"} & data.keys()):
                    raise CliError(f"{path}, line {number}: found {_found(line)}; replay needs {NEEDED}")
                try:
                    yield from otlpjson.decode(data)
                except ValueError as exc:
                    reason = str(exc).removeprefix(PREFIX)
                    raise CliError(f"{path}, line {number}: not OTLP JSON trace data ({reason})") from None
    except UnicodeDecodeError:
        raise CliError(f"{path} is not UTF-8 text (a binary file?); replay needs {NEEDED}") from None
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None


def _records(path: str) -> Iterator[SpanRecord]:
    """The spans of an OTLP JSON lines file, or of an audit store. The file's format and first span are
    checked now: a file without one is an error."""
    try:
        with open(path, "rb") as f:
            header = f.read(16)
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
    spans = Store(path).spans() if header == b"SQLite format 3\x00" else _otlp_lines(path)
    first = next(spans, None)
    if first is None:
        raise CliError(f"{path} {'is empty' if not header else 'holds no span'}: nothing to replay")
    return itertools.chain([first], spans)


def for_trace_uis(r: SpanRecord) -> SpanRecord:
    """The record with the trace-UI view a local store leaves out (`otel_rai.audit.ui`): its kind, input
    and output, and the service as the Phoenix project. Derived from the ``ml.*`` attributes, which the
    chain covers; the view is not hashed, so the chain still verifies."""
    error = r.status_message.partition(":")[0] if r.status_code == ERROR else None
    view = ui.view_of(r.attributes, error)
    resource = r.resource
    if semconv.UI_PROJECT_NAME not in resource and semconv.SERVICE_NAME in resource:
        resource = {**resource, semconv.UI_PROJECT_NAME: resource[semconv.SERVICE_NAME]}
    if not view and resource is r.resource:
        return r
    return dataclasses.replace(r, attributes={**r.attributes, **view}, resource=resource)


def _endpoint(args: argparse.Namespace) -> str:
    endpoint = (args.endpoint or settings.env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                or settings.env("OTEL_EXPORTER_OTLP_ENDPOINT"))
    if not endpoint:
        raise UsageError("give the OTLP endpoint: --endpoint URL, or set OTEL_EXPORTER_OTLP_ENDPOINT")
    return endpoint


def run(args: argparse.Namespace) -> int:
    """Send every span of the file, in batches, and fail on the first batch the endpoint refuses."""
    from opentelemetry.sdk.trace.export import SpanExportResult

    from otel_rai.codec.sdk import ReadableSpans
    from otel_rai.sinks import base, otlp

    endpoint = _endpoint(args)
    spans = _records(args.file)  # the file is checked before anything connects
    try:
        exporter = otlp.otlp_exporter_factory(endpoint, args.protocol, args.headers)()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    to_span = ReadableSpans()
    sent = 0
    progress = formats.Progress(None, enabled=sys.stderr.isatty(), verb="replaying", noun="spans")
    try:
        readable = (to_span(for_trace_uis(r)) for r in spans)
        for batch in base.batches(readable, otlp.MAX_BATCH_SPANS, otlp.MAX_BATCH_ROWS):
            if exporter.export(batch) != SpanExportResult.SUCCESS:
                raise CliError(f"{endpoint} did not take the spans (unreachable?); {sent} spans were replayed")
            sent += len(batch)
            progress.advance(len(batch))
    finally:
        progress.close()
        exporter.shutdown()
    note(f"replayed {sent:,} spans to {endpoint}")
    return OK


def add_parser(sub: Any) -> None:
    """Register ``replay``."""
    p = sub.add_parser("replay", help="send an otlp-json export (or an audit store) to an OTLP endpoint",
                       description=DESCRIPTION)
    p.add_argument("file", metavar="FILE")
    p.add_argument("--endpoint", metavar="URL",
                   help="e.g. http://localhost:4317 (default: $OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, else "
                        "$OTEL_EXPORTER_OTLP_ENDPOINT)")
    p.add_argument("--protocol", choices=settings.PROTOCOLS,
                   help="default: $OTEL_EXPORTER_OTLP_PROTOCOL, else grpc")
    p.add_argument("--headers", metavar="K=V,...", help="default: $OTEL_EXPORTER_OTLP_HEADERS")
    p.set_defaults(func=run)
