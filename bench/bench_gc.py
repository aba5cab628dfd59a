"""The garbage collector's share of a long-lived session (issue 20, sixteenth pass): what the honest rows'
blocks leave out, since each starts from a collected heap.

Whatever the audit path holds when a young collection runs (calls waiting in the worker's queue, the
records of a cycle until its commit) moves on to an older generation; once the oldest has grown by a
quarter since the last full collection, the interpreter collects the whole heap, on the thread whose
allocation crossed the line, the caller's included. Its cost a decision is about (the CPU a full
collection spends on one object) × 4 × (objects moved to the oldest generation a decision), whatever the
heap's size. `honest_steady` (bench/run.py) times the full collections with `collecting` too, to share
them out over its blocks.
"""

from __future__ import annotations

import gc
import threading
import time
from collections import Counter, defaultdict
from contextlib import contextmanager
from typing import Callable, Iterator, Mapping

Calls = Callable[[int], None]


@contextmanager
def collecting() -> Iterator[tuple[Counter, defaultdict]]:
    """(count, CPU seconds) of each (thread id, generation)'s collections meanwhile."""
    count: Counter = Counter()
    seconds: defaultdict = defaultdict(float)
    started: dict[tuple[int, int], float] = {}

    def callback(phase: str, info: dict[str, int]) -> None:
        key = (threading.get_ident(), info["generation"])
        if phase == "start":
            started[key] = time.thread_time()
        elif key in started:
            seconds[key] += time.thread_time() - started.pop(key)
            count[key] += 1

    gc.callbacks.append(callback)
    try:
        yield count, seconds
    finally:
        gc.callbacks.remove(callback)


def full(by_key: Mapping[tuple[int, int], float], thread: int | None = None) -> float:
    """The full collections' part of `collecting`'s count or seconds, on `thread` or on any."""
    return sum(v for (t, generation), v in by_key.items() if generation == 2 and thread in (None, t))


def share(calls: Calls, n: int) -> dict[str, float]:
    """The collections of `n` decisions made by `calls` (200 at a time, each block drained), a decision:
    full collections (and those on the caller's thread) and the CPU µs of each generation's."""
    caller = threading.get_ident()
    with collecting() as (count, seconds):
        for start in range(0, n, 200):
            calls(min(200, n - start))
    found = {"full collections": full(count), "full collections on the caller's thread": full(count, caller)}
    for generation in range(3):
        found[f"generation {generation}: CPU µs/decision"] = sum(
            s for (_, g), s in seconds.items() if g == generation) / n * 1e6
    found["all generations: CPU µs/decision"] = sum(seconds.values()) / n * 1e6
    return found


def promoted(calls: Calls, n: int) -> float:
    """Objects a decision that the middle generation's collections move to the oldest, over `n` decisions:
    those of generations 0 and 1 as such a collection starts that are in generation 2 when it ends. Slow
    (it lists the heap at each one): run it on a few thousand decisions."""
    moved = [0]
    before: dict[str, set[int]] = {}
    busy = [False]

    def callback(phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 1 or busy[0]:
            return
        busy[0] = True  # listing the heap allocates: no nested count
        try:
            if phase == "start":
                before["ids"] = {id(o) for g in (0, 1) for o in gc.get_objects(g)}
            elif "ids" in before:
                young = before.pop("ids")
                moved[0] += sum(1 for o in gc.get_objects(2) if id(o) in young)
        finally:
            busy[0] = False

    gc.callbacks.append(callback)
    try:
        for start in range(0, n, 200):
            calls(min(200, n - start))
    finally:
        gc.callbacks.remove(callback)
    return moved[0] / n
