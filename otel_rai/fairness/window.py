"""A sliding window of per-group counts: the newest N entries, or the entries of the last T seconds.

Each entry is (time, group, kind), where kind indexes a small fixed set of counters (selected or not;
the four confusion cells). Adding and evicting are O(1), and the per-group counts are kept running, so
reading them never rescans the window.
"""

from __future__ import annotations

import collections
from typing import Sequence


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
        counts = self.counts.get(group)
        if counts is None:
            counts = self.counts[group] = [0] * self._kinds
        counts[kind] += 1
        self.newest_ns = max(self.newest_ns, time_ns)
        if self._size is not None and len(self._entries) > self._size:
            self._evict()

    def add_many(self, groups: Sequence[str], kinds: Sequence[int], times: Sequence[int]) -> None:
        """`add` each (group, kind, time) in turn. A window by size that the new entries fill starts again
        from the newest of them: the same entries and counts, without adding and evicting entries that
        would not stay."""
        size = self._size
        if size is not None and len(groups) >= size:
            self._entries.clear()
            self.counts = {}
            start = len(groups) - size
            if start:  # the entries that would not stay still tell the newest time
                self.newest_ns = max(self.newest_ns, max(times[:start]))
            groups, kinds, times = groups[start:], kinds[start:], times[start:]
        add = self.add
        for group, kind, time_ns in zip(groups, kinds, times):
            add(group, kind, time_ns)

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
        counts = self.counts[group]
        counts[kind] -= 1
        if not any(counts):
            del self.counts[group]

    def __len__(self) -> int:
        return len(self._entries)
