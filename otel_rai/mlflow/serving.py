"""An MLflow pyfunc model that answers each row with its decision and the reasons for it.

    info = otel_rai.mlflow.log_model(pipe, name="credit", background=X_train[:200], input_example=X[:5],
                                     reason_codes={("income", "-"): "Income insufficient"})
    # mlflow models serve -m models:/credit/3 -p 1234 --env-manager local
    # POST /invocations  ->  {"predictions": [{"prediction": 0, "scores": {...}, "decision_id": "...",
    #                                           "reasons": [...], "explanation": {...}, "reason_codes": [...]}]}

Per row: ``prediction`` (the label, or the value of a regressor: what ``ml.outputs`` records),
``scores`` (per class, as ``ml.output.scores.<class>``), ``decision_id``, ``reasons`` (the top
attributions, exactly the ``ml.explanation.top`` entry of the decision span), ``explanation`` (method,
explained output and class, base value; or the error type), and ``reason_codes`` when a table was given.

The attributions are computed once, in the request, and handed to the audit with
``otel_rai.decisions(explanation=...)``: the span records the very attributions the response carries.
Loading the model instruments the process (``otel_rai.instrument()`` from the environment: the local
store, or OTLP, or ``OTEL_RAI_MLFLOW_EXPERIMENT``) unless it is instrumented already, and registers the
estimator under its registry name and version (`otel_rai.registry.mlflow.find`).
"""

from __future__ import annotations

import contextvars
import json
import logging
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from otel_rai import semconv, settings
from otel_rai.audit import outputs
from otel_rai.audit.spans import explanation_attributes
from otel_rai.capture import models
from otel_rai.capture.recorder import run_quietly
from otel_rai.capture.scope import decisions
from otel_rai.codec.reasons import parse_top
from otel_rai.errors import RequestRejected
from otel_rai.explanations import Explanation, explain
from otel_rai.mlflow import server
from otel_rai.mlflow.reason_codes import DEFAULT_MAX_REASONS, ReasonCodes
from otel_rai.registry import hooks
from otel_rai.registry import mlflow as registry
from otel_rai.session.instrumentor import RaiInstrumentor, current_settings, instrument, record_rejected
from otel_rai.version import __version__

_log = logging.getLogger(__name__)

#: The artifact holding the serving configuration, readable in the MLflow UI.
CONFIG_ARTIFACT = "otel_rai.json"
#: The name the model is logged under when none is given (MLflow's convention).
DEFAULT_NAME = "model"
#: Rows of a DataFrame background taken as the input example when none is given.
EXAMPLE_ROWS = 5

#: True while `log_model`/`save_model` run: MLflow then loads the model and predicts its input example,
#: which must neither instrument the process nor count as decisions.
_LOGGING: contextvars.ContextVar[bool] = contextvars.ContextVar("otel_rai_mlflow_logging", default=False)


class AuditedModel(mlflow.pyfunc.PythonModel):
    """The pyfunc model `log_model` logs: `otel_rai_model` decides, every call is audited and explained."""

    def __init__(self, estimator: Any, name: str, *, background: Any = None, explain: bool = True,
                 reason_codes: ReasonCodes | None = None) -> None:
        self.otel_rai_model = estimator
        self.name = name
        self.background = background
        self.explain = explain
        self.reason_codes = reason_codes
        self.operation = "predict_proba" if hasattr(estimator, "predict_proba") else "predict"

    # --- loading -------------------------------------------------------------------------------------

    def load_context(self, context: Any) -> None:
        """Instrument the process if needed, and register the estimator as the registry version served."""
        if not RaiInstrumentor().is_instrumented_by_opentelemetry and not _LOGGING.get():
            instrument()
        directory = Path(context.artifacts[CONFIG_ARTIFACT]).parent.parent
        version = _served_version(directory)
        if version is not None:  # its model record carries the version's URI, run id and model id
            hooks.register(self.otel_rai_model, version, background=self.background, explain=self.explain)
        else:
            models.register_model(self.otel_rai_model, self.name, background=self.background, explain=self.explain)
        server.audit_refusals()

    # --- predicting ----------------------------------------------------------------------------------

    def predict(self, context, model_input, params=None):  # noqa: ANN001 - MLflow reads type hints as a schema
        """One answer per row (see the module docstring); every call is audited. ``model_input`` is what
        MLflow parsed (a DataFrame with a signature); the parameters carry no type hints because MLflow
        would take them for the model's input schema."""
        server.reached()
        start_ns = time.time_ns()
        estimator = self.otel_rai_model
        try:
            X = _model_input(estimator, model_input)
        except Exception as exc:  # recorded with its kind only: a parser's message may quote the input
            refused = exc if isinstance(exc, RequestRejected) else RequestRejected(
                f"the input is not rows of features ({type(exc).__name__})")
            record_rejected(estimator, self.operation, refused, start_ns)
            raise MlflowException(str(refused), error_code=INVALID_PARAMETER_VALUE) from None
        config = current_settings()
        explanation = self._explain(X, config)
        with decisions(explain=self.explain, explanation=explanation) as scope:
            output = getattr(estimator, self.operation)(X)
        return self._answer(output, scope.ids, explanation, config)

    def _explain(self, X: Any, config: settings.Settings | None) -> Explanation | BaseException | None:
        """The attributions the response and the span share; the exception when there are none."""
        if not self.explain or (config is not None and not config.explain):
            return None
        exact = config.explain_exact_values if config is not None else settings.default("explain_exact_values")
        try:
            if config is None:
                return explain(self.otel_rai_model, X, published=not exact)
            return explain(self.otel_rai_model, X, budget_us=config.explain_budget_us,
                           max_evals=config.explain_max_evals, published=not exact)
        except Exception as exc:  # the decision still goes out, with the reason why it is unexplained
            return exc

    def _answer(self, output: Any, ids: list[str], explanation: Any, config: settings.Settings | None) -> list[dict]:
        classes = getattr(self.otel_rai_model, "classes_", None)
        values, scores = outputs.encode(self.operation, output, classes if isinstance(classes, np.ndarray) else None)
        k = config.explain_top_k if config is not None else settings.default("explain_top_k")
        exact = config.explain_exact_values if config is not None else settings.default("explain_exact_values")
        # The span's own encoding: the reasons are its ``ml.explanation.top`` entries, rounded alike.
        top = explanation_attributes(explanation, k, exact)[1][semconv.EXPLANATION_TOP] \
            if isinstance(explanation, Explanation) else None
        rows = []
        for i, value in enumerate(values):
            row: dict[str, Any] = {"prediction": value}
            if scores:
                row["scores"] = {label: column[i] for label, column in scores.items()}
            row["decision_id"] = ids[i] if i < len(ids) else None
            if top is not None:
                reasons = parse_top(top[i])
                # Without a known grid the span keeps the sign alone, and so does the answer (JSON has no ±inf).
                row["reasons"] = [{"feature": f, "attribution": a if math.isfinite(a) else None,
                                   "sign": "+" if a > 0 else "-"} for f, a in reasons]
                row["explanation"] = {
                    "method": explanation.method,
                    "output": explanation.output,
                    "class": None if explanation.classes is None else _plain(explanation.classes[i]),
                    "base_value": float(explanation.base_values[i]),
                }
                if self.reason_codes is not None:
                    row["reason_codes"] = self.reason_codes.principal(reasons)
            elif isinstance(explanation, BaseException):
                row["reasons"] = None
                row["explanation"] = {"error": type(explanation).__name__}
            rows.append(row)
        return rows


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value JSON writes."""
    return value.item() if isinstance(value, np.generic) else value


def _model_input(estimator: Any, model_input: Any) -> Any:
    """The request as the estimator takes it: a DataFrame with the columns it was fitted on, in their
    order (an array for an estimator fitted on one). Missing columns are refused without naming any value."""
    import pandas as pd

    names = getattr(estimator, "feature_names_in_", None)
    if isinstance(model_input, Mapping):
        model_input = pd.DataFrame(dict(model_input))
    if not isinstance(model_input, pd.DataFrame):
        array = np.asarray(model_input)
        if array.ndim != 2:
            raise RequestRejected(f"the input has {array.ndim} dimensions; rows of features are needed")
        if names is not None and array.shape[1] == len(names):
            return pd.DataFrame(array, columns=list(names))
        return array
    if names is None:
        return model_input.to_numpy()
    if len(model_input.columns) == len(names) and (model_input.columns == names).all():
        return model_input  # the usual case: MLflow's signature put the columns in this order already
    missing = [str(n) for n in names if n not in model_input.columns]
    if missing:
        raise RequestRejected(f"the input lacks {len(missing)} of the model's {len(names)} columns: "
                              + ", ".join(missing))
    return model_input[list(names)]


def _served_version(directory: Path) -> registry.RegistryVersion | None:
    """The registry version being served from `directory`: ``OTEL_RAI_MLFLOW_MODEL_URI`` when given, else
    the version holding the directory's logged model (asked only when MLflow's tracking URI is set, so
    that a model served without one creates no local MLflow database)."""
    uri = settings.env("OTEL_RAI_MLFLOW_MODEL_URI")
    try:
        if uri is not None:
            return registry.pin(uri)
        if settings.env("MLFLOW_TRACKING_URI") is not None:
            return registry.find(directory)
    except Exception as exc:
        _log.warning("otel-rai: cannot find the served model in the MLflow registry (%s); its decisions are "
                     "audited under the name it was logged with", type(exc).__name__)
    return None


def _python_model(model: Any, name: str, background: Any, explain: bool,
                  reason_codes: Mapping[Any, str] | ReasonCodes | None, max_reasons: int) -> AuditedModel:
    codes = reason_codes if isinstance(reason_codes, ReasonCodes) or reason_codes is None \
        else ReasonCodes(reason_codes, max_reasons)
    if background is not None and not hasattr(background, "shape"):
        background = np.asarray(background)
    return AuditedModel(model, name, background=background, explain=explain, reason_codes=codes)


def _config_file(python_model: AuditedModel, folder: str) -> str:
    path = os.path.join(folder, CONFIG_ARTIFACT)
    config = {
        "otel_rai_version": __version__,
        "name": python_model.name,
        "operation": python_model.operation,
        "explain": python_model.explain,
        "reason_codes": None if python_model.reason_codes is None else python_model.reason_codes.to_json(),
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
    return path


def _pyfunc_arguments(model: Any, name: str, background: Any, explain: bool, reason_codes: Any,
                      max_reasons: int, input_example: Any, folder: str) -> dict[str, Any]:
    python_model = _python_model(model, name, background, explain, reason_codes, max_reasons)
    if input_example is None and hasattr(background, "iloc"):
        input_example = background.iloc[:EXAMPLE_ROWS]  # a signature: MLflow then checks columns and types
    arguments: dict[str, Any] = {
        "python_model": python_model,
        "artifacts": {CONFIG_ARTIFACT: _config_file(python_model, folder)},
    }
    if input_example is not None:
        from mlflow.models import infer_signature

        arguments["input_example"] = input_example
        arguments["signature"] = infer_signature(input_example)  # inputs only: the answer is a list of rows
    return arguments


def log_model(
    model: Any,
    name: str = DEFAULT_NAME,
    *,
    background: Any = None,
    explain: bool = True,
    reason_codes: Mapping[Any, str] | ReasonCodes | None = None,
    max_reasons: int = DEFAULT_MAX_REASONS,
    input_example: Any = None,
    **kwargs: Any,
) -> Any:
    """Log `model` (a fitted scikit-learn-style estimator) as an MLflow pyfunc model that answers with
    explanations and audits every request; returns MLflow's ``ModelInfo``.

    name: the logged model's name (MLflow's ``name``); also the audited model name when it is served
        from outside the registry. background: reference rows for the explanations that need them
        (linear models, model-agnostic methods). explain: False answers without reasons.
    reason_codes: a table from a feature, or a (feature, "+"/"-") pair, to an adverse-action reason text
        (`ReasonCodes`); max_reasons: principal reasons per decision (default 4, Regulation B).
    input_example: rows of the model's input (default: the first rows of a DataFrame background); it
        gives the model a signature, so that MLflow checks each request's columns and types.
    Any other keyword goes to ``mlflow.pyfunc.log_model`` (``registered_model_name``, ``pip_requirements``…).
    """
    with tempfile.TemporaryDirectory() as folder:
        arguments = _pyfunc_arguments(model, name, background, explain, reason_codes, max_reasons,
                                      input_example, folder)
        return _quietly(mlflow.pyfunc.log_model, name=name, **{**arguments, **kwargs})


def save_model(
    model: Any,
    path: str | os.PathLike[str],
    *,
    name: str = DEFAULT_NAME,
    background: Any = None,
    explain: bool = True,
    reason_codes: Mapping[Any, str] | ReasonCodes | None = None,
    max_reasons: int = DEFAULT_MAX_REASONS,
    input_example: Any = None,
    **kwargs: Any,
) -> None:
    """`log_model` to a local directory instead of a run (``mlflow models serve -m PATH`` serves it)."""
    with tempfile.TemporaryDirectory() as folder:
        arguments = _pyfunc_arguments(model, name, background, explain, reason_codes, max_reasons,
                                      input_example, folder)
        _quietly(mlflow.pyfunc.save_model, os.fspath(path), **{**arguments, **kwargs})


def _quietly(log: Any, *args: Any, **kwargs: Any) -> Any:
    """Run MLflow's logging with its checks of the input example neither instrumenting nor audited."""
    token = _LOGGING.set(True)
    try:
        return run_quietly(log, *args, **kwargs)
    finally:
        _LOGGING.reset(token)
