"""Verification: walk the records of a trail and report what breaks its chain (`check`).

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
its anchor. A window puts in view each stream's stretch from the first record that started in it to the
last (`in_view`), records sealed among them included whenever they started.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Iterator, Mapping

from otel_rai import semconv
from otel_rai._time import rfc3339
from otel_rai.chain import canonical
from otel_rai.codec.records import SpanRecord

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
        """The problem as JSON-ready values (``verify-chain --format json``)."""
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
        """The stream's figures as a dict."""
        return dict(self.__dict__)


@dataclass
class Report:
    """What `check` found: records and copies seen, each stream, each problem."""

    records: int = 0
    duplicates: int = 0
    #: Signed checkpoints whose key was not given.
    unverified_checkpoints: int = 0
    #: Local-store rows (groups, outcomes) whose keyed digest was not checked: no input hash key given.
    unverified_local_rows: int = 0
    streams: dict[str, Stream] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    def ordered_problems(self) -> list[Problem]:
        """Problems in the order of the trail: write order where known, else time."""
        return sorted(self.problems, key=lambda p: (p.position if p.position is not None else 0,
                                                   p.record.start_ns, p.stream or "", p.seq or 0))

    def counts(self) -> dict[str, int]:
        """Problems by kind, in the order of `KINDS`; kinds not found are left out."""
        return {kind: n for kind in KINDS if (n := sum(p.kind == kind for p in self.problems))}

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values (``verify-chain --format json``)."""
        return {"ok": self.ok, "records": self.records, "duplicates": self.duplicates,
                "unverified_checkpoints": self.unverified_checkpoints,
                "unverified_local_rows": self.unverified_local_rows, "problems_by_kind": self.counts(),
                "streams": [s.to_dict() for s in self.streams.values()],
                "problems": [p.to_dict() for p in self.ordered_problems()]}


@dataclass(slots=True)
class _Entry:
    #: None once `check` has let it go (a record the trail can read again at its position).
    record: SpanRecord | None
    position: int | None
    stream: str
    seq: int
    prev: str
    claimed: str
    intact: bool
    decisions: int


def seq_of(value: Any) -> int | None:
    """A record's ``ml.audit.seq`` as a positive int (backends may give a float or a string), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    return value if isinstance(value, int) and value > 0 else None


def _chained(record: SpanRecord) -> tuple[str, int, str, str] | None:
    a = record.attributes
    stream, seq = a.get(semconv.AUDIT_STREAM), seq_of(a.get(semconv.AUDIT_SEQ))
    prev, claimed = a.get(semconv.AUDIT_PREV_HASH), a.get(semconv.AUDIT_RECORD_HASH)
    if not isinstance(stream, str) or not stream or seq is None:
        return None
    if not (isinstance(prev, str) and _HEX64.match(prev) and isinstance(claimed, str) and _HEX64.match(claimed)):
        return None
    return stream, seq, prev, claimed


#: How far before a time window's start and after its end a trail is read for `in_view`: a record is sealed
#: as its span ends, so one that started outside the window can sit among records that started in it.
EDGE_MARGIN_NS = 3600 * 10**9


def in_view(read: Callable[[], Iterable[tuple[int | None, SpanRecord]]], start_ns: int | None,
            end_ns: int | None) -> Iterator[tuple[int | None, SpanRecord]]:
    """What the window [`start_ns`, `end_ns`) puts in view of the items `read()` gives (read `EDGE_MARGIN_NS`
    wider), in their order: each stream's records from the first that started in the window to the last
    that did, in chain order, with those sealed between them whenever they started (a call that began
    before the window's start and ended after calls that began in it). A record without a chain is in view
    if it started in the window.

    The items are read twice, and none is held: first each stream's stretch, then what falls in it. Items
    with write positions (the local store) that the first reading did not reach are left out of the second:
    they were written since."""
    def started_inside(record: SpanRecord) -> bool:
        return (start_ns is None or record.start_ns >= start_ns) and (end_ns is None or record.start_ns < end_ns)

    stretches: dict[str, tuple[int, int]] = {}
    reached = None
    for position, record in read():
        reached = position
        fields = _chained(record)
        if fields is not None and started_inside(record):
            stream, seq = fields[0], fields[1]
            first, last = stretches.get(stream, (seq, seq))
            stretches[stream] = (min(first, seq), max(last, seq))
    for position, record in read():
        if position is not None and reached is not None and position > reached:
            return
        fields = _chained(record)
        if fields is None:
            if started_inside(record):
                yield position, record
            continue
        stretch = stretches.get(fields[0])
        if stretch is not None and stretch[0] <= fields[1] <= stretch[1]:
            yield position, record


def _is_audit_record(record: SpanRecord) -> bool:
    return record.scope_name == semconv.SCOPE or any(k.startswith("ml.") for k in record.attributes)


def _entries(items: Iterable[tuple[int | None, SpanRecord]], report: Report, *,
             let_go: bool = False) -> Iterator[_Entry]:
    """The chained records of `items`; every audit record is counted, one without a chain is reported. With
    `let_go`, an entry with a write position keeps its record only if it is a checkpoint."""
    streams: dict[str, str] = {}  # one copy of each stream's name, not one a record
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
        a = record.attributes
        kept = None if let_go and position is not None and semconv.CHECKPOINT_DECISIONS not in a else record
        yield _Entry(kept, position, streams.setdefault(stream, stream), seq, prev, claimed,
                     canonical.matches(record), len(a.get(semconv.DECISION_IDS) or ()))


def check(
    items: Iterable[tuple[int | None, SpanRecord]],
    keys: Mapping[str, Any] = {},  # noqa: B006 - read only
    *,
    anchored: bool = False,
    require_signed: bool = False,
    read_again: Callable[[Iterable[int]], Mapping[int, SpanRecord]] | None = None,
) -> Report:
    """Check the (write position or None, record) pairs of a trail, in any order. `keys` maps checkpoint key
    ids to `keys.HmacKey` / `keys.Ed25519Key`; `anchored`: the view starts mid-stream (a time window).

    `read_again` (write positions → the records there, each one) lets the check hold a few fields of each
    record with a position instead of the record, and read again those it reports a problem at."""
    report = Report()
    streams: dict[str, list[_Entry]] = {}
    for entry in _entries(items, report, let_go=read_again is not None):
        streams.setdefault(entry.stream, []).append(entry)
    for name, entries in streams.items():
        entries.sort(key=lambda e: (e.seq, e.position or 0))
        _walk(name, _slots(entries, report), keys, anchored, require_signed, report)
    if read_again is not None:
        _read_again(report, read_again)
    return report


def _read_again(report: Report, read_again: Callable[[Iterable[int]], Mapping[int, SpanRecord]]) -> None:
    """Give back their records to the problems found at entries that let them go."""
    missing = {p.position for p in report.problems if p.record is None}
    if not missing:
        return
    found = read_again(missing)
    report.problems = [p if p.record is not None else replace(p, record=found[p.position])
                       for p in report.problems]


def check_ordered(
    records: Iterable[SpanRecord],
    keys: Mapping[str, Any] = {},  # noqa: B006 - read only
    *,
    anchored: bool = False,
    require_signed: bool = False,
) -> Report:
    """`check` for a trail read in chain order (each stream's records together, by sequence number; records
    without a chain anywhere), holding a few records at a time instead of the whole trail. The report is
    the one `check` gives for the same records without write positions."""
    report = Report()
    for name, entries in itertools.groupby(_entries(((None, r) for r in records), report), lambda e: e.stream):
        if name in report.streams:
            raise ValueError(f"otel-rai: the records of stream {name} are not together")
        _walk(name, _slots(_in_order(entries), report), keys, anchored, require_signed, report)
    return report


def _in_order(entries: Iterable[_Entry]) -> Iterator[_Entry]:
    last = 0
    for e in entries:
        if e.seq < last:
            raise ValueError(f"otel-rai: stream {e.stream} is not in sequence order (seq {e.seq} after {last})")
        last = e.seq
        yield e


def _slots(entries: Iterable[_Entry], report: Report) -> Iterator[list[_Entry]]:
    """The entries (sorted by sequence number) grouped by sequence number, copies of one record merged."""
    slot: list[_Entry] = []
    for e in entries:
        if slot and slot[0].seq == e.seq:
            if any(o.claimed == e.claimed and o.intact == e.intact for o in slot):
                report.duplicates += 1
                continue
            slot.append(e)
            continue
        if slot:
            yield slot
        slot = [e]
    if slot:
        yield slot


def _walk(name: str, slots: Iterator[list[_Entry]], keys: Mapping[str, Any], anchored: bool, require_signed: bool,
          report: Report) -> None:
    """Walk one stream's slots in order, holding the previous, current and next slot only."""
    candidates = next(slots, None)
    if candidates is None:
        return
    info = report.streams[name] = Stream(name, candidates[0].seq, candidates[0].seq)

    def problem(kind: str, detail: str, e: _Entry) -> None:  # an entry's record let go: `check` reads it again
        report.problems.append(Problem(kind, detail, e.record, name, e.seq, e.position))  # type: ignore[arg-type]

    previous: _Entry | None = None
    furthest = None  # the latest write position so far
    uncovered: _Entry | None = None  # the first record after the last verified signed checkpoint
    while candidates is not None:
        following = next(slots, None)
        chosen = _choose(candidates, previous)
        seq = chosen.seq
        info.last = seq
        if uncovered is None and seq > info.signed_through:
            uncovered = candidates[0]
        for other in candidates:
            if other is chosen:
                continue
            if other.claimed == chosen.claimed:
                problem("edited", "a copy of this record whose content no longer matches its hash", other)
            else:
                problem("foreign", f"claims seq {other.seq}, which another record of the stream holds", other)
        if previous is None:
            if seq != 1 and not anchored:
                problem("deleted", f"the stream's first {seq - 1} record(s) are missing", chosen)
            elif seq == 1 and chosen.prev != canonical.GENESIS:
                problem("foreign", "claims to start the stream but links to a previous record", chosen)
        elif seq > previous.seq + 1:
            problem("deleted", f"{seq - previous.seq - 1} record(s) before it are missing "
                               f"(seq {previous.seq + 1}-{seq - 1})", chosen)
        elif chosen.prev != previous.claimed:
            after = following if following is not None and following[0].seq == seq + 1 else []
            if any(f.prev == chosen.claimed for f in after):
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
        info.decisions += chosen.decisions
        if chosen.record is not None and semconv.CHECKPOINT_DECISIONS in chosen.record.attributes:
            _checkpoint(chosen, info, keys, report, problem)
            if info.signed_through >= seq:
                uncovered = None
        previous = chosen
        candidates = following
    if require_signed and info.signed_through < info.last and uncovered is not None:
        problem("unsigned", f"records from seq {uncovered.seq} on are covered by no verified signed "
                            "checkpoint", uncovered)


def _choose(candidates: list[_Entry], previous: _Entry | None) -> _Entry:
    """Of several records claiming one place, the intact one that links to the previous record."""
    def rank(e: _Entry) -> tuple[bool, bool]:
        links = previous.claimed == e.prev if previous is not None else e.prev == canonical.GENESIS
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
