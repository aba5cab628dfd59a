"""Symmetric wrap/unwrap of scikit-learn-style estimator classes.

Every `BaseEstimator` subclass is patched: the ones that exist at `instrument()` time by walking
``__subclasses__()``, later ones (imported or defined afterwards) from a ``__init_subclass__`` hook on
`BaseEstimator`. Only methods a class defines itself are wrapped; inherited ones are wrapped where they
are defined. Descriptors (``available_if``, properties) keep their ``hasattr`` behaviour, because
sklearn's duck typing (``hasattr(pipe, "predict_proba")``) depends on it.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import time
import types
import weakref
from typing import Any, Callable, Sequence

from sklearn.base import BaseEstimator

from otel_rai.capture import models
from otel_rai.capture.recorder import quiet, run_quietly

_log = logging.getLogger(__name__)

#: Methods whose outermost call is a decision.
DECISION_METHODS = ("predict", "predict_proba", "predict_log_proba", "decision_function", "score_samples")
#: Methods inside which no decision is recorded (training and evaluation call predict internally).
QUIET_METHODS = ("fit", "partial_fit", "fit_transform", "fit_predict", "score")
#: Methods after which the cached model metadata (fingerprint) may be stale.
STATE_METHODS = ("fit", "partial_fit", "fit_transform", "fit_predict", "set_params")

#: Methods that fit a model: their outermost successful call is reported to the fit observers.
FIT_METHODS = ("fit", "partial_fit", "fit_transform", "fit_predict")

_TRAINING_METHODS = tuple(dict.fromkeys(QUIET_METHODS + STATE_METHODS))
_MARK = "__otel_rai_original__"
# True inside an outermost fit: the fits a Pipeline or a meta-estimator makes of its parts are not reported.
_FITTING: contextvars.ContextVar[bool] = contextvars.ContextVar("otel_rai_fitting", default=False)

WrapperFactory = Callable[[Callable[..., Any], str], Callable[..., Any]]
#: Called on the fitting thread after each outermost successful fit: (the estimator, the method name, the
#: positional and keyword arguments of the call, its duration in nanoseconds). A failure is logged, not raised.
FitObserver = Callable[[Any, str, tuple, dict, int], None]
#: Called on the calling thread before each outermost fit or ``set_params`` (`STATE_METHODS`) changes an
#: estimator: (the estimator, the method name). A failure is logged, not raised.
BeforeChange = Callable[[Any, str], None]


def _training_factory(observers: Sequence[FitObserver], before: Sequence[BeforeChange] = ()) -> WrapperFactory:
    """The wrapper of training methods: quiet (no decisions inside), stale metadata afterwards, an outermost
    change announced to `before` first, and the outermost successful fit reported to `observers`."""

    def factory(original: Callable[..., Any], name: str) -> Callable[..., Any]:
        is_quiet = name in QUIET_METHODS
        changes_state = name in STATE_METHODS
        observed = bool(observers) and name in FIT_METHODS
        announced = bool(before) and changes_state

        @functools.wraps(original)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            if announced and not _FITTING.get():
                for announce in before:
                    try:
                        announce(self, name)
                    except Exception as exc:  # the audit never breaks training; the type only (privacy)
                        _log.warning("otel-rai: a before-change hook failed (%s); the %s goes ahead",
                                     type(exc).__name__, name)
            outermost = observed and not _FITTING.get()
            token = _FITTING.set(True) if outermost else None
            started = time.perf_counter_ns()
            try:
                if is_quiet:
                    result = run_quietly(original, self, *args, **kwargs)
                else:
                    result = original(self, *args, **kwargs)
            finally:
                if token is not None:
                    _FITTING.reset(token)
                if changes_state:
                    models.bump_generation()
            if outermost:
                elapsed = time.perf_counter_ns() - started
                for observe in observers:
                    try:
                        observe(self, name, args, kwargs, elapsed)
                    except Exception as exc:  # the audit never breaks training; the type only (privacy)
                        _log.warning("otel-rai: a fit observer failed (%s); the fit was not affected",
                                     type(exc).__name__)
            return result

        return wrapper

    return factory


class _WrappedDescriptor:
    """Wraps a non-function descriptor (``available_if``, property) and keeps its availability check."""

    def __init__(self, original: Any, name: str, factory: WrapperFactory, owner: type) -> None:
        setattr(self, _MARK, original)
        self._original = original

        def call_original(obj: Any, *args: Any, **kwargs: Any) -> Any:
            return original.__get__(obj, type(obj))(*args, **kwargs)

        at_class = original.__get__(None, owner)
        if inspect.isfunction(at_class):  # keeps inspect.signature (metadata routing) truthful
            functools.update_wrapper(call_original, at_class, updated=())
        call_original.__name__ = name  # bound methods pickle as getattr(obj, __name__)
        self._wrapped = factory(call_original, name)

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            at_class = self._original.__get__(None, owner)
            return self._wrapped if inspect.isfunction(at_class) else at_class
        self._original.__get__(obj, owner)  # raises AttributeError exactly when the original would
        return types.MethodType(self._wrapped, obj)


class Patcher:
    """Installs and removes every wrapper; `remove()` restores the exact original objects."""

    def __init__(self, decision_factory: WrapperFactory, fit_observers: Sequence[FitObserver] = (),
                 before_change: Sequence[BeforeChange] = ()) -> None:
        self._decision_factory = decision_factory
        self._training_factory = _training_factory(tuple(fit_observers), tuple(before_change))
        self._patched: list[tuple[weakref.ref, str, Any]] = []
        self._restores: list[Callable[[], None]] = []

    def install(self) -> None:
        """Patch every `BaseEstimator` subclass that exists, hook the ones defined later, and carry the
        no-nested-decision rule into joblib's threads."""
        seen: set[type] = set()
        stack: list[type] = [BaseEstimator]
        while stack:
            cls = stack.pop()
            if cls in seen:
                continue
            seen.add(cls)
            self.patch_class(cls)
            stack.extend(cls.__subclasses__())
        self._hook_new_subclasses()
        self._hook_parallel()

    def remove(self) -> None:
        """Remove the hooks and put the original methods back (those no one replaced since)."""
        while self._restores:
            self._restores.pop()()
        for ref, name, original in reversed(self._patched):
            cls = ref()
            if cls is not None and getattr(cls.__dict__.get(name), _MARK, None) is original:
                setattr(cls, name, original)
        self._patched.clear()

    def patch_class(self, cls: type) -> None:
        """Wrap the methods of `cls` and of its bases, mixins included (``LinearClassifierMixin``
        defines ``predict`` without deriving from `BaseEstimator`)."""
        for owner in cls.__mro__[:-1]:  # every class but object
            for name in DECISION_METHODS:
                self._patch(owner, name, self._decision_factory)
            for name in _TRAINING_METHODS:
                self._patch(owner, name, self._training_factory)

    def _patch(self, cls: type, name: str, factory: WrapperFactory) -> None:
        original = cls.__dict__.get(name)
        if original is None or hasattr(original, _MARK):
            return
        if isinstance(original, types.FunctionType):
            wrapper: Any = factory(original, name)
            setattr(wrapper, _MARK, original)
        elif hasattr(original, "__get__") and not isinstance(original, (staticmethod, classmethod)):
            wrapper = _WrappedDescriptor(original, name, factory, cls)
        else:
            return
        setattr(cls, name, wrapper)
        self._patched.append((weakref.ref(cls), name, original))

    def _hook_new_subclasses(self) -> None:
        patcher = self
        own = BaseEstimator.__dict__.get("__init_subclass__")

        def __init_subclass__(cls: type, **kwargs: Any) -> None:
            if own is not None:
                own.__func__(cls, **kwargs)
            else:
                super(BaseEstimator, cls).__init_subclass__(**kwargs)
            patcher.patch_class(cls)

        BaseEstimator.__init_subclass__ = classmethod(__init_subclass__)  # type: ignore[assignment]

        def restore() -> None:
            if own is None:
                del BaseEstimator.__init_subclass__
            else:
                BaseEstimator.__init_subclass__ = own  # type: ignore[method-assign]

        self._restores.append(restore)

    def _hook_parallel(self) -> None:
        """Carry the no-nested-decision rule into joblib worker threads (forests predict there)."""
        from sklearn.utils import parallel

        original = parallel.Parallel.__call__

        @functools.wraps(original)
        def __call__(self: Any, iterable: Any) -> Any:
            if not quiet():
                return original(self, iterable)
            return original(self, ((_QuietTask(f), a, k) for f, a, k in iterable))

        parallel.Parallel.__call__ = __call__  # type: ignore[method-assign]

        def restore() -> None:
            parallel.Parallel.__call__ = original  # type: ignore[method-assign]

        self._restores.append(restore)


class _QuietTask:
    """A joblib task that runs with decisions suppressed, in whichever thread runs it."""

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func

    def with_config_and_warning_filters(self, config: Any, warning_filters: Any) -> _QuietTask:
        attach = getattr(self.func, "with_config_and_warning_filters", None)
        if attach is not None:
            self.func = attach(config, warning_filters)
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return run_quietly(self.func, *args, **kwargs)
