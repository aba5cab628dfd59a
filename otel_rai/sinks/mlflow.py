"""An MLflow tracking server as the destination of decisions: ``instrument(mlflow_experiment=...)``.

MLflow (3.6 and later) takes OTLP/HTTP protobuf at ``<tracking server>/v1/traces`` and files the traces
under the experiment named by the ``x-mlflow-experiment-id`` header; it takes no gRPC. `routed` turns
the setting into plain OTLP options (endpoint, protocol, headers), so that everything else (the spool,
retries, TLS) is the ordinary OTLP export:

* the endpoint: ``endpoint=`` or the ``OTEL_EXPORTER_OTLP_*`` endpoint variables when set (a collector
  in between), else ``MLFLOW_TRACKING_URI`` + ``/v1/traces`` over ``http/protobuf``;
* the headers: those configured (``headers=``, else ``OTEL_EXPORTER_OTLP_TRACES_HEADERS`` /
  ``OTEL_EXPORTER_OTLP_HEADERS``) plus the experiment header, and the tracking server's credentials
  (``MLFLOW_TRACKING_TOKEN``, or ``MLFLOW_TRACKING_USERNAME``/``PASSWORD``) when sending to it directly;
* the experiment: an id (digits) as it is; a name is looked up over MLflow's REST API, and created
  when missing, as ``mlflow.set_experiment`` does;
* the default spool: the experiment header is part of the destination (`destination.identity`), so each
  experiment of a server gets a spool of its own, which remembers its experiment for ``otel-rai spool
  export``.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import replace
from typing import Any, Mapping

from otel_rai import settings
from otel_rai.errors import OtelRaiError
from otel_rai.sinks import destination

#: The header naming the experiment that MLflow files the traces of a request under.
EXPERIMENT_HEADER = destination.MLFLOW_EXPERIMENT_HEADER
TRACES_PATH = "/v1/traces"
#: How long the experiment lookup at ``instrument()`` waits for the tracking server.
LOOKUP_TIMEOUT_S = 10.0
_GET_BY_NAME = "/api/2.0/mlflow/experiments/get-by-name"
_CREATE = "/api/2.0/mlflow/experiments/create"


class MlflowDestinationError(OtelRaiError, ValueError):
    """``mlflow_experiment`` cannot be turned into an OTLP destination."""


def routed(config: settings.Settings) -> settings.Settings:
    """`config` with ``mlflow_experiment`` spelled out as an OTLP endpoint, protocol and headers (unchanged
    without it)."""
    experiment = config.mlflow_experiment
    if experiment is None:
        return config
    tracking = settings.env("MLFLOW_TRACKING_URI")
    direct = not settings.otlp_endpoint_configured(config.endpoint)
    if direct and not _is_http(tracking):
        raise MlflowDestinationError(
            f"mlflow_experiment={experiment!r} needs MLFLOW_TRACKING_URI to be the tracking server's http(s) "
            f"URL (it is {tracking!r}), or an OTLP endpoint")
    protocol = config.protocol
    if direct:
        if protocol is not None and protocol != "http/protobuf":
            raise MlflowDestinationError("an MLflow tracking server takes OTLP over http/protobuf only, "
                                         f"not {protocol!r}")
        protocol = "http/protobuf"
    experiment_id = experiment if experiment.isdigit() else _experiment_id(tracking, experiment)
    headers = {**destination.configured_headers(config.headers), EXPERIMENT_HEADER: experiment_id}
    if direct:
        headers = {**_credentials(), **headers}
    endpoint = tracking.rstrip("/") + TRACES_PATH if direct else config.endpoint
    return replace(config, endpoint=endpoint, protocol=protocol, headers=headers)


def _is_http(url: str | None) -> bool:
    return url is not None and urllib.parse.urlsplit(url).scheme in ("http", "https")


def _credentials() -> dict[str, str]:
    """The tracking server's credentials from MLflow's variables, as an Authorization header."""
    token = settings.env("MLFLOW_TRACKING_TOKEN")
    if token:
        return {"Authorization": f"Bearer {token}"}
    user = settings.env("MLFLOW_TRACKING_USERNAME")
    if user:
        pair = f"{user}:{settings.env('MLFLOW_TRACKING_PASSWORD') or ''}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}
    return {}


def _call(tracking: str, path: str, params: Mapping[str, str] | None = None,
          body: Mapping[str, Any] | None = None) -> tuple[int, Any]:
    url = tracking.rstrip("/") + path + ("?" + urllib.parse.urlencode(params) if params else "")
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **_credentials()})
    try:
        with urllib.request.urlopen(request, timeout=LOOKUP_TIMEOUT_S) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"{}")
        except ValueError:
            return exc.code, {}


def _experiment_id(tracking: str, name: str) -> str:
    """The id of experiment `name` on the tracking server, which creates it when missing."""
    where = f"the MLflow tracking server at {tracking}"
    try:
        status, answer = _call(tracking, _GET_BY_NAME, {"experiment_name": name})
        if status == 404:
            status, answer = _call(tracking, _CREATE, body={"name": name})
            if status == 200:
                return str(answer["experiment_id"])
        elif status == 200:
            return str(answer["experiment"]["experiment_id"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        reason = getattr(exc, "reason", None) or type(exc).__name__
        raise MlflowDestinationError(f"cannot look up MLflow experiment {name!r} at {where}: {reason}; give "
                                     "its id instead") from None
    raise MlflowDestinationError(f"{where} answered HTTP {status} when asked for experiment {name!r}; give its "
                                 "id instead")
