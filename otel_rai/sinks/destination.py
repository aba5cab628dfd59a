"""Where a spool's spans go: the destination identity of an OTLP endpoint.

Processes that export to the same destination share one spool file, so that whichever of them runs
sends what the others left. Two spellings of one endpoint must therefore give one identity:

* the protocol as resolved (argument, ``OTEL_EXPORTER_OTLP_*PROTOCOL``, else ``grpc``);
* the scheme and host in lower case; every loopback spelling (``localhost``, ``127.0.0.0/8``, ``::1``)
  is one host, ``loopback``: a spool is a file on this machine, and they all reach this machine;
* the port; for OTLP/HTTP a scheme's default port (80, 443) is the same as none;
* for OTLP/HTTP the path, ``/v1/traces`` when none is given (as the exporter does); gRPC has no path.

Other host names are not resolved (DNS answers change; a spool must not), so ``collector.internal`` and
its address are two destinations. Headers are not part of the identity.
"""

from __future__ import annotations

import hashlib
import ipaddress
from urllib.parse import urlsplit

from otel_rai import settings

LOOPBACK = "loopback"
#: The keys of a spool's ``meta`` table that say where its spans go: the identity, and the endpoint as the
#: last process that opened it spelled it.
META_DESTINATION = "destination"
META_ENDPOINT = "endpoint"
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


def identity(endpoint: str, protocol: str | None = None) -> str:
    """The destination of `endpoint` (see the module docstring), e.g. ``grpc http://loopback:4317``."""
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
    return f"{protocol} {scheme}://{netloc}{'' if port is None else f':{port}'}{path}"


def spool_name(destination: str) -> str:
    """The file name of the default spool of a destination: ``spool-<8 hex digits>.db``."""
    return f"spool-{hashlib.blake2b(destination.encode(), digest_size=4).hexdigest()}.db"
