"""MLflow's model registry: the name, version and alias behind a model URI.

    models:/credit/3          version 3 of the registered model ``credit``
    models:/credit@champion   the version the alias ``champion`` points at now (recorded as the alias)
    models:/credit/latest     the newest version; models:/credit/Production the newest of a stage
    models:/m-<id>            an MLflow 3 logged model, by id
    runs:/<run id>/<path>     a model logged in a run

An alias (or stage, or ``latest``) is resolved to a version *before* the model is loaded (`pin`), and
that version is loaded, so that the version recorded is the one that decides even if the alias moves
meanwhile. A logged model, a run's model or a model directory is found in the registry by its MLflow
model id or run id (`find`); when no version, or several, hold it, there is no registry version.
Everything goes through `mlflow.MlflowClient` (the tracking and registry URIs are MLflow's own).
"""

from __future__ import annotations

import logging
import os
import urllib.parse
from dataclasses import dataclass
from typing import Any

_log = logging.getLogger(__name__)

MODELS_SCHEME = "models"
RUNS_SCHEME = "runs"
LATEST = "latest"
#: The file of a model directory that says what it is (run id, model id).
MLMODEL = "MLmodel"
#: The attribute a pyfunc python model sets to the estimator it serves (`otel_rai.mlflow.AuditedModel`).
SERVED_MODEL_ATTRIBUTE = "otel_rai_model"


@dataclass(frozen=True)
class RegistryVersion:
    """One version of a registered model, and how it was asked for."""

    name: str
    version: str
    #: The alias or stage it was loaded under (``champion``, ``Production``, ``latest``), if any.
    alias: str | None = None
    run_id: str | None = None
    #: The MLflow 3 logged model behind the version (``m-...``), when the registry says.
    model_id: str | None = None

    @property
    def uri(self) -> str:
        """The URI that names this version for good: ``models:/NAME/VERSION``."""
        return f"{MODELS_SCHEME}:/{self.name}/{self.version}"


@dataclass(frozen=True)
class ModelsUri:
    """A parsed ``models:/`` URI: exactly one of version, alias, stage, latest; or a logged model id."""

    name: str | None = None
    version: str | None = None
    alias: str | None = None
    stage: str | None = None
    latest: bool = False
    model_id: str | None = None


def parse(uri: Any) -> ModelsUri | None:
    """`uri` as a ``models:/`` URI, or None when it is something else. A malformed one is a ValueError."""
    text = str(uri)
    parsed = urllib.parse.urlparse(text, allow_fragments=False)
    if parsed.scheme != MODELS_SCHEME:
        return None
    parts = parsed.path.lstrip("/").split("/") if parsed.path.startswith("/") else []
    if not parts or not parts[0].strip() or len(parts) > 2 or (len(parts) == 2 and not parts[1].strip()):
        raise ValueError(f"otel-rai: {text!r} is not a models:/ URI like models:/NAME/VERSION or models:/NAME@ALIAS")
    if len(parts) == 2:
        name, suffix = parts
        if suffix.isdigit():
            return ModelsUri(name=name, version=suffix)
        if suffix.lower() == LATEST:
            return ModelsUri(name=name, latest=True)
        return ModelsUri(name=name, stage=suffix)
    name, at, alias = parts[0].rpartition("@")
    if at:
        if not alias.strip():  # an empty name parses (as in MLflow) and is then not found
            raise ValueError(f"otel-rai: {text!r} is not a models:/ URI like models:/NAME@ALIAS")
        return ModelsUri(name=name, alias=alias)
    return ModelsUri(model_id=parts[0])


def client(tracking_uri: str | None = None) -> Any:
    """An `mlflow.MlflowClient` (imported here: mlflow takes seconds to import)."""
    import mlflow

    return mlflow.MlflowClient(tracking_uri=tracking_uri)


def _model_id_of(source: str | None) -> str | None:
    """The logged model id of a version whose source is ``models:/m-...`` (how MLflow 3 registers)."""
    parsed = parse(source) if source else None
    return parsed.model_id if parsed is not None else None


def _version(mv: Any, alias: str | None = None) -> RegistryVersion:
    return RegistryVersion(name=str(mv.name), version=str(mv.version), alias=alias, run_id=mv.run_id or None,
                           model_id=getattr(mv, "model_id", None) or _model_id_of(getattr(mv, "source", None)))


def pin(uri: Any, mlflow_client: Any = None) -> RegistryVersion | None:
    """The registry version a ``models:/NAME/...`` URI names right now, or None for another kind of URI
    (a logged model id, ``runs:/``, a path: see `find`). Load ``pinned.uri`` to load exactly it."""
    parsed = parse(uri)
    if parsed is None or parsed.name is None:
        return None
    c = mlflow_client or client()
    if parsed.version is not None:
        return _version(c.get_model_version(parsed.name, parsed.version))
    if parsed.alias is not None:
        return _version(c.get_model_version_by_alias(parsed.name, parsed.alias), parsed.alias)
    candidates = (c.search_model_versions(f"name={_quoted(parsed.name)}") if parsed.latest
                  else c.get_latest_versions(parsed.name, [parsed.stage]))  # stages: deprecated by MLflow
    newest = max(candidates, key=lambda mv: int(mv.version), default=None)
    if newest is None:
        raise LookupError(f"otel-rai: the registry holds no version of {parsed.name!r} for {str(uri)!r}")
    return _version(newest, LATEST if parsed.latest else parsed.stage)


def find(uri: Any, mlflow_client: Any = None) -> RegistryVersion | None:
    """The registry version holding the model at `uri` (any URI `pin` takes, a logged model id,
    ``runs:/RUN/PATH``, or a local model directory), or None when no single version holds it."""
    pinned = pin(uri, mlflow_client)
    if pinned is not None:
        return pinned
    text = str(uri)
    parsed = parse(text)
    if parsed is not None:
        return _unique(text, mlflow_client, model_id=parsed.model_id)
    scheme = urllib.parse.urlparse(text).scheme
    if scheme == RUNS_SCHEME:
        run_id, _, path = text[len(RUNS_SCHEME) + 2:].partition("/")
        return _unique(text, mlflow_client, run_id=run_id, path=path.strip("/"))
    if scheme in ("", "file"):
        directory = urllib.parse.urlparse(text).path if scheme == "file" else text
        meta = model_metadata(directory)
        if meta is not None:
            return _unique(text, mlflow_client, model_id=meta.get("model_id"), run_id=meta.get("run_id"),
                           path=meta.get("artifact_path"))
    return None


def model_metadata(directory: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``MLmodel`` file of a model directory (or of the directory holding a model file), or None."""
    import yaml

    for candidate in (directory, os.path.dirname(os.fspath(directory))):
        path = os.path.join(candidate, MLMODEL)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                meta = yaml.safe_load(f)
            return meta if isinstance(meta, dict) else None
    return None


def _quoted(value: str) -> str:
    """A value for an MLflow search filter, in single quotes."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _unique(uri: str, mlflow_client: Any, *, model_id: str | None = None, run_id: str | None = None,
            path: str | None = None) -> RegistryVersion | None:
    """The one registry version whose logged model is `model_id`, or else that came from `run_id` (at
    `path` of its artifacts, or, in MLflow 3, from its logged model named `path`). None, with a warning,
    when several do."""
    c = mlflow_client or client()
    found: dict[tuple[str, str], Any] = {}
    if model_id:
        for mv in c.search_model_versions(f"source_path={_quoted(f'{MODELS_SCHEME}:/{model_id}')}"):
            found[(mv.name, str(mv.version))] = mv
    if not found and run_id:
        for mv in c.search_model_versions(f"run_id={_quoted(run_id)}"):
            source = str(mv.source or "").rstrip("/")
            logged = _model_id_of(source)
            if (not path or source.endswith("/" + path)
                    or (logged is not None and model_id is None and c.get_logged_model(logged).name == path)):
                found[(mv.name, str(mv.version))] = mv
    if len(found) > 1:
        names = ", ".join(f"{n}/{v}" for n, v in sorted(found))
        _log.warning("otel-rai: the model at %s is registered as several versions (%s); give the one served "
                     "as OTEL_RAI_MLFLOW_MODEL_URI=models:/NAME/VERSION", uri, names)
        return None
    return _version(next(iter(found.values()))) if found else None


def served_model(loaded: Any) -> Any:
    """The estimator that decides inside what an MLflow loader returned: the model of a pyfunc (or the
    estimator an otel-rai pyfunc serves), else `loaded` itself."""
    raw = loaded
    for unwrap in ("unwrap_python_model", "get_raw_model"):  # a python model; another flavour's model
        method = getattr(loaded, unwrap, None)
        if callable(method):
            try:
                raw = method()
                break
            except Exception:  # not that kind of pyfunc
                continue
    served = getattr(raw, SERVED_MODEL_ATTRIBUTE, None)
    return raw if served is None else served
