"""What every command shares: exit statuses, one-line errors, the ``--backend``/``--since``/... options and
what they mean, and where output goes."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from typing import IO, Any, Iterator

from otel_rai import query, store
from otel_rai._time import parse_duration, parse_time, window
from otel_rai.errors import PREFIX, OtelRaiError
from otel_rai.query import Query
from otel_rai.query._remote import DEFAULT_LOOKBACK_NS

OK, FAILED, USAGE, UNMATCHED = 0, 1, 2, 3
#: Backends read without a default time window: no window means everything, as in the local store.
UNWINDOWED = ("local", "clickhouse")


class CliError(OtelRaiError):
    """A failure to report in one line (exit status 1)."""


class UsageError(CliError):
    """Arguments that do not make sense together (exit status 2)."""


class Parser(argparse.ArgumentParser):
    """One-line usage errors: the message and where help is, not the whole usage."""

    def error(self, message: str) -> None:
        """Print one line (the message and where help is) and exit with status 2."""
        self.exit(USAGE, f"{PREFIX}{message} (see {self.prog} --help)\n")


def checked(parse: Any) -> Any:
    """An argparse type that validates with `parse` and keeps the text."""

    def check(text: str) -> Any:
        try:
            parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix(PREFIX)) from None
        return text

    return check


def count(text: str) -> int:
    """An argparse type: a whole number ≥ 0."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number ≥ 0")
    return int(text)


def note(message: str) -> None:
    """One line on stderr, with the otel-rai prefix."""
    print(PREFIX + message.removeprefix(PREFIX), file=sys.stderr)


def add_source_options(p: argparse.ArgumentParser) -> None:
    """``--backend``, ``--url`` and ``--store``."""
    g = p.add_argument_group("where the decisions are")
    g.add_argument("--backend", choices=query.backends(), default="local",
                   help="default: local (the audit store)")
    g.add_argument("--url", help="the backend's URL (default: localhost :16686 jaeger, :3200 tempo, :6006 phoenix, "
                                 ":8123 clickhouse; chdb:///DIR for ClickHouse in this process)")
    g.add_argument("--store", metavar="PATH",
                   help="the local audit store (default: $OTEL_RAI_STORE, else audit.db in the data directory)")


def add_time_options(g: Any) -> None:
    """``--since`` or ``--start``, and ``--end``."""
    when = g.add_mutually_exclusive_group()
    when.add_argument("--since", metavar="DURATION", type=checked(parse_duration), help="e.g. 24h, 7d, 90m")
    when.add_argument("--start", metavar="T", type=checked(parse_time),
                      help="RFC 3339 (2026-11-24T09:00:00Z) or a date; UTC unless an offset is given")
    g.add_argument("--end", metavar="T", type=checked(parse_time), help="exclusive; default now")


def add_filter_options(p: argparse.ArgumentParser, *, rows: bool = True) -> None:
    """Which decisions: model, service, time window and, with `rows`, decision ids and input hashes."""
    g = p.add_argument_group("which decisions")
    g.add_argument("--model-version", metavar="V")
    g.add_argument("--model-name", metavar="N")
    g.add_argument("--service", metavar="S")
    add_time_options(g)
    if rows:
        g.add_argument("--decision-id", metavar="ID", action="append", help="repeatable")
        g.add_argument("--input-hash", metavar="H", action="append", help="repeatable")


def backend_of(args: argparse.Namespace) -> query.Backend:
    """The backend the source options name."""
    if args.store and args.backend != "local":
        raise UsageError(f"--store is for the local backend; give --url for {args.backend}")
    if args.url and args.backend == "local" and args.store:
        raise UsageError("give the local store as --store or --url, not both")
    backend = query.connect(args.backend, args.store or args.url)
    if args.backend not in UNWINDOWED and args.since is None and args.start is None:
        note(f"searching {args.backend} over the last {DEFAULT_LOOKBACK_NS // 86_400_000_000_000} days "
             "(give --since or --start for another window)")
    return backend


def query_of(args: argparse.Namespace, **fixed: Any) -> Query:
    """The query the filter options describe; `fixed` overrides them."""
    start, end = window(args.since, args.start, args.end)
    ids = getattr(args, "decision_id", None)
    hashes = getattr(args, "input_hash", None)
    filters: dict[str, Any] = {
        "model_version": args.model_version, "model_name": args.model_name, "service": args.service,
        "start_ns": start, "end_ns": end, "decision_ids": frozenset(ids) if ids else None,
        "input_hashes": frozenset(hashes) if hashes else None,
    }
    return Query(**{**filters, **fixed})


def where(args: argparse.Namespace) -> str:
    """The source the options name, for messages."""
    if args.backend == "local":
        return str(store.default_path() if not (args.store or args.url) else (args.store or args.url))
    default = importlib.import_module(f"otel_rai.query.{args.backend}").DEFAULT_URL
    return f"{args.backend} at {args.url or default}"


@contextlib.contextmanager
def output(path: str | None) -> Iterator[IO[str]]:
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
