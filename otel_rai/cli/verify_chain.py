"""``otel-rai verify-chain``: check a stored audit trail against its tamper-evident chain.

    otel-rai verify-chain                                  # the local store
    otel-rai verify-chain --backend jaeger --since 24h --checkpoint-key-file ckpt.key

What is reported: `otel_rai.chain.verify`. Exit status 0 when nothing is wrong, 3 when something is.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from otel_rai import settings
from otel_rai._time import window
from otel_rai.chain.verify import Report
from otel_rai.cli._common import (
    OK,
    UNMATCHED,
    UNWINDOWED,
    CliError,
    add_key_options,
    add_source_options,
    add_time_options,
    backend_of,
    hash_keys,
    note,
    read_text,
    where,
)
from otel_rai.query import Query
from otel_rai.query._remote import lookback
from otel_rai.query.trail import verify


def _short(text: str | None) -> str:
    return "-" if text is None else (text[:12] + "…" if len(text) > 13 else text)


def _write_text(report: Report, out: Any) -> None:
    for s in report.streams.values():
        signed = f", verified signed through seq {s.signed_through}" if s.signed else ""
        out.write(f"stream {_short(s.stream)}  seq {s.first}-{s.last}  {s.records} records, {s.decisions} "
                  f"decisions, {s.checkpoints} checkpoints{signed}\n")
    for p in report.ordered_problems():
        d = p.to_dict()
        out.write(f"{p.kind.upper():<14} stream {_short(p.stream)}  seq {p.seq if p.seq is not None else '-'}  "
                  f"span {d['span_id']}  {d['time']}  {p.detail}\n")


def _keys_of(path: str, key_files: list[str], public_keys: list[str]) -> dict[str, Any]:
    """The keys of the file `path` (given as one of the two lists), or a one-line error naming it."""
    from otel_rai.chain.keys import read_keys

    try:
        return read_keys([], key_files, public_keys)
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ImportError:
        raise CliError("--public-key needs the cryptography package (pip install 'otel-rai[signing]')") from None
    except (ValueError, TypeError) as exc:
        raise CliError(f"{path} holds no usable key ({type(exc).__name__})") from None


def run(args: argparse.Namespace) -> int:
    """Verify the chain of the selected records; exit status 3 when something is wrong."""
    start, end = window(args.since, args.start, args.end)
    backend = backend_of(args)
    from otel_rai.chain.keys import read_keys  # key derivation imports numpy: not for --help

    keys = read_keys(args.checkpoint_key or [settings.from_env("checkpoint_key") or ""], [], [])
    for path in args.checkpoint_key_file or []:  # one file at a time, so that an error names its file
        read_text(path, "checkpoint keys, one a line")
        keys.update(_keys_of(path, [path], []))
    for path in args.public_key or []:
        read_text(path, "an Ed25519 key in PEM")
        keys.update(_keys_of(path, [], [path]))
    anchored = start is not None or end is not None or args.backend not in UNWINDOWED
    if start is None and args.backend not in UNWINDOWED:  # the search a trace backend makes anyway: its edge in view
        start, _ = lookback(None, end)
    query = Query(service=args.service, start_ns=start, end_ns=end)
    # The stores that keep groups and outcomes beside the records (ClickHouse: copies, export --include).
    hashing_keys = hash_keys(args, required=False) if args.backend in ("local", "clickhouse") else []
    report = verify(backend, query, keys, anchored=anchored, require_signed=args.require_signed,
                    hash_keys=hashing_keys)
    if args.format == "json":
        sys.stdout.write(json.dumps(report.to_dict(), ensure_ascii=False) + "\n")
    else:
        _write_text(report, sys.stdout)
    summary = f"{report.records} records in {len(report.streams)} streams from {where(args)}"
    if report.duplicates:
        summary += f", {report.duplicates} delivered more than once (not a problem)"
    if report.unverified_checkpoints:
        summary += f", {report.unverified_checkpoints} signed checkpoints not verified (no key for their key id)"
    if report.unverified_local_rows:
        summary += (f", {report.unverified_local_rows} decisions' groups and outcomes not verified (give the "
                    "input hash key: --key, --key-file or OTEL_RAI_HASH_KEY)")
    if report.ok:
        note(f"chain intact: {summary}")
        return OK
    first = report.ordered_problems()[0].to_dict()
    counts = ", ".join(f"{n} {kind}" for kind, n in report.counts().items())
    note(f"chain broken: {counts}; {summary}")
    note(f"first bad record: {first['kind']}, stream {first['stream']} seq {first['seq']}, span "
              f"{first['span_id']} of trace {first['trace_id']} at {first['time']}"
              + (f", decision {first['first_decision_id']}" if first["first_decision_id"] else "")
              + f": {first['detail']}")
    return UNMATCHED


def add_parser(sub: Any) -> None:
    """Register ``verify-chain``."""
    p = sub.add_parser(
        "verify-chain", help="check the trail for edited, deleted, reordered or inserted records",
        description="Recompute every record's hash and walk each stream of the tamper-evident chain; "
        "see docs/audit-trail.md for what this proves.")
    g = p.add_argument_group("which records")
    g.add_argument("--service", metavar="S")
    add_time_options(g)
    add_source_options(p)
    k = p.add_argument_group("checkpoint keys (several may be given: each checkpoint names its key id)")
    k.add_argument("--checkpoint-key", metavar="KEY", action="append",
                   help="an HMAC key (better: --checkpoint-key-file or OTEL_RAI_CHECKPOINT_KEY)")
    k.add_argument("--checkpoint-key-file", metavar="PATH", action="append", help="HMAC keys, one per line")
    k.add_argument("--public-key", metavar="PEM", action="append", help="an Ed25519 public key (PEM)")
    add_key_options(p.add_argument_group("the input hash key, for the local store's groups and outcomes "
                                         "(as for verify)"))
    p.add_argument("--require-signed", action="store_true",
                   help="report records that no verified signed checkpoint covers")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=run)
