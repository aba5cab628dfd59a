"""Times as the query tooling reads and writes them: Unix nanoseconds inside, RFC 3339 outside (UTC)."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone

_NS = 1_000_000_000
_UNITS = {"ms": 1_000_000, "s": _NS, "m": 60 * _NS, "h": 3600 * _NS, "d": 86_400 * _NS, "w": 604_800 * _NS}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_FRACTION = re.compile(r"^(.*T\d\d:\d\d:\d\d)\.(\d+)(.*)$")


def parse_duration(text: str) -> int:
    """``90s``, ``15m``, ``24h``, ``7d``, ``2w``, ``1h30m`` as nanoseconds."""
    s = text.strip().lower()
    parts = _DURATION.findall(s)
    if not s or not parts or "".join(n + u for n, u in parts) != s:
        raise ValueError(f"otel-rai: cannot read {text!r} as a duration; use e.g. 90s, 15m, 24h, 7d or 1h30m")
    return int(sum(float(n) * _UNITS[u] for n, u in parts))


def parse_time(text: str) -> int:
    """An RFC 3339 / ISO 8601 time (``2026-11-24T09:00:00Z``, ``2026-11-24T10:00:00+01:00``) or a
    date (``2026-11-24``, midnight UTC) as Unix nanoseconds. A time without an offset is UTC.
    Fractions of a second keep up to nanosecond precision."""
    s = text.strip()
    nanos = 0
    match = _FRACTION.match(s)
    if match:  # datetime keeps microseconds only: take the fraction apart
        s = match.group(1) + match.group(3)
        nanos = int(match.group(2)[:9].ljust(9, "0"))
    try:
        moment = datetime.fromisoformat(s[:-1] + "+00:00" if s[-1:] in "zZ" and s else s)
    except ValueError:
        raise ValueError(
            f"otel-rai: cannot read {text!r} as a time; use RFC 3339 like 2026-11-24T09:00:00Z, or a date like "
            "2026-11-24"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return (int(moment.timestamp()) * _NS) + nanos


def to_ns(value: datetime | str | int | None) -> int | None:
    """A datetime (naive = UTC), an RFC 3339 string or Unix nanoseconds, as Unix nanoseconds."""
    if value is None or isinstance(value, int):
        return value
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return (moment - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1) * 1000
    return parse_time(value)


def rfc3339(ns: int) -> str:
    """Unix nanoseconds as RFC 3339 in UTC with nanoseconds: ``2026-11-24T09:00:00.123456789Z``."""
    seconds, nanos = divmod(ns, _NS)
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}Z"


def window(
    since: timedelta | str | None,
    start: datetime | str | int | None,
    end: datetime | str | int | None,
) -> tuple[int | None, int | None]:
    """(start, end) in Unix nanoseconds from ``since`` (a duration back from now) or start/end."""
    if since is not None and start is not None:
        raise ValueError("otel-rai: give either since or start (with an optional end), not both")
    start_ns, end_ns = to_ns(start), to_ns(end)
    if since is not None:
        back = parse_duration(since) if isinstance(since, str) else since // timedelta(microseconds=1) * 1000
        end_ns = end_ns if end_ns is not None else time.time_ns()
        start_ns = end_ns - back
    if start_ns is not None and end_ns is not None and start_ns >= end_ns:
        raise ValueError(f"otel-rai: the start ({rfc3339(start_ns)}) must be before the end ({rfc3339(end_ns)})")
    return start_ns, end_ns
