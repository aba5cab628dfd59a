"""`ModelRecord`: a model record span read back from any backend, and what the tooling derives from it:
the flat parameter list, the differences between two records, the key parameters of a decision's model."""

from __future__ import annotations

import importlib
import inspect
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from otel_rai import semconv
from otel_rai._time import rfc3339
from otel_rai.codec.records import SpanRecord
from otel_rai.provenance.params import flatten, shallow

#: Parameters that change how a model runs, not what it computes: left out of the key parameters.
RUNTIME_PARAMETERS = frozenset({"n_jobs", "nthread", "verbose", "verbosity", "silent", "memory", "copy",
                                "copy_X", "warm_start"})
#: How many key parameters `otel-rai show` names.
KEY_PARAMETERS = 8


#: Libraries whose classes `class_defaults` may import to read their defaults.
DEFAULTS_FROM = frozenset({"sklearn", "xgboost", "lightgbm"})


def class_defaults(qualified_class: str) -> dict[str, Any] | None:
    """The constructor defaults of a class of `DEFAULTS_FROM` (imported by name), else None: a record
    from a backend names the class, and nothing else is imported on its word."""
    module, _, name = qualified_class.rpartition(".")
    if module.split(".")[0] not in DEFAULTS_FROM:
        return None
    try:
        cls = getattr(importlib.import_module(module), name)
        parameters = inspect.signature(cls.__init__).parameters.values()
    except (ImportError, AttributeError, TypeError, ValueError):
        return None
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}


def _json(value: Any) -> Any:
    if not isinstance(value, str):
        return None
    try:
        return json.loads(value)
    except ValueError:
        return None


@dataclass(frozen=True)
class ModelRecord:
    """One ``ml.model.record`` span: the model a fingerprint names, as one process recorded it."""

    name: str | None
    version: str | None
    fingerprint: str | None
    qualified_class: str | None
    time_ns: int
    #: The model's parameters: {name: canonical value} (see `otel_rai.provenance.params`).
    params: dict[str, Any] | None
    libraries: dict[str, str]
    schema: dict[str, Any] | None
    source_uri: str | None
    #: hash, key_id, scheme, rows, method, batches, time, duration_ms; None if not fitted under instrument().
    training: dict[str, Any] | None
    #: sha256, format, uri, background_sha256, error; None if no artifact store was configured.
    artifact: dict[str, Any] | None
    service: str | None = None
    stream: str | None = None
    seq: int | None = None
    trace_id: str = ""
    span_id: str = ""
    error: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_span(cls, span: SpanRecord) -> ModelRecord:
        """The record a ``ml.model.record`` span holds; a JSON attribute that does not parse reads as None."""
        a = span.attributes
        training = {k: a[attribute] for k, attribute in (
            ("hash", semconv.TRAINING_HASH), ("key_id", semconv.TRAINING_HASH_KEY_ID),
            ("scheme", semconv.TRAINING_HASH_SCHEME), ("rows", semconv.TRAINING_ROWS),
            ("method", semconv.TRAINING_METHOD), ("batches", semconv.TRAINING_BATCHES),
            ("time", semconv.TRAINING_TIME), ("duration_ms", semconv.TRAINING_DURATION_MS)) if attribute in a}
        artifact = {k: a[attribute] for k, attribute in (
            ("sha256", semconv.ARTIFACT_SHA256), ("format", semconv.ARTIFACT_FORMAT),
            ("uri", semconv.ARTIFACT_URI), ("background_sha256", semconv.ARTIFACT_BACKGROUND_SHA256),
            ("error", semconv.ARTIFACT_ERROR)) if attribute in a}
        libraries = _json(a.get(semconv.MODEL_LIBRARIES))
        seq = a.get(semconv.AUDIT_SEQ)
        return cls(
            name=a.get(semconv.MODEL_NAME),
            version=a.get(semconv.MODEL_VERSION),
            fingerprint=a.get(semconv.MODEL_FINGERPRINT),
            qualified_class=a.get(semconv.MODEL_CLASS),
            time_ns=span.start_ns,
            params=_json(a.get(semconv.MODEL_PARAMS)),
            libraries={str(k): str(v) for k, v in libraries.items()} if isinstance(libraries, dict) else {},
            schema=_json(a.get(semconv.MODEL_SCHEMA)),
            source_uri=a.get(semconv.MODEL_SOURCE_URI),
            training=training or None,
            artifact=artifact or None,
            service=span.service,
            stream=a.get(semconv.AUDIT_STREAM),
            seq=int(seq) if isinstance(seq, (int, float)) else None,
            trace_id=span.trace_id,
            span_id=span.span_id,
            error=a.get(semconv.AUDIT_ERROR),
            attributes=dict(a),
        )

    @property
    def timestamp(self) -> str:
        """When the record's model first decided in its process, RFC 3339 UTC."""
        return rfc3339(self.time_ns)

    def flat_params(self) -> dict[str, Any]:
        """The parameters under their ``get_params(deep=True)`` names (``clf__C``)."""
        return flatten({"class": self.qualified_class, "params": self.params or {}})

    def key_parameters(self, limit: int = KEY_PARAMETERS) -> dict[str, Any]:
        """The parameters that say most about what the model computes: those of the final estimator (a
        pipeline's last step, recursively) that differ from its class's defaults (when the class is one of
        `DEFAULTS_FROM`'s), scalar values only, runtime switches left out."""
        node: dict[str, Any] = {"class": self.qualified_class, "params": self.params or {}}
        prefix = ""
        while True:
            steps = node["params"].get("steps")
            if not (isinstance(steps, list) and steps and isinstance(steps[-1], list) and len(steps[-1]) == 2
                    and isinstance(steps[-1][1], dict) and "params" in steps[-1][1]):
                break
            prefix += f"{steps[-1][0]}__"
            node = steps[-1][1]
        defaults = class_defaults(str(node["class"]))
        out = {}
        for name, value in sorted(node["params"].items()):
            if name in RUNTIME_PARAMETERS or not (value is None or isinstance(value, (bool, int, float, str))):
                continue
            if defaults is not None and name in defaults and defaults[name] == value:
                continue
            out[prefix + name] = value
            if len(out) == limit:
                break
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``otel-rai model show --format json``)."""
        return {
            "name": self.name, "version": self.version, "fingerprint": self.fingerprint,
            "class": self.qualified_class, "time": self.timestamp, "service": self.service,
            "stream": self.stream, "seq": self.seq, "trace_id": self.trace_id, "span_id": self.span_id,
            "params": self.params, "libraries": self.libraries, "schema": self.schema,
            "source_uri": self.source_uri, "training": self.training, "artifact": self.artifact,
            "error": self.error,
        }


@dataclass(frozen=True)
class Difference:
    """One line of ``otel-rai model diff``: what differs, and its value in each record (None: absent)."""

    section: str
    key: str
    left: Any
    right: Any


_ABSENT = object()


def _schema_view(schema: dict[str, Any] | None) -> dict[str, Any]:
    schema = schema or {}
    out: dict[str, Any] = {"n_features_in": schema.get("n_features_in"), "classes": schema.get("classes")}
    names = schema.get("features") or []
    for part in ("fit", "call"):
        seen = schema.get(part) or {}
        if seen:
            out[f"{part}.container"] = seen.get("container")
        for i, dtype in enumerate(seen.get("dtypes") or []):
            out[f"{part}.dtype[{names[i] if i < len(names) else i}]"] = dtype
    out["features"] = names or None
    return out


def diff(left: ModelRecord, right: ModelRecord) -> list[Difference]:
    """Class, parameter, schema, library and training-data differences between two records."""
    out = []
    if left.qualified_class != right.qualified_class:
        out.append(Difference("class", "class", left.qualified_class, right.qualified_class))
    sections = (
        ("params", left.flat_params(), right.flat_params()),
        ("schema", _schema_view(left.schema), _schema_view(right.schema)),
        ("libraries", left.libraries, right.libraries),
        ("training", left.training or {}, right.training or {}),
    )
    for section, a, b in sections:
        for key in sorted(set(a) | set(b)):
            x, y = a.get(key, _ABSENT), b.get(key, _ABSENT)
            if section == "training" and key in ("time", "duration_ms", "key_id"):
                continue  # when and how long, not what
            if section == "params" and x is not _ABSENT and y is not _ABSENT and shallow(x) == shallow(y):
                continue  # the same estimator classes: a nested difference has its own key
            if x != y:
                out.append(Difference(section, key, None if x is _ABSENT else x, None if y is _ABSENT else y))
    return out
