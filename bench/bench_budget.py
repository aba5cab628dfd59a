"""Where the audit CPU of a single-row decision goes (issue 20): the caller's thread, and the audit worker's
thread stage by stage. Reported, not gated: it says what the honest ratios are made of.

The worker's stages (explaining, hashing, the hooks before each span, building and sealing the spans, the
hooks after them, the cycle hooks, each sink's commit) are timed on its own thread with `time.thread_time`,
by wrapping them where the worker looks them up. While measuring, the worker runs one cycle per block of
calls (at the flush), so that no stage is charged for the caller's thread running beside it on the other
core (the honest scenario measures the two side by side). Each wrapper adds its own call, a few tenths of
a µs per wrapped call: the per-call hooks carry that much of their figure.
"""

from __future__ import annotations

import collections
import gc
import statistics
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import otel_rai
from otel_rai.audit import spans
from otel_rai.audit import worker as worker_module
from otel_rai.explanations import record as explanations
from otel_rai.session import instrumentor


def _timed(stage: str, func: Callable[..., Any], spent: collections.Counter) -> Callable[..., Any]:
    def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = time.thread_time()
        try:
            return func(*args, **kwargs)
        finally:
            spent[stage] += time.thread_time() - t0

    return timed


def _name(hook: Callable[..., Any]) -> str:
    owner = getattr(hook, "__self__", None)
    return f"{type(owner).__name__}.{hook.__name__}" if owner is not None else getattr(hook, "__qualname__", "?")


@contextmanager
def _one_cycle_per_flush() -> Iterator[None]:
    """The worker wakes only when flushed (its module's wake-up settings, restored after)."""
    saved = worker_module._INTERVAL, worker_module._WAKE_AT
    worker_module._INTERVAL, worker_module._WAKE_AT = 3600.0, 1 << 30
    try:
        yield
    finally:
        worker_module._INTERVAL, worker_module._WAKE_AT = saved


@contextmanager
def _stages_timed(spent: collections.Counter) -> Iterator[None]:
    """Wrap the current session worker's stages, and the module functions it calls, for the block."""
    worker = instrumentor._session.worker
    lists = {"before span": worker._prepare_hooks, "after span": worker._call_hooks,
             "cycle": worker._cycle_hooks, "commit": worker._commits}
    saved_lists = {k: list(v) for k, v in lists.items()}
    saved = explanations.attach, spans.hash_inputs, spans.encode_outputs, spans.encode_explanations, spans.emit
    for kind, hooks in lists.items():
        hooks[:] = [_timed(f"{kind}: {_name(h)}", h, spent) for h in hooks]
    explanations.attach = _timed("explain", explanations.attach, spent)
    spans.hash_inputs = _timed("hash inputs", spans.hash_inputs, spent)
    spans.encode_outputs = _timed("encode outputs", spans.encode_outputs, spent)
    spans.encode_explanations = _timed("encode explanations", spans.encode_explanations, spent)
    spans.emit = _timed("build and seal spans", spans.emit, spent)
    try:
        yield
    finally:
        explanations.attach, spans.hash_inputs, spans.encode_outputs, spans.encode_explanations, spans.emit = saved
        for kind, hooks in lists.items():
            hooks[:] = saved_lists[kind]


def _bare_us(model: Any, xs: list[Any], rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        gc.collect()
        t0 = time.thread_time()
        for x in xs:
            model.predict_proba(x)
        out.append((time.thread_time() - t0) / len(xs) * 1e6)
    return out


def budget(model: Any, xs: list[Any], options: dict[str, Any], rounds: int) -> dict[str, float]:
    """Median µs per decision of each stage over `rounds` blocks of ``len(xs)`` calls, and of the caller's
    thread over bare (bare measured uninstrumented before and after); the calls run with `options`
    (``instrument()``'s)."""
    per_round: dict[str, list[float]] = collections.defaultdict(list)
    n = len(xs)
    bare = _bare_us(model, xs, rounds)
    otel_rai.instrument(**options)
    try:
        with _one_cycle_per_flush(), otel_rai.decisions(groups={"sex": "f"}):
            for x in xs[:20]:  # first calls: explainer, profile and model record built
                model.predict_proba(x)
            otel_rai.flush(120)
            for _ in range(rounds):
                spent: collections.Counter = collections.Counter()
                gc.collect()  # as the honest scenario does before each block (its `_settle`)
                t0 = time.thread_time()
                for x in xs:
                    model.predict_proba(x)
                per_round["caller"].append((time.thread_time() - t0) / n * 1e6)
                with _stages_timed(spent):
                    otel_rai.flush(120)
                for stage, seconds in spent.items():
                    per_round[stage].append(seconds / n * 1e6)
    finally:
        otel_rai.uninstrument()
    bare += _bare_us(model, xs, rounds)
    out = {stage: statistics.median(values) for stage, values in per_round.items()}
    out["caller"] -= statistics.median(bare)
    return out
