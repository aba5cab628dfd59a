"""Which model decided: `register_model`, and the per-model metadata every decision span carries.

Metadata (including the fingerprint, which hashes the whole fitted state) is computed once per fitted
model and cached. Every ``fit``/``partial_fit``/``set_params`` of an instrumented class bumps a global
generation (see `patching`), which invalidates the cache; refits are rare while serving, so the check on
the hot path is one integer comparison.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from otel_rai.capture.fingerprint import fingerprint
from otel_rai.codec.text import text_of, texts

M = TypeVar("M")

#: Estimator attributes a user may set instead of calling `register_model`.
VERSION_ATTRIBUTE = "model_version"
NAME_ATTRIBUTE = "model_name"


@dataclass(frozen=True)
class Registration:
    """What `register_model` was told about one estimator."""

    name: str | None = None
    version: str | None = None
    background: Any = field(default=None, compare=False)  # reference rows for the explainers that need them
    explain: bool = True
    #: Reference rows (and their labels) for drift and the quality baseline (docs/monitoring.md).
    reference: Any = field(default=None, compare=False)
    reference_labels: Any = field(default=None, compare=False)
    #: Where the model came from (an MLflow run or registry URI, a file path), for its model record.
    source_uri: str | None = None


@dataclass(frozen=True)
class ModelInfo:
    """The model-level attributes of a decision span."""

    name: str
    qualified_class: str
    version: str
    fingerprint: str
    feature_names: tuple[str, ...] | None
    classes: np.ndarray | None
    registration: Registration


class _IdentityMap:
    """id(obj) -> value for live objects, without touching the objects' own ``__eq__``/``__hash__``."""

    def __init__(self) -> None:
        self._items: dict[int, tuple[weakref.ref, Any]] = {}

    def get(self, obj: Any) -> Any:
        entry = self._items.get(id(obj))
        if entry is not None and entry[0]() is obj:
            return entry[1]
        return None

    def set(self, obj: Any, value: Any) -> None:
        key = id(obj)
        items = self._items
        try:
            ref = weakref.ref(obj, lambda _, key=key: items.pop(key, None))
        except TypeError:  # not weak-referenceable: keep nothing rather than leak it
            return
        items[key] = (ref, value)

    def clear(self) -> None:
        self._items.clear()


_registrations = _IdentityMap()
_cache = _IdentityMap()
_lock = threading.Lock()
_generation = 0
_observing = False
_default_version: str | None = None


def bump_generation() -> None:
    """Called after every fit of an instrumented class: cached metadata may be stale."""
    global _generation
    _generation += 1


def observe(default_version: str | None) -> None:
    """Instrumentation started: every fit is seen from now on, so cached metadata can be trusted."""
    global _observing, _default_version
    _cache.clear()
    _observing, _default_version = True, default_version


def stop_observing() -> None:
    """Instrumentation stopped: fits are no longer seen."""
    global _observing
    _cache.clear()
    _observing = False


def fingerprint_of(model: Any) -> str:
    """The fingerprint of `model`: cached per fitted model while instrumented (every fit is seen then),
    otherwise hashed now (milliseconds for large ensembles), since a refit could have happened."""
    if not _observing:
        return fingerprint(model)
    return model_info(model, _default_version).fingerprint


def register_model(
    model: M,
    name: str | None = None,
    version: str | None = None,
    *,
    background: Any = None,
    explain: bool = True,
    reference: Any = None,
    reference_labels: Any = None,
    source_uri: str | None = None,
) -> M:
    """Name and version `model` for its decision spans, and return the same object.

    background: reference rows (the model's input format) for the explanations that need them:
        linear models, model-agnostic methods. A copy is kept.
    explain: False turns explanations off for this model.
    reference: rows (the model's input format) whose distribution is the reference of the drift
        metrics (default: the data of the model's fit under ``instrument()``, else `background`); with
        `reference_labels`, their quality is the baseline of the quality alerts (docs/monitoring.md).
        Copies are kept.
    source_uri: where the model came from (an MLflow run or registry URI, a file path); its model record
        carries it (docs/model-records.md).

    The model is not wrapped or copied, so pickling, ``clone`` and ``get_params`` are unaffected.
    """
    if version is not None and not text_of(version):
        raise ValueError("otel-rai: register_model(): version must not be empty")
    if background is not None and not hasattr(background, "shape"):
        background = np.asarray(background)
    if reference is not None and not hasattr(reference, "shape"):
        reference = np.asarray(reference)
    if reference_labels is not None:
        reference_labels = np.asarray(reference_labels)
        if reference is None or len(reference_labels) != len(reference):
            raise ValueError("register_model: reference_labels needs reference rows of the same length")
    _registrations.set(
        model,
        Registration(
            name=name,
            version=None if version is None else text_of(version),
            background=None if background is None else background.copy(),
            explain=bool(explain),
            reference=None if reference is None else reference.copy(),
            reference_labels=None if reference_labels is None else reference_labels.copy(),
            source_uri=None if source_uri is None else str(source_uri),
        ),
    )
    bump_generation()
    return model


def registration_of(model: Any) -> Registration:
    """What `register_model` was told about `model` (defaults when it was not registered)."""
    return _registrations.get(model) or Registration()


def current_info(model: Any) -> ModelInfo | None:
    """The cached metadata of `model` if no fit or registration happened since; never computes."""
    cached = _cache.get(model)
    return cached[1] if cached is not None and cached[0] == _generation else None


def last_info(model: Any) -> ModelInfo | None:
    """The metadata last computed for `model` (its last decision's, typically), even if a fit happened since."""
    cached = _cache.get(model)
    return cached[1] if cached is not None else None


def model_info(model: Any, default_version: str | None) -> ModelInfo:
    """Cached metadata of `model`, recomputed after any fit or registration."""
    cached = _cache.get(model)
    if cached is not None and cached[0] == _generation:
        return cached[1]
    with _lock:
        generation = _generation
        info = _compute(model, default_version)
        _cache.set(model, (generation, info))
    return info


def _compute(model: Any, default_version: str | None) -> ModelInfo:
    cls = type(model)
    registration = _registrations.get(model) or Registration()
    fp = fingerprint(model)
    version = text_of(
        registration.version
        or _string_attribute(model, VERSION_ATTRIBUTE)
        or default_version
        or fp
    )
    name = text_of(registration.name or _string_attribute(model, NAME_ATTRIBUTE) or cls.__name__)
    names = getattr(model, "feature_names_in_", None)
    try:
        classes = getattr(model, "classes_", None)
    except Exception:  # a property that raises when unfitted or not a classifier
        classes = None
    return ModelInfo(
        name=name,
        qualified_class=text_of(f"{cls.__module__}.{cls.__qualname__}"),
        version=version,
        fingerprint=fp,
        feature_names=None if names is None else tuple(texts(names)),
        classes=classes if isinstance(classes, np.ndarray) else None,
        registration=registration,
    )


def _string_attribute(model: Any, attribute: str) -> str | None:
    value = getattr(model, attribute, None)
    text = None if value is None else text_of(value)
    return text or None
