"""otel-rai: an OpenTelemetry audit span for every scikit-learn-style decision.

    import otel_rai
    otel_rai.instrument(service_name="credit-scoring")
    model = otel_rai.register_model(pipe, name="credit", version="1.4.2")
    model.predict(X)      # unchanged predictions, plus one audit span

The package follows the data path, one folder per concept (``docs/design.md``): `session` wires
`capture` → `audit` (with `explanations`) → `chain` → `sinks` → `store`; `query`, `report` and `cli`
read the trail back. `semconv` names every attribute and metric, `settings` declares every option.

The public names below are imported on first use, so that ``import otel_rai`` (and the command line)
stays light until a name is needed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from otel_rai.version import __version__

if TYPE_CHECKING:
    from otel_rai.audit.hashing import HashKey, hash_input
    from otel_rai.capture.models import register_model
    from otel_rai.capture.scope import DecisionScope, decisions
    from otel_rai.errors import ArtifactError, AuditUnavailableError, InputMismatchError, OtelRaiError
    from otel_rai.explanations import Explanation, explain
    from otel_rai.fairness.alerts import FairnessAlert
    from otel_rai.monitoring.alerts import MonitoringAlert
    from otel_rai.provenance.reproduce import Reproduction, reproduce
    from otel_rai.provenance.training import hash_training
    from otel_rai.session.instrumentor import (
        FlushResult,
        RaiInstrumentor,
        flush,
        instrument,
        record_outcome,
        uninstrument,
    )
    from otel_rai.settings import FairnessConfig, MonitoringConfig, Settings

#: Public name -> the module that defines it.
_HOMES = {
    "ArtifactError": "otel_rai.errors",
    "AuditUnavailableError": "otel_rai.errors",
    "DecisionScope": "otel_rai.capture.scope",
    "Explanation": "otel_rai.explanations",
    "FairnessAlert": "otel_rai.fairness.alerts",
    "FairnessConfig": "otel_rai.settings",
    "FlushResult": "otel_rai.session.instrumentor",
    "HashKey": "otel_rai.audit.hashing",
    "InputMismatchError": "otel_rai.errors",
    "MonitoringAlert": "otel_rai.monitoring.alerts",
    "MonitoringConfig": "otel_rai.settings",
    "OtelRaiError": "otel_rai.errors",
    "RaiInstrumentor": "otel_rai.session.instrumentor",
    "Reproduction": "otel_rai.provenance.reproduce",
    "Settings": "otel_rai.settings",
    "decisions": "otel_rai.capture.scope",
    "explain": "otel_rai.explanations",
    "flush": "otel_rai.session.instrumentor",
    "hash_input": "otel_rai.audit.hashing",
    "hash_training": "otel_rai.provenance.training",
    "instrument": "otel_rai.session.instrumentor",
    "record_outcome": "otel_rai.session.instrumentor",
    "register_model": "otel_rai.capture.models",
    "reproduce": "otel_rai.provenance.reproduce",
    "uninstrument": "otel_rai.session.instrumentor",
}

__all__ = ["__version__", *sorted(_HOMES)]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'otel_rai' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
