"""MLflow's model loaders, wrapped while instrumented, so that a model loaded from the registry is
audited as the registered version it is.

``mlflow.sklearn.load_model("models:/credit@champion")`` then loads the version the alias points at
(pinned first, so that an alias moving meanwhile cannot change what was loaded) and registers the model
as ``credit`` of that version, with the alias recorded beside it. The same for ``mlflow.pyfunc`` (the
model inside the pyfunc is registered), ``mlflow.xgboost`` and ``mlflow.lightgbm``. A lookup that fails
is logged and the model loads as it would have; it is then audited under its defaults.

The loaders are wrapped when their module is imported (a post-import hook, so instrumenting does not
import MLflow) and put back by `uninstall`. A loader imported by name before `instrument()`
(``from mlflow.sklearn import load_model``) is the original: call `register` on what it loads.
"""

from __future__ import annotations

import functools
import logging
import sys
import threading
import urllib.parse
from dataclasses import replace
from types import ModuleType
from typing import Any, Callable

import wrapt

from otel_rai.capture import models
from otel_rai.registry import mlflow as registry

_log = logging.getLogger(__name__)

#: (module, function) of each loader wrapped while instrumented.
LOADERS = (
    ("mlflow.sklearn", "load_model"),
    ("mlflow.pyfunc", "load_model"),
    ("mlflow.xgboost", "load_model"),
    ("mlflow.lightgbm", "load_model"),
)

_lock = threading.Lock()
_active = False
_hooked: set[str] = set()  # modules given a post-import hook (wrapt cannot remove one: it checks `_active`)
_wrapped: dict[tuple[str, str], tuple[Callable[..., Any], Callable[..., Any]]] = {}  # -> (original, wrapper)


def install() -> None:
    """Wrap the loaders of the MLflow modules imported already, and of the others once imported."""
    global _active
    with _lock:
        _active = True
        if resolve not in models.source_resolvers:
            models.source_resolvers.append(resolve)
        for module, _ in LOADERS:
            if module not in _hooked:
                _hooked.add(module)
                wrapt.register_post_import_hook(_on_import, module)  # runs now if imported already
            elif module in sys.modules:
                _wrap(sys.modules[module])


def uninstall() -> None:
    """Put back every original loader that is still ours."""
    global _active
    with _lock:
        _active = False
        if resolve in models.source_resolvers:
            models.source_resolvers.remove(resolve)
        for (module_name, function), (original, wrapper) in list(_wrapped.items()):
            module = sys.modules.get(module_name)
            if module is not None and getattr(module, function, None) is wrapper:
                setattr(module, function, original)
            del _wrapped[(module_name, function)]


def _on_import(module: ModuleType) -> None:
    if _active:
        _wrap(module)


def _wrap(module: ModuleType) -> None:
    for module_name, function in LOADERS:
        if module_name != module.__name__ or (module_name, function) in _wrapped:
            continue
        original = getattr(module, function, None)
        if original is None:
            continue
        wrapper = _loader(original)
        _wrapped[(module_name, function)] = (original, wrapper)
        setattr(module, function, wrapper)


def _loader(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def load_model(model_uri: Any, *args: Any, **kwargs: Any) -> Any:
        pinned = None
        try:
            pinned = registry.pin(model_uri)
        except Exception as exc:  # the loader reports a bad URI or a missing version itself
            _log.warning("otel-rai: cannot resolve %s in the MLflow registry (%s); it is audited under its "
                         "defaults", model_uri, type(exc).__name__)
        loaded = original(pinned.uri if pinned is not None else model_uri, *args, **kwargs)
        if pinned is not None:
            register(loaded, pinned)
        else:
            _register_found(loaded, model_uri)
        return loaded

    return load_model


def _register_found(loaded: Any, uri: Any) -> None:
    try:
        found = registry.find(uri)
    except Exception as exc:
        _log.warning("otel-rai: cannot find %s in the MLflow registry (%s); it is audited under its defaults",
                     uri, type(exc).__name__)
        return
    if found is not None:
        register(loaded, found)


def register(loaded: Any, version: registry.RegistryVersion, **given: Any) -> Any:
    """Register the model inside `loaded` (see `registry.served_model`) as `version`, keeping what was
    registered about it before (background, reference, explain) unless `given`; returns `loaded`. Its
    model record carries the version's URI, run id and MLflow model id."""
    model = registry.served_model(loaded)
    prior = models.registration_of(model)
    kept = {"background": prior.background, "explain": prior.explain, "reference": prior.reference,
            "reference_labels": prior.reference_labels}
    models.register_model(model, version.name, version.version, alias=version.alias, source_uri=version.uri,
                          source_run_id=version.run_id, source_model_id=version.model_id,
                          **{**kept, **{k: v for k, v in given.items() if v is not None}})
    return loaded


def resolve(registration: models.Registration) -> models.Registration:
    """`registration` completed from the MLflow registry when its ``source_uri`` is a ``models:/`` or
    ``runs:/`` URI (`models.source_resolvers`): name and version when not given, the alias, and the
    version's own URI, run id and model id. A lookup that fails is logged; nothing is then changed."""
    uri = registration.source_uri
    if uri is None or urllib.parse.urlsplit(uri).scheme not in (registry.MODELS_SCHEME, registry.RUNS_SCHEME):
        return registration
    if registration.source_run_id is not None or registration.source_model_id is not None:
        return registration  # completed already (by `register`)
    try:
        found = registry.find(uri)
    except Exception as exc:
        _log.warning("otel-rai: cannot resolve %s in the MLflow registry (%s); its record keeps the URI as given",
                     uri, type(exc).__name__)
        return registration
    if found is None:
        _log.warning("otel-rai: no single MLflow registry version holds %s; its record keeps the URI as given", uri)
        return registration
    if (registration.name, registration.version) not in ((found.name, found.version), (None, None)):
        _log.warning("otel-rai: %s is version %s of %s in the MLflow registry; the name and version given are "
                     "kept", uri, found.version, found.name)
    return replace(registration, name=registration.name or found.name, version=registration.version or found.version,
                   alias=registration.alias or found.alias, source_uri=found.uri, source_run_id=found.run_id,
                   source_model_id=found.model_id)
