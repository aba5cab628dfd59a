"""MLflow: otel-rai's side of an MLflow workflow (docs/mlflow.md). `serving` logs a pyfunc model that
answers with explanations and audits every request (`server` audits the requests MLflow refuses),
`fairness` checks a model on validation data and logs the result to a run, `register_model` names a
model by its registry URI. The top of the data path beside the command line: imports the session and
the layers below it; only the command line imports it (``otel-rai check``). Needs ``otel-rai[mlflow]``.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Public name -> the module of this package that defines it.
_HOMES = {
    "AuditedModel": "serving",
    "FairnessCheck": "fairness",
    "ReasonCodes": "reason_codes",
    "fairness_metrics": "fairness",
    "log_fairness": "fairness",
    "log_model": "serving",
    "register_model": "registration",
    "save_model": "serving",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'otel_rai.mlflow' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
