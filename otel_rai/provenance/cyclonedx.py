"""A model record as a CycloneDX 1.6 ML-BOM: the model as a ``machine-learning-model`` component with a
``modelCard``, its training data as a ``data`` component, and the libraries it ran on as ``library``
components it depends on. Supply-chain tools read this format; the test validates it against the
CycloneDX JSON schema that ``cyclonedx-python-lib`` ships.

Mapping: the record's parameters are ``modelCard.properties`` named ``otel-rai:param:<deep name>`` (the
``get_params(deep=True)`` names, values as canonical JSON); the fingerprint, class, source URI and chain
position are component properties ``otel-rai:*``; the artifact's SHA-256 is the component's hash; the
training-data hash (keyed, so not a CycloneDX hash algorithm) and row count are properties of the data
component. Nothing here is a raw training value, because the record holds none.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from otel_rai.provenance.params import dumps
from otel_rai.provenance.record import ModelRecord
from otel_rai.version import __version__

SPEC_VERSION = "1.6"
#: Namespace of the CycloneDX property names (CycloneDX's property taxonomy convention).
PREFIX = "otel-rai:"
#: Class-name parts of models that find groups, for modelCard.modelParameters.task.
_CLUSTERING = ("KMeans", "Cluster", "Mixture", "DBSCAN", "Birch", "MeanShift", "AffinityPropagation")
_REGRESSION = ("Regressor", "Regression", "SVR", "Ridge", "Lasso", "ElasticNet")


def _property(name: str, value: Any) -> dict[str, str]:
    return {"name": PREFIX + name, "value": value if isinstance(value, str) else dumps(value)}


def _task(record: ModelRecord, final: str) -> str | None:
    """classification (the model has classes), clustering, regression, or None when the class does not say."""
    name = final.rsplit(".", 1)[-1]
    if (record.schema or {}).get("classes") is not None:
        return "classification"
    if any(part in name for part in _CLUSTERING):
        return "clustering"
    if any(part in name for part in _REGRESSION):
        return "regression"
    return None


def _final_class(record: ModelRecord) -> str:
    """The class that decides: a pipeline's last step (recursively), else the model's class."""
    node: dict[str, Any] = {"class": record.qualified_class, "params": record.params or {}}
    while True:
        steps = node["params"].get("steps")
        if not (isinstance(steps, list) and steps and isinstance(steps[-1], list) and len(steps[-1]) == 2
                and isinstance(steps[-1][1], dict) and "class" in steps[-1][1]):
            return str(node["class"])
        node = steps[-1][1]


def bom(record: ModelRecord, artifact_sha256: str | None = None) -> dict[str, Any]:
    """The CycloneDX 1.6 JSON document of `record` (`artifact_sha256` overrides the record's digest)."""
    model_ref = f"model:{record.fingerprint}"
    data_ref = f"data:{(record.training or {}).get('hash', record.fingerprint)}"
    schema = record.schema or {}
    final = _final_class(record)
    task = _task(record, final)
    parameters: dict[str, Any] = {}
    if task is not None:
        parameters["approach"] = {"type": "unsupervised" if task == "clustering" else "supervised"}
        parameters["task"] = task
    parameters["architectureFamily"] = final.rsplit(".", 1)[-1]
    parameters["modelArchitecture"] = record.qualified_class or final
    features = schema.get("features")
    call = schema.get("call") or {}
    if call:
        n = schema.get("n_features_in") or len(call.get("dtypes") or [])
        named = f": {', '.join(map(str, features))}" if features else ""
        parameters["inputs"] = [{"format": f"{call.get('container')} of {n} features{named}"}]
    if schema.get("classes") is not None:
        parameters["outputs"] = [{"format": f"one of the classes {dumps(schema['classes'])}"}]
    if record.training:
        parameters["datasets"] = [{"ref": data_ref}]
    card: dict[str, Any] = {"bom-ref": f"model-card:{record.fingerprint}", "modelParameters": parameters}
    params = sorted(record.flat_params().items())
    if params:
        card["properties"] = [_property(f"param:{name}", value) for name, value in params]
    component: dict[str, Any] = {
        "type": "machine-learning-model",
        "bom-ref": model_ref,
        "name": record.name or final.rsplit(".", 1)[-1],
        "version": record.version or record.fingerprint or "unknown",
        "description": f"{record.qualified_class}, fitted model {record.fingerprint}",
        "modelCard": card,
    }
    digest = artifact_sha256 or (record.artifact or {}).get("sha256")
    if digest:
        component["hashes"] = [{"alg": "SHA-256", "content": digest}]
    properties = [_property("fingerprint", record.fingerprint), _property("class", record.qualified_class),
                  _property("recorded", record.timestamp)]
    if record.stream:
        properties += [_property("audit.stream", record.stream), _property("audit.seq", str(record.seq))]
    if (record.artifact or {}).get("format"):
        properties.append(_property("artifact.format", record.artifact["format"]))
    component["properties"] = properties
    if record.source_uri:
        component["externalReferences"] = [{"type": "distribution", "url": record.source_uri,
                                            "comment": "where the model came from"}]
    libraries = [
        {"type": "platform" if name == "python" else "library", "bom-ref": f"lib:{name}@{version}", "name": name,
         "version": version, **({} if name == "python" else {"purl": f"pkg:pypi/{name}@{version}"})}
        for name, version in sorted(record.libraries.items())
    ]
    components = [component, *libraries]
    if record.training:
        t = record.training
        components.append({
            "type": "data",
            "bom-ref": data_ref,
            "name": "training data",
            "description": "the data of the fit seen under otel-rai: its keyed hash, never its values",
            "data": [{"type": "dataset", "name": "training data",
                      "description": f"{t.get('rows')} rows, {t.get('method')} at {t.get('time')}"}],
            "properties": [_property(f"training.{k}", str(v)) for k, v in sorted(t.items())],
        })
    return {
        "bomFormat": "CycloneDX",
        "specVersion": SPEC_VERSION,
        "serialNumber": f"urn:uuid:{uuid.uuid4()}",
        "version": 1,
        "metadata": {
            "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "tools": {"components": [{"type": "application", "name": "otel-rai", "version": __version__}]},
            "component": {"type": "machine-learning-model", "bom-ref": f"{model_ref}:subject",
                          "name": component["name"], "version": component["version"]},
        },
        "components": components,
        "dependencies": [{"ref": model_ref, "dependsOn": [lib["bom-ref"] for lib in libraries]}],
    }
