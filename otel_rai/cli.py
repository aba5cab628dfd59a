"""``otel-rai``: the audit trail from the command line.

    otel-rai query --model-version 1.4.2 --since 24h
    otel-rai show A-1093
    otel-rai verify --input applicants.csv
    otel-rai export --format otlp-json --output audit.jsonl
    otel-rai replay audit.jsonl --endpoint http://localhost:4317

Other modules add subcommands by being listed in `EXTENSIONS`. Such a module defines
``add_parser(subparsers)``, which adds its parser and sets ``func=`` to a function that takes the
parsed arguments and returns the exit status; it may also define ``show_section(decision) -> str | None``,
an extra section of ``otel-rai show``. `add_source_options`, `add_filter_options`, `backend_of` and
`query_of` give an extension the same ``--backend``/``--since``/... options and their meaning.
Errors are one line on stderr (``--debug`` adds the traceback).

Exit status: 0 success (an empty result is a success), 1 failure (an unreachable backend, an unusable
store or file), 2 bad usage, 3 ``verify`` found input rows that match no decision.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import itertools
import json
import logging
import os
import sys
from types import ModuleType
from typing import IO, Any, Iterator, Sequence

from opentelemetry.sdk.trace.export import SpanExportResult

from otel_rai import export, formats, otlpjson, query, semconv, store, verify
from otel_rai.hashing import HashKey, key_file
from otel_rai.query import Countable, Decision, Query
from otel_rai.query._remote import DEFAULT_LOOKBACK_NS
from otel_rai.query._time import parse_duration, parse_time, window
from otel_rai.records import ReadableSpans, SpanRecord

#: Modules that add subcommands (see the module docstring).
EXTENSIONS: tuple[str, ...] = ("otel_rai.stack", "otel_rai.report", "otel_rai.explanations.reasons",
                               "otel_rai.chaincheck")

OK, FAILED, USAGE, UNMATCHED = 0, 1, 2, 3
DEFAULT_LIMIT = 1000


class CliError(Exception):
    """A failure to report in one line (exit status 1)."""


class UsageError(CliError):
    """Arguments that do not make sense together (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + message
        self.exit(USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _checked(parse: Any) -> Any:
    def check(text: str) -> Any:
        try:
            parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text

    return check


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number ≥ 0")
    return int(text)


# --- shared options ------------------------------------------------------------------------------


def add_source_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("where the decisions are")
    g.add_argument("--backend", choices=query.backends(), default="local",
                   help="default: local (the audit store)")
    g.add_argument("--url", help="the backend's URL (default: localhost :16686 jaeger, :3200 tempo, :6006 phoenix)")
    g.add_argument("--store", metavar="PATH",
                   help="the local audit store (default: $OTEL_RAI_STORE, else audit.db in the data directory)")


def add_filter_options(p: argparse.ArgumentParser, *, rows: bool = True) -> None:
    g = p.add_argument_group("which decisions")
    g.add_argument("--model-version", metavar="V")
    g.add_argument("--model-name", metavar="N")
    g.add_argument("--service", metavar="S")
    when = g.add_mutually_exclusive_group()
    when.add_argument("--since", metavar="DURATION", type=_checked(parse_duration), help="e.g. 24h, 7d, 90m")
    when.add_argument("--start", metavar="T", type=_checked(parse_time),
                      help="RFC 3339 (2026-11-24T09:00:00Z) or a date; UTC unless an offset is given")
    g.add_argument("--end", metavar="T", type=_checked(parse_time), help="exclusive; default now")
    if rows:
        g.add_argument("--decision-id", metavar="ID", action="append", help="repeatable")
        g.add_argument("--input-hash", metavar="H", action="append", help="repeatable")


def backend_of(args: argparse.Namespace) -> query.Backend:
    if args.store and args.backend != "local":
        raise UsageError(f"--store is for the local backend; give --url for {args.backend}")
    if args.url and args.backend == "local" and args.store:
        raise UsageError("give the local store as --store or --url, not both")
    backend = query.connect(args.backend, args.store or args.url)
    if args.backend != "local" and args.since is None and args.start is None:
        _note(f"searching {args.backend} over the last {DEFAULT_LOOKBACK_NS // 86_400_000_000_000} days "
              "(give --since or --start for another window)")
    return backend


def query_of(args: argparse.Namespace, **fixed: Any) -> Query:
    start, end = window(args.since, args.start, args.end)
    ids = getattr(args, "decision_id", None)
    hashes = getattr(args, "input_hash", None)
    filters: dict[str, Any] = {
        "model_version": args.model_version, "model_name": args.model_name, "service": args.service,
        "start_ns": start, "end_ns": end, "decision_ids": frozenset(ids) if ids else None,
        "input_hashes": frozenset(hashes) if hashes else None,
    }
    return Query(**{**filters, **fixed})


def _note(message: str) -> None:
    print(f"otel-rai: {message}", file=sys.stderr)


def _where(args: argparse.Namespace) -> str:
    if args.backend == "local":
        return str(store.default_path() if not (args.store or args.url) else (args.store or args.url))
    default = importlib.import_module(f"otel_rai.query.{args.backend}").DEFAULT_URL
    return f"{args.backend} at {args.url or default}"


@contextlib.contextmanager
def _output(path: str | None) -> Iterator[IO[str]]:
    """stdout, or a new file readable by its owner only (an audit file is sensitive)."""
    if path is None or path == "-":
        yield sys.stdout
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror or exc}") from None
    with open(fd, "w", encoding="utf-8", newline="") as f:
        yield f


# --- query ---------------------------------------------------------------------------------------


def _first(items: Iterator[Decision], limit: int, more: list[bool]) -> Iterator[Decision]:
    """The first `limit` items (all if 0); sets more[0] when there were others."""
    if not limit:
        yield from items
        return
    yield from itertools.islice(items, limit)
    more[0] = next(items, None) is not None


def cmd_query(args: argparse.Namespace) -> int:
    q, backend = query_of(args), backend_of(args)  # arguments are checked before any I/O
    more = [False]
    found = _first(query.decisions(q, backend), args.limit, more)
    if args.format == "table":
        if formats.write_table(found, sys.stdout) == 0:
            _note(f"no decisions match in {_where(args)}")
    elif args.format == "json":
        for _ in formats.write_json_lines(found, sys.stdout):
            pass
    else:
        for _ in formats.write_csv(found, sys.stdout):
            pass
    if more[0]:
        _note(f"showing the first {args.limit} decisions; give --limit N for more, or --limit 0 for all")
    return OK


# --- show ----------------------------------------------------------------------------------------


def _extensions() -> list[ModuleType]:
    return [importlib.import_module(name) for name in EXTENSIONS]


def cmd_show(args: argparse.Namespace) -> int:
    q = query_of(args, decision_ids=frozenset([args.decision_id]))
    found = list(query.decisions(q, backend_of(args)))
    if not found:
        raise CliError(f"no decision {args.decision_id!r} in {_where(args)}")
    if args.format == "json":
        for _ in formats.write_json_lines(found, sys.stdout, full=True):
            pass
        return OK
    section_makers = [m.show_section for m in _extensions() if hasattr(m, "show_section")]
    for i, d in enumerate(found):
        sections = [s for s in (make(d) for make in section_makers) if s]
        sys.stdout.write(("\n" if i else "") + formats.show(d, sections))
    return OK


# --- verify --------------------------------------------------------------------------------------


def _keys(args: argparse.Namespace) -> list[HashKey]:
    """The hash keys: every --key and every line of every --key-file; else OTEL_RAI_HASH_KEY; else the
    generated key file. Never generated here. Several keys verify decisions across key rotations."""
    materials = list(args.key or [])
    paths = list(args.key_file or [])
    if not materials and not paths:
        if os.environ.get("OTEL_RAI_HASH_KEY"):
            materials.append(os.environ["OTEL_RAI_HASH_KEY"])
        else:
            paths.append(str(key_file()))
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                materials += [line.strip() for line in f if line.strip()]
        except OSError as exc:
            reason = f"{path}: {exc.strerror or exc}"
            hint = "give --key or --key-file, or set OTEL_RAI_HASH_KEY"
            raise CliError(f"no hash key: {hint} ({reason})") from None
    if not materials or not all(materials):
        raise CliError("the hash key is empty")
    return [HashKey.from_material(m) for m in materials]


def cmd_verify(args: argparse.Namespace) -> int:
    q, backend = query_of(args), backend_of(args)  # arguments are checked before any I/O
    keys = _keys(args)
    features = None
    if args.model_version or args.model_name:  # put named columns in the order that model recorded
        first = next(query.decisions(q, backend, 1), None)
        if first is not None:
            features = first.attributes.get(semconv.INPUT_FEATURES)
    matches = verify.match(verify.read_rows(args.input, features), keys, q, backend)
    if args.format == "json":
        for m in matches:
            sys.stdout.write(formats.dumps({"row": m.row, "input_hash": m.input_hash,
                                            "decisions": [d.to_dict() for d in m.decisions]}) + "\n")
    else:
        print(f"{'ROW':>5}  {'INPUT HASH':<32}  {'DECISION':<34}  {'MODEL':<24}  {'TIME (UTC)':<23}  OUTPUT")
        for m in matches:
            for d in m.decisions or [None]:
                if d is None:
                    print(f"{m.row:>5}  {m.input_hash:<32}  {'- no decision -':<34}")
                else:
                    model = f"{d.model_name} {d.model_version}"
                    print(f"{m.row:>5}  {m.input_hash:<32}  {d.decision_id:<34}  {model:<24}  "
                          f"{d.timestamp[:23].replace('T', ' '):<23}  {d.output}")
    matched = sum(1 for m in matches if m.decisions)
    ids = ", ".join(k.key_id for k in keys)
    _note(f"{matched} of {len(matches)} input rows match a decision (hash key id{'s' if len(keys) > 1 else ''} {ids})")
    return OK if matched == len(matches) else UNMATCHED


# --- export --------------------------------------------------------------------------------------


def cmd_export(args: argparse.Namespace) -> int:
    q, backend = query_of(args), backend_of(args)  # arguments are checked before any I/O
    total = backend.count(q) if isinstance(backend, Countable) and not q.by_row else None
    enabled = args.progress if args.progress is not None else sys.stderr.isatty()
    progress = formats.Progress(total, enabled=enabled, after=0.0 if args.progress else 1.0)
    with _output(args.output) as out:
        if args.format == "otlp-json":
            written = formats.write_otlp_json(query.find_spans(q, backend), out)
        elif args.format == "csv":
            written = formats.write_csv(query.decisions(q, backend), out)
        else:
            written = formats.write_json_lines(query.decisions(q, backend), out, full=True)
        for n in written:
            progress.advance(n)
    progress.close()
    _note(f"exported {progress.done:,} decisions from {_where(args)}")
    return OK


# --- replay --------------------------------------------------------------------------------------


def _records(path: str) -> Iterator[SpanRecord]:
    """The spans of an OTLP JSON lines file, or of an audit store."""
    try:
        with open(path, "rb") as f:
            header = f.read(16)
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
    if header == b"SQLite format 3\x00":
        yield from store.Store(path).spans()
        return
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield from otlpjson.decode(json.loads(line))
            except ValueError as exc:
                raise CliError(f"{path}, line {number}: not OTLP JSON trace data ({exc})") from None


def cmd_replay(args: argparse.Namespace) -> int:
    try:
        exporter = export.otlp_exporter_factory(args.endpoint, args.protocol, args.headers)()
    except ValueError as exc:
        raise UsageError(str(exc).removeprefix("otel-rai: ")) from None
    to_span = ReadableSpans()
    sent = 0
    progress = formats.Progress(None, enabled=sys.stderr.isatty(), verb="replaying", noun="spans")
    try:
        spans = (to_span(r) for r in _records(args.file))
        for batch in export.batches(spans, export.MAX_BATCH_SPANS, export.MAX_BATCH_ROWS):
            if exporter.export(batch) != SpanExportResult.SUCCESS:
                raise CliError(
                    f"{args.endpoint} did not take the spans (unreachable?); {sent} spans were replayed"
                )
            sent += len(batch)
            progress.advance(len(batch))
    finally:
        progress.close()
        exporter.shutdown()
    _note(f"replayed {sent:,} spans to {args.endpoint}")
    return OK


# --- the parser ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="otel-rai",
                     description="The otel-rai audit trail: find, show, verify and export decisions.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and library logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)

    p = sub.add_parser("query", help="find decisions", description="Find decisions, oldest first.")
    add_filter_options(p)
    add_source_options(p)
    p.add_argument("--limit", type=_count, default=DEFAULT_LIMIT,
                   help=f"at most N decisions (default {DEFAULT_LIMIT}; 0: all)")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table",
                   help="json: one decision per line")
    p.set_defaults(func=cmd_query)

    p = sub.add_parser("show", help="everything recorded about one decision")
    p.add_argument("decision_id", metavar="DECISION_ID")
    add_filter_options(p, rows=False)
    add_source_options(p)
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("verify", help="which decisions were made on these inputs?",
                       description="Hash each input row with the key and report the decisions it matches. "
                       + (verify.__doc__ or "").split("\n\n", 1)[1].replace("`", ""))
    p.add_argument("--input", required=True, metavar="FILE", help=".json, .jsonl or .csv")
    p.add_argument("--key", action="append",
                   help="a hash key, repeatable for rotated keys (better: OTEL_RAI_HASH_KEY or --key-file; "
                   "others see command lines)")
    p.add_argument("--key-file", metavar="PATH", action="append",
                   help=f"a file of hash keys, one per line (default: $OTEL_RAI_HASH_KEY, else {key_file()})")
    add_filter_options(p, rows=False)
    add_source_options(p)
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("export", help="write decisions to an audit file")
    add_filter_options(p)
    add_source_options(p)
    p.add_argument("--format", choices=("csv", "jsonl", "otlp-json"), default="jsonl",
                   help="otlp-json: the OTel Collector file exporter's format, for `otel-rai replay`")
    p.add_argument("--output", "-o", metavar="FILE", help="default: stdout")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="a progress bar on stderr (default: when stderr is a terminal)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("replay", help="send an otlp-json export (or an audit store) to an OTLP endpoint")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--endpoint", required=True, metavar="URL", help="e.g. http://localhost:4317")
    p.add_argument("--protocol", choices=export.PROTOCOLS,
                   help="default: $OTEL_EXPORTER_OTLP_PROTOCOL, else grpc")
    p.add_argument("--headers", metavar="K=V,...", help="default: $OTEL_EXPORTER_OTLP_HEADERS")
    p.set_defaults(func=cmd_replay)

    for module in _extensions():
        if hasattr(module, "add_parser"):
            module.add_parser(sub)
    return parser


class _OneLine(logging.Formatter):
    """Library warnings as one line each: no traceback unless --debug."""

    def format(self, record: logging.LogRecord) -> str:
        return "otel-rai: " + record.getMessage().removeprefix("otel-rai: ")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already reported in one line
        return int(exc.code or 0)
    handler = logging.StreamHandler(sys.stderr)
    if not args.debug:  # libraries log each failed attempt; the command reports the outcome
        handler.setFormatter(_OneLine())
        handler.setLevel(logging.ERROR)
        handler.addFilter(lambda record: record.name.startswith("otel_rai"))
    logging.getLogger().addHandler(handler)
    try:
        return args.func(args)
    except UsageError as exc:
        _note(str(exc))
        return USAGE
    except (CliError, store.StoreError, query.BackendError, verify.InputError, otlpjson.OtlpJsonError) as exc:
        _note(str(exc))
        return FAILED
    except ValueError as exc:  # arguments the query layer rejected
        if args.debug:
            raise
        _note(str(exc))
        return USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away, e.g. `| head`
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return OK
    except Exception as exc:
        if args.debug:
            raise
        _note(f"internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)")
        return FAILED
    finally:
        logging.getLogger().removeHandler(handler)


if __name__ == "__main__":
    sys.exit(main())
