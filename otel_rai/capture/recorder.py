"""Capture a decision on the caller's thread, and hand it to the audit worker.

The caller's thread does only what must happen before the call returns: the nested-call check, the
cached model metadata, decision ids, a snapshot of the input and output (so later mutation by the caller
cannot change the audit record), and two timestamps. Hashing, explaining and span building happen in
the audit worker (`otel_rai.audit.worker`).
"""

from __future__ import annotations

import contextvars
import copy
import functools
import logging
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

from opentelemetry import context as otel_context
from opentelemetry.instrumentation.utils import is_instrumentation_enabled

from otel_rai.capture import models
from otel_rai.capture.durable import Receipt, unavailable
from otel_rai.capture.models import ModelInfo
from otel_rai.capture.scope import DecisionScope, new_ids
from otel_rai.capture.scope import current as _current_scope

_log = logging.getLogger(__name__)

# True inside an outermost decision call and inside fit/score: nested predict calls are not decisions.
_QUIET: contextvars.ContextVar[bool] = contextvars.ContextVar("otel_rai_quiet", default=False)


def quiet() -> bool:
    """Whether a decision call made now would be nested (and so not recorded)."""
    return _QUIET.get()


def run_quietly(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call `func` with decision recording off: its model calls are not decisions."""
    token = _QUIET.set(True)
    try:
        return func(*args, **kwargs)
    finally:
        _QUIET.reset(token)


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
    #: Set by the audit worker (or given through ``decisions(explanation=...)``): an
    #: `otel_rai.explanations.Explanation`, or why there is none.
    explanation: Any = None
    #: Set by the audit worker when it hashed this call's input together with others of its cycle.
    input_hashes: list[str] | None = None
    #: Set by the audit worker when it encoded this call's output together with others of its cycle:
    #: (``ml.outputs``, the per-class score arrays or None), as `otel_rai.audit.outputs.encode` gives them;
    #: taken (set back to None) by the call's span.
    encoded_output: tuple[list[Any], dict[str, list[float]] | None] | None = None
    #: Set by the audit worker when it encoded this call's explanation together with others of its cycle:
    #: the ``ml.explanation.top`` entries of its rows, as `otel_rai.codec.reasons.encode_top` gives them.
    encoded_top: list[str] | None = None
    #: From ``decisions(groups=...)``: name -> one value for every row, or a tuple with one per row.
    groups: dict[str, Any] | None = None
    #: Fail-closed mode only: settled by the audit worker once the record is committed locally.
    receipt: Receipt | None = None
    #: Set by the audit worker before the span is built: {sensitive attribute: one group per row}.
    group_labels: dict[str, list[str]] | None = None
    #: Set by the audit worker when it digested this call's groups together with others of its cycle:
    #: ``ml.fairness.groups_digest``, one per row.
    groups_digests: list[str] | None = None


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


def refusing_factory(why: str) -> Callable[[Callable[..., Any], str], Callable[..., Any]]:
    """Fail-closed with no audit at all (instrumenting failed): every outermost decision call raises
    `AuditUnavailableError` before the model runs; nested and quiet calls run as they would."""

    def factory(original: Callable[..., Any], operation: str) -> Callable[..., Any]:
        @functools.wraps(original)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            if _QUIET.get() or not is_instrumentation_enabled():
                return original(self, *args, **kwargs)
            raise unavailable(why)

        return wrapper

    return factory


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
        """The wrapper of a decision method: an outermost call is recorded, a nested one runs bare."""
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
        """Call `original` on `model` as one decision: capture it, and hand it to the audit worker
        (in fail-closed mode, return only once its record is durable)."""
        scope = _current_scope()
        X = args[0] if args else kwargs.get("X", next(iter(kwargs.values()), None))
        n_rows = _num_rows(X)
        ids = scope._take_ids(n_rows) if scope is not None else new_ids(n_rows or 0)
        groups = scope._checked_group_rows(n_rows) if scope is not None else None
        explanation = scope._take_explanation(n_rows) if scope is not None else None
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
                explanation=explanation,
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

    def rejected(self, model: Any, operation: str, error: BaseException, start_ns: int | None = None) -> None:
        """Record a call refused before it reached `model` (a request its server could not parse): an
        ERROR decision span without rows, through the audit worker like any other call. `error` is
        recorded as it is: give one whose message quotes no input."""
        end_ns = time.time_ns()
        scope = _current_scope()
        try:
            call = DecisionCall(
                model=model,
                info=models.model_info(model, self._default_version),
                operation=operation,
                X=None,
                n_rows=0,
                ids=[],
                attributes=scope.attributes if scope is not None else {},
                parent=otel_context.get_current(),
                start_ns=end_ns if start_ns is None else start_ns,
                end_ns=end_ns,
                error=error,
            )
        except Exception as exc:
            self._on_failure("capture", exc)
            return
        self._hand_over(call, None)

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
