"""Where a spool's spans go: the destination identity of an OTLP endpoint.

Processes that export to the same destination share one spool file, so that whichever of them runs
sends what the others left. Two spellings of one endpoint must therefore give one identity:

* the protocol as resolved (argument, ``OTEL_EXPORTER_OTLP_*PROTOCOL``, else ``grpc``);
* the scheme and host in lower case; every loopback spelling (``localhost``, ``127.0.0.0/8``, ``::1``)
  is one host, ``loopback``: a spool is a file on this machine, and they all reach this machine;
* the port; for OTLP/HTTP a scheme's default port (80, 443) is the same as none;
* for OTLP/HTTP the path, ``/v1/traces`` when none is given (as the exporter does); gRPC has no path.

Other host names are not resolved (DNS answers change; a spool must not), so ``collector.internal`` and
its address are two destinations. One header is part of the identity, because it moves spans within
one endpoint: MLflow's ``x-mlflow-experiment-id`` (`ROUTING_HEADERS`), which files them under another
experiment (``instrument(mlflow_experiment=...)``). A spool's spans are sent with the headers of the process
that exports it, so two experiments must not share a spool; the spool also keeps its routing headers
(`META_ROUTING`), which ``otel-rai spool export`` sends. No other header is part of it: credentials rotate,
and do not move the spans.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from typing import Mapping
from urllib.parse import urlsplit

from opentelemetry.util.re import parse_env_headers

from otel_rai import settings

LOOPBACK = "loopback"
#: The keys of a spool's ``meta`` table that say where its spans go: the identity, and the endpoint as the
#: last process that opened it spelled it.
META_DESTINATION = "destination"
META_ENDPOINT = "endpoint"
#: The key of a spool's ``meta`` table holding its routing headers, as a JSON object.
META_ROUTING = "routing"
#: The header naming the experiment an MLflow tracking server files the spans of a request under.
MLFLOW_EXPERIMENT_HEADER = "x-mlflow-experiment-id"
#: Headers that choose where within an endpoint spans land (lower case): part of the destination.
ROUTING_HEADERS = (MLFLOW_EXPERIMENT_HEADER,)
_DEFAULT_PORTS = {"http": 80, "https": 443}
_TRACES_PATH = "/v1/traces"


def _host(host: str) -> str:
    host = host.lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return LOOPBACK
    try:
        return LOOPBACK if ipaddress.ip_address(host).is_loopback else host
    except ValueError:
        return host


def configured_headers(headers: Mapping[str, str] | str | None) -> dict[str, str]:
    """The OTLP headers a process sends: `headers` (a mapping, or ``k=v,...``), else the
    ``OTEL_EXPORTER_OTLP_TRACES_HEADERS`` / ``OTEL_EXPORTER_OTLP_HEADERS`` variables (which an explicit
    mapping replaces in the OTel exporter, so they are read here)."""
    if isinstance(headers, Mapping):
        return dict(headers)
    text = headers or settings.env("OTEL_EXPORTER_OTLP_TRACES_HEADERS") or settings.env("OTEL_EXPORTER_OTLP_HEADERS")
    return parse_env_headers(text, liberal=True) if text else {}


def routing(headers: Mapping[str, str] | str | None) -> dict[str, str]:
    """The routing headers (`ROUTING_HEADERS`) among those a process sends (`configured_headers`)."""
    return {k.lower(): v for k, v in configured_headers(headers).items() if k.lower() in ROUTING_HEADERS}


def routing_meta(headers: Mapping[str, str] | str | None) -> str:
    """`routing` as the JSON a spool's `META_ROUTING` keeps."""
    return json.dumps(routing(headers), sort_keys=True)


def identity(endpoint: str, protocol: str | None = None, headers: Mapping[str, str] | str | None = None) -> str:
    """The destination of `endpoint` with `headers` (see the module docstring), e.g. ``grpc
    http://loopback:4317`` or ``http/protobuf http://loopback:5000/v1/traces x-mlflow-experiment-id=3``."""
    protocol = settings.otlp_protocol(protocol)
    parts = urlsplit(endpoint.strip() if "://" in endpoint else "http://" + endpoint.strip())
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    host = _host(parts.hostname or "")
    path = ""
    if protocol != "grpc":
        if port == _DEFAULT_PORTS.get(scheme):
            port = None
        path = parts.path.rstrip("/") or _TRACES_PATH
    netloc = f"[{host}]" if ":" in host else host
    routed = "".join(f" {k}={v}" for k, v in sorted(routing(headers).items()))
    return f"{protocol} {scheme}://{netloc}{'' if port is None else f':{port}'}{path}{routed}"


def spool_name(destination: str) -> str:
    """The file name of the default spool of a destination: ``spool-<8 hex digits>.db``."""
    return f"spool-{hashlib.blake2b(destination.encode(), digest_size=4).hexdigest()}.db"
