"""``otel-rai verify-chain``: check a stored audit trail against its tamper-evident chain (`otel_rai.chain`).

    otel-rai verify-chain                                  # the local store
    otel-rai verify-chain --backend jaeger --since 24h --checkpoint-key-file ckpt.key

Each record is recomputed and each stream walked in sequence order. What is reported:

* **edited**: a record whose content no longer matches its record hash, or one rewritten with a new
  hash (the next record committed to another one);
* **deleted**: records missing from a stream (a gap in the sequence, or its first records);
* **reordered**: records stored out of chain order (the local store only: backends keep no order);
* **foreign**: a record that is in no chain (an ``ml.*`` span without chain attributes), that claims the
  place of another record, or that links to neither neighbour;
* **bad-signature**: a checkpoint whose signature does not verify with the key of its key id;
* **unsigned** (with ``--require-signed``): records that no verified signed checkpoint covers.

Copies of one record (at-least-once delivery) are counted, not reported. With a time window, or a
remote backend (which is always searched in a window), each stream's first record in view is taken as
its anchor. Exit status 0 when nothing is wrong, 3 when something is.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Sequence

from otel_rai import chain, semconv
from otel_rai.query import Query, find_spans
from otel_rai.query._time import rfc3339
from otel_rai.records import SpanRecord

KINDS = ("edited", "deleted", "reordered", "foreign", "bad-signature", "unsigned")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the trail, at `record` (for a deletion: the record after the gap)."""

    kind: str
    detail: str
    record: SpanRecord
    stream: str | None = None
    seq: int | None = None
    position: int | None = None  # the local store's write order

    def to_dict(self) -> dict[str, Any]:
        r = self.record
        ids = r.attributes.get(semconv.DECISION_IDS)
        return {"kind": self.kind, "detail": self.detail, "stream": self.stream, "seq": self.seq,
                "trace_id": r.trace_id, "span_id": r.span_id, "name": r.name, "time": rfc3339(r.start_ns),
                "first_decision_id": ids[0] if isinstance(ids, (list, tuple)) and ids else None}


@dataclass
class Stream:
    """What was seen of one stream."""

    stream: str
    first: int
    last: int
    records: int = 0
    decisions: int = 0
    checkpoints: int = 0
    #: Checkpoints whose signature verified, and the last sequence number they cover.
    signed: int = 0
    signed_through: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Report:
    records: int = 0
    duplicates: int = 0
    #: Signed checkpoints whose key was not given.
    unverified_checkpoints: int = 0
    streams: dict[str, Stream] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def ordered_problems(self) -> list[Problem]:
        """Problems in the order of the trail: write order where known, else time."""
        return sorted(self.problems, key=lambda p: (p.position if p.position is not None else 0,
                                                   p.record.start_ns, p.stream or "", p.seq or 0))

    def counts(self) -> dict[str, int]:
        return {kind: n for kind in KINDS if (n := sum(p.kind == kind for p in self.problems))}

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "records": self.records, "duplicates": self.duplicates,
                "unverified_checkpoints": self.unverified_checkpoints, "problems_by_kind": self.counts(),
                "streams": [s.to_dict() for s in self.streams.values()],
                "problems": [p.to_dict() for p in self.ordered_problems()]}


@dataclass
class _Entry:
    record: SpanRecord
    position: int | None
    seq: int
    prev: str
    claimed: str
    intact: bool


def _seq(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    return value if isinstance(value, int) and value > 0 else None


def _chained(record: SpanRecord) -> tuple[str, int, str, str] | None:
    a = record.attributes
    stream, seq = a.get(semconv.AUDIT_STREAM), _seq(a.get(semconv.AUDIT_SEQ))
    prev, claimed = a.get(semconv.AUDIT_PREV_HASH), a.get(semconv.AUDIT_RECORD_HASH)
    if not isinstance(stream, str) or not stream or seq is None:
        return None
    if not (isinstance(prev, str) and _HEX64.match(prev) and isinstance(claimed, str) and _HEX64.match(claimed)):
        return None
    return stream, seq, prev, claimed


def _is_audit_record(record: SpanRecord) -> bool:
    return record.scope_name == semconv.SCOPE or any(k.startswith("ml.") for k in record.attributes)


def check(
    items: Iterable[tuple[int | None, SpanRecord]],
    keys: Mapping[str, Any] = {},  # noqa: B006 - read only
    *,
    anchored: bool = False,
    require_signed: bool = False,
) -> Report:
    """Check the (write position or None, record) pairs of a trail. `keys` maps checkpoint key ids to
    `chain.HmacKey` / `chain.Ed25519Key`; `anchored`: the view starts mid-stream (a time window)."""
    report = Report()
    streams: dict[str, list[_Entry]] = {}
    for position, record in items:
        if not _is_audit_record(record):
            continue
        report.records += 1
        fields = _chained(record)
        if fields is None:
            report.problems.append(Problem("foreign", "carries no (valid) chain attributes", record,
                                           position=position))
            continue
        stream, seq, prev, claimed = fields
        streams.setdefault(stream, []).append(_Entry(record, position, seq, prev, claimed, chain.matches(record)))
    for name, entries in streams.items():
        _walk(name, entries, keys, anchored, require_signed, report)
    return report


def _slots(entries: list[_Entry], report: Report) -> list[list[_Entry]]:
    """The entries grouped by sequence number, copies of one record merged."""
    entries.sort(key=lambda e: (e.seq, e.position or 0))
    slots: list[list[_Entry]] = []
    for e in entries:
        if slots and slots[-1][0].seq == e.seq:
            if any(o.claimed == e.claimed and o.intact == e.intact for o in slots[-1]):
                report.duplicates += 1
                continue
            slots[-1].append(e)
        else:
            slots.append([e])
    return slots


def _walk(name: str, entries: list[_Entry], keys: Mapping[str, Any], anchored: bool, require_signed: bool,
          report: Report) -> None:
    slots = _slots(entries, report)
    info = report.streams[name] = Stream(name, slots[0][0].seq, slots[-1][0].seq)

    def problem(kind: str, detail: str, e: _Entry) -> None:
        report.problems.append(Problem(kind, detail, e.record, name, e.seq, e.position))

    previous: _Entry | None = None
    furthest = None  # the latest write position so far
    for i, candidates in enumerate(slots):
        chosen = _choose(candidates, previous)
        for other in candidates:
            if other is chosen:
                continue
            if other.claimed == chosen.claimed:
                problem("edited", "a copy of this record whose content no longer matches its hash", other)
            else:
                problem("foreign", f"claims seq {other.seq}, which another record of the stream holds", other)
        seq = chosen.seq
        if previous is None:
            if seq != 1 and not anchored:
                problem("deleted", f"the stream's first {seq - 1} record(s) are missing", chosen)
            elif seq == 1 and chosen.prev != chain.GENESIS:
                problem("foreign", "claims to start the stream but links to a previous record", chosen)
        elif seq > previous.seq + 1:
            problem("deleted", f"{seq - previous.seq - 1} record(s) before it are missing "
                               f"(seq {previous.seq + 1}-{seq - 1})", chosen)
        elif chosen.prev != previous.claimed:
            following = slots[i + 1] if i + 1 < len(slots) and slots[i + 1][0].seq == seq + 1 else []
            if any(f.prev == chosen.claimed for f in following):
                problem("edited", "rewritten with a new record hash: the next record committed to another",
                        previous)
            else:
                problem("foreign", f"does not link to record seq {previous.seq}, and nothing links to it", chosen)
        if not chosen.intact:
            problem("edited", "its content no longer matches its record hash", chosen)
        if chosen.position is not None:
            if furthest is not None and chosen.position < furthest:
                problem("reordered", "stored before records that precede it in the chain", chosen)
            furthest = chosen.position if furthest is None else max(furthest, chosen.position)
        info.records += 1
        info.decisions += len(chosen.record.attributes.get(semconv.DECISION_IDS) or ())
        if semconv.CHECKPOINT_DECISIONS in chosen.record.attributes:
            _checkpoint(chosen, info, keys, report, problem)
        previous = chosen
    if require_signed and info.signed_through < info.last:
        first_uncovered = next(s[0] for s in slots if s[0].seq > info.signed_through)
        problem("unsigned", f"records from seq {first_uncovered.seq} on are covered by no verified signed "
                            "checkpoint", first_uncovered)


def _choose(candidates: list[_Entry], previous: _Entry | None) -> _Entry:
    """Of several records claiming one place, the intact one that links to the previous record."""
    def rank(e: _Entry) -> tuple[bool, bool]:
        links = previous.claimed == e.prev if previous is not None else e.prev == chain.GENESIS
        return (not (e.intact and links), not e.intact)

    return min(candidates, key=rank)


def _checkpoint(e: _Entry, info: Stream, keys: Mapping[str, Any], report: Report, problem: Any) -> None:
    info.checkpoints += 1
    a = e.record.attributes
    algorithm, key_id, signature = (a.get(semconv.CHECKPOINT_ALGORITHM), a.get(semconv.CHECKPOINT_KEY_ID),
                                    a.get(semconv.CHECKPOINT_SIGNATURE))
    if signature is None and algorithm is None:
        return
    key = keys.get(key_id) if isinstance(key_id, str) else None
    if key is None:
        report.unverified_checkpoints += 1
        return
    if key.algorithm != algorithm or not isinstance(signature, str) or not key.verify(
            bytes.fromhex(e.claimed), signature):
        problem("bad-signature", f"its {algorithm} signature does not verify with key {key_id}", e)
        return
    if e.intact:
        info.signed += 1
        info.signed_through = e.seq


# --- reading a trail -------------------------------------------------------------------------------


def records(backend: Any, query: Query, problems: list[Problem]) -> Iterator[tuple[int | None, SpanRecord]]:
    """The trail in `backend` within `query`'s window: the local store in write order, others in time order.
    In the local store, each span's rows of the ``decisions`` table (what SQL readers see) must say what
    the span says; a row that does not is added to `problems` as an edit."""
    local = getattr(backend, "store", None)
    if local is None:
        for record in find_spans(query, backend):
            yield None, record
        return
    window = {"service": query.service, "start_ns": query.start_ns, "end_ns": query.end_ns}
    tables = local.decision_rows(**window)
    row = next(tables, None)
    for position, record in local.spans_in_write_order(**window):
        while row is not None and row[0] < position:  # rows of a span that is gone
            row = next(tables, None)
        stored = row[1] if row is not None and row[0] == position else []
        if stored != _rows_of(record):
            problems.append(Problem("edited", "its rows in the decisions table differ from the span", record,
                                    record.attributes.get(semconv.AUDIT_STREAM), _seq(record.attributes.get(
                                        semconv.AUDIT_SEQ)), position))
        yield position, record


def _rows_of(record: SpanRecord) -> list[tuple[Any, Any, Any]]:
    """What the ``decisions`` table should hold for `record` (as `store.Store.append` writes it)."""
    a = record.attributes
    ids = a.get(semconv.DECISION_IDS) or ()
    n = len(ids)

    def column(key: str) -> Sequence[Any]:
        values = a.get(key)
        return values if isinstance(values, (list, tuple)) and len(values) == n else [None] * n

    return [(i, h, _Same(o)) for i, h, o in zip(ids, column(semconv.INPUT_HASHES), column(semconv.OUTPUTS))]


class _Same:
    """An output as SQLite gives it back: booleans as 0/1, NaN equal to itself."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __eq__(self, other: Any) -> bool:
        v = self.value
        return v == other or (v != v and other != other)

    __hash__ = None  # type: ignore[assignment]


def read_keys(materials: Iterable[str], key_files: Iterable[str], public_keys: Iterable[str]) -> dict[str, Any]:
    """Checkpoint keys by key id: HMAC secrets given directly or one per line of a file, and Ed25519 PEM
    keys (public or private)."""
    keys: list[Any] = [chain.HmacKey(m) for m in materials if m]
    for path in key_files:
        with open(path, encoding="utf-8") as f:
            keys += [chain.HmacKey(line.strip()) for line in f if line.strip()]
    for path in public_keys:
        with open(path, "rb") as f:
            keys.append(chain.Ed25519Key.from_pem(f.read()))
    return {k.key_id: k for k in keys}


def verify(backend: Any, query: Query = Query(), keys: Mapping[str, Any] = {},  # noqa: B006, B008 - read only
           *, anchored: bool = False, require_signed: bool = False) -> Report:
    """Check the trail that `backend` holds within `query`'s window (see `check` and `records`)."""
    tables: list[Problem] = []
    report = check(records(backend, query, tables), keys, anchored=anchored, require_signed=require_signed)
    edited = {p.position for p in report.problems if p.kind == "edited"}
    report.problems += [p for p in tables if p.position not in edited]  # one problem per edited record
    return report


# --- the command -----------------------------------------------------------------------------------


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


def cmd_verify_chain(args: argparse.Namespace) -> int:
    from otel_rai import cli
    from otel_rai.query._time import window

    start, end = window(args.since, args.start, args.end)
    backend = cli.backend_of(args)
    try:
        keys = read_keys(args.checkpoint_key or [os.environ.get(chain.KEY_ENV, "")],
                         args.checkpoint_key_file or [], args.public_key or [])
    except OSError as exc:
        raise cli.CliError(f"cannot read a key file: {exc.strerror or exc}") from None
    except ImportError:
        raise cli.CliError("--public-key needs the cryptography package (pip install 'otel-rai[signing]')") from None
    except (ValueError, TypeError) as exc:
        raise cli.CliError(f"a key file holds no usable key ({type(exc).__name__})") from None
    anchored = start is not None or end is not None or args.backend != "local"
    query = Query(service=args.service, start_ns=start, end_ns=end)
    report = verify(backend, query, keys, anchored=anchored, require_signed=args.require_signed)
    if args.format == "json":
        sys.stdout.write(json.dumps(report.to_dict(), ensure_ascii=False) + "\n")
    else:
        _write_text(report, sys.stdout)
    summary = f"{report.records} records in {len(report.streams)} streams from {cli._where(args)}"
    if report.duplicates:
        summary += f", {report.duplicates} delivered more than once (not a problem)"
    if report.unverified_checkpoints:
        summary += f", {report.unverified_checkpoints} signed checkpoints not verified (no key for their key id)"
    if report.ok:
        cli._note(f"chain intact: {summary}")
        return cli.OK
    first = report.ordered_problems()[0].to_dict()
    counts = ", ".join(f"{n} {kind}" for kind, n in report.counts().items())
    cli._note(f"chain broken: {counts}; {summary}")
    cli._note(f"first bad record: {first['kind']}, stream {first['stream']} seq {first['seq']}, span "
              f"{first['span_id']} of trace {first['trace_id']} at {first['time']}"
              + (f", decision {first['first_decision_id']}" if first["first_decision_id"] else "")
              + f": {first['detail']}")
    return cli.UNMATCHED


def add_parser(subparsers: Any) -> None:
    """The ``verify-chain`` subcommand (listed in `otel_rai.cli.EXTENSIONS`)."""
    from otel_rai import cli
    from otel_rai.query._time import parse_duration, parse_time

    p = subparsers.add_parser(
        "verify-chain", help="check the trail for edited, deleted, reordered or inserted records",
        description="Recompute every record's hash and walk each stream of the tamper-evident chain; "
        "see docs/audit-trail.md for what this proves.")
    g = p.add_argument_group("which records")
    g.add_argument("--service", metavar="S")
    when = g.add_mutually_exclusive_group()
    when.add_argument("--since", metavar="DURATION", type=cli._checked(parse_duration), help="e.g. 24h, 7d")
    when.add_argument("--start", metavar="T", type=cli._checked(parse_time), help="RFC 3339 or a date")
    g.add_argument("--end", metavar="T", type=cli._checked(parse_time), help="exclusive; default now")
    cli.add_source_options(p)
    k = p.add_argument_group("checkpoint keys (several may be given: each checkpoint names its key id)")
    k.add_argument("--checkpoint-key", metavar="KEY", action="append",
                   help="an HMAC key (better: --checkpoint-key-file or OTEL_RAI_CHECKPOINT_KEY)")
    k.add_argument("--checkpoint-key-file", metavar="PATH", action="append", help="HMAC keys, one per line")
    k.add_argument("--public-key", metavar="PEM", action="append", help="an Ed25519 public key (PEM)")
    p.add_argument("--require-signed", action="store_true",
                   help="report records that no verified signed checkpoint covers")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=cmd_verify_chain)
