"""A sliding window of per-group counts: the newest N entries, or the entries of the last T seconds.

Each entry is (time, group, kind), where kind indexes a small fixed set of counters (selected or not;
the four confusion cells). Adding and evicting are O(1), and the per-group counts are kept running, so
reading them never rescans the window.
"""

from __future__ import annotations

import collections
from operator import itemgetter
from typing import Sequence

#: An entry's (group, kind).
_GROUP_KIND = itemgetter(1, 2)


class Window:
    """Running per-group counts of `kinds` counters over the newest `size` entries or the last `seconds`."""

    def __init__(self, kinds: int, *, size: int | None = None, seconds: float | None = None) -> None:
        if (size is None) == (seconds is None):
            raise ValueError("otel-rai: a window has either a size or a duration")
        self._kinds = kinds
        self._size = size
        self._span_ns = None if seconds is None else int(seconds * 1e9)
        self._entries: collections.deque[tuple[int, str, int]] = collections.deque()
        self.counts: dict[str, list[int]] = {}
        self.newest_ns = 0

    def add(self, group: str, kind: int, time_ns: int) -> None:
        """Count one entry; a window by size drops its oldest entry when full."""
        self._entries.append((time_ns, group, kind))
        self._tally(group, kind, 1)
        self.newest_ns = max(self.newest_ns, time_ns)
        if self._size is not None and len(self._entries) > self._size:
            self._evict()

    def add_many(self, groups: Sequence[str], kinds: Sequence[int], times: Sequence[int]) -> None:
        """`add` each (group, kind, time) in turn: the same entries and counts, added and then evicted
        together. A window by size that the new entries fill starts again from the newest of them."""
        size = self._size
        if size is not None and len(groups) >= size:
            self._entries.clear()
            self.counts = {}
            start = len(groups) - size
            if start:  # the entries that would not stay still tell the newest time
                self.newest_ns = max(self.newest_ns, max(times[:start]))
            groups, kinds, times = groups[start:], kinds[start:], times[start:]
        if not groups:
            return
        self._entries.extend(zip(times, groups, kinds))
        for (group, kind), n in collections.Counter(zip(groups, kinds)).items():  # counted in C: a few groups
            self._tally(group, kind, n)
        self.newest_ns = max(self.newest_ns, max(times))
        if size is not None and len(self._entries) > size:
            popleft = self._entries.popleft
            gone = [popleft() for _ in range(len(self._entries) - size)]
            for (group, kind), n in collections.Counter(map(_GROUP_KIND, gone)).items():
                self._tally(group, kind, -n)

    def _tally(self, group: str, kind: int, n: int) -> None:
        """Add `n` (or take, if negative) to a group's count of `kind`; a group whose counts all reach 0 goes."""
        counts = self.counts.get(group)
        if counts is None:
            counts = self.counts[group] = [0] * self._kinds
        counts[kind] += n
        if n < 0 and not any(counts):
            del self.counts[group]

    def expire(self, now_ns: int) -> bool:
        """Drop entries older than the window's duration; True when any was dropped."""
        if self._span_ns is None:
            return False
        horizon = now_ns - self._span_ns
        entries = self._entries
        dropped = False
        while entries and entries[0][0] < horizon:
            self._evict()
            dropped = True
        return dropped

    def _evict(self) -> None:
        _, group, kind = self._entries.popleft()
        self._tally(group, kind, -1)

    def __len__(self) -> int:
        return len(self._entries)
