"""Requests that MLflow's scoring server refuses before the model sees them (a body that is not JSON, an
unknown input format, columns or types that do not fit the signature, an unsupported content type)
are audited too: an ERROR decision span without rows, naming the kind of failure and no input value.

The server calls ``mlflow.pyfunc.scoring_server.invocations(data, content_type, model, input_schema)``
for every ``/invocations`` request (MLflow 2 and 3). While an otel-rai model is served, that function
is wrapped: when it fails or answers an error status without having reached the model's ``predict``,
the refusal is recorded against the model it names. Its response is MLflow's, unchanged.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import sys
import time
from typing import Any, Callable

from otel_rai.errors import RequestRejected
from otel_rai.registry import mlflow as registry
from otel_rai.session.instrumentor import record_rejected

_log = logging.getLogger(__name__)

SCORING_SERVER = "mlflow.pyfunc.scoring_server"
#: Error statuses at or above this one mean the request was refused.
_FIRST_ERROR_STATUS = 400

#: Set by `reached` when the served model's predict runs for the current request.
_REACHED: contextvars.ContextVar[bool] = contextvars.ContextVar("otel_rai_mlflow_reached", default=False)


def reached() -> None:
    """Called by the served model's predict: this request got to the model."""
    _REACHED.set(True)


def audit_refusals() -> bool:
    """Wrap the scoring server's ``invocations`` (once per process) when this process is one; True then."""
    module = sys.modules.get(SCORING_SERVER)
    original = getattr(module, "invocations", None) if module is not None else None
    if original is None:
        return False
    if getattr(original, "__otel_rai_wrapped__", False):
        return True
    module.invocations = _audited(original)
    return True


def _audited(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def invocations(data: Any, content_type: Any, model: Any, *args: Any, **kwargs: Any) -> Any:
        token = _REACHED.set(False)
        start_ns = time.time_ns()
        try:
            result = original(data, content_type, model, *args, **kwargs)
        except Exception as exc:
            if not _REACHED.get():
                _refused(model, f"{type(exc).__name__} before the model", start_ns)
            raise
        finally:
            got_there = _REACHED.get()
            _REACHED.reset(token)
        status = getattr(result, "status", 200)
        if not got_there and isinstance(status, int) and status >= _FIRST_ERROR_STATUS:
            _refused(model, f"HTTP {status} before the model", start_ns)
        return result

    invocations.__otel_rai_wrapped__ = True  # type: ignore[attr-defined]
    return invocations


def _refused(pyfunc: Any, what: str, start_ns: int) -> None:
    """Record the refusal against the otel-rai model that `pyfunc` serves (nothing for another model)."""
    try:
        python_model = pyfunc.unwrap_python_model()
    except Exception:  # not a python model: not ours
        return
    estimator = getattr(python_model, registry.SERVED_MODEL_ATTRIBUTE, None)
    operation = getattr(python_model, "operation", None)
    if estimator is None or operation is None:
        return
    try:
        record_rejected(estimator, operation, RequestRejected(f"the request was refused: {what}"), start_ns)
    except Exception as exc:  # never let the audit change MLflow's answer
        _log.warning("otel-rai: a refused request could not be audited (%s)", type(exc).__name__)
