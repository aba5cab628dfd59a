"""What every command shares: exit statuses, one-line errors, the ``--backend``/``--since``/... options and
what they mean, and where output goes."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import IO, Any, Iterator

from otel_rai import query, settings, store
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
                                 ":8123 clickhouse; chdb:///DIR for ClickHouse in this process; "
                                 "mlflow: $MLFLOW_TRACKING_URI, else :5000)")
    g.add_argument("--store", metavar="PATH",
                   help="the local audit store (default: $OTEL_RAI_STORE, else audit.db in the data directory)")


def add_key_options(p: argparse.ArgumentParser) -> None:
    """``--key`` and ``--key-file``: the input hash keys."""
    p.add_argument("--key", action="append",
                   help="a hash key, repeatable for rotated keys (better: OTEL_RAI_HASH_KEY or --key-file; "
                   "others see command lines)")
    p.add_argument("--key-file", metavar="PATH", action="append",
                   help=f"a file of hash keys, one per line (default: $OTEL_RAI_HASH_KEY, else "
                   f"{settings.hash_key_file()})")


def hash_keys(args: argparse.Namespace, *, required: bool = True) -> list[Any]:
    """The hash keys: every --key and every line of every --key-file; else OTEL_RAI_HASH_KEY; else the
    generated key file (or one an earlier version left in the data directory). Never generated here.
    Several keys verify decisions across key rotations, each under both hash schemes (before and after
    keys were stretched). Without `required`, no key at all is an empty list, not an error."""
    from otel_rai.audit.hashing import HashKey

    materials = list(args.key or [])
    paths = list(args.key_file or [])
    if not materials and not paths:
        configured = settings.from_env("hash_key")
        if configured:
            materials.append(configured)
        else:
            default, legacy = settings.hash_key_file(), settings.legacy_hash_key_file()
            paths.append(str(legacy if not default.exists() and legacy.exists() else default))
    for path in paths:
        if not os.path.exists(path):
            if not required and not args.key_file:  # only the default file, and it is not there
                return []
            hint = "give --key or --key-file, or set OTEL_RAI_HASH_KEY"
            raise CliError(f"no hash key: {hint} ({path}: no such file)")
        materials += [line.strip() for line in read_text(path, "hash keys, one a line").splitlines() if line.strip()]
    if not materials or not all(materials):
        raise CliError("the hash key is empty" + (f" (key files: {', '.join(paths)})" if paths else ""))
    return [k for m in materials for k in HashKey.variants(m)]


def add_artifact_options(p: argparse.ArgumentParser) -> None:
    """``--artifacts``: the artifact store of the saved models."""
    p.add_argument("--artifacts", metavar="DIR|URL",
                   help="the artifact store (default: $OTEL_RAI_ARTIFACTS, else the artifacts directory beside "
                   "the local audit store)")


def artifact_store(args: argparse.Namespace) -> Any:
    """The `ArtifactStore` the options name."""
    from otel_rai.provenance import artifacts

    given = args.artifacts or settings.from_env("artifacts")
    if isinstance(given, str):
        return artifacts.ArtifactStore(given)
    local = args.store or (args.url if args.backend == "local" else None)
    path = store.default_path() if local is None else Path(local).expanduser()
    return artifacts.ArtifactStore(artifacts.default_location(path))


def add_time_options(g: Any) -> None:
    """``--since`` or ``--start``, and ``--end``."""
    when = g.add_mutually_exclusive_group()
    when.add_argument("--since", metavar="DURATION", type=checked(parse_duration), help="e.g. 24h, 7d, 90m")
    when.add_argument("--start", metavar="T", type=checked(parse_time),
                      help="RFC 3339 (2026-11-24T09:00:00Z) or a date; UTC unless an offset is given")
    g.add_argument("--end", metavar="T", type=checked(parse_time), help="exclusive; default now")


def add_filter_options(p: argparse.ArgumentParser, *, rows: bool = True, several_versions: bool = False) -> None:
    """Which decisions: model, service, time window and, with `rows`, decision ids and input hashes. With
    `several_versions`, ``--model-version`` is repeatable (a list)."""
    g = p.add_argument_group("which decisions")
    if several_versions:
        g.add_argument("--model-version", metavar="V", action="append", help="repeatable: compare versions")
    else:
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


def absent_model(args: argparse.Namespace, q: Query, backend: query.Backend) -> str | None:
    """When the options name a model version or name that `backend` holds no decision of in the window:
    which, and the versions it does hold there (for messages about an empty result)."""
    from otel_rai.query import catalog

    version, name = getattr(args, "model_version", None), getattr(args, "model_name", None)
    if version is None and name is None:
        return None
    held = catalog.versions(replace(q, model_version=None, model_name=None), backend)
    if any(version in (None, v.model_version) and name in (None, v.model_name) for v in held):
        return None
    asked = " ".join(f"{label} {value!r}" for label, value in (("model", name), ("version", version)) if value)
    return f"no decisions of {asked} there; versions there: {catalog.described(held)}"


def nothing_found(args: argparse.Namespace, q: Query, backend: query.Backend) -> str:
    """The message of an empty result: where was looked, and what model versions are there instead."""
    absent = absent_model(args, q, backend)
    return f"no decisions match in {where(args)}" + (f"; {absent}" if absent else "")


def where(args: argparse.Namespace) -> str:
    """The source the options name, for messages."""
    if args.backend == "local":
        return str(store.default_path() if not (args.store or args.url) else (args.store or args.url))
    default = importlib.import_module(f"otel_rai.query.{args.backend}").DEFAULT_URL
    return f"{args.backend} at {args.url or default}"


def read_text(path: str, what: str) -> str:
    """The UTF-8 text of the file `path` (`what` it should hold, for messages); a one-line `CliError`
    naming the file when it cannot be read, is not UTF-8, or holds nothing."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CliError(f"{path} is not UTF-8 text (byte {exc.start} cannot be decoded); expected {what}") from None
    if not text.strip():
        raise CliError(f"{path} is empty; expected {what}")
    return text


@contextlib.contextmanager
def output(path: str | None) -> Iterator[IO[str]]:
    """stdout, or a file readable by its owner only (an audit file is sensitive): created 0600, and an
    existing file is truncated and set to 0600 before anything is written to it."""
    if path is None or path == "-":
        yield sys.stdout
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        if hasattr(os, "fchmod"):  # not on Windows
            os.fchmod(fd, 0o600)
    except OSError as exc:
        os.close(fd)
        raise CliError(f"cannot make {path} private: {exc.strerror or exc}") from None
    with open(fd, "w", encoding="utf-8", newline="") as f:
        yield f
