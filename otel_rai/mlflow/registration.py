"""``otel_rai.mlflow.register_model(model, "models:/credit@champion")``: audit a model loaded some other
way (not through MLflow's loaders, which are wrapped while instrumented) as its registry version."""

from __future__ import annotations

from typing import Any, TypeVar

from otel_rai.errors import InputError
from otel_rai.registry import hooks
from otel_rai.registry import mlflow as registry

M = TypeVar("M")


def register_model(model: M, source: str, *, background: Any = None, explain: bool | None = None) -> M:
    """Register `model` under the registry name and version that `source` names (an alias is resolved to
    its version now, and recorded beside it); returns `model`. Its model record carries the version's URI
    (``models:/credit/3``), the run id and the MLflow model id. `source`: ``models:/NAME/VERSION``,
    ``models:/NAME@ALIAS``, ``models:/NAME/latest``, a logged model's ``models:/m-...``, ``runs:/RUN/PATH``
    or a model directory. Raises `InputError` when no single registry version holds it."""
    version = registry.find(source)
    if version is None:
        raise InputError(f"no single MLflow registry version holds {source!r}")
    return hooks.register(model, version, background=background, explain=explain)
