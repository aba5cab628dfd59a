"""MLflow: otel-rai's side of an MLflow workflow (docs/mlflow.md). `serving` logs a pyfunc model that
answers with explanations and audits every request (`server` audits the requests MLflow refuses),
`fairness` checks a model on validation data (`runs.log_fairness` logs it to a run, with the
explanations), `registration` names a model by its registry URI. The layer between the command line and
the session: imports the session and the layers below; only the command line imports it (``otel-rai
check``, through `fairness` alone). Needs ``otel-rai[mlflow]``.
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
    "log_fairness": "runs",
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
