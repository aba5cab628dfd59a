"""``otel_rai.decisions()``: ids, attributes and groups a caller gives to the decisions of a block.

The scope lives in a context variable, so it follows the caller's thread or task; the recorder reads it
on the hot path (`current`). Decision ids are made here too (`new_ids`).
"""

from __future__ import annotations

import collections
import contextvars
import os
import secrets
import time
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, Mapping, Sequence

from otel_rai import semconv
from otel_rai.codec.text import safe, text_of, texts

_SCOPE: contextvars.ContextVar[DecisionScope | None] = contextvars.ContextVar("otel_rai_scope", default=None)
_OTEL_TYPES = (str, bool, int, float)
#: OTLP carries integers as int64.
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1

#: The scope of the current context, if any (the recorder's hot path).
current = _SCOPE.get


class DecisionScope:
    """What `decisions()` yields. After the calls in the block, `ids` holds every decision id."""

    def __init__(
        self,
        ids: Sequence[Any] | None,
        attributes: Mapping[str, Any] | None,
        groups: Mapping[str, Any] | None = None,
        explain: bool = True,
        explanation: Any = None,
    ) -> None:
        self.explain = bool(explain)
        self._given_explanation = explanation
        self._given_ids = None if ids is None else texts(ids)
        if self._given_ids is not None and len(set(self._given_ids)) != len(self._given_ids):
            raise ValueError("otel-rai: decisions(): ids must be unique")
        self.attributes = _checked_attributes(attributes or {})
        self.groups = _checked_groups(groups or {})
        self.ids: list[str] = []

    def _take_ids(self, n_rows: int | None) -> list[str]:
        given, self._given_ids = self._given_ids, None  # given ids name one call, the next one
        if given is None:
            return new_ids(n_rows or 0)
        if n_rows is not None and len(given) != n_rows:
            raise ValueError(
                f"otel-rai: decisions(): {len(given)} ids given for a call with {n_rows} rows"
            )
        return given

    def _take_explanation(self, n_rows: int | None) -> Any:
        """The explanation given for the next call (then forgotten), or None."""
        given, self._given_explanation = self._given_explanation, None
        if given is not None and not isinstance(given, BaseException) and n_rows is not None \
                and len(given) != n_rows:
            raise ValueError(f"otel_rai.decisions: an explanation of {len(given)} rows given for a call "
                             f"with {n_rows} rows")
        return given

    def _checked_group_rows(self, n_rows: int | None) -> dict[str, Any] | None:
        for name, values in self.groups.items():
            if isinstance(values, tuple) and n_rows is not None and len(values) != n_rows:
                raise ValueError(
                    f"otel-rai: decisions(): {len(values)} values of group {name!r} for a call with {n_rows} rows"
                )
        return self.groups or None


@contextmanager
def decisions(
    ids: Sequence[Any] | None = None,
    attributes: Mapping[str, Any] | None = None,
    groups: Mapping[str, Any] | None = None,
    *,
    explain: bool = True,
    explanation: Any = None,
) -> Iterator[DecisionScope]:
    """Name the decisions of the next instrumented call, and add span attributes to calls in the block.

    >>> with otel_rai.decisions(ids=["A-1093", "A-1094"]) as d:
    ...     model.predict(X)          # X has two rows
    >>> d.ids
    ['A-1093', 'A-1094']

    `ids` (one per row, unique) apply to the next call only; later calls in the block get generated
    ids. `attributes` go on every decision span in the block; names under ``ml.`` are reserved.
    `groups` gives the sensitive attributes of the calls in the block, for the fairness metrics:
    ``{"sex": ["f", "m"]}`` (one value per row) or ``{"sex": "f"}`` (every row). They are never put
    on spans unless allowlisted with ``capture_features``.
    `explain=False` leaves the decisions of the block unexplained.
    `explanation`: an `otel_rai.Explanation` already computed for the rows of the next call (for
    example, to return the reasons with the prediction, as the MLflow model does); its span records
    that one instead of explaining again. An exception instead records why there is none.

    `ids` keeps every decision id of the block, in order, so that they line up with its rows: a block around
    a long-running loop grows by one id a decision. Open one a request or batch instead.
    """
    scope = DecisionScope(ids, attributes, groups, explain, explanation)
    token = _SCOPE.set(scope)
    try:
        yield scope
    finally:
        _SCOPE.reset(token)


def _checked_attributes(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """The attributes as they may be recorded: checked types, untrusted text made `safe`."""
    checked = {}
    for key, value in attributes.items():
        if not isinstance(key, str) or key.startswith(semconv.RESERVED_PREFIX):
            raise ValueError(f"otel-rai: decisions(): attribute name {safe(repr(key))} is reserved or not a string")
        items = value if isinstance(value, (list, tuple)) else [value]
        if not all(isinstance(v, _OTEL_TYPES) for v in items) or len({type(v) for v in items}) > 1:
            raise ValueError(
                f"otel-rai: decisions(): attribute {safe(repr(key))} must be a str, bool, int or float, "
                "or a list of one of those"
            )
        if any(type(v) is int and not _INT64_MIN <= v <= _INT64_MAX for v in items):
            raise ValueError(f"otel-rai: decisions(): attribute {safe(repr(key))} holds an integer beyond 64 bits")
        items = [safe(v) if isinstance(v, str) else v for v in items]
        checked[safe(key)] = items if isinstance(value, (list, tuple)) else items[0]
    return checked


def _checked_groups(groups: Mapping[str, Any]) -> dict[str, Any]:
    """Group values, snapshotted: a scalar, or a tuple with one value per row."""
    checked = {}
    for name, values in groups.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"otel-rai: decisions(): group name {safe(repr(name))} is not a non-empty string")
        name = safe(name)
        if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
            checked[name] = values
        elif hasattr(values, "__len__") and not isinstance(values, (Mapping, set, frozenset)):
            checked[name] = tuple(values)
        else:
            raise ValueError(f"otel-rai: decisions(): group {name!r} must be one value or a sequence of values")
    return checked


#: The random parts (20 hex digits) of single-row decision ids, drawn ahead from ``os.urandom`` by the
#: audit worker (`draw_ids`): a caller pops one instead of making a system call of its own, which also
#: released the interpreter lock to the worker in the middle of the caller's call.
_NOISE: collections.deque[str] = collections.deque()
#: How many random parts `draw_ids` keeps ready: more than the single-row calls of a worker cycle.
NOISE_AHEAD = 2048
# A forked child must not hand out its parent's random parts again: the ids would repeat.
os.register_at_fork(after_in_child=_NOISE.clear)


#: The last two hex digits of counted-up ids, in order.
_LOW_DIGITS = [f"{i:02x}" for i in range(256)]
#: Calls of this many rows or more get their ids a block of 256 at a time (a third of the cost a row);
#: below, the blocks' own steps would cost more than they save.
_BLOCKED_FROM = 64


def new_ids(n: int) -> list[str]:
    """`n` decision ids: 32 hex digits, a 48-bit Unix millisecond time then 80 bits, random for a single
    row; the rows of one call count up from a random start.

    Time-ordered like UUIDv7, so ids sort by decision time and append to the store's index. Counting up,
    a call's ids also sort in row order: a large call's rows then append to the index too, instead of
    landing all over it (bench/RESULTS.md, fourteenth pass).
    """
    stamp = f"{time.time_ns() // 1_000_000:012x}"
    if n == 1:
        try:
            return [stamp + _NOISE.pop()]
        except IndexError:  # none drawn ahead (no worker yet, or callers outran it)
            pass
    start = secrets.randbelow((1 << 80) - n + 1)  # so that the last one fits in 80 bits
    end = start + n
    if n < _BLOCKED_FROM:
        return [f"{stamp}{i:020x}" for i in range(start, end)]
    ids: list[str] = []
    for base in range(start & ~0xFF, end, 256):  # one format a block of 256 ids, not one an id
        prefix = f"{stamp}{base >> 8:018x}"
        ids += [prefix + low for low in _LOW_DIGITS[max(start - base, 0) : end - base]]
    return ids


def draw_ids(ahead: int = NOISE_AHEAD) -> None:
    """Draw the random parts of the next `ahead` single-row decision ids in one system call (the audit
    worker, once a cycle). Each is used once: `new_ids` pops it."""
    missing = ahead - len(_NOISE)
    if missing > 0:
        noise = os.urandom(10 * missing).hex()
        _NOISE.extend([noise[i : i + 20] for i in range(0, 20 * missing, 20)])


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(value != value)  # NaN and NaT are not equal to themselves
    except TypeError:  # pandas.NA refuses to be a bool
        return True


#: The longest group label; a longer value keeps its start and a digest (`otel_rai.codec.text`). Every
#: label is a metric attribute value.
GROUP_LABEL_CHARS = 128


def labels(values: Iterable[Any]) -> list[str]:
    """Group values as metric attribute strings (untrusted text, made `safe`, at most `GROUP_LABEL_CHARS`)."""
    return [semconv.MISSING_GROUP if _is_missing(v) else text_of(v, GROUP_LABEL_CHARS) for v in values]


def given_labels(call: Any, name: str) -> list[str] | None:
    """Labels of `name` from ``decisions(groups=...)``: one per row, a scalar applying to every row."""
    if not call.groups or name not in call.groups:
        return None
    value = call.groups[name]
    n = len(call.ids)
    if not isinstance(value, tuple):
        return labels([value]) * n
    if len(value) != n:
        raise ValueError(f"otel-rai: decisions(): {len(value)} values of group {name!r} for a call with {n} rows")
    return labels(value)
