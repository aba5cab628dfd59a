"""``otel_rai.mlflow.register_model(model, "models:/credit@champion")``: audit a model loaded some other
way (not through MLflow's loaders, which are wrapped while instrumented) as its registry version."""

from __future__ import annotations

from typing import Any, TypeVar

from otel_rai.capture import models
from otel_rai.errors import InputError
from otel_rai.registry import mlflow as registry

M = TypeVar("M")


def register_model(model: M, uri: str, *, background: Any = None, explain: bool = True) -> M:
    """Register `model` under the registry name and version that `uri` names (an alias is resolved to its
    version now, and recorded beside it); returns `model`. `uri`: ``models:/NAME/VERSION``,
    ``models:/NAME@ALIAS``, ``models:/NAME/latest``, a logged model's ``models:/m-...``, ``runs:/RUN/PATH``
    or a model directory. Raises `InputError` when no single registry version holds it."""
    version = registry.find(uri)
    if version is None:
        raise InputError(f"no single MLflow registry version holds {uri!r}")
    prior = models.registration_of(model)
    return models.register_model(
        model, version.name, version.version,
        background=prior.background if background is None else background,
        explain=explain, alias=version.alias,
    )
