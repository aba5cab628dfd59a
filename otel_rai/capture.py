"""Capture a decision on the caller's thread, and hand it to the audit worker.

The caller's thread does only what must happen before the call returns: the nested-call check, the
cached model metadata, decision ids, a snapshot of the input and output (so later mutation by the caller
cannot change the audit record), and two timestamps. Hashing, explaining and span building happen in
the audit worker (see `worker`).
"""

from __future__ import annotations

import contextvars
import copy
import functools
import logging
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

from opentelemetry import context as otel_context
from opentelemetry.instrumentation.utils import is_instrumentation_enabled

from otel_rai import models, semconv
from otel_rai.models import ModelInfo
from otel_rai.reliability import Receipt, unavailable

_log = logging.getLogger(__name__)

# True inside an outermost decision call and inside fit/score: nested predict calls are not decisions.
_QUIET: contextvars.ContextVar[bool] = contextvars.ContextVar("otel_rai_quiet", default=False)
_SCOPE: contextvars.ContextVar[DecisionScope | None] = contextvars.ContextVar("otel_rai_scope", default=None)

_OTEL_TYPES = (str, bool, int, float)


def quiet() -> bool:
    """Whether a decision call made now would be nested (and so not recorded)."""
    return _QUIET.get()


def run_quietly(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    token = _QUIET.set(True)
    try:
        return func(*args, **kwargs)
    finally:
        _QUIET.reset(token)


# --- decisions(): caller-supplied ids and attributes ---------------------------------------------


class DecisionScope:
    """What `decisions()` yields. After the calls in the block, `ids` holds every decision id."""

    def __init__(
        self,
        ids: Sequence[Any] | None,
        attributes: Mapping[str, Any] | None,
        groups: Mapping[str, Any] | None = None,
        explain: bool = True,
    ) -> None:
        self.explain = bool(explain)
        self._given_ids = None if ids is None else [str(i) for i in ids]
        if self._given_ids is not None and len(set(self._given_ids)) != len(self._given_ids):
            raise ValueError("otel_rai.decisions: ids must be unique")
        self.attributes = _checked_attributes(attributes or {})
        self.groups = _checked_groups(groups or {})
        self.ids: list[str] = []

    def _take_ids(self, n_rows: int | None) -> list[str]:
        given, self._given_ids = self._given_ids, None  # given ids name one call, the next one
        if given is None:
            return new_ids(n_rows or 0)
        if n_rows is not None and len(given) != n_rows:
            raise ValueError(
                f"otel_rai.decisions: {len(given)} ids given for a call with {n_rows} rows"
            )
        return given

    def _checked_group_rows(self, n_rows: int | None) -> dict[str, Any] | None:
        for name, values in self.groups.items():
            if isinstance(values, tuple) and n_rows is not None and len(values) != n_rows:
                raise ValueError(
                    f"otel_rai.decisions: {len(values)} values of group {name!r} for a call with {n_rows} rows"
                )
        return self.groups or None


@contextmanager
def decisions(
    ids: Sequence[Any] | None = None,
    attributes: Mapping[str, Any] | None = None,
    groups: Mapping[str, Any] | None = None,
    *,
    explain: bool = True,
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
    """
    scope = DecisionScope(ids, attributes, groups, explain)
    token = _SCOPE.set(scope)
    try:
        yield scope
    finally:
        _SCOPE.reset(token)


def _checked_attributes(attributes: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in attributes.items():
        if not isinstance(key, str) or key.startswith(semconv.RESERVED_PREFIX):
            raise ValueError(f"otel_rai.decisions: attribute name {key!r} is reserved or not a string")
        items = value if isinstance(value, (list, tuple)) else [value]
        if not all(isinstance(v, _OTEL_TYPES) for v in items) or len({type(v) for v in items}) > 1:
            raise ValueError(
                f"otel_rai.decisions: attribute {key!r} must be a str, bool, int or float, "
                "or a list of one of those"
            )
    return dict(attributes)


def _checked_groups(groups: Mapping[str, Any]) -> dict[str, Any]:
    """Group values, snapshotted: a scalar, or a tuple with one value per row."""
    checked = {}
    for name, values in groups.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"otel_rai.decisions: group name {name!r} is not a non-empty string")
        if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
            checked[name] = values
        elif hasattr(values, "__len__") and not isinstance(values, (Mapping, set, frozenset)):
            checked[name] = tuple(values)
        else:
            raise ValueError(f"otel_rai.decisions: group {name!r} must be one value or a sequence of values")
    return checked


def new_ids(n: int) -> list[str]:
    """`n` decision ids: 32 hex digits, a 48-bit Unix millisecond time then 80 random bits.

    Time-ordered like UUIDv7, so ids sort by decision time and append to the store's index.
    """
    stamp = f"{time.time_ns() // 1_000_000:012x}"
    noise = os.urandom(10 * n).hex()
    return [stamp + noise[i : i + 20] for i in range(0, 20 * n, 20)]


# --- the captured call ---------------------------------------------------------------------------


@dataclass(eq=False)
class DecisionCall:
    """One outermost decision call, as the audit worker receives it."""

    model: Any
    info: ModelInfo
    operation: str
    X: Any
    n_rows: int | None
    ids: list[str]
    attributes: dict[str, Any]
    parent: otel_context.Context
    start_ns: int
    end_ns: int = 0
    output: Any = None
    error: BaseException | None = None
    explain: bool = True
    #: Set by the audit worker: an `otel_rai.explanations.Explanation`, or why there is none.
    explanation: Any = None
    #: Set by the audit worker when it hashed this call's input together with others of its cycle.
    input_hashes: list[str] | None = None
    #: From ``decisions(groups=...)``: name -> one value for every row, or a tuple with one per row.
    groups: dict[str, Any] | None = None
    #: Fail-closed mode only: settled by the audit worker once the record is committed locally.
    receipt: Receipt | None = None


def _num_rows(X: Any) -> int | None:
    shape = getattr(X, "shape", None)
    if shape is not None and len(shape) >= 1:
        return int(shape[0])
    try:
        return len(X)
    except TypeError:
        return None


def _pandas_copy_on_write() -> bool:
    pandas = sys.modules.get("pandas")
    if pandas is None:
        return False
    if int(pandas.__version__.split(".")[0]) >= 3:
        return True
    return bool(pandas.options.mode.copy_on_write is True)


def snapshot(value: Any) -> Any:
    """A copy of an input or output that the caller's later in-place edits cannot reach."""
    if hasattr(value, "copy") and hasattr(value, "shape"):  # ndarray, DataFrame, Series, sparse
        if hasattr(value, "iloc"):
            return value.copy(deep=not _pandas_copy_on_write())  # under copy-on-write a view is safe
        return value.copy()
    if isinstance(value, (list, tuple)):
        return copy.deepcopy(value)
    return value


# --- the wrapper ---------------------------------------------------------------------------------


class Recorder:
    """The hot path: turns an outermost estimator call into a `DecisionCall` for `submit`."""

    def __init__(
        self,
        default_version: str | None,
        submit: Callable[[DecisionCall], None],
        on_failure: Callable[[str, BaseException], None],
        durable: Callable[[DecisionCall], None] | None = None,
    ) -> None:
        self._default_version = default_version
        self._submit = submit
        self._on_failure = on_failure
        self._durable = durable  # fail-closed: submits, waits, raises AuditUnavailableError

    def wrapper_factory(self, original: Callable[..., Any], operation: str) -> Callable[..., Any]:
        record = self.record

        @functools.wraps(original)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            if _QUIET.get() or not is_instrumentation_enabled():
                return original(self, *args, **kwargs)
            token = _QUIET.set(True)
            try:
                return record(original, self, operation, args, kwargs)
            finally:
                _QUIET.reset(token)

        return wrapper

    def record(
        self, original: Callable[..., Any], model: Any, operation: str, args: tuple, kwargs: dict
    ) -> Any:
        scope = _SCOPE.get()
        X = args[0] if args else kwargs.get("X", next(iter(kwargs.values()), None))
        n_rows = _num_rows(X)
        ids = scope._take_ids(n_rows) if scope is not None else new_ids(n_rows or 0)
        groups = scope._checked_group_rows(n_rows) if scope is not None else None
        try:
            call = DecisionCall(
                model=model,
                info=models.model_info(model, self._default_version),
                operation=operation,
                X=snapshot(X),
                n_rows=n_rows,
                ids=ids,
                attributes=scope.attributes if scope is not None else {},
                parent=otel_context.get_current(),
                start_ns=time.time_ns(),
                explain=scope.explain if scope is not None else True,
                groups=groups,
            )
        except Exception as exc:  # never let the audit break the prediction
            if self._durable is not None:  # unless there must be no decision without a record
                raise unavailable(f"capture: {type(exc).__name__}") from None
            self._on_failure("capture", exc)
            return original(model, *args, **kwargs)
        try:
            output = original(model, *args, **kwargs)
        except Exception as exc:
            call.end_ns = time.time_ns()
            call.error = exc
            self._hand_over(call, scope)
            raise
        call.end_ns = time.time_ns()
        try:
            call.output = snapshot(output)
            if n_rows is None and not call.ids:
                call.n_rows = _num_rows(output)
                call.ids = new_ids(call.n_rows or 0)
        except Exception as exc:
            if self._durable is not None:
                raise unavailable(f"capture: {type(exc).__name__}") from None
            self._on_failure("capture", exc)
            return output
        self._hand_over(call, scope)
        return output

    def _hand_over(self, call: DecisionCall, scope: DecisionScope | None) -> None:
        if scope is not None:
            scope.ids.extend(call.ids)
        if self._durable is not None and call.error is None:
            self._durable(call)
            return
        try:
            self._submit(call)
        except Exception as exc:
            self._on_failure("submit", exc)
