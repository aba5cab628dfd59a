"""An MLflow tracking server as a query backend: the decision spans sent to it over OTLP
(``instrument(mlflow_experiment=...)``), searched with MLflow's client (``MlflowClient.search_traces``).

What MLflow filters, and what is filtered here only:

* **model name and version, decision ids, input hashes:** MLflow matches a span attribute only with
  ``LIKE``/``ILIKE``, and (in its SQL store) over the span's JSON after the attribute's name, so
  ``span.attributes.ml.model.version LIKE '%3%'`` also finds version ``13`` and a span where a later
  attribute contains ``3``. The search is a superset; every value is compared exactly here. Values with
  characters other than letters, digits and ``. _ - :`` are not sent at all (JSON escapes some), and
  several decision ids become one search each (up to `MAX_ID_SEARCHES`, then none).
* **time:** by the trace's start and end (``trace.timestamp_ms``, ``trace.end_time_ms``), in
  milliseconds; the span's own start is compared here to the nanosecond.
* **service:** the resource's ``service.name``, which MLflow keeps as a trace tag, matched exactly.

The experiments searched: ``OTEL_RAI_MLFLOW_EXPERIMENT`` (an id or a name), else every active one. The
URL is the tracking server's (default ``MLFLOW_TRACKING_URI``, else `DEFAULT_URL`); MLflow's client
reads its credentials from its own variables. Attributes MLflow adds (``mlflow.*``) are left out.
"""

from __future__ import annotations

import json
import os
import re
import urllib.parse
from typing import Any, Iterator

from otel_rai import semconv, settings
from otel_rai.codec.records import SpanRecord
from otel_rai.errors import BackendError
from otel_rai.query import Query
from otel_rai.query._remote import check_url, lookback, time_order

DEFAULT_URL = "http://localhost:5000"
#: Traces per page of a search.
PAGE = 500
#: Up to this many decision ids are each searched for; more are filtered here only.
MAX_ID_SEARCHES = 20
#: How much of an MLflow client error a message quotes (they can run to pages).
QUOTED_CHARS = 200
#: MLflow's own span attributes, left out of the records.
MLFLOW_PREFIX = "mlflow."
_SAFE = re.compile(r"[A-Za-z0-9._:-]+")
_STATUS = {"UNSET": 0, "OK": 1, "ERROR": 2}
#: Tracking stores MLflow's client reads over a database connection (``postgresql+psycopg2://`` included).
_DATABASES = ("databricks", "postgresql", "mysql", "mssql")
#: What MLflow's client says when the server does not answer (after its own retries).
_UNREACHABLE = ("Max retries exceeded", "Connection refused", "Failed to establish a new connection")
_MS = 1_000_000


def _value(raw: Any) -> Any:
    """One stored attribute value. MLflow keeps each as JSON; a string that held a JSON object (a model
    record's parameters, libraries, schema; OpenInference's ``input.value``) it decodes on ingestion and
    keeps as the object, re-encoded with spaces. An OTel attribute is never an object, so an object is
    written back as the canonical JSON otel-rai writes (sorted keys, no spaces): the text the chain's
    record hash covers."""
    if not isinstance(raw, str):
        return raw
    try:
        value = json.loads(raw)
    except ValueError:
        return raw
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return value


def record(span: Any, resource: dict[str, Any]) -> SpanRecord:
    """One span of an MLflow trace as a record."""
    data = span.to_dict()
    status = data.get("status") or {}
    code = status.get("code", "UNSET") if isinstance(status, dict) else "UNSET"
    return SpanRecord(
        trace_id=str(span.trace_id).removeprefix("tr-"),
        span_id=str(span.span_id),
        name=str(span.name),
        start_ns=int(span.start_time_ns),
        end_ns=int(span.end_time_ns or span.start_time_ns),
        attributes={k: _value(v) for k, v in (data.get("attributes") or {}).items() if not k.startswith(MLFLOW_PREFIX)},
        parent_span_id=span.parent_id or None,
        status_code=_STATUS.get(str(code).removeprefix("STATUS_CODE_"), 0),
        status_message=str(status.get("message", "") if isinstance(status, dict) else ""),
        events=[{"name": e.name, "time_ns": int(e.timestamp), "attributes": dict(e.attributes or {})}
                for e in span.events or ()] or (),
        resource=resource,
    )


def _like(attribute: str, value: str | None) -> str | None:
    """The LIKE condition narrowing the search to spans that may hold `value`, or None."""
    if value is None or not _SAFE.fullmatch(value):
        return None
    return f"span.attributes.`{attribute}` LIKE '%{value}%'"


def filters(query: Query) -> list[str]:
    """The search filters for `query`, one per search (several decision ids: one each). Each is a
    superset of what the query selects; `otel_rai.query` compares exactly."""
    start, end = lookback(query.start_ns, query.end_ns)
    conditions = [f"trace.timestamp_ms < {-(-end // _MS)}", f"trace.end_time_ms >= {start // _MS}"]
    conditions += filter(None, [_like(semconv.MODEL_VERSION, query.model_version),
                                _like(semconv.MODEL_NAME, query.model_name)])
    if query.service is not None and "'" not in query.service and "\\" not in query.service:
        conditions.append(f"tags.`{semconv.SERVICE_NAME}` = '{query.service}'")
    per_row = [(semconv.DECISION_IDS, query.decision_ids), (semconv.INPUT_HASHES, query.input_hashes)]
    for attribute, values in per_row:
        if values and len(values) <= MAX_ID_SEARCHES and all(_SAFE.fullmatch(v) for v in values):
            base = " AND ".join(conditions)
            return [f"{base} AND {_like(attribute, v)}" for v in sorted(values)]
    return [" AND ".join(conditions)]


class Mlflow:
    """The decision spans in an MLflow tracking store (see the module docstring)."""

    def __init__(self, url: str, experiment: str | None = None) -> None:
        import mlflow

        self.url = url
        self.client = mlflow.MlflowClient(tracking_uri=url)
        self.experiment = experiment or settings.from_env("mlflow_experiment")

    def experiments(self) -> list[str]:
        """The ids of the experiments searched."""
        if self.experiment is None:
            found, token = [], None
            while True:
                page = self.client.search_experiments(max_results=PAGE, page_token=token)
                found += [e.experiment_id for e in page]
                token = page.token
                if not token:
                    return found
        if self.experiment.isdigit():
            return [self.experiment]
        experiment = self.client.get_experiment_by_name(self.experiment)
        if experiment is None:
            raise BackendError(f"mlflow at {self.url} has no experiment {self.experiment!r}")
        return [experiment.experiment_id]

    def _traces(self, locations: list[str], text: str) -> Iterator[Any]:
        token = None
        while True:
            page = self.client.search_traces(locations=locations, filter_string=text, max_results=PAGE,
                                             order_by=["timestamp_ms ASC"], page_token=token)
            yield from page
            token = page.token
            if not token:
                return

    def spans(self, query: Query) -> Iterator[SpanRecord]:
        """Every span of the traces the searches for `query` find, each once, in time order."""
        try:
            locations = self.experiments()
            found: dict[tuple[str, str], SpanRecord] = {}
            for text in filters(query):
                for trace in self._traces(locations, text):
                    service = (trace.info.tags or {}).get(semconv.SERVICE_NAME)
                    resource = {} if service is None else {semconv.SERVICE_NAME: service}
                    for span in trace.data.spans:
                        r = record(span, resource)
                        found[(r.trace_id, r.span_id)] = r
        except BackendError:
            raise
        except Exception as exc:  # the client raises MlflowException, requests' errors and more
            text = " ".join(str(exc).split())
            if any(sign in text for sign in _UNREACHABLE):
                raise BackendError(f"cannot reach mlflow at {self.url}: no answer") from None
            detail = f"{type(exc).__name__}: {text[:QUOTED_CHARS]}"
            raise BackendError(f"cannot search mlflow at {self.url}: {detail}") from None
        yield from sorted(found.values(), key=time_order)


def tracking_uri(url: str) -> str:
    """`url` if it is a tracking URI MLflow's client reads without creating anything: an http(s) URL, a
    database or Databricks URI, or an existing SQLite file; else ValueError (a usage error)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme in ("http", "https"):
        return check_url(url, "mlflow", DEFAULT_URL)
    if parts.scheme == "sqlite":
        path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else ""  # sqlite:////abs, sqlite:///rel
        if not path or not os.path.isfile(path):
            raise ValueError(f"otel-rai: mlflow: {url!r} names no SQLite file that exists")
        return url
    if parts.scheme.split("+")[0] in _DATABASES:
        return url
    raise ValueError(f"otel-rai: mlflow: {url!r} is not a tracking URI like {DEFAULT_URL}")


def connect(url: str | None) -> Mlflow:
    """The MLflow tracking server at `url`, else ``MLFLOW_TRACKING_URI``, else `DEFAULT_URL`."""
    return Mlflow(tracking_uri(url or settings.env("MLFLOW_TRACKING_URI") or DEFAULT_URL))
